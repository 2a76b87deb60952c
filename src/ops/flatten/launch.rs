//! Flatten on CUDA: the segment pointers, offsets and size tiers go up in one staged copy, then
//! one `flatten_w16_<O>` launch copies every segment (16-byte body accesses whatever the
//! element size) and writes the offsets.

use crate::element::{width_of, Element, Offset};
use crate::error::{Op, Result};
use crate::kernels::launch;
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{is_i64, BatchedCopyMeta};
use crate::Device;

/// Flatten on CUDA: the segment pointers, offsets and size tiers go up in one staged copy, then
/// one `flatten_w16_<O>` launch copies every segment and writes the offsets.
pub(crate) fn flatten_into<T: Element, O: Offset>(
    dev: &Device,
    arrays: &[DeviceView<'_, T>],
    dst: DeviceViewMut<'_, T>,
    offsets: DeviceViewMut<'_, O>,
) -> Result<()> {
    let op = Op::Flatten;
    let w = width_of::<T>();
    let q = dev.cuda_queue(op)?;
    let ord = q.ctx.ordinal;
    let elem_offsets =
        super::check_args::<O>(arrays.iter().map(|a| a.len()), offsets.len(), dst.len())?;
    let mut src_ptrs = Vec::with_capacity(arrays.len());
    for a in arrays {
        src_ptrs.push(a.cuda_or(op, "arrays[i]", ord)?);
    }
    let dp = dst.cuda_or(op, "dst", ord)?;
    let op_ptr = offsets.cuda_or(op, "offsets", ord)?;
    // Cannot overflow: total * w bytes of dst exist.
    let byte_offsets: Vec<u64> = elem_offsets
        .iter()
        .map(|&o| (o as u64) * w as u64)
        .collect();
    let meta_words = BatchedCopyMeta::new(&src_ptrs, &byte_offsets);
    let cfg = launch::batched_copy_launch(&meta_words.tiers, arrays.len(), q.device_info());
    let _bound = q.ctx.bind()?;
    let mut operands: Vec<_> = arrays.iter().map(|a| a.cuda_queue()).collect();
    operands.push(dst.cuda_queue());
    operands.push(offsets.cuda_queue());
    let joined = q.join(op, &operands)?;
    let meta = match q.upload_bytes(op, &meta_words.bytes) {
        Ok(m) => m,
        Err(e) => {
            let _ = joined.finish(q);
            return Err(e);
        }
    };
    let p = meta_words.params(meta.ptr, true, dp, op_ptr, w);
    // SAFETY: the metadata (n source pointers, n + 1 byte offsets, the size tiers) is on the
    // device in stream order before the kernel; segment s is read at src_ptrs[s][0..len_s * w]
    // bytes (its own view, never outside it) and written at flat[offsets[s]..offsets[s + 1]],
    // inside dst (offsets[n] = dst.len() * w bytes); offsets has n + 1 elements (checked).
    let launched = unsafe { q.launch(op, launch::flatten_kernel(is_i64::<O>()), cfg, &p) };
    drop(meta);
    let finished = joined.finish(q);
    launched.and(finished)
}
