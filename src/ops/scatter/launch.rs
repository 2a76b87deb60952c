//! Scatter on CUDA: `scatter_winners` (validation and last-wins), `scatter_rows_w<V>`,
//! `capture_error`.

use crate::cuda::{CheckKind, DevAlloc};
use crate::element::{width_of, Element, Index};
use crate::error::{Op, Result};
use crate::kernels::abi::{CpugpuScatterRowsParams, CpugpuScatterWinnersParams};
use crate::kernels::launch::{self, i64_of};
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
    let _bound = q.ctx.bind()?;
    let joined = q.join(
        op,
        &[src.cuda_queue(), indices.cuda_queue(), dst.cuda_queue()],
    )?;
    let _issue = q.issue();
    let error = q.error_word(op)?;
    let issued = (|| -> Result<()> {
        if src.is_empty() {
            // Rows of zero elements: nothing to move, but the indices are still checked.
            validate_indices::<I>(q, op, ip, n, rows, allow_negative, error)?;
        } else {
            // One i64 per destination row, all -1 (every byte 0xFF); freed in stream order after
            // the two kernels.
            let winners = DevAlloc::filled(op, &q.stream, rows.saturating_mul(8), 0xFF)?;
            let row_bytes = row_len * w;
            let v = launch::copy_policy(w, row_bytes, &[sp as usize, dp as usize], Some(q.ctx.cc))
                .access_width;
            let rl = launch::rows_launch(n, row_bytes / v);
            let pw = CpugpuScatterWinnersParams {
                indices: ptr(ip),
                winners: ptr_mut(winners.ptr),
                error: ptr_mut(error),
                n: i64_of(n),
                dst_rows: rows as u64,
                allow_negative: i64::from(allow_negative),
            };
            // SAFETY: reads indices[0..n]; atomically updates winners[k] only for k in 0..rows (the
            // scratch holds rows entries) and the error word.
            unsafe {
                q.launch(
                    op,
                    launch::scatter_winners_kernel(is_i64::<I>()),
                    launch::flat_launch(n, 4),
                    &pw,
                )?
            };
            let pr = CpugpuScatterRowsParams {
                src: ptr(sp),
                dst: ptr_mut(dp),
                indices: ptr(ip),
                winners: ptr(winners.ptr),
                error: ptr(error),
                n_indices: i64_of(n),
                dst_rows: rows as u64,
                row_units: i64_of(row_bytes / v),
                lanes_per_row: rl.lanes_per_row,
            };
            // SAFETY: v divides the row size and both base addresses; src holds n rows and dst
            // `rows` rows; only rows 0..rows are written, each by its single winner, and nothing
            // when the error word is set.
            unsafe { q.launch(op, launch::scatter_kernel(v, is_i64::<I>()), rl.config, &pr)? };
            drop(winners);
        }
        Ok(())
    })();
    let kind = CheckKind::Index {
        bound: rows,
        signed32: !is_i64::<I>(),
    };
    finish_checked(q, joined, issued, op, kind, ip, n, std::mem::size_of::<I>())
}
