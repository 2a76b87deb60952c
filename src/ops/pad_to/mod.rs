//! Pad along one axis to an exact length, or to the smallest of a list of bucket sizes (the
//! batch sizes CUDA graphs were captured for).

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element};
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut};
use crate::ops::check_shape;
use crate::ops::pad::DevicePadded;
use crate::shape::Shape;

/// The smallest of `buckets` (strictly ascending, non-empty) that is at least `n`.
///
/// `n` above the largest bucket is [`Error::AboveLargestBucket`] (vLLM runs such a batch
/// without a CUDA graph, unpadded); an empty or unsorted list is [`Error::InvalidArgument`].
///
/// ```
/// use cpugpu::{bucket_for, cuda_graph_sizes, Error};
/// let sizes = cuda_graph_sizes(512);
/// assert_eq!(bucket_for(3, &sizes)?, 4);
/// assert_eq!(bucket_for(9, &sizes)?, 16);
/// assert_eq!(bucket_for(512, &sizes)?, 512);
/// assert!(matches!(bucket_for(513, &sizes), Err(Error::AboveLargestBucket { largest: 512, .. })));
/// # Ok::<(), cpugpu::Error>(())
/// ```
pub fn bucket_for(n: usize, buckets: &[usize]) -> Result<usize> {
    check_buckets(Op::PadToBucket, buckets)?;
    let i = buckets.partition_point(|&b| b < n);
    buckets.get(i).copied().ok_or(Error::AboveLargestBucket {
        op: Op::PadToBucket,
        value: n,
        largest: buckets[buckets.len() - 1],
    })
}

/// Checks a bucket list: non-empty and strictly ascending.
pub(crate) fn check_buckets(op: Op, buckets: &[usize]) -> Result<()> {
    if buckets.is_empty() {
        return Err(Error::InvalidArgument {
            op,
            name: "buckets",
            value: 0,
            reason: "the list of bucket sizes is empty",
        });
    }
    if let Some(i) = buckets.windows(2).position(|w| w[0] >= w[1]) {
        return Err(Error::InvalidArgument {
            op,
            name: "buckets[i + 1], at i",
            value: i as i128,
            reason: "bucket sizes must be strictly ascending",
        });
    }
    Ok(())
}

/// vLLM's default CUDA-graph capture sizes up to `max`: 1, 2, 4, then every multiple of 8.
///
/// ```
/// assert_eq!(cpugpu::cuda_graph_sizes(24), [1, 2, 4, 8, 16, 24]);
/// assert_eq!(cpugpu::cuda_graph_sizes(512).len(), 67);
/// ```
pub fn cuda_graph_sizes(max: usize) -> Vec<usize> {
    [1, 2, 4]
        .into_iter()
        .chain((8..=max).step_by(8))
        .filter(|&s| s <= max)
        .collect()
}

/// `shape` with `axis` set to `length`, which must not be shorter than the axis.
pub(crate) fn length_shape(op: Op, shape: &Shape, axis: usize, length: usize) -> Result<Shape> {
    if axis >= shape.ndim() {
        return Err(Error::AxisOutOfRange {
            op,
            axis,
            ndim: shape.ndim(),
        });
    }
    if length < shape.dims()[axis] {
        return Err(Error::InvalidArgument {
            op,
            name: "the padded length",
            value: length as i128,
            reason: "shorter than the axis (padding never truncates)",
        });
    }
    let mut dims = [0usize; Shape::MAX_DIMS];
    dims[..shape.ndim()].copy_from_slice(shape.dims());
    dims[axis] = length;
    Shape::for_op(op, &dims[..shape.ndim()])
}

/// The padded length `axis` gets from `buckets`.
pub(crate) fn bucket_length(shape: &Shape, axis: usize, buckets: &[usize]) -> Result<usize> {
    if axis >= shape.ndim() {
        return Err(Error::AxisOutOfRange {
            op: Op::PadToBucket,
            axis,
            ndim: shape.ndim(),
        });
    }
    bucket_for(shape.dims()[axis], buckets)
}

