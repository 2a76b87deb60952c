//! A [`crate::Device`] on CUDA is a [`Queue`]: a context, the stream its work goes to, its
//! device-error read-out ([`super::error_ring`]), the scratch its kernels keep between
//! operations ([`Scratch`]) and page-locked staging for small uploads of launch metadata.
//! Operations use it to order themselves after other streams' work ([`Queue::join`]), launch
//! kernels ([`Queue::launch`]), hand their last kernel a read-out slot for the errors it finds
//! ([`Queue::capture_slot`], [`Queue::captured`]) and upload metadata ([`Queue::upload_bytes`]).

use std::any::Any;
use std::ffi::c_void;
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::alloc::{memset_u8, DevAlloc, HostAlloc};
use super::context::Context;
use super::driver as cu;
use super::error_ring::{CheckKind, ErrorRing, Pending, ERROR_SLOTS, SLOT_WORDS};
use super::result::check;
use super::stream::{Event, Stream};
use crate::error::{Error, Op, Result};
use crate::kernels::abi::CTL_WORDS;
use crate::kernels::launch::{DeviceInfo, LaunchConfig};
use crate::kernels::Kernel;

/// A [`crate::Device`] on CUDA: a context, the stream its work goes to, the error read-out and a
/// staging area for small host-to-device uploads of launch metadata.
pub(crate) struct Queue {
    pub(crate) ctx: Arc<Context>,
    pub(crate) stream: Stream,
    errors: Mutex<ErrorRing>,
    scratch: Mutex<Scratch>,
    staging: Mutex<Vec<Staging>>,
    issue: Mutex<()>,
    settling: Mutex<()>,
}

struct Staging {
    host: HostAlloc,
    done: Option<Event>,
}

/// Device memory a queue keeps for its checked operations' kernels, so that no operation
/// allocates or clears scratch proportional to its data (kernels/cpugpu_abi.h):
/// - `ctl`: the control words (`CPUGPU_CTL_*`), all 0 between kernels;
/// - `winners`: scatter's last-wins array, one `i64` per destination row, all -1 between
///   operations; grown (a new array set to -1, the old one freed, both in stream order) when a
///   scatter into more rows than it holds comes. **8 bytes per destination row, per queue**: a
///   scatter into a KV cache of 10 million slots keeps 80 MB on each queue that ran one;
/// - `tiles`: the look-back scan's tile states, 3 words per tile of 4,096 lengths (24 bytes per
///   4,096 lengths, 0.15% of i32 lengths), valid per operation by epoch, never cleared.
///
/// Freed with the queue (after its last work, see [`Reclaim`]). Only this queue's stream uses
/// them, so its kernels never race on them: operations on one stream run in order.
pub(crate) struct Scratch {
    ctl: Option<DevAlloc>,
    winners: Option<DevAlloc>,
    winners_rows: usize,
    tiles: Option<DevAlloc>,
    tile_count: usize,
    epoch: u64,
}

impl Scratch {
    fn new(stream: &Stream) -> Result<Scratch> {
        Ok(Scratch {
            ctl: Some(DevAlloc::filled(Op::Device, stream, CTL_WORDS * 8, 0)?),
            winners: None,
            winners_rows: 0,
            tiles: None,
            tile_count: 0,
            epoch: 0,
        })
    }
}

/// Page-locked staging blocks kept per queue for launch metadata; beyond this many in flight,
/// an upload waits for the oldest.
const MAX_STAGING_BLOCKS: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A read-out slot handed to a checked operation's last kernel ([`Queue::capture_slot`]).
#[derive(Debug)]
pub(crate) struct CaptureSlot {
    slot: usize,
    /// The slot's device address: two `u64` (position, value) of mapped page-locked memory.
    pub(crate) ptr: cu::CUdeviceptr,
}

/// Cross-stream ordering of one operation, from [`Queue::join`].
pub(crate) struct Joined<'a> {
    op: Op,
    others: Vec<&'a Queue>,
}

/// `e` reported under `op` (driver failures of the ordering calls belong to the operation).
fn under(op: Op, e: Error) -> Error {
    match e {
        Error::Driver {
            call, code, name, ..
        } => Error::Driver {
            op,
            call,
            code,
            name,
        },
        other => other,
    }
}

