//! Host pad-to-multiple along one axis.
use std::borrow::Cow;

use crate::{Element, Result, Shape};

/// The result of [`pad_to_multiple`]: borrowed when no padding was needed.
#[derive(Clone, Debug, PartialEq)]
pub struct Padded<'a, T: Clone> {
    /// The padded data (borrowed from the input when it was already a multiple).
    pub data: Cow<'a, [T]>,
    /// The padded shape.
    pub shape: Shape,
}

/// Pads `src` (shape `shape`) along `axis` up to the next multiple of `multiple` with `fill`.
pub fn pad_to_multiple<'a, T: Element>(
    src: &'a [T],
    shape: &[usize],
    axis: usize,
    multiple: usize,
    fill: T,
) -> Result<Padded<'a, T>> {
    let _ = (src, shape, axis, multiple, fill);
    todo!()
}

/// Allocation-free form: `dst` must hold exactly the padded element count. Returns the padded
/// shape.
pub fn pad_to_multiple_into<T: Element>(
    src: &[T],
    shape: &[usize],
    axis: usize,
    multiple: usize,
    fill: T,
    dst: &mut [T],
) -> Result<Shape> {
    let _ = (src, shape, axis, multiple, fill, dst);
    todo!()
}
