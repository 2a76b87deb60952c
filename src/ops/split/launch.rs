//! Split's copying form on CUDA: one `split_copy_w<V>` launch copies every segment.

use crate::element::{width_of, Element, Offset};
use crate::error::{Error, Op, Result};
use crate::kernels::abi::CpugpuBatchedCopyParams;
use crate::kernels::launch::{self, i64_of};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{ptr, ptr_mut, words};
use crate::ops::split::{check_split_outs, host as split_host};
use crate::Device;

/// Split's copying form on CUDA: one `split_copy_w<V>` launch copies segment `i` of `data` (at
/// validated `offsets`) into `outs[i]`.
pub(crate) fn split_copy_into<T: Element, O: Offset>(
    dev: &Device,
    data: DeviceView<'_, T>,
    offsets: &[O],
    outs: &mut [DeviceViewMut<'_, T>],
) -> Result<()> {
    let op = Op::Split;
    let w = width_of::<T>();
    let q = dev.cuda_queue(op)?;
    let ord = q.ctx.ordinal;
    split_host::validate(offsets, data.len())?;
    check_split_outs(offsets, outs.iter().map(|o| o.len()), outs.len())?;
    let base_ptr = data.cuda_or(op, "data", ord)?;
    let mut dst_ptrs = Vec::with_capacity(outs.len());
    for o in outs.iter() {
        dst_ptrs.push(o.cuda_or(op, "outs[i]", ord)?);
    }
    if outs.is_empty() {
        return Ok(());
    }
    let first = usize::try_from(offsets[0].to_i64()).unwrap_or(0);
    // Validated: first <= data.len(), so the byte offset exists.
    let base = base_ptr + (first * w) as u64;
    let mut addrs: Vec<usize> = outs
        .iter()
        .zip(&dst_ptrs)
        .filter(|(o, _)| !o.is_empty())
        .map(|(_, &p)| p as usize)
        .collect();
    addrs.push(base as usize);
    let v = launch::copy_policy(w, w, &addrs, Some(q.ctx.cc)).access_width;
    let seg_offsets = launch::flat_offsets(outs.iter().map(|o| o.len()), i64::MAX, w / v).map_err(
        |position| Error::OffsetOverflow {
            op,
            position,
            limit: i64::MAX,
        },
    )?;
    let total: usize = outs.iter().map(|o| o.len()).sum();
    let seg_words: Vec<u64> = seg_offsets.iter().map(|&o| o as u64).collect();
    let _bound = q.ctx.bind()?;
    let mut operands: Vec<_> = outs.iter().map(|o| o.cuda_queue()).collect();
    operands.push(data.cuda_queue());
    let joined = q.join(op, &operands)?;
    let meta = match q.upload_bytes(op, &words(&[&dst_ptrs, &seg_words])) {
        Ok(m) => m,
        Err(e) => {
            let _ = joined.finish(q);
            return Err(e);
        }
    };
    let n = outs.len();
    let p = CpugpuBatchedCopyParams {
        src_ptrs: std::ptr::null(),
        dst_ptrs: ptr(meta.ptr),
        flat: ptr_mut(base),
        seg_offsets: ptr(meta.ptr + 8 * n as u64),
        offsets_out: std::ptr::null_mut(),
        n_segments: i64_of(n),
        units_per_elem: i64_of(w / v),
        tile_units: launch::COPY_TILE_UNITS,
    };
    let cfg = launch::batched_copy_launch(total * w / v, n);
    // SAFETY: the segments are consecutive in data from `base` (validated offsets), so flat
    // units 0..total * w / v are inside data and only read; outs[s] has exactly segment s's
    // length (checked) and is written at 0..len_s units; v divides the width and every pointer.
    let launched = unsafe { q.launch(op, launch::split_copy_kernel(v), cfg, &p) };
    drop(meta);
    let finished = joined.finish(q);
    launched.and(finished)
}
