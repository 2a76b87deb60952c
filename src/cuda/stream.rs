//! Streams and events: [`Stream`] (owned, or borrowed from another library) and [`Event`].

use std::ffi::c_void;
use std::fmt;
use std::ptr;
use std::sync::Arc;

use super::context::Context;
use super::driver as cu;
use super::result::check;
use crate::error::{Op, Result};

/// A CUDA stream: owned (made by this crate, destroyed when the last handle drops) or borrowed
/// from another library ([`Stream::from_raw`]).
#[derive(Clone)]
pub struct Stream {
    inner: Arc<RawStream>,
}

struct RawStream {
    raw: cu::CUstream,
    owned: bool,
    ctx: Arc<Context>,
}

// SAFETY: a CUstream is a driver handle usable from any thread with its context current; the
// owner only destroys it in Drop, when no handle is left.
unsafe impl Send for RawStream {}
// SAFETY: as above; shared access only enqueues work, which the driver serialises.
unsafe impl Sync for RawStream {}

impl Drop for RawStream {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Ok(_bound) = self.ctx.bind() {
            // SAFETY: this crate created the stream and no handle to it remains; pending work
            // still completes (cuStreamDestroy does not cancel it).
            unsafe { cu::cuStreamDestroy_v2(self.raw) };
        }
    }
}

impl Stream {
    /// The context the stream belongs to.
    pub(crate) fn context(&self) -> &Arc<Context> {
        &self.inner.ctx
    }

    pub(crate) fn new(ctx: &Arc<Context>) -> Result<Stream> {
        let _bound = ctx.bind()?;
        let mut raw: cu::CUstream = ptr::null_mut();
        // SAFETY: writes one handle; non-blocking, so it never syncs with the legacy stream 0.
        check(Op::Stream, "cuStreamCreate", unsafe {
            cu::cuStreamCreate(&mut raw, cu::STREAM_NON_BLOCKING)
        })?;
        Ok(Stream {
            inner: Arc::new(RawStream {
                raw,
                owned: true,
                ctx: ctx.clone(),
            }),
        })
    }

    /// Wraps a stream created elsewhere (PyTorch's `torch.cuda.current_stream().cuda_stream`,
    /// a `cudaStream_t` from the runtime API, cust's `Stream::as_inner()`), on the device of
    /// `device`. This crate never destroys it.
    ///
    /// # Safety
    /// `raw` must be a valid stream (or null for the legacy default stream) of `device`'s
    /// primary context, and stay valid for as long as any handle made from it is alive.
    pub unsafe fn from_raw(device: &crate::Device, raw: *mut c_void) -> Result<Stream> {
        let q = device.cuda_queue(Op::Stream)?;
        Ok(Stream {
            inner: Arc::new(RawStream {
                raw: raw.cast(),
                owned: false,
                ctx: q.ctx.clone(),
            }),
        })
    }

    /// The raw `CUstream` (`cudaStream_t`), for other CUDA libraries.
    pub fn as_raw(&self) -> *mut c_void {
        self.inner.raw.cast()
    }

    pub(crate) fn raw(&self) -> cu::CUstream {
        self.inner.raw
    }

    /// Blocks until all work issued to the stream has completed. Does not read the device
    /// error words of operations issued through a [`crate::Device`]: use
    /// [`crate::Device::synchronize`] for that.
    pub fn synchronize(&self) -> Result<()> {
        let _bound = self.inner.ctx.bind()?;
        // SAFETY: a valid stream of the bound context.
        check(Op::Stream, "cuStreamSynchronize", unsafe {
            cu::cuStreamSynchronize(self.inner.raw)
        })
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Stream({:p} on cuda:{}{})",
            self.inner.raw,
            self.inner.ctx.ordinal,
            if self.inner.owned { "" } else { ", borrowed" }
        )
    }
}

/// A CUDA event: a point in a stream's work that the host or another stream can wait for, and
/// (with timing) a clock for measuring GPU time.
pub struct Event {
    raw: cu::CUevent,
    ctx: Arc<Context>,
}

// SAFETY: a CUevent is a driver handle usable from any thread with its context current; it is
// destroyed only in Drop.
unsafe impl Send for Event {}
// SAFETY: as above; query and synchronize are thread-safe driver calls.
unsafe impl Sync for Event {}

impl Event {
    /// A new event; `timing` enables [`Event::elapsed_ms`] (slightly costlier to record).
    pub(crate) fn new(ctx: &Arc<Context>, timing: bool) -> Result<Event> {
        let _bound = ctx.bind()?;
        let flags = if timing {
            cu::EVENT_DEFAULT
        } else {
            cu::EVENT_DISABLE_TIMING
        };
        let mut raw: cu::CUevent = ptr::null_mut();
        // SAFETY: writes one handle.
        check(Op::Stream, "cuEventCreate", unsafe {
            cu::cuEventCreate(&mut raw, flags)
        })?;
        Ok(Event {
            raw,
            ctx: ctx.clone(),
        })
    }

    /// Records the event at the current end of `stream`'s work.
    pub fn record(&self, stream: &Stream) -> Result<()> {
        let _bound = self.ctx.bind()?;
        // SAFETY: both handles are valid in this context.
        check(Op::Stream, "cuEventRecord", unsafe {
            cu::cuEventRecord(self.raw, stream.raw())
        })
    }

    /// True when the work before the last [`Event::record`] has completed (or it was never
    /// recorded).
    pub fn query(&self) -> Result<bool> {
        let _bound = self.ctx.bind()?;
        // SAFETY: a valid event.
        match unsafe { cu::cuEventQuery(self.raw) } {
            cu::SUCCESS => Ok(true),
            cu::ERROR_NOT_READY => Ok(false),
            other => check(Op::Stream, "cuEventQuery", other).map(|()| false),
        }
    }

    /// Blocks until the work before the last [`Event::record`] has completed.
    pub fn synchronize(&self) -> Result<()> {
        let _bound = self.ctx.bind()?;
        // SAFETY: a valid event.
        check(Op::Stream, "cuEventSynchronize", unsafe {
            cu::cuEventSynchronize(self.raw)
        })
    }

    /// Milliseconds of GPU time between `start` and this event (both recorded with timing
    /// and completed).
    pub fn elapsed_ms(&self, start: &Event) -> Result<f32> {
        let mut ms = 0f32;
        let _bound = self.ctx.bind()?;
        // SAFETY: two valid events of the same context; writes one float.
        check(Op::Stream, "cuEventElapsedTime", unsafe {
            cu::cuEventElapsedTime(&mut ms, start.raw, self.raw)
        })?;
        Ok(ms)
    }

    /// Makes `stream` wait (on the GPU, the host does not block) for this event.
    pub fn make_wait(&self, stream: &Stream) -> Result<()> {
        let _bound = self.ctx.bind()?;
        // SAFETY: valid handles of this context.
        check(Op::Stream, "cuStreamWaitEvent", unsafe {
            cu::cuStreamWaitEvent(stream.raw(), self.raw, 0)
        })
    }

    /// The raw `CUevent` (`cudaEvent_t`).
    pub fn as_raw(&self) -> *mut c_void {
        self.raw.cast()
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if let Ok(_bound) = self.ctx.bind() {
            // SAFETY: this crate created the event; destroying a recorded, pending event is
            // allowed (the driver releases it when the work completes).
            unsafe { cu::cuEventDestroy_v2(self.raw) };
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Event({:p} on cuda:{})", self.raw, self.ctx.ordinal)
    }
}
