//! Host gather: `dst[i, ..] = src[indices[i], ..]`.
use crate::{Element, GatherPolicy, Index, Result};

/// Gathers rows of `src` (shape `src_shape`, rows along axis 0) into `dst`, which must hold
/// exactly `indices.len() * row_len` elements. Validates every index before writing anything.
pub fn gather_rows_into<T: Element, I: Index>(
    src: &[T],
    src_shape: &[usize],
    indices: &[I],
    dst: &mut [T],
    policy: GatherPolicy<T>,
) -> Result<()> {
    let _ = (src, src_shape, indices, dst, policy);
    todo!()
}

/// Allocating form of [`gather_rows_into`]: returns `indices.len() * row_len` elements.
pub fn gather_rows<T: Element, I: Index>(
    src: &[T],
    src_shape: &[usize],
    indices: &[I],
    policy: GatherPolicy<T>,
) -> Result<Vec<T>> {
    let _ = (src, src_shape, indices, policy);
    todo!()
}
