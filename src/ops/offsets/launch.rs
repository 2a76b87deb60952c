//! Prefix-sum offsets on CUDA: one launch up to one tile (4,096 lengths); beyond, the check pass
//! and the single-pass look-back scan. The last kernel writes the read-out slot either way.

use crate::cuda::CheckKind;
use crate::element::{Index, Offset};
use crate::error::{Error, Op, Result};
use crate::kernels::abi::CpugpuOffsetsParams;
use crate::kernels::launch::{self, i64_of, ScanPlan};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{finish_checked, is_i64, ptr, ptr_mut};
use crate::Device;

/// Prefix-sum offsets on CUDA: `offsets_single` up to one tile (4,096 lengths), `offsets_check`
/// and `offsets_lookback` beyond.
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
    let plan = launch::scan_plan(n, q.device_info());
    let _bound = q.ctx.bind()?;
    let joined = q.join(op, &[lengths.cuda_queue(), offsets.cuda_queue()])?;
    let _issue = q.issue();
    let slot = q.capture_slot();
    let mut p = CpugpuOffsetsParams {
        lengths: ptr(lp),
        offsets: ptr_mut(opp),
        tile_state: std::ptr::null_mut(),
        error: ptr_mut(q.error_word(op)?),
        ctl: ptr_mut(q.ctl()),
        capture: ptr_mut(slot.ptr),
        n: i64_of(n),
        limit: O::MAX,
        tiles: 1,
        epoch: 0,
    };
    let issued = match plan {
        // SAFETY: one block reads lengths[0..n], writes offsets[0..=n] (n + 1 elements, checked
        // above) only when error-free, updates the error word and writes the read-out slot (two
        // u64 of the queue's mapped ring that no pending entry uses) once, from one thread.
        // Shared memory is sized by scan_plan (34,816 bytes, under the 48 KiB default).
        ScanPlan::Single(cfg) => unsafe { q.launch(op, kernels.single, cfg, &p) },
        ScanPlan::LookBack {
            tiles,
            check,
            lookback,
        } => (|| -> Result<()> {
            let (state, epoch) = q.tile_states(op, tiles)?;
            p.tile_state = ptr_mut(state);
            p.tiles = i64_of(tiles);
            p.epoch = epoch;
            // SAFETY: reads lengths[0..n]; updates the error word and ctl[SUM] (the queue's,
            // 0 between kernels) atomically.
            unsafe { q.launch(op, kernels.check, check, &p)? };
            // SAFETY: reads lengths[0..n]; writes offsets[0..=n] (n + 1 elements, checked
            // above) only when the check found no error; uses tile_state[0..3 * tiles] (the
            // queue's array holds at least tiles entries; entries of other epochs are never
            // taken for this launch's) and the queue's control words, which its last block
            // returns to 0; writes the read-out slot once, from one thread. Shared memory as
            // above.
            unsafe { q.launch(op, kernels.lookback, lookback, &p) }
        })(),
    };
    let kind = CheckKind::Offsets {
        limit: O::MAX,
        signed32: !is_i64::<L>(),
    };
    finish_checked(q, joined, issued, op, kind, slot)
}
