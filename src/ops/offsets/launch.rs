//! Prefix-sum offsets on CUDA: one launch up to one tile (4,096 lengths), reduce / scan-tiles /
//! downsweep beyond, then `capture_error`.

use crate::cuda::{CheckKind, DevAlloc};
use crate::element::{Index, Offset};
use crate::error::{Error, Op, Result};
use crate::kernels::abi::CpugpuOffsetsParams;
use crate::kernels::launch::{self, i64_of, ScanPlan};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{finish_checked, is_i64, ptr, ptr_mut};
use crate::Device;

/// Prefix-sum offsets on CUDA: one launch up to one tile (4,096 lengths), reduce / scan-tiles /
/// downsweep beyond, then `capture_error`.
pub(crate) fn prefix_sum_offsets_into<L: Index, O: Offset>(
    dev: &Device,
    lengths: DeviceView<'_, L>,
    offsets: DeviceViewMut<'_, O>,
) -> Result<()> {
    let op = Op::PrefixSumOffsets;
    let q = dev.cuda_queue(op)?;
    let ord = q.ctx.ordinal;
    let n = lengths.len();
    if offsets.len() != n.saturating_add(1) {
        return Err(Error::LengthMismatch {
            op,
            what: "offsets.len()",
            expected: n.saturating_add(1),
            actual: offsets.len(),
        });
    }
    let lp = lengths.cuda_or(op, "lengths", ord)?;
    let opp = offsets.cuda_or(op, "offsets", ord)?;
    let kernels = launch::offsets_kernels(is_i64::<L>(), is_i64::<O>());
    let plan = launch::scan_plan(n);
    let _bound = q.ctx.bind()?;
    let joined = q.join(op, &[lengths.cuda_queue(), offsets.cuda_queue()])?;
    let _issue = q.issue();
    let tiles = match plan {
        ScanPlan::Single(_) => 0,
        ScanPlan::Multi { tiles, .. } => tiles,
    };
    let tile_sums = match plan {
        ScanPlan::Single(_) => None,
        ScanPlan::Multi { .. } => {
            Some(DevAlloc::new(op, &q.stream, (tiles + 2).saturating_mul(8))?)
        }
    };
    let p = CpugpuOffsetsParams {
        lengths: ptr(lp),
        offsets: ptr_mut(opp),
        tile_sums: tile_sums
            .as_ref()
            .map_or(std::ptr::null_mut(), |t| ptr_mut(t.ptr)),
        error: ptr_mut(q.error_word(op)?),
        n: i64_of(n),
        limit: O::MAX,
        tiles: i64_of(tiles),
    };
    // SAFETY (all launches): the kernels read lengths[0..n], write offsets[0..=n] (n + 1
    // elements, checked above) only when error-free, use tile_sums[0..tiles + 2] (allocated
    // above for the multi-tile plan; the single-tile kernel never touches it) and update the
    // error word. Shared memory is sized by scan_plan (34,816 bytes, under the 48 KiB default).
    let issued = match plan {
        ScanPlan::Single(cfg) => unsafe { q.launch(op, kernels.single, cfg, &p) },
        // SAFETY: as above, for the three passes in stream order.
        ScanPlan::Multi {
            reduce,
            scan_tiles,
            downsweep,
            ..
        } => unsafe {
            q.launch(op, kernels.reduce, reduce, &p)
                .and_then(|()| q.launch(op, kernels.scan_tiles, scan_tiles, &p))
                .and_then(|()| q.launch(op, kernels.downsweep, downsweep, &p))
        },
    };
    drop(tile_sums);
    let kind = CheckKind::Offsets {
        limit: O::MAX,
        signed32: !is_i64::<L>(),
    };
    finish_checked(q, joined, issued, op, kind, lp, n, std::mem::size_of::<L>())
}
