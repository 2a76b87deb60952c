//! Scatter rows: `dst[indices[i], ..] = src[i, ..]`, last occurrence wins.

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element, Index};
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::{check_shape, ScatterPolicy};
use crate::shape::Shape;

/// What every backend knows once a scatter's arguments are checked.
pub(crate) struct ScatterArgs {
    /// Rows of the destination (the index bound).
    pub rows: usize,
    /// Elements per row.
    pub row_len: usize,
}

/// The argument checks every backend makes before it looks at an index: the destination shape
/// and length, and the source length (`indices.len() * row_len`).
pub(crate) fn check_args(
    src_len: usize,
    n_indices: usize,
    dst_len: usize,
    dst_shape: &[usize],
) -> Result<ScatterArgs> {
    let op = Op::ScatterRows;
    let shape = Shape::for_op(op, dst_shape)?;
    if dst_len != shape.numel() {
        return Err(Error::LengthMismatch {
            op,
            what: "dst.len()",
            expected: shape.numel(),
            actual: dst_len,
        });
    }
    let row_len = shape.row_len();
    let expected = n_indices.checked_mul(row_len).ok_or(Error::SizeOverflow {
        op,
        what: "indices.len() * row_len",
    })?;
    if src_len != expected {
        return Err(Error::LengthMismatch {
            op,
            what: "src.len()",
            expected,
            actual: src_len,
        });
    }
    Ok(ScatterArgs {
        rows: shape.rows(),
        row_len,
    })
}

impl Device {
    /// Scatters the rows of `src` into `dst` at `indices`; `src`'s shape must be `dst`'s with
    /// axis 0 set to `indices.len()`. When an index repeats, the last occurrence wins, on every
    /// backend. Under [`ScatterPolicy::Checked`] the first out-of-range index is an
    /// [`Error::IndexOutOfBounds`](crate::Error::IndexOutOfBounds) and `dst` is not written.
    ///
    /// ```
    /// use cpugpu::{Device, ScatterPolicy};
    /// let dev = Device::auto();
    /// let rows = dev.upload(&[1i32, 2, 3, 4], &[4, 1])?;
    /// let slots = dev.upload(&[2i64, 0, -1, 2], &[4])?;
    /// let mut cache = dev.alloc::<i32>(&[3, 1])?;
    /// dev.scatter_rows_into(rows.view(), slots.view(), cache.view_mut(), ScatterPolicy::NegativeSkip)?;
    /// assert_eq!(cache.to_vec()?, [2, 0, 4]); // slot 2 written twice: the last write wins
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn scatter_rows_into<T: Element, I: Index>(
        &self,
        src: DeviceView<'_, T>,
        indices: DeviceView<'_, I>,
        dst: DeviceViewMut<'_, T>,
        policy: ScatterPolicy,
    ) -> Result<()> {
        width_of::<T>();
        let expected = dst.shape().with_rows(Op::ScatterRows, indices.len())?;
        check_shape(Op::ScatterRows, "src's shape", expected, src.shape())?;
        let dst_shape = dst.shape();
        match self.kind() {
            BackendKind::Host => {
                let op = crate::Op::ScatterRows;
                let (s, i, d) = (src.on_host(op)?, indices.on_host(op)?, dst.into_host(op)?);
                self.host_run(std::mem::size_of_val(s), || {
                    host::scatter_rows_into(s, i, d, dst_shape.dims(), policy)
                })
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                let _ = dst_shape;
                launch::scatter_rows_into(self, src, indices, dst, policy)
            }
        }
    }
}
