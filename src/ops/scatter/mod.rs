//! Scatter rows: `dst[indices[i], ..] = src[i, ..]`, last occurrence wins.

pub(crate) mod host;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element, Index};
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::ScatterPolicy;

impl Device {
    /// Scatters the rows of `src` into `dst` at `indices`; `src`'s shape must be `dst`'s with
    /// axis 0 set to `indices.len()`. When an index repeats, the last occurrence wins, on every
    /// backend. Under [`ScatterPolicy::Checked`] the first out-of-range index is an
    /// [`Error::IndexOutOfBounds`] and `dst` is not written.
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
        if src.shape() != expected {
            return Err(Error::ShapeMismatch {
                op: Op::ScatterRows,
                what: "src's shape",
                expected: Box::new(expected),
                actual: Box::new(src.shape()),
            });
        }
        let dst_shape = dst.shape();
        match self.kind() {
            BackendKind::Host => host::scatter_rows_into(
                src.on_host(),
                indices.on_host(),
                dst.into_host(),
                dst_shape.dims(),
                policy,
            ),
        }
    }
}
