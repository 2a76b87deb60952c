//! Gather on CUDA. Batch sizes (at most [`launch::SMALL_BATCH`] indices): one
//! `gather_rows_w<V>` launch that checks every index in every block, moves, and writes the
//! read-out slot. Larger: `validate_indices`, then `gather_rows_w<V>` (which moves nothing when
//! validation failed, and whose last block writes the read-out slot).

use crate::cuda::CheckKind;
use crate::element::{width_of, Element, Index};
use crate::error::{Op, Result};
use crate::kernels::abi::CpugpuGatherRowsParams;
use crate::kernels::launch::{self, i64_of, LaunchConfig};
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut};
use crate::ops::gather::{check_args, GatherArgs};
use crate::ops::launch::{finish_checked, is_i64, ptr, ptr_mut, validate_indices};
use crate::ops::GatherPolicy;
use crate::{Device, Shape};

/// Gather on CUDA. The destination's shape was checked by the caller.
pub(crate) fn gather_rows_into<T: Element, I: Index>(
    dev: &Device,
    src: DeviceView<'_, T>,
    indices: DeviceView<'_, I>,
    dst: DeviceViewMut<'_, T>,
    policy: GatherPolicy<T>,
) -> Result<()> {
    let op = Op::GatherRows;
    let w = width_of::<T>();
    let q = dev.cuda_queue(op)?;
    let ord = q.ctx.ordinal;
    let GatherArgs {
        rows,
        row_len,
        dst_len,
    } = check_args(src.len(), src.shape().dims(), indices.len())?;
    debug_assert_eq!(dst.len(), dst_len);
    let sp = src.cuda_or(op, "src", ord)?;
    let ip = indices.cuda_or(op, "indices", ord)?;
    let dp = dst.cuda_or(op, "dst", ord)?;
    let n = indices.len();
    if n == 0 {
        return Ok(());
    }
    let (allow_negative, fill) = match policy {
        GatherPolicy::Checked => (false, T::zeroed()),
        GatherPolicy::NegativeFill(v) => (true, v),
    };
    let info = q.device_info();
    let row_bytes = row_len * w;
    let cp = launch::copy_policy(w, row_bytes, &[sp as usize, dp as usize], info);
    let v = cp.access_width;
    let units = row_bytes / v;
    let small = launch::is_small_batch(n);
    let rl = launch::rows_launch(n, units, cp.items_per_thread, small, info);
    // Rows of zero elements: nothing moves, one block checks (or reads the check) and reports.
    let cfg = if units == 0 {
        LaunchConfig {
            grid: 1,
            ..rl.config
        }
    } else {
        rl.config
    };
    let _bound = q.ctx.bind()?;
    let joined = q.join(
        op,
        &[src.cuda_queue(), indices.cuda_queue(), dst.cuda_queue()],
    )?;
    let _issue = q.issue();
    let error = q.error_word(op)?;
    let slot = q.capture_slot();
    let pg = CpugpuGatherRowsParams {
        src: ptr(sp),
        dst: ptr_mut(dp),
        indices: ptr(ip),
        error: ptr_mut(error),
        ctl: ptr_mut(q.ctl()),
        capture: ptr_mut(slot.ptr),
        n_indices: i64_of(n),
        src_rows: rows as u64,
        row_units: i64_of(units),
        lanes_per_row: rl.lanes_per_row,
        items: i64::from(cp.items_per_thread),
        allow_negative: i64::from(allow_negative),
        self_check: i64::from(small),
        fill: launch::fill_pattern(fill),
    };
    let issued = (|| -> Result<()> {
        if !small {
            validate_indices::<I>(q, op, ip, n, rows, allow_negative, error)?;
        }
        // SAFETY: v divides the row size and both base addresses, so every unit access is
        // aligned and inside: src holds rows * row_len elements, dst n * row_len (its shape was
        // checked); src rows are read only for indices in 0..rows, and nothing is written unless
        // every index passed the check (each block's own, or validate_indices' in stream order
        // before). items <= the kernel's register arrays (copy_policy). The error word, the
        // queue's control words and the read-out slot (two u64 of mapped memory no pending entry
        // uses: capture_slot) are the queue's, alive in stream order; the slot is written once,
        // by one thread, and read by the host only after a synchronisation.
        unsafe { q.launch(op, launch::gather_kernel(v, is_i64::<I>()), cfg, &pg) }
    })();
    let kind = CheckKind::Index {
        bound: rows,
        signed32: !is_i64::<I>(),
    };
    finish_checked(q, joined, issued, op, kind, slot)
}

/// Allocating gather on CUDA.
pub(crate) fn gather_rows<T: Element, I: Index>(
    dev: &Device,
    src: DeviceView<'_, T>,
    indices: DeviceView<'_, I>,
    policy: GatherPolicy<T>,
    shape: Shape,
) -> Result<DeviceBuffer<T>> {
    // Every row of the output is written (a row, or the fill for a negative index) unless an
    // index is bad, which the next synchronisation reports.
    let mut out = DeviceBuffer::zeroed(dev, shape)?;
    gather_rows_into(dev, src, indices, out.view_mut(), policy)?;
    Ok(out)
}
