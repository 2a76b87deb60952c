//! Staged writes on CUDA: the pieces and their values packed into page-locked staging memory,
//! one asynchronous upload into a reused device buffer, one `staged_write_w<V>` launch.

use super::{Piece, OP, STAGING_DEPTH};
use crate::cuda::Event;
use crate::element::{width_of, Element};
use crate::error::Result;
use crate::kernels::abi::CpugpuStagedWriteParams;
use crate::kernels::launch::{self, i64_of};
use crate::memory::{DeviceBuffer, DeviceViewMut};
use crate::ops::launch::{ptr, ptr_mut};
use crate::pinned::PinnedBuffer;
use crate::shape::Shape;
use crate::Device;

/// One staging slot: page-locked host memory, the device buffer it is uploaded into, and the
/// event recorded after that upload (the host memory may be rewritten once it completed).
#[derive(Default)]
struct Slot {
    host: Option<PinnedBuffer<u8>>,
    device: Option<DeviceBuffer<u8>>,
    uploaded: Option<Event>,
}

/// The staging slots of one [`super::StagedWrites`].
#[derive(Default)]
pub(crate) struct Staging {
    slots: Vec<Slot>,
    next: usize,
    pub(crate) allocations: u64,
}

impl Staging {
    /// Bytes of page-locked memory held.
    pub(crate) fn bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.host.as_ref().map_or(0, |h| h.len()))
            .sum()
    }
}

/// The staging size for `need` bytes when `have` are held: `max(need, have + have / 4)`,
/// rounded up to 256 bytes. Never a power-of-two doubling.
pub(crate) fn grown(need: usize, have: usize) -> usize {
    need.max(have + have / 4).next_multiple_of(256)
}

impl Drop for Staging {
    fn drop(&mut self) {
        // An upload may still read a staging block: wait for it before the memory is freed.
        for s in &self.slots {
            if let Some(e) = &s.uploaded {
                let _ = e.synchronize();
            }
        }
    }
}

/// Applies `pieces` of `values` to `dst` (shape checked by the caller).
pub(crate) fn apply<T: Element>(
    dev: &Device,
    staging: &mut Staging,
    pieces: &[Piece],
    values: &[T],
    dst: DeviceViewMut<'_, T>,
) -> Result<()> {
    let w = width_of::<T>();
    let q = dev.cuda_queue(OP)?;
    let dp = dst.cuda_or(OP, "dst", q.ctx.ordinal)?;
    let n = pieces.len();
    let total: usize = pieces.iter().map(|p| p.len).sum();
    // Layout: n destination offsets, n + 1 cumulative lengths (int64, in units of V), then the
    // values, 16-byte aligned.
    let head = (2 * n + 1) * 8;
    let values_at = head.next_multiple_of(16);
    let need = values_at + total * w;
    if staging.slots.is_empty() {
        staging.slots.resize_with(STAGING_DEPTH, Slot::default);
    }
    let k = staging.next;
    staging.next = (k + 1) % STAGING_DEPTH;
    let slot = &mut staging.slots[k];
    // The block may still be read by the upload of an earlier apply: wait for it.
    if let Some(e) = slot.uploaded.take() {
        e.synchronize()?;
    }
    let have = slot.host.as_ref().map_or(0, |h| h.len());
    if have < need {
        let bytes = grown(need, have);
        slot.host = None;
        slot.device = None;
        slot.host = Some(PinnedBuffer::new_on(dev, bytes)?);
        slot.device = Some(DeviceBuffer::uninit(dev, Shape::vector(bytes))?);
        staging.allocations += 1;
    }
    let (Some(host), Some(device)) = (slot.host.as_mut(), slot.device.as_mut()) else {
        unreachable!("both are allocated above");
    };
    let base = device
        .view()
        .cuda_ptr()
        .expect("a CUDA device's buffer has a device address");
    let v = launch::access_width(w, &[dp as usize, (base as usize) + values_at]);
    let upe = w / v;
    {
        let (words, rest) = host.split_at_mut(head);
        let words: &mut [i64] = bytemuck::cast_slice_mut(words);
        let mut acc = 0usize;
        for (i, p) in pieces.iter().enumerate() {
            words[i] = i64_of(p.dst * upe);
            words[n + i] = i64_of(acc * upe);
            acc += p.len;
        }
        words[2 * n] = i64_of(acc * upe);
        let vals: &mut [T] =
            bytemuck::cast_slice_mut(&mut rest[values_at - head..values_at - head + total * w]);
        let mut at = 0;
        for p in pieces {
            vals[at..at + p.len].copy_from_slice(&values[p.src..p.src + p.len]);
            at += p.len;
        }
    }
    let _bound = q.ctx.bind()?;
    let joined = q.join(OP, &[dst.cuda_queue()])?;
    let e = Event::new(&q.ctx, false)?;
    // SAFETY: the device buffer holds at least `need` bytes and only this slot's uploads and
    // kernels use it, in stream order; the page-locked source is not written again before the
    // event recorded right after the copy has completed (checked at the top of the next apply
    // of this slot, and on drop).
    unsafe { crate::cuda::copy_htod_async(OP, &q.stream, base, host.as_ptr(), need)? };
    let recorded = e.record(&q.stream);
    if recorded.is_err() {
        // No event covers the copy: finish it before the block can be reused.
        let _ = q.stream.synchronize();
    } else {
        slot.uploaded = Some(e);
    }
    recorded?;
    let p = CpugpuStagedWriteParams {
        dst: ptr_mut(dp),
        values: ptr(base + values_at as u64),
        dst_offsets: ptr(base),
        cu: ptr(base + (n * 8) as u64),
        n: i64_of(n),
        total: i64_of(total * upe),
    };
    // SAFETY: the pieces are disjoint and inside dst ([rows, cols], checked when staged and by
    // the caller), so each of the `total` units has one writer; the packed buffer holds the
    // offsets and values the kernel reads, uploaded before it in stream order.
    let launched = unsafe {
        q.launch(
            OP,
            launch::staged_write_kernel(v),
            launch::flat_launch(total * upe, 4),
            &p,
        )
    };
    let finished = joined.finish(q);
    launched.and(finished)
}
