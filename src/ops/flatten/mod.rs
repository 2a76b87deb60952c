//! Flatten: ragged arrays to one contiguous buffer plus n + 1 offsets.

pub(crate) mod host;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element, Offset};
use crate::error::Result;
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut};
use crate::shape::Shape;

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
        width_of::<T>();
        match self.kind() {
            // Validates before it allocates, and writes the output once.
            BackendKind::Host => {
                let parts: Vec<&[T]> = arrays.iter().map(|a| a.on_host()).collect();
                let (data, offsets) = host::flatten(&parts)?;
                let (n, m) = (data.len(), offsets.len());
                Ok((
                    DeviceBuffer::from_host_vec(self, data, Shape::vector(n)),
                    DeviceBuffer::from_host_vec(self, offsets, Shape::vector(m)),
                ))
            }
        }
    }
}
