//! Host pad to a length or a bucket: the same copy and fill as pad-to-multiple
//! ([`crate::ops::pad::host`]), to another padded length.
use std::borrow::Cow;

use super::{bucket_length, length_shape};
use crate::element::width_of;
use crate::memory::zeroed_vec;
use crate::ops::pad::host::{pad_validated, Padded};
use crate::par::Stores;
use crate::{Element, Error, Op, Result, Shape};

/// The copy and fill into `dst` (checked to hold `padded`'s element count).
pub(crate) fn pad_shape_into<T: Element>(
    op: Op,
    src: &[T],
    shape: &Shape,
    axis: usize,
    padded: &Shape,
    fill: T,
    dst: &mut [T],
) -> Result<()> {
    if src.len() != shape.numel() {
        return Err(Error::LengthMismatch {
            op,
            what: "src.len()",
            expected: shape.numel(),
            actual: src.len(),
        });
    }
    if dst.len() != padded.numel() {
        return Err(Error::LengthMismatch {
            op,
            what: "dst.len()",
            expected: padded.numel(),
            actual: dst.len(),
        });
    }
    pad_validated(src, shape, padded, axis, fill, dst, Stores::Auto);
    Ok(())
}

fn pad_alloc<'a, T: Element>(
    op: Op,
    src: &'a [T],
    shape: Shape,
    axis: usize,
    padded: Shape,
    fill: T,
) -> Result<Padded<'a, T>> {
    if src.len() != shape.numel() {
        return Err(Error::LengthMismatch {
            op,
            what: "src.len()",
            expected: shape.numel(),
            actual: src.len(),
        });
    }
    if padded == shape {
        return Ok(Padded {
            data: Cow::Borrowed(src),
            shape,
        });
    }
    let mut dst = zeroed_vec(op, padded.numel())?;
    pad_validated(src, &shape, &padded, axis, fill, &mut dst, Stores::Cached);
    Ok(Padded {
        data: Cow::Owned(dst),
        shape: padded,
    })
}

/// Pads `src` (shape `shape`) along `axis` to exactly `length` with `fill`; borrowed when the
/// axis already has that length.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a `length` shorter than the
/// axis, [`Error::AxisOutOfRange`](crate::Error::AxisOutOfRange), and the shape and length errors
/// of [`pad_to_multiple`](crate::host::pad_to_multiple).
///
/// # Example
/// ```
/// let p = cpugpu::host::pad_to_length(&[1u8, 2, 3, 4], &[2, 2], 0, 3, 9)?;
/// assert_eq!(&*p.data, &[1, 2, 3, 4, 9, 9]);
/// # Ok::<(), cpugpu::Error>(())
/// ```
pub fn pad_to_length<'a, T: Element>(
    src: &'a [T],
    shape: &[usize],
    axis: usize,
    length: usize,
    fill: T,
) -> Result<Padded<'a, T>> {
    width_of::<T>();
    let op = Op::PadToLength;
    let shape = Shape::for_op(op, shape)?;
    let padded = length_shape(op, &shape, axis, length)?;
    pad_alloc(op, src, shape, axis, padded, fill)
}

/// Allocation-free form of [`pad_to_length`]: `dst` holds exactly the padded element count.
pub fn pad_to_length_into<T: Element>(
    src: &[T],
    shape: &[usize],
    axis: usize,
    length: usize,
    fill: T,
    dst: &mut [T],
) -> Result<Shape> {
    width_of::<T>();
    let op = Op::PadToLength;
    let shape = Shape::for_op(op, shape)?;
    let padded = length_shape(op, &shape, axis, length)?;
    pad_shape_into(op, src, &shape, axis, &padded, fill, dst)?;
    Ok(padded)
}

/// Pads `src` along `axis` to the smallest of `buckets` at least as long
/// ([`bucket_for`](crate::bucket_for)); borrowed when the axis already is a bucket size.
///
/// # Errors
/// [`Error::AboveLargestBucket`](crate::Error::AboveLargestBucket) above the largest bucket,
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an empty or unsorted list, and
/// the errors of [`pad_to_length`].
///
/// # Example
/// ```
/// let p = cpugpu::host::pad_to_bucket(&[7i64; 5], &[5], 0, &[1, 2, 4, 8], -1)?;
/// assert_eq!(&*p.data, &[7, 7, 7, 7, 7, -1, -1, -1]);
/// # Ok::<(), cpugpu::Error>(())
/// ```
pub fn pad_to_bucket<'a, T: Element>(
    src: &'a [T],
    shape: &[usize],
    axis: usize,
    buckets: &[usize],
    fill: T,
) -> Result<Padded<'a, T>> {
    width_of::<T>();
    let op = Op::PadToBucket;
    let shape = Shape::for_op(op, shape)?;
    let len = bucket_length(&shape, axis, buckets)?;
    let padded = length_shape(op, &shape, axis, len)?;
    pad_alloc(op, src, shape, axis, padded, fill)
}

/// Allocation-free form of [`pad_to_bucket`]: `dst` holds exactly the padded element count.
pub fn pad_to_bucket_into<T: Element>(
    src: &[T],
    shape: &[usize],
    axis: usize,
    buckets: &[usize],
    fill: T,
    dst: &mut [T],
) -> Result<Shape> {
    width_of::<T>();
    let op = Op::PadToBucket;
    let shape = Shape::for_op(op, shape)?;
    let len = bucket_length(&shape, axis, buckets)?;
    let padded = length_shape(op, &shape, axis, len)?;
    pad_shape_into(op, src, &shape, axis, &padded, fill, dst)?;
    Ok(padded)
}