impl Queue {
    pub(crate) fn new(ctx: Arc<Context>, stream: Stream) -> Result<Queue> {
        ctx.sweep();
        let _bound = ctx.bind()?;
        let ring = ErrorRing::new(&stream)?;
        let scratch = Scratch::new(&stream)?;
        Ok(Queue {
            ctx,
            stream,
            errors: Mutex::new(ring),
            scratch: Mutex::new(scratch),
            staging: Mutex::new(Vec::new()),
            issue: Mutex::new(()),
            settling: Mutex::new(()),
        })
    }

    /// Held while a checked operation takes its read-out slot and enqueues its kernels, so two
    /// host threads sharing this queue cannot interleave on its one error word, its scratch or
    /// the order of its read-out slots.
    pub(crate) fn issue(&self) -> MutexGuard<'_, ()> {
        lock(&self.issue)
    }

    /// Keeps `e` to be reported, in issue order, by a later [`Queue::synchronize`].
    pub(crate) fn defer_error(&self, e: Error) {
        lock(&self.errors).pending.push(Pending::Ready(e));
    }

    /// Orders this queue's next work after everything already issued to the streams of
    /// `operands` (the queues owning the memory operation `op` touches) that differ from this
    /// queue's stream. Call [`Joined::finish`] after the operation's work is issued.
    pub(crate) fn join<'a>(&self, op: Op, operands: &[Option<&'a Queue>]) -> Result<Joined<'a>> {
        let mut others: Vec<&'a Queue> = Vec::new();
        for o in operands.iter().flatten() {
            if o.stream.raw() != self.stream.raw()
                && !others.iter().any(|x| x.stream.raw() == o.stream.raw())
            {
                others.push(o);
            }
        }
        for o in &others {
            // Made in the other stream's context (it may be another GPU's): cuEventRecord needs
            // the event and the stream in one context; cuStreamWaitEvent accepts any event.
            // Nothing of the operation is issued yet, so a failure here needs no undoing.
            let e = Event::new(&o.ctx, false).map_err(|e| under(op, e))?;
            e.record(&o.stream).map_err(|e| under(op, e))?;
            e.make_wait(&self.stream).map_err(|e| under(op, e))?;
        }
        Ok(Joined { op, others })
    }

    /// Launches `kernel` on this queue's stream.
    ///
    /// # Safety
    /// Every pointer in `params` must be valid on this device for every access the kernel makes
    /// under `cfg`, until the kernel completes (stream order), and no other work may race with
    /// its writes.
    pub(crate) unsafe fn launch<P: Copy>(
        &self,
        op: Op,
        kernel: Kernel<P>,
        cfg: LaunchConfig,
        params: &P,
    ) -> Result<()> {
        // A configuration outside what every supported GPU accepts is a bug in the launch math:
        // refused here with a typed error, before the driver could fault.
        if cfg.grid == 0 || cfg.block == 0 || cfg.block > kernel.max_threads() {
            return Err(Error::InvalidArgument {
                op,
                name: "launch configuration",
                value: i128::from(cfg.block),
                reason: "threads per block outside 1..=the kernel's launch bounds",
            });
        }
        let _bound = self.ctx.bind()?;
        let f = self.ctx.function(op, kernel.id(), cfg.shared_bytes)?;
        let mut p = *params;
        let mut args = [(&mut p as *mut P).cast::<c_void>()];
        // SAFETY: f is a kernel of the loaded module taking one parameter struct P by value
        // (its typed handle says so); args points at a live copy of P that the driver copies
        // before returning; the caller guarantees the pointers inside it.
        check(op, "cuLaunchKernel", unsafe {
            cu::cuLaunchKernel(
                f,
                cfg.grid,
                1,
                1,
                cfg.block,
                1,
                1,
                cfg.shared_bytes,
                self.stream.raw(),
                args.as_mut_ptr(),
                ptr::null_mut(),
            )
        })
    }

    /// What the launch policy needs of this queue's device.
    pub(crate) fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            cc: self.ctx.cc,
            sms: self.ctx.sm_count,
        }
    }

    /// The control words to pass to a kernel that counts its blocks or hands out tiles.
    pub(crate) fn ctl(&self) -> cu::CUdeviceptr {
        lock(&self.scratch).ctl.as_ref().map_or(0, |c| c.ptr)
    }

    /// Scatter's winners array for `rows` destination rows (all -1 in stream order), grown when
    /// it holds fewer. Call while holding [`Queue::issue`], before the kernels that use it.
    pub(crate) fn winners(&self, op: Op, rows: usize) -> Result<cu::CUdeviceptr> {
        let mut s = lock(&self.scratch);
        if s.winners.is_none() || s.winners_rows < rows {
            let bytes = rows.checked_mul(8).ok_or(Error::SizeOverflow {
                op,
                what: "scatter's winners array (8 bytes per destination row)",
            })?;
            let grown = DevAlloc::filled(op, &self.stream, bytes.max(8), 0xFF)?;
            // The old array is freed in stream order, after the kernels that used it.
            s.winners = Some(grown);
            s.winners_rows = rows;
        }
        Ok(s.winners.as_ref().map_or(0, |w| w.ptr))
    }

    /// The look-back scan's tile states for `tiles` tiles and the epoch that marks this
    /// operation's entries (a new one per call). Grown (zeroed: epoch 0 is never used) when it
    /// holds fewer. Call while holding [`Queue::issue`].
    pub(crate) fn tile_states(&self, op: Op, tiles: usize) -> Result<(cu::CUdeviceptr, u64)> {
        let mut s = lock(&self.scratch);
        if s.tiles.is_none() || s.tile_count < tiles {
            let count = tiles.next_power_of_two();
            let bytes = count.checked_mul(24).ok_or(Error::SizeOverflow {
                op,
                what: "the scan's tile states (24 bytes per tile)",
            })?;
            s.tiles = Some(DevAlloc::filled(op, &self.stream, bytes, 0)?);
            s.tile_count = count;
        }
        s.epoch += 1;
        Ok((s.tiles.as_ref().map_or(0, |t| t.ptr), s.epoch))
    }

    /// The error word to pass to checked operation `op`'s kernels, re-armed first if an
    /// earlier re-arm failed (a stale word would make this operation skip its work and report
    /// the earlier one's position); an error when it still cannot be re-armed.
    pub(crate) fn error_word(&self, op: Op) -> Result<cu::CUdeviceptr> {
        let mut ring = lock(&self.errors);
        if ring.stale {
            memset_u8(op, &self.stream, ring.word.ptr, 0xFF, 8)?;
            ring.stale = false;
        }
        Ok(ring.word.ptr)
    }

    /// Re-arms the error word and the scratch after a checked operation failed to issue all its
    /// kernels (its last kernel, which would have done so, will not run), so the next operation
    /// does not see a stale error, a count in progress or a winner left behind. If the error
    /// word cannot be re-armed, it is marked stale and the next checked operation re-arms it
    /// first ([`Queue::error_word`]).
    pub(crate) fn rearm(&self) {
        let mut ring = lock(&self.errors);
        let mut fail = memset_u8(Op::Device, &self.stream, ring.word.ptr, 0xFF, 8).err();
        if fail.is_some() {
            ring.stale = true;
        }
        drop(ring);
        {
            let s = lock(&self.scratch);
            if let Some(c) = &s.ctl {
                let r = memset_u8(Op::Device, &self.stream, c.ptr, 0, CTL_WORDS * 8);
                fail = fail.or(r.err());
            }
            if let Some(w) = &s.winners {
                let r = memset_u8(Op::Device, &self.stream, w.ptr, 0xFF, s.winners_rows * 8);
                fail = fail.or(r.err());
            }
        }
        if let Some(e) = fail {
            self.defer_error(e);
        }
    }

    /// The read-out slot for a checked operation's last kernel to write (position, value: two
    /// `u64`), settling a full ring first. Call while holding [`Queue::issue`]; after the kernel
    /// is issued, [`Queue::captured`] makes the slot pending. A slot never made pending (the
    /// launch failed) is skipped: no kernel writes it and nobody reads it.
    pub(crate) fn capture_slot(&self) -> CaptureSlot {
        if lock(&self.errors).slots_pending >= ERROR_SLOTS {
            drop(self.settle());
        }
        let mut ring = lock(&self.errors);
        let slot = ring.next;
        ring.next = (ring.next + 1) % ERROR_SLOTS;
        CaptureSlot {
            slot,
            ptr: ring.out_dev + (slot * SLOT_WORDS * 8) as u64,
        }
    }

    /// After the kernel that writes `slot` was issued: the slot is read, in issue order, at the
    /// next [`Queue::synchronize`]. Pushed only once the kernel is on the stream, so a settle that
    /// counts it synchronises after it.
    ///
    /// At most `ERROR_SLOTS` slots are pending and [`Queue::capture_slot`] settles a full ring
    /// before it hands one out, so a slot is written again only after its last reader.
    pub(crate) fn captured(&self, op: Op, kind: CheckKind, slot: CaptureSlot) {
        let mut ring = lock(&self.errors);
        ring.pending.push(Pending::Slot {
            op,
            slot: slot.slot,
            kind,
        });
        ring.slots_pending += 1;
    }

    /// Like [`Queue::capture_slot`] and [`Queue::captured`] in one, with the operation's own
    /// capture kernel: `make(error, out)`
    /// builds its parameters from the error word and the read-out slot (four words: the kernel
    /// writes the error word, up to three values, and re-arms the word). `kind` is a
    /// [`CheckKind::Coded`] whose `decode` turns the slot into the error.
    ///
    /// # Safety
    /// The parameters `make` builds must be valid for `kernel` (one thread that reads the error
    /// word and the operation's inputs, which stay alive in stream order, and writes at most the
    /// four words of `out`).
    pub(crate) unsafe fn capture_coded<P: Copy>(
        &self,
        op: Op,
        kind: CheckKind,
        kernel: Kernel<P>,
        make: impl FnOnce(*mut u64, *mut u64) -> P,
    ) -> Result<()> {
        if lock(&self.errors).slots_pending >= ERROR_SLOTS {
            drop(self.settle());
        }
        let mut ring = lock(&self.errors);
        let slot = ring.next;
        ring.next = (ring.next + 1) % ERROR_SLOTS;
        let p = make(
            ring.word.ptr as *mut u64,
            (ring.out_dev + (slot * SLOT_WORDS * 8) as u64) as *mut u64,
        );
        let cfg = LaunchConfig {
            grid: 1,
            block: 32,
            shared_bytes: 0,
        };
        // SAFETY: the caller vouches for the parameters; the slot is ours (at most ERROR_SLOTS
        // are pending) and the host reads it only after a stream synchronisation.
        if let Err(e) = unsafe { self.launch(op, kernel, cfg, &p) } {
            drop(ring);
            self.rearm();
            return Err(e);
        }
        ring.pending.push(Pending::Slot { op, slot, kind });
        ring.slots_pending += 1;
        Ok(())
    }

    /// Synchronises the stream and replaces the entries pending before it by their first error
    /// (if any), kept at the front. Entries other threads add meanwhile stay pending. Settles
    /// are serialised (`settling`, taken before `errors`), so each reads only entries whose
    /// captures were issued before its own stream synchronisation.
    fn settle(&self) -> MutexGuard<'_, ()> {
        let settling = lock(&self.settling);
        let count = lock(&self.errors).pending.len();
        let synced = self.stream.synchronize();
        let mut ring = lock(&self.errors);
        let done = ring.drain_front(count);
        let first = match synced {
            // Captures after a fault never ran: their slots hold an earlier lap's words, so
            // only errors already known count, then the failure itself.
            Err(e) => Some(
                done.into_iter()
                    .find_map(|p| match p {
                        Pending::Ready(e) => Some(e),
                        Pending::Slot { .. } => None,
                    })
                    .unwrap_or(e),
            ),
            Ok(()) => ring.first_error(done.into_iter()),
        };
        if let Some(e) = first {
            ring.pending.insert(0, Pending::Ready(e));
        }
        settling
    }

    /// Waits for all work on the stream, then reports the first error (in issue order) of the
    /// operations issued before the call: a device-detected one (position and value) or a
    /// deferred driver failure. Later errors of the same batch are dropped with it.
    pub(crate) fn synchronize(&self) -> Result<()> {
        self.ctx.sweep();
        let _settling = self.settle();
        let mut ring = lock(&self.errors);
        if matches!(ring.pending.first(), Some(Pending::Ready(_))) {
            if let Pending::Ready(e) = ring.pending.remove(0) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Copies `bytes` of host data to a fresh device allocation, in stream order, staging
    /// through page-locked memory so the copy is a real asynchronous DMA; the staging block is
    /// reused once the copy has completed.
    pub(crate) fn upload_bytes(&self, op: Op, data: &[u8]) -> Result<DevAlloc> {
        let dst = DevAlloc::new(op, &self.stream, data.len())?;
        if data.is_empty() {
            return Ok(dst);
        }
        let mut pool = lock(&self.staging);
        let mut pick = None;
        for (i, s) in pool.iter().enumerate() {
            let free = match &s.done {
                None => true,
                Some(e) => e.query()?,
            };
            if free && s.host.bytes >= data.len() {
                pick = Some(i);
                break;
            }
        }
        let bytes = data.len().next_power_of_two().max(64 * 1024);
        let i = match pick {
            Some(i) => i,
            None if pool.len() < MAX_STAGING_BLOCKS => {
                pool.push(Staging {
                    host: HostAlloc::new(op, &self.ctx, bytes, 0)?,
                    done: None,
                });
                pool.len() - 1
            }
            None => {
                // At the cap: wait for the oldest block's copy, then reuse (or regrow) it.
                if let Some(e) = &pool[0].done {
                    e.synchronize()?;
                }
                if pool[0].host.bytes < data.len() {
                    pool[0].host = HostAlloc::new(op, &self.ctx, bytes, 0)?;
                }
                pool.rotate_left(1);
                pool.len() - 1
            }
        };
        let s = &mut pool[i];
        // The event that will guard this copy exists before the copy is issued, so a failure
        // to make one cannot leave an unguarded copy behind.
        let e = match s.done.take() {
            Some(e) => e,
            None => Event::new(&self.ctx, false)?,
        };
        // SAFETY: the staging block has at least data.len() bytes and no copy reads it (its
        // event completed, it was waited for, or it is new); we hold the pool lock, so nobody
        // else writes it.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), s.host.ptr, data.len()) };
        let _bound = self.ctx.bind()?;
        // SAFETY: dst has data.len() bytes; the source is page-locked and stays untouched until
        // the event recorded below completes.
        let copied = check(op, "cuMemcpyHtoDAsync", unsafe {
            cu::cuMemcpyHtoDAsync_v2(dst.ptr, s.host.ptr.cast(), data.len(), self.stream.raw())
        });
        if let Err(err) = copied {
            s.done = Some(e); // its last record (complete) still describes the block
            return Err(err);
        }
        if let Err(err) = e.record(&self.stream) {
            // No event covers the copy: finish it before the block can be reused.
            let _ = self.stream.synchronize();
            return Err(err);
        }
        s.done = Some(e);
        Ok(dst)
    }
}

impl Joined<'_> {
    /// Orders the other streams' next work (a free, a memset, a host-gate wait) after the work
    /// this queue issued for the operation. When that ordering cannot be made, the operation's
    /// work is waited for here instead (its kernels may read memory the other streams are about
    /// to free), and the failure is returned.
    pub(crate) fn finish(self, q: &Queue) -> Result<()> {
        if self.others.is_empty() {
            return Ok(());
        }
        let ordered = (|| -> Result<()> {
            let e = Event::new(&q.ctx, false)?;
            e.record(&q.stream)?;
            for o in &self.others {
                e.make_wait(&o.stream)?;
            }
            Ok(())
        })();
        if let Err(e) = ordered {
            let _ = q.stream.synchronize();
            return Err(under(self.op, e));
        }
        Ok(())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The staging blocks and the error read-out ring are page-locked memory that in-flight
        // copies and kernels may still use. Their release waits for an event recorded
        // now, on the context's reclaim list, rather than for the stream: the default stream is
        // shared by every handle of the GPU, and one handle's drop must not wait for the
        // others' work.
        let out = self
            .errors
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .out
            .take();
        let staging: Vec<HostAlloc> =
            std::mem::take(self.staging.get_mut().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .map(|s| s.host)
                .collect();
        // The scratch (control words, winners, tile states) too: freed in stream order once the
        // event below has completed, without making this drop wait for a shared stream.
        let scratch = {
            let s = self.scratch.get_mut().unwrap_or_else(|e| e.into_inner());
            (s.ctl.take(), s.winners.take(), s.tiles.take())
        };
        let keep: Box<dyn Any + Send> = Box::new((out, staging, scratch));
        let recorded = Event::new(&self.ctx, false).and_then(|e| {
            e.record(&self.stream)?;
            Ok(e)
        });
        match recorded {
            Ok(done) => self.ctx.release_after(done, keep),
            Err(_) => {
                // No event to wait for: the stream's completion is the only safe point.
                let _ = self.stream.synchronize();
                drop(keep);
            }
        }
        self.ctx.sweep();
    }
}
