//! Split: one buffer plus offsets to zero-copy segment views.

pub(crate) mod host;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element, Offset};
use crate::error::Result;
use crate::memory::DeviceView;

impl Device {
    /// Splits `data` (read as flat) at `offsets` into zero-copy views, pushed into `out` after
    /// clearing it (`out` allocates only when its capacity is too small). Offsets must be non-decreasing, start at 0 or more and end within the
    /// buffer; the first that is not is an error and `out` is left untouched.
    ///
    /// ```
    /// use cpugpu::{Device, DeviceView};
    /// let dev = Device::auto();
    /// let tokens = dev.upload(&[5u32, 6, 7, 8, 9], &[5])?;
    /// let mut parts = Vec::new();
    /// dev.split_into(tokens.view(), &[0i64, 2, 2, 5], &mut parts)?;
    /// let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    /// assert_eq!(lens, [2, 0, 3]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn split_into<'a, T: Element, O: Offset>(
        &self,
        data: DeviceView<'a, T>,
        offsets: &[O],
        out: &mut Vec<DeviceView<'a, T>>,
    ) -> Result<()> {
        width_of::<T>();
        host::validate(offsets, data.len())?;
        out.clear();
        // Views are descriptors on the host whatever the backend: no kernel runs.
        match self.kind() {
            BackendKind::Host => {
                let flat = data.on_host();
                out.extend(
                    offsets
                        .iter()
                        .zip(&offsets[1..])
                        .map(|(&s, &e)| DeviceView::host_vector(host::segment(flat, s, e))),
                );
            }
        }
        Ok(())
    }

    /// Allocating form of [`Device::split_into`].
    pub fn split<'a, T: Element, O: Offset>(
        &self,
        data: DeviceView<'a, T>,
        offsets: &[O],
    ) -> Result<Vec<DeviceView<'a, T>>> {
        let mut out = Vec::new();
        self.split_into(data, offsets, &mut out)?;
        Ok(out)
    }
}
