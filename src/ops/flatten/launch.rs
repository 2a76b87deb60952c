//! Flatten on CUDA: the segment pointers and offsets go up in one staged copy, then one
//! `flatten_w<V>_<O>` launch copies every segment and writes the offsets.

use std::ffi::c_void;

use crate::element::{width_of, Element, Offset};
use crate::error::{Op, Result};
use crate::kernels::abi::CpugpuBatchedCopyParams;
use crate::kernels::launch::{self, i64_of};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{is_i64, ptr, ptr_mut, words};
use crate::Device;

/// Flatten on CUDA: the segment pointers and offsets go up in one staged copy, then one
/// `flatten_w<V>_<O>` launch copies every segment and writes the offsets.
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
    let total = dst.len();
    let mut src_ptrs = Vec::with_capacity(arrays.len());
    for a in arrays {
        src_ptrs.push(a.cuda_or(op, "arrays[i]", ord)?);
    }
    let dp = dst.cuda_or(op, "dst", ord)?;
    let op_ptr = offsets.cuda_or(op, "offsets", ord)?;
    let mut addrs: Vec<usize> = arrays
        .iter()
        .zip(&src_ptrs)
        .filter(|(a, _)| !a.is_empty())
        .map(|(_, &p)| p as usize)
        .collect();
    addrs.push(dp as usize);
    let v = launch::copy_policy(w, w, &addrs, Some(q.ctx.cc)).access_width;
    let units_per_elem = i64_of(w / v);
    // Cannot overflow: total * w bytes of dst exist.
    let seg_offsets: Vec<u64> = elem_offsets
        .iter()
        .map(|&o| (o * units_per_elem) as u64)
        .collect();
    let _bound = q.ctx.bind()?;
    let mut operands: Vec<_> = arrays.iter().map(|a| a.cuda_queue()).collect();
    operands.push(dst.cuda_queue());
    operands.push(offsets.cuda_queue());
    let joined = q.join(op, &operands)?;
    let meta = match q.upload_bytes(op, &words(&[&src_ptrs, &seg_offsets])) {
        Ok(m) => m,
        Err(e) => {
            let _ = joined.finish(q);
            return Err(e);
        }
    };
    let n = arrays.len();
    let p = CpugpuBatchedCopyParams {
        src_ptrs: ptr(meta.ptr),
        dst_ptrs: std::ptr::null(),
        flat: ptr_mut(dp),
        seg_offsets: ptr(meta.ptr + 8 * n as u64),
        offsets_out: ptr_mut::<c_void>(op_ptr),
        n_segments: i64_of(n),
        units_per_elem,
        tile_units: launch::COPY_TILE_UNITS,
    };
    let cfg = launch::batched_copy_launch(total * w / v, n);
    // SAFETY: the metadata (n pointers, n + 1 offsets) is on the device in stream order before
    // the kernel; segment s is read at src_ptrs[s][0..len_s * w / v] units (its own view) and
    // written at flat[seg_offsets[s]..seg_offsets[s + 1]], inside dst (total elements); v
    // divides the element width and every pointer; offsets has n + 1 elements (checked).
    let launched = unsafe { q.launch(op, launch::flatten_kernel(v, is_i64::<O>()), cfg, &p) };
    drop(meta);
    let finished = joined.finish(q);
    launched.and(finished)
}