impl Device {
    /// Pads `src` along `axis` to exactly `length` with `fill` (the input itself, without a
    /// copy, when the axis already has that length). A `length` shorter than the axis is
    /// [`Error::InvalidArgument`].
    ///
    /// ```
    /// use cpugpu::Device;
    /// let dev = Device::auto();
    /// let ids = dev.upload(&[5i32, 6, 7], &[3])?;
    /// let padded = dev.pad_to_length(ids.view(), 0, 6, 0)?;
    /// let mut out = [0i32; 6];
    /// padded.view().copy_to_host(&mut out)?;
    /// assert_eq!(out, [5, 6, 7, 0, 0, 0]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn pad_to_length<'a, T: Element>(
        &self,
        src: DeviceView<'a, T>,
        axis: usize,
        length: usize,
        fill: T,
    ) -> Result<DevicePadded<'a, T>> {
        let padded = length_shape(Op::PadToLength, &src.shape(), axis, length)?;
        self.pad_alloc(Op::PadToLength, src, axis, padded, fill)
    }

    /// Allocation-free form of [`Device::pad_to_length`]: `dst` must have the padded shape.
    pub fn pad_to_length_into<T: Element>(
        &self,
        src: DeviceView<'_, T>,
        axis: usize,
        length: usize,
        fill: T,
        dst: DeviceViewMut<'_, T>,
    ) -> Result<()> {
        let padded = length_shape(Op::PadToLength, &src.shape(), axis, length)?;
        self.pad_into(Op::PadToLength, src, axis, padded, fill, dst)
    }

    /// Pads `src` along `axis` to the smallest bucket size at least as long (see
    /// [`bucket_for`]; [`cuda_graph_sizes`] gives vLLM's default list), with `fill`. Above the
    /// largest bucket: [`Error::AboveLargestBucket`], so the caller decides (vLLM runs the batch
    /// unpadded, without a graph).
    ///
    /// ```
    /// use cpugpu::{cuda_graph_sizes, Device, PAD_SLOT_ID};
    /// let dev = Device::auto();
    /// let slots = dev.upload(&[40i64, 41, 42, 43, 44], &[5])?;
    /// let padded = dev.pad_to_bucket(slots.view(), 0, &cuda_graph_sizes(512), PAD_SLOT_ID)?;
    /// assert_eq!(padded.shape().dims(), &[8]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn pad_to_bucket<'a, T: Element>(
        &self,
        src: DeviceView<'a, T>,
        axis: usize,
        buckets: &[usize],
        fill: T,
    ) -> Result<DevicePadded<'a, T>> {
        let len = bucket_length(&src.shape(), axis, buckets)?;
        let padded = length_shape(Op::PadToBucket, &src.shape(), axis, len)?;
        self.pad_alloc(Op::PadToBucket, src, axis, padded, fill)
    }

    /// Allocation-free form of [`Device::pad_to_bucket`]: `dst` must have the padded shape.
    pub fn pad_to_bucket_into<T: Element>(
        &self,
        src: DeviceView<'_, T>,
        axis: usize,
        buckets: &[usize],
        fill: T,
        dst: DeviceViewMut<'_, T>,
    ) -> Result<()> {
        let len = bucket_length(&src.shape(), axis, buckets)?;
        let padded = length_shape(Op::PadToBucket, &src.shape(), axis, len)?;
        self.pad_into(Op::PadToBucket, src, axis, padded, fill, dst)
    }

    fn pad_alloc<'a, T: Element>(
        &self,
        op: Op,
        src: DeviceView<'a, T>,
        axis: usize,
        padded: Shape,
        fill: T,
    ) -> Result<DevicePadded<'a, T>> {
        width_of::<T>();
        if padded == src.shape() {
            return Ok(DevicePadded::Unchanged(src));
        }
        let mut out = match self.kind() {
            BackendKind::Host => DeviceBuffer::zeroed(self, padded)?,
            // Every element is written by the kernel.
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => DeviceBuffer::uninit(self, padded)?,
        };
        self.pad_into(op, src, axis, padded, fill, out.view_mut())?;
        Ok(DevicePadded::Padded(out))
    }

    fn pad_into<T: Element>(
        &self,
        op: Op,
        src: DeviceView<'_, T>,
        axis: usize,
        padded: Shape,
        fill: T,
        dst: DeviceViewMut<'_, T>,
    ) -> Result<()> {
        width_of::<T>();
        check_shape(op, "dst's shape", padded, dst.shape())?;
        match self.kind() {
            BackendKind::Host => {
                let (s, shape, d) = (src.on_host(op)?, src.shape(), dst.into_host(op)?);
                self.host_run(std::mem::size_of_val(d), || {
                    host::pad_shape_into(op, s, &shape, axis, &padded, fill, d)
                })
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => launch::pad_into(self, op, src, axis, padded, fill, dst),
        }
    }
}
