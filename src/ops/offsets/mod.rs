//! Prefix-sum offsets: n lengths to n + 1 offsets starting at 0.

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use crate::device::{BackendKind, Device};
use crate::element::{Index, Offset};
use crate::error::Result;
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut};
use crate::shape::Shape;

impl Device {
    /// `offsets[0] = 0`, `offsets[i + 1] = offsets[i] + lengths[i]`, into `offsets` of exactly
    /// `lengths.len() + 1` elements. A negative length is [`Error::NegativeLength`](crate::Error::NegativeLength); an offset
    /// past the offset type's maximum is [`Error::OffsetOverflow`](crate::Error::OffsetOverflow); either leaves `offsets`
    /// unwritten.
    ///
    /// ```
    /// use cpugpu::{Device, DeviceView, DeviceViewMut, Error};
    /// let dev = Device::host(); // host slices as views: the host backend
    /// let lens = [3i32, 0, 2];
    /// let mut offs = [0i64; 4];
    /// dev.prefix_sum_offsets_into(DeviceView::host_vector(&lens), DeviceViewMut::host_vector(&mut offs))?;
    /// assert_eq!(offs, [0, 3, 3, 5]);
    ///
    /// let too_long = [i32::MAX, 1];
    /// let mut offs32 = [0i32; 3];
    /// let err = dev
    ///     .prefix_sum_offsets_into(DeviceView::host_vector(&too_long), DeviceViewMut::host_vector(&mut offs32))
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::OffsetOverflow { position: 1, .. }));
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn prefix_sum_offsets_into<L: Index, O: Offset>(
        &self,
        lengths: DeviceView<'_, L>,
        offsets: DeviceViewMut<'_, O>,
    ) -> Result<()> {
        match self.kind() {
            BackendKind::Host => {
                let l = lengths.on_host(crate::Op::PrefixSumOffsets)?;
                let o = offsets.into_host(crate::Op::PrefixSumOffsets)?;
                self.host_run(std::mem::size_of_val(l), || {
                    host::prefix_sum_offsets_into(l, o)
                })
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => launch::prefix_sum_offsets_into(self, lengths, offsets),
        }
    }

    /// Allocating form of [`Device::prefix_sum_offsets_into`]: a new buffer of `n + 1` offsets.
    pub fn prefix_sum_offsets<L: Index, O: Offset>(
        &self,
        lengths: DeviceView<'_, L>,
    ) -> Result<DeviceBuffer<O>> {
        match self.kind() {
            // Validates before it allocates.
            BackendKind::Host => {
                let l = lengths.on_host(crate::Op::PrefixSumOffsets)?;
                let data =
                    self.host_run(std::mem::size_of_val(l), || host::prefix_sum_offsets(l))?;
                let shape = Shape::vector(data.len());
                Ok(DeviceBuffer::from_host_vec(self, data, shape))
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                let n = lengths
                    .len()
                    .checked_add(1)
                    .ok_or(crate::Error::SizeOverflow {
                        op: crate::Op::PrefixSumOffsets,
                        what: "lengths.len() + 1",
                    })?;
                // Written whole by the kernels unless a length is bad (reported at the next
                // synchronisation).
                let mut out = DeviceBuffer::zeroed(self, Shape::vector(n))?;
                launch::prefix_sum_offsets_into(self, lengths, out.view_mut())?;
                Ok(out)
            }
        }
    }
}
