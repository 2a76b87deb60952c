//! Split's copying form on CUDA: the destination pointers, offsets and size tiers go up in one
//! staged copy, then one `split_copy_w16` launch copies every segment (16-byte body accesses
//! whatever the element size).

use crate::element::{width_of, Element, Offset};
use crate::error::{Error, Op, Result};
use crate::kernels::launch;
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::BatchedCopyMeta;
use crate::ops::split::{check_split_outs, host as split_host};
use crate::Device;

/// Split's copying form on CUDA: one `split_copy_w16` launch copies segment `i` of `data` (at
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
    let seg_offsets =
        launch::flat_offsets(outs.iter().map(|o| o.len()), i64::MAX, w).map_err(|position| {
            Error::OffsetOverflow {
                op,
                position,
                limit: i64::MAX,
            }
        })?;
    // Byte offsets (the data exists, so they fit).
    let byte_offsets: Vec<u64> = seg_offsets.iter().map(|&o| o as u64).collect();
    let meta_words = BatchedCopyMeta::new(&dst_ptrs, &byte_offsets);
    let cfg = launch::batched_copy_launch(&meta_words.tiers, outs.len(), q.device_info());
    let _bound = q.ctx.bind()?;
    let mut operands: Vec<_> = outs.iter().map(|o| o.cuda_queue()).collect();
    operands.push(data.cuda_queue());
    let joined = q.join(op, &operands)?;
    let meta = match q.upload_bytes(op, &meta_words.bytes) {
        Ok(m) => m,
        Err(e) => {
            let _ = joined.finish(q);
            return Err(e);
        }
    };
    let p = meta_words.params(meta.ptr, false, base, 0, w);
    // SAFETY: the segments are consecutive in data from `base` (validated offsets), so flat
    // bytes 0..offsets[n] are inside data and only read (never outside a segment); outs[s] has
    // exactly segment s's length (checked) and is written at bytes 0..len_s * w; the metadata is
    // on the device in stream order before the kernel.
    let launched = unsafe { q.launch(op, launch::split_copy_kernel(), cfg, &p) };
    drop(meta);
    let finished = joined.finish(q);
    launched.and(finished)
}
