//! Host pad-to-multiple along one axis.
//!
//! The array is viewed as `[outer, axis_len, inner]` and written as `[outer, padded_len, inner]`:
//! each of the `outer` blocks is one copy of `axis_len * inner` elements followed by one fill of
//! `(padded_len - axis_len) * inner`. Padding axis 0 (`outer == 1`) is one big copy plus one
//! fill, each split over the thread pool when large; other axes run the blocks in parallel.
use std::borrow::Cow;

use rayon::prelude::*;

use super::check_args;
use crate::element::width_of;
use crate::memory::zeroed_vec;
use crate::ops::use_par;
use crate::par::{par_copy_with, par_fill_with, Stores};
use crate::{Element, Op, Result, Shape};

const OP: Op = Op::PadToMultiple;

/// The result of [`pad_to_multiple`]: borrowed when no padding was needed.
#[derive(Clone, Debug, PartialEq)]
pub struct Padded<'a, T: Clone> {
    /// The padded data (borrowed from the input when it was already a multiple).
    pub data: Cow<'a, [T]>,
    /// The padded shape.
    pub shape: Shape,
}

/// The copy and fill, after validation; `dst.len() == padded.numel()`.
pub(crate) fn pad_validated<T: Element>(
    src: &[T],
    shape: &Shape,
    padded: &Shape,
    axis: usize,
    fill: T,
    dst: &mut [T],
    stores: Stores,
) {
    let dims = shape.dims();
    let inner: usize = dims[axis + 1..].iter().product();
    let src_block = dims[axis] * inner;
    let dst_block = padded.dims()[axis] * inner;
    if dst_block == 0 {
        return; // nothing to write
    }
    if src_block == 0 {
        par_fill_with(dst, fill, stores); // the axis was empty: every element is padding
        return;
    }
    let one_block = |d: &mut [T], s: &[T]| {
        let (copy, pad) = d.split_at_mut(s.len());
        copy.copy_from_slice(s);
        pad.fill(fill);
    };
    if dst.len() == dst_block {
        // One block (axis 0, or every outer dimension 1): split the copy itself.
        let (copy, pad) = dst.split_at_mut(src_block);
        par_copy_with(copy, src, stores);
        par_fill_with(pad, fill, stores);
    } else if use_par(std::mem::size_of_val(dst)) {
        dst.par_chunks_mut(dst_block)
            .zip(src.par_chunks(src_block))
            .for_each(|(d, s)| one_block(d, s));
    } else {
        for (d, s) in dst.chunks_mut(dst_block).zip(src.chunks(src_block)) {
            one_block(d, s);
        }
    }
}

/// Pads `src` (shape `shape`) along `axis` up to the next multiple of `multiple` with `fill`, at
/// the end of the axis (numpy's `np.pad(..., mode="constant")` after the data). An array whose
/// axis is already a multiple comes back borrowed, without a copy.
///
/// # Errors
/// [`Error::AxisOutOfRange`](crate::Error::AxisOutOfRange) when `axis >= shape.len()` (a zero-dimensional array has no axis);
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for `multiple == 0`; [`Error::LengthMismatch`](crate::Error::LengthMismatch) when `src.len()` is
/// not the shape's element count; [`Error::SizeOverflow`](crate::Error::SizeOverflow) / [`Error::TooManyDims`](crate::Error::TooManyDims) for shapes
/// that do not fit.
///
/// # Example
/// ```
/// use cpugpu::host::pad_to_multiple;
/// let x = [1u8, 2, 3, 4, 5, 6]; // [2, 3]
/// let p = pad_to_multiple(&x, &[2, 3], 1, 4, 0).unwrap();
/// assert_eq!(p.shape.dims(), &[2, 4]);
/// assert_eq!(&*p.data, &[1, 2, 3, 0, 4, 5, 6, 0]);
/// let same = pad_to_multiple(&x, &[2, 3], 0, 2, 0).unwrap();
/// assert!(matches!(same.data, std::borrow::Cow::Borrowed(_)));
/// ```
pub fn pad_to_multiple<'a, T: Element>(
    src: &'a [T],
    shape: &[usize],
    axis: usize,
    multiple: usize,
    fill: T,
) -> Result<Padded<'a, T>> {
    width_of::<T>();
    let (shape, padded) = check_args(src.len(), shape, axis, multiple, None)?;
    if padded == shape {
        return Ok(Padded {
            data: Cow::Borrowed(src),
            shape,
        });
    }
    let mut dst = zeroed_vec(OP, padded.numel())?;
    pad_validated(src, &shape, &padded, axis, fill, &mut dst, Stores::Cached);
    Ok(Padded {
        data: Cow::Owned(dst),
        shape: padded,
    })
}

/// Allocation-free form of [`pad_to_multiple`]: `dst` must hold exactly the padded element
/// count, and is written even when no padding is needed. Returns the padded shape.
///
/// # Errors
/// Those of [`pad_to_multiple`], and [`Error::LengthMismatch`](crate::Error::LengthMismatch) (`what: "dst.len()"`) for a
/// `dst` of the wrong length. On error `dst` is untouched.
///
/// # Example
/// ```
/// use cpugpu::host::pad_to_multiple_into;
/// let ids = [7i32, 8, 9];
/// let mut out = [0i32; 8];
/// let shape = pad_to_multiple_into(&ids, &[3], 0, 8, -1, &mut out).unwrap();
/// assert_eq!(shape.dims(), &[8]);
/// assert_eq!(out, [7, 8, 9, -1, -1, -1, -1, -1]);
/// ```
pub fn pad_to_multiple_into<T: Element>(
    src: &[T],
    shape: &[usize],
    axis: usize,
    multiple: usize,
    fill: T,
    dst: &mut [T],
) -> Result<Shape> {
    width_of::<T>();
    let (shape, padded) = check_args(src.len(), shape, axis, multiple, Some(dst.len()))?;
    pad_validated(src, &shape, &padded, axis, fill, dst, Stores::Auto);
    Ok(padded)
}
