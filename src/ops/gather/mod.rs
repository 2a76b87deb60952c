//! Gather rows: `dst[i, ..] = src[indices[i], ..]`.

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element, Index};
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut};
use crate::ops::{check_shape, GatherPolicy};
use crate::shape::Shape;

/// What every backend knows once a gather's arguments are checked.
pub(crate) struct GatherArgs {
    /// Rows of the source (the index bound).
    pub rows: usize,
    /// Elements per row.
    pub row_len: usize,
    /// Elements the destination must hold: `indices.len() * row_len`.
    pub dst_len: usize,
}

/// The argument checks every backend makes before it looks at an index: the source shape, the
/// source length and the destination size. (The destination's length is checked after the
/// indices, so a bad index is reported first on every backend.)
pub(crate) fn check_args(
    src_len: usize,
    src_shape: &[usize],
    n_indices: usize,
) -> Result<GatherArgs> {
    let op = Op::GatherRows;
    let shape = Shape::for_op(op, src_shape)?;
    if src_len != shape.numel() {
        return Err(Error::LengthMismatch {
            op,
            what: "src.len()",
            expected: shape.numel(),
            actual: src_len,
        });
    }
    let row_len = shape.row_len();
    let dst_len = n_indices.checked_mul(row_len).ok_or(Error::SizeOverflow {
        op,
        what: "indices.len() * row_len",
    })?;
    Ok(GatherArgs {
        rows: shape.rows(),
        row_len,
        dst_len,
    })
}

impl Device {
    /// Gathers rows of `src` (axis 0) into `dst`, whose shape must be `src`'s with axis 0 set to
    /// `indices.len()`. Under [`GatherPolicy::Checked`] the first out-of-range index is an
    /// [`Error::IndexOutOfBounds`](crate::Error::IndexOutOfBounds) and `dst` is not written.
    ///
    /// ```
    /// use cpugpu::{Device, GatherPolicy};
    /// let dev = Device::auto();
    /// let table = dev.upload(&[10.0f32, 11.0, 20.0, 21.0, 30.0, 31.0], &[3, 2])?;
    /// let idx = dev.upload(&[2i64, -1, 0], &[3])?;
    /// let mut out = dev.alloc::<f32>(&[3, 2])?;
    /// dev.gather_rows_into(table.view(), idx.view(), out.view_mut(), GatherPolicy::NegativeFill(0.0))?;
    /// assert_eq!(out.to_vec()?, [30.0, 31.0, 0.0, 0.0, 10.0, 11.0]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn gather_rows_into<T: Element, I: Index>(
        &self,
        src: DeviceView<'_, T>,
        indices: DeviceView<'_, I>,
        dst: DeviceViewMut<'_, T>,
        policy: GatherPolicy<T>,
    ) -> Result<()> {
        width_of::<T>();
        let expected = src.shape().with_rows(Op::GatherRows, indices.len())?;
        check_shape(Op::GatherRows, "dst's shape", expected, dst.shape())?;
        match self.kind() {
            BackendKind::Host => {
                let op = crate::Op::GatherRows;
                let (s, shape) = (src.on_host(op)?, src.shape());
                let (i, d) = (indices.on_host(op)?, dst.into_host(op)?);
                self.host_run(std::mem::size_of_val(d), || {
                    host::gather_rows_into(s, shape.dims(), i, d, policy)
                })
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => launch::gather_rows_into(self, src, indices, dst, policy),
        }
    }

    /// Allocating form of [`Device::gather_rows_into`].
    ///
    /// A bad index is reported by the call on the host backend, and by the next
    /// [`Device::synchronize`] on a GPU, where the kernels find it: check both to be portable.
    ///
    /// ```
    /// use cpugpu::{Device, Error};
    /// let dev = Device::auto();
    /// let table = dev.upload(&[1u8, 2, 3], &[3])?;
    /// let bad = dev.upload(&[0i32, 3], &[2])?;
    /// let err = dev
    ///     .gather_rows(table.view(), bad.view(), Default::default())
    ///     .and_then(|rows| dev.synchronize().map(|()| rows))
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "gather_rows: indices[1] = 3 is out of bounds for 3 rows");
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn gather_rows<T: Element, I: Index>(
        &self,
        src: DeviceView<'_, T>,
        indices: DeviceView<'_, I>,
        policy: GatherPolicy<T>,
    ) -> Result<DeviceBuffer<T>> {
        width_of::<T>();
        let shape = src.shape().with_rows(Op::GatherRows, indices.len())?;
        match self.kind() {
            // Validates before it allocates.
            BackendKind::Host => {
                let op = crate::Op::GatherRows;
                let (s, dims, i) = (src.on_host(op)?, src.shape(), indices.on_host(op)?);
                let bytes = shape.numel().saturating_mul(std::mem::size_of::<T>());
                let data = self.host_run(bytes, || host::gather_rows(s, dims.dims(), i, policy))?;
                Ok(DeviceBuffer::from_host_vec(self, data, shape))
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => launch::gather_rows(self, src, indices, policy, shape),
        }
    }
}
