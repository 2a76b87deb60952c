//! Pad on CUDA: one `pad_w<V>` launch copies and fills.

use crate::element::{width_of, Element};
use crate::error::{Op, Result};
use crate::kernels::abi::CpugpuPadParams;
use crate::kernels::launch::{self, i64_of};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{ptr, ptr_mut};
use crate::Device;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Pad on CUDA: one `pad_w<V>` launch copies and fills. The destination's shape was checked.
pub(crate) fn pad_to_multiple_into<T: Element>(
    dev: &Device,
    src: DeviceView<'_, T>,
    axis: usize,
    multiple: usize,
    fill: T,
    dst: DeviceViewMut<'_, T>,
) -> Result<()> {
    let op = Op::PadToMultiple;
    let (s, padded) = super::check_args(
        src.len(),
        src.shape().dims(),
        axis,
        multiple,
        Some(dst.len()),
    )?;
    pad_rows(dev, op, src, &s, &padded, axis, fill, dst)
}

/// The launch of every pad (to a multiple, a length or a bucket): `src` (shape `s`) padded
/// along `axis` to `padded`, which `dst` has (checked by the caller, as is `axis`). One
/// `pad_w<V>` launch copies each row and fills its tail.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pad_rows<T: Element>(
    dev: &Device,
    op: Op,
    src: DeviceView<'_, T>,
    s: &crate::Shape,
    padded: &crate::Shape,
    axis: usize,
    fill: T,
    dst: DeviceViewMut<'_, T>,
) -> Result<()> {
    let w = width_of::<T>();
    let q = dev.cuda_queue(op)?;
    let ord = q.ctx.ordinal;
    let sp = src.cuda_or(op, "src", ord)?;
    let dp = dst.cuda_or(op, "dst", ord)?;
    if dst.is_empty() {
        return Ok(());
    }
    // dst is not empty, so none of these products overflows (they divide its length).
    let dims = s.dims();
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let src_row_bytes = dims[axis] * inner * w;
    let dst_row_bytes = padded.dims()[axis] * inner * w;
    let info = q.device_info();
    let policy = launch::copy_policy(
        w,
        gcd(src_row_bytes, dst_row_bytes),
        &[sp as usize, dp as usize],
        info,
    );
    let v = policy.access_width;
    let p = CpugpuPadParams {
        src: ptr(sp),
        dst: ptr_mut(dp),
        outer: i64_of(outer),
        src_row_units: i64_of(src_row_bytes / v),
        dst_row_units: i64_of(dst_row_bytes / v),
        items: i64::from(policy.items_per_thread),
        fill: launch::fill_pattern(fill),
    };
    let cfg = launch::pad_launch(dst.len() * w / v, policy.items_per_thread, info);
    let _bound = q.ctx.bind()?;
    let joined = q.join(op, &[src.cuda_queue(), dst.cuda_queue()])?;
    // SAFETY: v divides both row sizes and both base addresses; the kernel writes
    // outer * dst_row_units units (all of dst) and reads outer * src_row_units (all of src);
    // items <= the kernel's register arrays (copy_policy).
    let launched = unsafe { q.launch(op, launch::pad_kernel(v), cfg, &p) };
    let finished = joined.finish(q);
    launched.and(finished)
}
