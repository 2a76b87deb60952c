//! Flatten: ragged arrays to one contiguous buffer plus n + 1 offsets.

pub(crate) mod host;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element, Offset};
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut};
use crate::shape::Shape;

/// The total element count of `arrays`.
fn total_len<T: Element>(arrays: &[DeviceView<'_, T>]) -> Result<usize> {
    arrays
        .iter()
        .try_fold(0usize, |acc, a| acc.checked_add(a.len()))
        .ok_or(Error::SizeOverflow {
            op: Op::Flatten,
            what: "the total length",
        })
}

impl Device {
    /// Concatenates `arrays` (each read as flat) into `dst` (exactly their total length) and
    /// writes their `arrays.len() + 1` offsets into `offsets`. An empty list writes `[0]`.
    ///
    /// ```
    /// use cpugpu::{Device, DeviceView};
    /// let dev = Device::auto();
    /// let (a, b) = ([1u16, 2, 3], [4u16]);
    /// let parts = [DeviceView::host_vector(&a), DeviceView::host_vector(&b)];
    /// let (flat, offsets) = dev.flatten::<u16, i32>(&parts)?;
    /// assert_eq!(flat.to_vec()?, [1, 2, 3, 4]);
    /// assert_eq!(offsets.to_vec()?, [0, 3, 4]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn flatten_into<T: Element, O: Offset>(
        &self,
        arrays: &[DeviceView<'_, T>],
        dst: DeviceViewMut<'_, T>,
        offsets: DeviceViewMut<'_, O>,
    ) -> Result<()> {
        width_of::<T>();
        match self.kind() {
            BackendKind::Host => {
                let parts: Vec<&[T]> = arrays.iter().map(|a| a.on_host()).collect();
                host::flatten_into(&parts, dst.into_host(), offsets.into_host())
            }
        }
    }

    /// Allocating form of [`Device::flatten_into`]: the buffer and its offsets.
    pub fn flatten<T: Element, O: Offset>(
        &self,
        arrays: &[DeviceView<'_, T>],
    ) -> Result<(DeviceBuffer<T>, DeviceBuffer<O>)> {
        let total = total_len(arrays)?;
        let mut data = DeviceBuffer::zeroed(self, Shape::vector(total))?;
        let mut offsets = DeviceBuffer::zeroed(self, Shape::vector(arrays.len() + 1))?;
        self.flatten_into(arrays, data.view_mut(), offsets.view_mut())?;
        Ok((data, offsets))
    }
}
