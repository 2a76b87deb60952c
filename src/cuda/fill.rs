//! Filling device memory with one element: `cuMemsetD8/16/32Async` for 1-, 2- and 4-byte
//! elements at an aligned address, the pad kernel with an empty source row otherwise.

use super::driver as cu;
use super::queue::Queue;
use super::result::check;
use crate::element::{width_of, Element};
use crate::error::{Op, Result};
use crate::kernels::abi::CpugpuPadParams;
use crate::kernels::launch::{self, i64_of};

/// Sets `n` elements at device address `dst` to `value`, on `q`'s stream.
pub(crate) fn fill<T: Element>(q: &Queue, dst: u64, n: usize, value: T) -> Result<()> {
    let op = Op::Fill;
    let w = width_of::<T>();
    if n == 0 {
        return Ok(());
    }
    let _bound = q.ctx.bind()?;
    let bytes = bytemuck::bytes_of(&value);
    // cuMemsetD16/D32 need a 2- or 4-byte aligned start; `[u8; 4]` views need not be: those
    // take the kernel path (0 selects it below).
    let memset_width = if dst.is_multiple_of(w as u64) { w } else { 0 };
    let s = q.stream.raw();
    // SAFETY (the memsets): dst holds n elements of w bytes, ours to write (the caller holds
    // an exclusive view).
    match memset_width {
        1 => check(op, "cuMemsetD8Async", unsafe {
            cu::cuMemsetD8Async(dst, bytes[0], n, s)
        }),
        // SAFETY: as for the 1-byte memset; dst is 2-byte aligned (checked above).
        2 => check(op, "cuMemsetD16Async", unsafe {
            cu::cuMemsetD16Async(dst, u16::from_ne_bytes([bytes[0], bytes[1]]), n, s)
        }),
        // SAFETY: as for the 1-byte memset; dst is 4-byte aligned (checked above).
        4 => check(op, "cuMemsetD32Async", unsafe {
            cu::cuMemsetD32Async(
                dst,
                u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
                n,
                s,
            )
        }),
        _ => {
            let total = n * w; // the view exists, so this fits
            let info = q.device_info();
            let policy = launch::copy_policy(w, total, &[dst as usize], info);
            let v = policy.access_width;
            let p = CpugpuPadParams {
                src: std::ptr::null(),
                dst: dst as *mut std::ffi::c_void,
                outer: 1,
                src_row_units: 0,
                dst_row_units: i64_of(total / v),
                items: i64::from(policy.items_per_thread),
                fill: launch::fill_pattern(value),
            };
            // SAFETY: one row of total / v units at dst, all written with the fill pattern; the
            // empty source row is never read; items <= the kernel's register arrays.
            unsafe {
                q.launch(
                    op,
                    launch::pad_kernel(v),
                    launch::pad_launch(total / v, policy.items_per_thread, info),
                    &p,
                )
            }
        }
    }
}
