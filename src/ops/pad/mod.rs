//! Pad to a multiple along one axis.

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use std::borrow::Cow;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element};
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut};
use crate::ops::check_shape;
use crate::shape::Shape;

/// The argument checks every backend makes: the shape, the source length, the axis and the
/// multiple, and, when a destination is given, its length. Returns (input shape, padded shape).
pub(crate) fn check_args(
    src_len: usize,
    shape: &[usize],
    axis: usize,
    multiple: usize,
    dst_len: Option<usize>,
) -> Result<(Shape, Shape)> {
    let op = Op::PadToMultiple;
    let shape = Shape::for_op(op, shape)?;
    if src_len != shape.numel() {
        return Err(Error::LengthMismatch {
            op,
            what: "src.len()",
            expected: shape.numel(),
            actual: src_len,
        });
    }
    let padded = padded_shape(&shape, axis, multiple)?;
    match dst_len {
        Some(actual) if actual != padded.numel() => Err(Error::LengthMismatch {
            op,
            what: "dst.len()",
            expected: padded.numel(),
            actual,
        }),
        _ => Ok((shape, padded)),
    }
}

/// `shape` with `axis` rounded up to the next multiple of `multiple`.
pub(crate) fn padded_shape(shape: &Shape, axis: usize, multiple: usize) -> Result<Shape> {
    let op = Op::PadToMultiple;
    if axis >= shape.ndim() {
        return Err(Error::AxisOutOfRange {
            op,
            axis,
            ndim: shape.ndim(),
        });
    }
    if multiple == 0 {
        return Err(Error::InvalidArgument {
            op,
            name: "multiple",
            value: 0,
            reason: "must be at least 1",
        });
    }
    let mut dims = [0usize; Shape::MAX_DIMS];
    dims[..shape.ndim()].copy_from_slice(shape.dims());
    dims[axis] = dims[axis]
        .checked_next_multiple_of(multiple)
        .ok_or(Error::SizeOverflow {
            op,
            what: "the padded axis",
        })?;
    Shape::for_op(op, &dims[..shape.ndim()])
}

/// The result of [`Device::pad_to_multiple`]: the input itself when it needed no padding.
#[derive(Debug)]
pub enum DevicePadded<'a, T: Element> {
    /// The axis was already a multiple: no copy was made.
    Unchanged(DeviceView<'a, T>),
    /// A new, padded buffer.
    Padded(DeviceBuffer<T>),
}

impl<T: Element> DevicePadded<'_, T> {
    /// A view of the result.
    pub fn view(&self) -> DeviceView<'_, T> {
        match self {
            DevicePadded::Unchanged(v) => *v,
            DevicePadded::Padded(b) => b.view(),
        }
    }

    /// The result's shape.
    pub fn shape(&self) -> Shape {
        self.view().shape()
    }

    /// True when no copy was made.
    pub fn is_unchanged(&self) -> bool {
        matches!(self, DevicePadded::Unchanged(_))
    }
}

impl Device {
    /// Pads `src` along `axis` up to the next multiple of `multiple` with `fill`. When the axis
    /// already is a multiple, the input comes back unchanged, without a copy.
    ///
    /// ```
    /// use cpugpu::Device;
    /// let dev = Device::auto();
    /// let x = dev.upload(&[1i32, 2, 3, 4, 5, 6], &[3, 2])?;
    /// let padded = dev.pad_to_multiple(x.view(), 0, 4, -1)?;
    /// assert_eq!(padded.shape().dims(), &[4, 2]);
    /// let mut out = [0i32; 8];
    /// padded.view().copy_to_host(&mut out)?;
    /// assert_eq!(out, [1, 2, 3, 4, 5, 6, -1, -1]);
    /// assert!(dev.pad_to_multiple(x.view(), 1, 2, 0)?.is_unchanged());
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn pad_to_multiple<'a, T: Element>(
        &self,
        src: DeviceView<'a, T>,
        axis: usize,
        multiple: usize,
        fill: T,
    ) -> Result<DevicePadded<'a, T>> {
        width_of::<T>();
        match self.kind() {
            BackendKind::Host => {
                let (s, shape) = (src.on_host(crate::Op::PadToMultiple)?, src.shape());
                // Sized by the output, which may be far larger than the input (bad arguments:
                // the input's size; the host function reports them).
                let bytes = padded_shape(&shape, axis, multiple)
                    .map_or(std::mem::size_of_val(s), |p| {
                        p.numel().saturating_mul(std::mem::size_of::<T>())
                    });
                let padded = self.host_run(bytes, || {
                    host::pad_to_multiple(s, shape.dims(), axis, multiple, fill)
                })?;
                Ok(match padded.data {
                    Cow::Borrowed(_) => DevicePadded::Unchanged(src),
                    Cow::Owned(v) => {
                        DevicePadded::Padded(DeviceBuffer::from_host_vec(self, v, padded.shape))
                    }
                })
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                let (s, padded) = check_args(src.len(), src.shape().dims(), axis, multiple, None)?;
                if padded == s {
                    return Ok(DevicePadded::Unchanged(src));
                }
                // The pad kernel writes every element of the output.
                let mut out = DeviceBuffer::uninit(self, padded)?;
                launch::pad_to_multiple_into(self, src, axis, multiple, fill, out.view_mut())?;
                Ok(DevicePadded::Padded(out))
            }
        }
    }

    /// Allocation-free form of [`Device::pad_to_multiple`]: `dst` must have the padded shape
    /// (it is written even when no padding is needed).
    pub fn pad_to_multiple_into<T: Element>(
        &self,
        src: DeviceView<'_, T>,
        axis: usize,
        multiple: usize,
        fill: T,
        dst: DeviceViewMut<'_, T>,
    ) -> Result<()> {
        width_of::<T>();
        let expected = padded_shape(&src.shape(), axis, multiple)?;
        check_shape(Op::PadToMultiple, "dst's shape", expected, dst.shape())?;
        match self.kind() {
            BackendKind::Host => {
                let (s, shape) = (src.on_host(crate::Op::PadToMultiple)?, src.shape());
                let d = dst.into_host(crate::Op::PadToMultiple)?;
                self.host_run(std::mem::size_of_val(d), || {
                    host::pad_to_multiple_into(s, shape.dims(), axis, multiple, fill, d)
                })
                .map(|_| ())
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => launch::pad_to_multiple_into(self, src, axis, multiple, fill, dst),
        }
    }
}
