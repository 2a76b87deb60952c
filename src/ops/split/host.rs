//! Host split: one buffer plus offsets to zero-copy segment views.
use std::marker::PhantomData;

use crate::{Element, Offset, Result};

/// Validated zero-copy segments of a buffer.
#[derive(Clone, Copy, Debug)]
pub struct Segments<'a, T, O> {
    data: &'a [T],
    offsets: &'a [O],
    _p: PhantomData<O>,
}

/// Splits `data` at `offsets` (non-decreasing, first >= 0, last <= data.len()).
pub fn split<'a, T: Element, O: Offset>(
    data: &'a [T],
    offsets: &'a [O],
) -> Result<Segments<'a, T, O>> {
    let _ = (data, offsets);
    todo!()
}

/// Allocation-free form: clears `out` and pushes one view per segment.
pub fn split_into<'a, T: Element, O: Offset>(
    data: &'a [T],
    offsets: &[O],
    out: &mut Vec<&'a [T]>,
) -> Result<()> {
    let _ = (data, offsets, out);
    todo!()
}
