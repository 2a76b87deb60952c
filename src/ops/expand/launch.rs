//! Segment expansion on CUDA: `expand_scan` (one block: validate, offsets), `expand_write`, then
//! `expand_capture`.

use super::{check_args, SegmentBounds};
use crate::cuda::{CodedReport, DevAlloc};
use crate::element::Index;
use crate::error::{Error, Op, Result};
use crate::kernels::abi::CpugpuExpandParams;
use crate::kernels::launch::{self, i64_of};
use crate::kernels::list;
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{finish_coded, is_i64, ptr, ptr_mut, signed};
use crate::Device;

const OP: Op = Op::ExpandSegments;

/// The coded error of `expand.cu` as an [`Error`]; `ctx` is (offsets form, total, the position
/// type's maximum).
fn decode(r: &CodedReport) -> Error {
    let [is_offsets, total, limit] = r.ctx;
    let position = usize::try_from(r.position).unwrap_or(usize::MAX);
    let v0 = signed(r.values[0]);
    match (r.code, is_offsets != 0) {
        (1, false) => Error::NegativeLength {
            op: r.op,
            position,
            value: v0,
        },
        (1, true) => Error::OffsetOutOfRange {
            op: r.op,
            position,
            value: v0,
            len: total as usize,
        },
        (2, _) => Error::OffsetsNotMonotonic {
            op: r.op,
            position,
            previous: signed(r.values[1]),
            value: v0,
        },
        (3, offsets) => Error::ValueOverflow {
            op: r.op,
            position: position - usize::from(offsets),
            limit,
        },
        _ => Error::LengthMismatch {
            op: r.op,
            what: "the segments' total",
            expected: total as usize,
            actual: usize::try_from(r.values[0]).unwrap_or(usize::MAX),
        },
    }
}

/// Segment expansion on CUDA: three launches, no host synchronisation.
pub(crate) fn expand_segments_into<L: Index, S: Index, P: Index>(
    dev: &Device,
    bounds: SegmentBounds<DeviceView<'_, L>>,
    starts: Option<DeviceView<'_, P>>,
    seg_ids: DeviceViewMut<'_, S>,
    positions: DeviceViewMut<'_, P>,
) -> Result<()> {
    let q = dev.cuda_queue(OP)?;
    let ord = q.ctx.ordinal;
    let b = *bounds.inner();
    let n = check_args::<S>(
        b.len(),
        bounds.is_offsets(),
        starts.map(|s| s.len()),
        seg_ids.len(),
        positions.len(),
    )?;
    let total = seg_ids.len();
    let bp = b.cuda_or(OP, "the counts or offsets", ord)?;
    let sp = starts
        .map(|s| s.cuda_or(OP, "starts", ord))
        .transpose()?
        .unwrap_or(0);
    let segp = seg_ids.cuda_or(OP, "seg_ids", ord)?;
    let posp = positions.cuda_or(OP, "positions", ord)?;
    let _bound = q.ctx.bind()?;
    let joined = q.join(
        OP,
        &[
            b.cuda_queue(),
            starts.and_then(|s| s.cuda_queue()),
            seg_ids.cuda_queue(),
            positions.cuda_queue(),
        ],
    )?;
    let _issue = q.issue();
    let scratch = DevAlloc::new(OP, &q.stream, (n + 1) * 8)?;
    let p = CpugpuExpandParams {
        bounds: ptr(bp),
        starts: ptr(sp),
        seg_ids: ptr_mut(segp),
        positions: ptr_mut(posp),
        offs: ptr_mut(scratch.ptr),
        error: ptr_mut(q.error_word(OP)?),
        report: std::ptr::null_mut(),
        n: i64_of(n),
        total: i64_of(total),
        is_offsets: i64::from(bounds.is_offsets()),
        bounds_i64: i64::from(is_i64::<L>()),
        seg_i64: i64::from(is_i64::<S>()),
        pos_i64: i64::from(is_i64::<P>()),
        pos_limit: P::MAX,
    };
    // SAFETY (both launches): expand_scan reads the n counts (n + 1 offsets) and n starts the
    // views hold, writes the n + 1 words of `scratch` and updates the error word; expand_write
    // reads the scratch and writes `total` ids and positions (both views hold `total`, checked)
    // only when the error word is clear.
    let issued = unsafe {
        q.launch(OP, list::expand_scan, launch::one_block(), &p)
            .and_then(|()| q.launch(OP, list::expand_write, launch::flat_launch(total, 4), &p))
    };
    let ctx = [i64::from(bounds.is_offsets()), i64_of(total), P::MAX];
    let done = finish_coded(
        q,
        joined,
        issued,
        OP,
        decode,
        ctx,
        list::expand_capture,
        p,
        |p, error, report| {
            p.error = error;
            p.report = report;
        },
    );
    drop(scratch); // freed in stream order, after the capture that may read it
    done
}
