//! Segment expansion (CSR to COO): a segment id and a position for every element.

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use crate::device::{BackendKind, Device};
use crate::element::Index;
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut};
use crate::shape::Shape;

const OP: Op = Op::ExpandSegments;

/// How segments are described: `n` counts, or `n + 1` offsets.
///
/// The same enum carries host slices (`SegmentBounds<&[L]>`, for [`crate::host`]) and device
/// views (`SegmentBounds<DeviceView<'_, L>>`, for [`Device`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentBounds<X> {
    /// `n` non-negative per-segment counts (vLLM's `num_scheduled_tokens`).
    Counts(X),
    /// `n + 1` non-decreasing offsets (`query_start_loc`). `offsets[0]` may be above 0 (a slice
    /// of a larger CSR array): element `i` is flat position `offsets[0] + i`.
    Offsets(X),
}

impl<X> SegmentBounds<X> {
    /// The counts or offsets.
    pub fn inner(&self) -> &X {
        match self {
            SegmentBounds::Counts(x) | SegmentBounds::Offsets(x) => x,
        }
    }

    /// True for the offsets form.
    pub fn is_offsets(&self) -> bool {
        matches!(self, SegmentBounds::Offsets(_))
    }
}

/// The argument checks every backend makes; returns the segment count.
pub(crate) fn check_args<S: Index>(
    bounds_len: usize,
    is_offsets: bool,
    starts_len: Option<usize>,
    seg_len: usize,
    pos_len: usize,
) -> Result<usize> {
    let n = if is_offsets {
        if bounds_len == 0 {
            return Err(Error::LengthMismatch {
                op: OP,
                what: "offsets.len() (n + 1 offsets: at least one)",
                expected: 1,
                actual: 0,
            });
        }
        bounds_len - 1
    } else {
        bounds_len
    };
    if let Some(len) = starts_len.filter(|&l| l != n) {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "starts.len()",
            expected: n,
            actual: len,
        });
    }
    if pos_len != seg_len {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "positions.len()",
            expected: seg_len,
            actual: pos_len,
        });
    }
    if n > 0 && (n - 1) as u64 > S::MAX as u64 {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "the segment count",
            value: n as i128,
            reason: "the last segment id does not fit the segment-id type",
        });
    }
    Ok(n)
}

impl Device {
    /// Segment expansion (CSR to COO, `np.repeat` plus a per-segment arange): for every element
    /// `i` of the outputs, `seg_ids[i]` is its segment `s` and `positions[i]` is
    /// `starts[s] + (i - offsets[s])` (`starts` `None`: 0). The segments are `n` counts or `n + 1`
    /// offsets ([`SegmentBounds`]) and must cover exactly the outputs' length.
    ///
    /// This is vLLM's request index and position of every token: counts are the scheduled
    /// tokens, starts the tokens already computed.
    ///
    /// Errors, the first a left-to-right walk over the segments meets (on CUDA the data errors
    /// come back from [`Device::synchronize`], and nothing is written):
    /// - [`Error::NegativeLength`] for a negative count;
    /// - [`Error::OffsetOutOfRange`] for a negative `offsets[0]`, [`Error::OffsetsNotMonotonic`]
    ///   for a decreasing offset;
    /// - [`Error::ValueOverflow`] when a segment's last position passes the position type's
    ///   maximum;
    /// - [`Error::LengthMismatch`] (`what: "the segments' total"`) when the segments do not cover
    ///   exactly the outputs; argument errors (lengths, a segment count past the id type) at once.
    ///
    /// ```
    /// use cpugpu::{Device, SegmentBounds};
    /// let dev = Device::auto();
    /// let scheduled = dev.upload(&[3i32, 1, 2], &[3])?;
    /// let computed = dev.upload(&[10i64, 0, 7], &[3])?;
    /// let (req, pos) = dev.expand_segments::<i32, i32, i64>(
    ///     SegmentBounds::Counts(scheduled.view()),
    ///     Some(computed.view()),
    ///     6,
    /// )?;
    /// assert_eq!(req.to_vec()?, [0, 0, 0, 1, 2, 2]);
    /// assert_eq!(pos.to_vec()?, [10, 11, 12, 0, 7, 8]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn expand_segments_into<L: Index, S: Index, P: Index>(
        &self,
        bounds: SegmentBounds<DeviceView<'_, L>>,
        starts: Option<DeviceView<'_, P>>,
        seg_ids: DeviceViewMut<'_, S>,
        positions: DeviceViewMut<'_, P>,
    ) -> Result<()> {
        check_args::<S>(
            bounds.inner().len(),
            bounds.is_offsets(),
            starts.map(|s| s.len()),
            seg_ids.len(),
            positions.len(),
        )?;
        match self.kind() {
            BackendKind::Host => {
                let b = bounds.inner().on_host(OP)?;
                let b = if bounds.is_offsets() {
                    SegmentBounds::Offsets(b)
                } else {
                    SegmentBounds::Counts(b)
                };
                let starts = starts.map(|s| s.on_host(OP)).transpose()?;
                let (seg, pos) = (seg_ids.into_host(OP)?, positions.into_host(OP)?);
                let bytes = std::mem::size_of_val(seg) + std::mem::size_of_val(pos);
                self.host_run(bytes, || host::expand_segments_into(b, starts, seg, pos))
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                launch::expand_segments_into(self, bounds, starts, seg_ids, positions)
            }
        }
    }

    /// Allocating form of [`Device::expand_segments_into`]: new buffers of `total` segment ids
    /// and positions (the segments must cover exactly `total` elements; on CUDA the count is
    /// not read back, so give the total the host already knows, such as `num_tokens`).
    #[allow(clippy::type_complexity)]
    pub fn expand_segments<L: Index, S: Index, P: Index>(
        &self,
        bounds: SegmentBounds<DeviceView<'_, L>>,
        starts: Option<DeviceView<'_, P>>,
        total: usize,
    ) -> Result<(DeviceBuffer<S>, DeviceBuffer<P>)> {
        check_args::<S>(
            bounds.inner().len(),
            bounds.is_offsets(),
            starts.map(|s| s.len()),
            total,
            total,
        )?;
        let shape = Shape::vector(total);
        let (mut seg, mut pos) = match self.kind() {
            BackendKind::Host => (
                DeviceBuffer::zeroed(self, shape)?,
                DeviceBuffer::zeroed(self, shape)?,
            ),
            // Written whole by the kernel unless the segments are bad (reported at the next
            // synchronisation).
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => (
                DeviceBuffer::uninit(self, shape)?,
                DeviceBuffer::uninit(self, shape)?,
            ),
        };
        self.expand_segments_into(bounds, starts, seg.view_mut(), pos.view_mut())?;
        Ok((seg, pos))
    }
}
