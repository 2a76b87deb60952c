//! Host scatter: `dst[indices[i], ..] = src[i, ..]`, last occurrence wins.
use crate::{Element, Index, Result, ScatterPolicy};

/// Scatters the `indices.len()` rows of `src` into `dst` (shape `dst_shape`). `src` must hold
/// exactly `indices.len() * row_len` elements. Validates every index before writing anything.
pub fn scatter_rows_into<T: Element, I: Index>(
    src: &[T],
    indices: &[I],
    dst: &mut [T],
    dst_shape: &[usize],
    policy: ScatterPolicy,
) -> Result<()> {
    let _ = (src, indices, dst, dst_shape, policy);
    todo!()
}
