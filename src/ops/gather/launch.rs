//! Gather on CUDA: `validate_indices`, `gather_rows_w<V>` (which does nothing when validation
//! failed), `capture_error`.

use crate::cuda::CheckKind;
use crate::element::{width_of, Element, Index};
use crate::error::{Op, Result};
use crate::kernels::abi::CpugpuGatherRowsParams;
use crate::kernels::launch::{self, i64_of};
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
    let _bound = q.ctx.bind()?;
    let joined = q.join(
        op,
        &[src.cuda_queue(), indices.cuda_queue(), dst.cuda_queue()],
    )?;
    let _issue = q.issue();
    let error = q.error_word(op)?;
    let issued = (|| -> Result<()> {
        validate_indices::<I>(q, op, ip, n, rows, allow_negative, error)?;
        if dst_len > 0 {
            let row_bytes = row_len * w;
            let v = launch::copy_policy(w, row_bytes, &[sp as usize, dp as usize], Some(q.ctx.cc))
                .access_width;
            let rl = launch::rows_launch(n, row_bytes / v);
            let pg = CpugpuGatherRowsParams {
                src: ptr(sp),
                dst: ptr_mut(dp),
                indices: ptr(ip),
                error: ptr(error),
                n_indices: i64_of(n),
                src_rows: rows as u64,
                row_units: i64_of(row_bytes / v),
                lanes_per_row: rl.lanes_per_row,
                fill: launch::fill_pattern(fill),
            };
            // SAFETY: v divides the row size and both base addresses, so every unit access is
            // aligned and inside: src holds rows * row_len elements, dst n * row_len (its shape
            // was checked); src rows are read only for indices in 0..rows, and nothing runs when
            // the validation above set the error word.
            unsafe { q.launch(op, launch::gather_kernel(v, is_i64::<I>()), rl.config, &pg)? };
        }
        Ok(())
    })();
    let kind = CheckKind::Index {
        bound: rows,
        signed32: !is_i64::<I>(),
    };
    finish_checked(q, joined, issued, op, kind, ip, n, std::mem::size_of::<I>())
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
