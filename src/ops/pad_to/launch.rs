//! Pad to a length or a bucket on CUDA: one `pad_w<V>` launch (the pad-to-multiple kernel, which
//! copies each row and fills its tail, whatever the padded length).

use crate::element::{width_of, Element};
use crate::error::{Error, Op, Result};
use crate::kernels::abi::CpugpuPadParams;
use crate::kernels::launch::{self, i64_of};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{ptr, ptr_mut};
use crate::shape::Shape;
use crate::Device;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Pads `src` along `axis` to `padded` (checked: `dst` has that shape, `axis` exists, the axis
/// is not shorter).
pub(crate) fn pad_into<T: Element>(
    dev: &Device,
    op: Op,
    src: DeviceView<'_, T>,
    axis: usize,
    padded: Shape,
    fill: T,
    dst: DeviceViewMut<'_, T>,
) -> Result<()> {
    let w = width_of::<T>();
    let q = dev.cuda_queue(op)?;
    let ord = q.ctx.ordinal;
    let s = src.shape();
    if axis >= s.ndim() {
        return Err(Error::AxisOutOfRange {
            op,
            axis,
            ndim: s.ndim(),
        });
    }
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
    let policy = launch::copy_policy(
        w,
        gcd(src_row_bytes, dst_row_bytes),
        &[sp as usize, dp as usize],
        Some(q.ctx.cc),
    );
    let v = policy.access_width;
    let p = CpugpuPadParams {
        src: ptr(sp),
        dst: ptr_mut(dp),
        outer: i64_of(outer),
        src_row_units: i64_of(src_row_bytes / v),
        dst_row_units: i64_of(dst_row_bytes / v),
        fill: launch::fill_pattern(fill),
    };
    let cfg = launch::flat_launch(dst.len() * w / v, policy.items_per_thread);
    let _bound = q.ctx.bind()?;
    let joined = q.join(op, &[src.cuda_queue(), dst.cuda_queue()])?;
    // SAFETY: v divides both row sizes and both base addresses; the kernel writes
    // outer * dst_row_units units (all of dst, whose shape is `padded`) and reads
    // outer * src_row_units (all of src).
    let launched = unsafe { q.launch(op, launch::pad_kernel(v), cfg, &p) };
    let finished = joined.finish(q);
    launched.and(finished)
}
