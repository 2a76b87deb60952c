//! Scatter on CUDA, with the queue's persistent winners array for the last-wins rule. Batch sizes
//! (at most [`launch::SMALL_BATCH`] indices): one `scatter_rows_w<V>` launch that checks every
//! index in every block, records the winners, moves, returns the winners' entries to -1 and
//! writes the read-out slot. Larger: `scatter_winners` (validation and winners), then
//! `scatter_rows_w<V>` (each winner moves its row, nothing when validation failed, and returns
//! its entry; the last block writes the read-out slot).

use crate::cuda::CheckKind;
use crate::element::{width_of, Element, Index};
use crate::error::{Op, Result};
use crate::kernels::abi::{CpugpuScatterRowsParams, CpugpuScatterWinnersParams};
use crate::kernels::launch::{self, i64_of, LaunchConfig};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{finish_checked, is_i64, ptr, ptr_mut, validate_indices};
use crate::ops::scatter::{check_args, ScatterArgs};
use crate::ops::ScatterPolicy;
use crate::Device;

/// Scatter on CUDA. The source's shape was checked by the caller.
pub(crate) fn scatter_rows_into<T: Element, I: Index>(
    dev: &Device,
    src: DeviceView<'_, T>,
    indices: DeviceView<'_, I>,
    dst: DeviceViewMut<'_, T>,
    policy: ScatterPolicy,
) -> Result<()> {
    let op = Op::ScatterRows;
    let w = width_of::<T>();
    let q = dev.cuda_queue(op)?;
    let ord = q.ctx.ordinal;
    let dst_shape = dst.shape();
    let ScatterArgs { rows, row_len } =
        check_args(src.len(), indices.len(), dst.len(), dst_shape.dims())?;
    let sp = src.cuda_or(op, "src", ord)?;
    let ip = indices.cuda_or(op, "indices", ord)?;
    let dp = dst.cuda_or(op, "dst", ord)?;
    let n = indices.len();
    if n == 0 {
        return Ok(());
    }
    let allow_negative = matches!(policy, ScatterPolicy::NegativeSkip);
    let info = q.device_info();
    let row_bytes = row_len * w;
    let cp = launch::copy_policy(w, row_bytes, &[sp as usize, dp as usize], info);
    let v = cp.access_width;
    let units = row_bytes / v;
    // Rows of zero elements move nothing: the indices are still checked, by one block, and no
    // winners array is needed (there may be more such rows than memory could count).
    let moves = units > 0;
    let small = launch::is_small_batch(n);
    let rl = launch::rows_launch(n, units, cp.items_per_thread, small, info);
    let cfg = if moves {
        rl.config
    } else {
        LaunchConfig {
            grid: 1,
            ..rl.config
        }
    };
    let _bound = q.ctx.bind()?;
    let joined = q.join(
        op,
        &[src.cuda_queue(), indices.cuda_queue(), dst.cuda_queue()],
    )?;
    let _issue = q.issue();
    let error = q.error_word(op)?;
    let ctl = q.ctl();
    let slot = q.capture_slot();
    let issued = (|| -> Result<()> {
        let winners = if moves { q.winners(op, rows)? } else { 0 };
        if !small {
            if moves {
                let pw = CpugpuScatterWinnersParams {
                    indices: ptr(ip),
                    winners: ptr_mut(winners),
                    error: ptr_mut(error),
                    n: i64_of(n),
                    dst_rows: rows as u64,
                    allow_negative: i64::from(allow_negative),
                };
                // SAFETY: reads indices[0..n]; atomically updates winners[k] only for k in
                // 0..rows (the queue's array holds at least rows entries, set to -1 in stream
                // order before this launch) and the queue's error word.
                unsafe {
                    q.launch(
                        op,
                        launch::scatter_winners_kernel(is_i64::<I>()),
                        launch::flat_launch(n, 4),
                        &pw,
                    )?
                };
            } else {
                validate_indices::<I>(q, op, ip, n, rows, allow_negative, error)?;
            }
        }
        let pr = CpugpuScatterRowsParams {
            src: ptr(sp),
            dst: ptr_mut(dp),
            indices: ptr(ip),
            winners: ptr_mut(winners),
            error: ptr_mut(error),
            ctl: ptr_mut(ctl),
            capture: ptr_mut(slot.ptr),
            n_indices: i64_of(n),
            dst_rows: rows as u64,
            row_units: i64_of(units),
            lanes_per_row: rl.lanes_per_row,
            items: i64::from(cp.items_per_thread),
            allow_negative: i64::from(allow_negative),
            self_check: i64::from(small),
        };
        // SAFETY: v divides the row size and both base addresses; src holds n rows and dst
        // `rows` rows; only rows 0..rows are written, each by its single winner, and nothing
        // unless every index passed the check (each block's own, or scatter_winners' in stream
        // order before). winners (at least rows entries) is dereferenced only when rows move
        // (it is null otherwise) and every entry the launch sets is back at -1 when it ends.
        // items <= the kernel's register arrays. The error word, control words and the read-out
        // slot (two u64 no pending entry uses) are the queue's, alive in stream order.
        unsafe { q.launch(op, launch::scatter_kernel(v, is_i64::<I>()), cfg, &pr) }
    })();
    let kind = CheckKind::Index {
        bound: rows,
        signed32: !is_i64::<I>(),
    };
    finish_checked(q, joined, issued, op, kind, slot)
}
