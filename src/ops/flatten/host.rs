//! Host flatten: ragged arrays to one contiguous buffer plus n + 1 offsets.
use crate::{Element, Offset, Result};

/// Concatenates `arrays` and returns the buffer and its `arrays.len() + 1` offsets.
pub fn flatten<T: Element, O: Offset, S: AsRef<[T]> + Sync>(
    arrays: &[S],
) -> Result<(Vec<T>, Vec<O>)> {
    let _ = arrays;
    todo!()
}

/// Allocation-free form: `dst` must hold exactly the total length and `offsets` exactly
/// `arrays.len() + 1` elements.
pub fn flatten_into<T: Element, O: Offset, S: AsRef<[T]> + Sync>(
    arrays: &[S],
    dst: &mut [T],
    offsets: &mut [O],
) -> Result<()> {
    let _ = (arrays, dst, offsets);
    todo!()
}
