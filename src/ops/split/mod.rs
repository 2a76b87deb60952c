//! Split: one buffer plus offsets to zero-copy segment views.

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element, Offset};
use crate::error::Result;
use crate::memory::{DeviceView, DeviceViewMut};

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
        // Views are descriptors on the host whatever the backend: no kernel runs. `out` is
        // cleared only once nothing can fail.
        match self.kind() {
            BackendKind::Host => {
                let flat = data.on_host(crate::Op::Split)?;
                out.clear();
                out.extend(
                    offsets
                        .iter()
                        .zip(&offsets[1..])
                        .map(|(&s, &e)| DeviceView::host_vector(host::segment(flat, s, e))),
                );
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                let flat = data.reshape(&[data.len()])?;
                let at = |o: O| usize::try_from(o.to_i64()).unwrap_or(0); // validated
                out.clear();
                for w in offsets.windows(2) {
                    out.push(flat.rows(at(w[0])..at(w[1]))?); // validated: cannot fail
                }
            }
        }
        Ok(())
    }

    /// Split's copying form: segment `i` of `data` (read as flat, cut at `offsets`, validated
    /// as by [`Device::split_into`]) is copied into `outs[i]`, which must have exactly its
    /// length. On CUDA one batched-copy launch moves every segment.
    ///
    /// ```
    /// use cpugpu::Device;
    /// let dev = Device::auto();
    /// let flat = dev.upload(&[1u8, 2, 3, 4, 5], &[5])?;
    /// let (mut a, mut b) = (dev.alloc::<u8>(&[2])?, dev.alloc::<u8>(&[3])?);
    /// dev.split_copy_into(flat.view(), &[0i32, 2, 5], &mut [a.view_mut(), b.view_mut()])?;
    /// assert_eq!((a.to_vec()?, b.to_vec()?), (vec![1, 2], vec![3, 4, 5]));
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn split_copy_into<T: Element, O: Offset>(
        &self,
        data: DeviceView<'_, T>,
        offsets: &[O],
        outs: &mut [DeviceViewMut<'_, T>],
    ) -> Result<()> {
        width_of::<T>();
        match self.kind() {
            BackendKind::Host => {
                let flat = data.on_host(crate::Op::Split)?;
                host::validate(offsets, flat.len())?;
                check_split_outs(offsets, outs.iter().map(|o| o.len()), outs.len())?;
                // Every output is checked to be host memory before the first is written.
                let dsts = outs
                    .iter_mut()
                    .map(|o| o.reborrow().into_host(crate::Op::Split))
                    .collect::<Result<Vec<_>>>()?;
                self.host_run(std::mem::size_of_val(flat), || {
                    for (w, d) in offsets.windows(2).zip(dsts) {
                        crate::ops::par_copy(d, host::segment(flat, w[0], w[1]));
                    }
                });
                Ok(())
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => launch::split_copy_into(self, data, offsets, outs),
        }
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

/// `outs` must have one view per segment, each of its segment's length (offsets validated).
pub(crate) fn check_split_outs<O: Offset>(
    offsets: &[O],
    out_lens: impl Iterator<Item = usize>,
    n_outs: usize,
) -> Result<()> {
    let op = crate::Op::Split;
    let segments = offsets.len().saturating_sub(1);
    if n_outs != segments {
        return Err(crate::Error::LengthMismatch {
            op,
            what: "outs.len()",
            expected: segments,
            actual: n_outs,
        });
    }
    for (w, len) in offsets.windows(2).zip(out_lens) {
        let expected = usize::try_from(w[1].to_i64() - w[0].to_i64()).unwrap_or(0);
        if len != expected {
            return Err(crate::Error::LengthMismatch {
                op,
                what: "outs[i].len()",
                expected,
                actual: len,
            });
        }
    }
    Ok(())
}
