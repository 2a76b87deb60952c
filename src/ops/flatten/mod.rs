//! Flatten: ragged arrays to one contiguous buffer plus n + 1 offsets.

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element, Offset};
use crate::error::Result;
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut};
use crate::shape::Shape;

/// The checks a kernel backend makes before a flatten, in the host path's order: the offsets'
/// length (`n + 1`), each running offset against `O::MAX`, then the destination's length (the
/// total). Returns the n + 1 element offsets.
#[cfg(cpugpu_cuda)]
pub(crate) fn check_args<O: Offset>(
    lens: impl ExactSizeIterator<Item = usize>,
    offsets_len: usize,
    dst_len: usize,
) -> Result<Vec<i64>> {
    let op = crate::Op::Flatten;
    let n_offsets = lens
        .len()
        .checked_add(1)
        .ok_or(crate::Error::SizeOverflow {
            op,
            what: "arrays.len() + 1",
        })?;
    if offsets_len != n_offsets {
        return Err(crate::Error::LengthMismatch {
            op,
            what: "offsets.len()",
            expected: n_offsets,
            actual: offsets_len,
        });
    }
    let (elem_offsets, total) = element_offsets::<O>(lens)?;
    if dst_len != total {
        return Err(crate::Error::LengthMismatch {
            op,
            what: "dst.len()",
            expected: total,
            actual: dst_len,
        });
    }
    Ok(elem_offsets)
}

/// The n + 1 element offsets of arrays of lengths `lens`, and their total, or the first position
/// whose offset exceeds `O::MAX`.
#[cfg(cpugpu_cuda)]
fn element_offsets<O: Offset>(lens: impl Iterator<Item = usize>) -> Result<(Vec<i64>, usize)> {
    let offsets = crate::kernels::launch::flat_offsets(lens, O::MAX, 1).map_err(|position| {
        crate::Error::OffsetOverflow {
            op: crate::Op::Flatten,
            position,
            limit: O::MAX,
        }
    })?;
    let total = offsets
        .last()
        .and_then(|&t| usize::try_from(t).ok())
        .unwrap_or(0);
    Ok((offsets, total))
}

/// The host slices behind host-backend views, or [`Error::WrongDevice`](crate::Error::WrongDevice).
fn host_parts<'a, T: Element>(arrays: &[DeviceView<'a, T>]) -> Result<Vec<&'a [T]>> {
    arrays
        .iter()
        .map(|a| a.on_host(crate::Op::Flatten))
        .collect()
}

impl Device {
    /// Concatenates `arrays` (each read as flat) into `dst` (exactly their total length) and
    /// writes their `arrays.len() + 1` offsets into `offsets`. An empty list writes `[0]`.
    ///
    /// ```
    /// use cpugpu::{Device, DeviceView};
    /// let dev = Device::host(); // host slices as views: the host backend
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
                let parts = host_parts(arrays)?;
                let d = dst.into_host(crate::Op::Flatten)?;
                let o = offsets.into_host(crate::Op::Flatten)?;
                self.host_run(std::mem::size_of_val(d), || {
                    host::flatten_into(&parts, d, o)
                })
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => launch::flatten_into(self, arrays, dst, offsets),
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
                let parts = host_parts(arrays)?;
                let bytes = parts.iter().map(|p| std::mem::size_of_val(*p)).sum();
                let (data, offsets) = self.host_run(bytes, || host::flatten(&parts))?;
                let (n, m) = (data.len(), offsets.len());
                Ok((
                    DeviceBuffer::from_host_vec(self, data, Shape::vector(n)),
                    DeviceBuffer::from_host_vec(self, offsets, Shape::vector(m)),
                ))
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                let op = crate::Op::Flatten;
                let n = arrays
                    .len()
                    .checked_add(1)
                    .ok_or(crate::Error::SizeOverflow {
                        op,
                        what: "arrays.len() + 1",
                    })?;
                // Offsets past O::MAX are refused before anything is allocated (a total that does
                // not fit the offset type is no buffer to make).
                let (_, total) = element_offsets::<O>(arrays.iter().map(|a| a.len()))?;
                // The kernel writes all of both (flatten has no data-dependent errors).
                let mut data = DeviceBuffer::uninit(self, Shape::vector(total))?;
                let mut offsets = DeviceBuffer::uninit(self, Shape::vector(n))?;
                launch::flatten_into(self, arrays, data.view_mut(), offsets.view_mut())?;
                Ok((data, offsets))
            }
        }
    }
}
