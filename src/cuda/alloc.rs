//! Allocations: device memory ([`DevAlloc`], stream-ordered from the crate's pool), page-locked
//! mapped host memory ([`HostAlloc`]), and the copies and memsets between them, each enqueued on
//! a stream.

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use super::context::Context;
use super::driver as cu;
use super::result::check;
use super::stream::Stream;
use crate::error::{Error, Op, Result};

/// Device memory from the stream-ordered allocator (or `cuMemAlloc` where pools are not
/// supported), freed in order on the stream it was allocated on. Work on other streams is
/// ordered before that free by [`Queue::join`].
pub(crate) struct DevAlloc {
    pub(crate) ptr: cu::CUdeviceptr,
    stream: Stream,
}

impl DevAlloc {
    /// `bytes` of uninitialised device memory, valid for work on `stream` from now on.
    pub(crate) fn new(op: Op, stream: &Stream, bytes: usize) -> Result<DevAlloc> {
        let ctx = stream.context();
        let _bound = ctx.bind()?;
        let mut ptr: cu::CUdeviceptr = 0;
        if bytes > 0 {
            let (call, r) = if let Some(pool) = ctx.pool {
                // SAFETY: writes one pointer; the pool is this context's and the stream valid
                // in the bound context.
                ("cuMemAllocFromPoolAsync", unsafe {
                    cu::cuMemAllocFromPoolAsync(&mut ptr, bytes, pool, stream.raw())
                })
            } else {
                // SAFETY: writes one pointer.
                ("cuMemAlloc", unsafe { cu::cuMemAlloc_v2(&mut ptr, bytes) })
            };
            if r == cu::ERROR_OUT_OF_MEMORY {
                return Err(Error::OutOfMemory { op, bytes });
            }
            check(op, call, r)?;
        }
        Ok(DevAlloc {
            ptr,
            stream: stream.clone(),
        })
    }

    /// `bytes` of device memory set to `byte` (enqueued on `stream`).
    pub(crate) fn filled(op: Op, stream: &Stream, bytes: usize, byte: u8) -> Result<DevAlloc> {
        let a = DevAlloc::new(op, stream, bytes)?;
        memset_u8(op, stream, a.ptr, byte, bytes)?;
        Ok(a)
    }
}

impl Drop for DevAlloc {
    fn drop(&mut self) {
        if self.ptr == 0 {
            return;
        }
        let Ok(_bound) = self.stream.context().bind() else {
            return;
        };
        if self.stream.context().pool.is_some() {
            // SAFETY: allocated from the pool in stream order; the free is ordered after all work already
            // enqueued on the allocating stream (and, through Queue::join's events, after work
            // other streams did on it), so in-flight kernels finish first.
            unsafe { cu::cuMemFreeAsync(self.ptr, self.stream.raw()) };
        } else {
            // SAFETY: allocated by cuMemAlloc. Wait for the stream's work first, so no kernel
            // still reads or writes the block when it is released.
            unsafe {
                cu::cuStreamSynchronize(self.stream.raw());
                cu::cuMemFree_v2(self.ptr);
            }
        }
    }
}

/// `cuMemsetD8Async` (every byte) on `stream`.
pub(crate) fn memset_u8(
    op: Op,
    stream: &Stream,
    ptr: cu::CUdeviceptr,
    byte: u8,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let _bound = stream.context().bind()?;
    // SAFETY: the caller passes a device range of at least `bytes` bytes it may write.
    check(op, "cuMemsetD8Async", unsafe {
        cu::cuMemsetD8Async(ptr, byte, bytes, stream.raw())
    })
}

/// Page-locked host memory mapped into the device's address space (`cuMemHostAlloc` with
/// `PORTABLE | DEVICEMAP`): the allocation behind pinned and UVA buffers on CUDA.
pub(crate) struct HostAlloc {
    pub(crate) ptr: *mut u8,
    pub(crate) bytes: usize,
    ctx: Arc<Context>,
}

// SAFETY: the allocation is plain page-locked memory owned uniquely by this value; freed only in
// Drop.
unsafe impl Send for HostAlloc {}
// SAFETY: shared access exposes only the pointer value; reads and writes go through
// borrow-checked owners.
unsafe impl Sync for HostAlloc {}

impl HostAlloc {
    /// `bytes` (> 0) of page-locked, mapped host memory, every byte set to `byte`.
    pub(crate) fn new(op: Op, ctx: &Arc<Context>, bytes: usize, byte: u8) -> Result<HostAlloc> {
        debug_assert!(bytes > 0);
        let _bound = ctx.bind()?;
        let mut p: *mut c_void = ptr::null_mut();
        // SAFETY: writes one pointer.
        let r = unsafe {
            cu::cuMemHostAlloc(
                &mut p,
                bytes,
                cu::MEMHOSTALLOC_PORTABLE | cu::MEMHOSTALLOC_DEVICEMAP,
            )
        };
        if r == cu::ERROR_OUT_OF_MEMORY {
            return Err(Error::OutOfMemory { op, bytes });
        }
        check(op, "cuMemHostAlloc", r)?;
        // SAFETY: p points at `bytes` writable bytes just allocated and owned by us.
        unsafe { ptr::write_bytes(p.cast::<u8>(), byte, bytes) };
        Ok(HostAlloc {
            ptr: p.cast(),
            bytes,
            ctx: ctx.clone(),
        })
    }

    /// Moves the allocation out, leaving `self` empty (its drop then frees nothing).
    pub(crate) fn take(&mut self) -> HostAlloc {
        let empty = HostAlloc {
            ptr: ptr::null_mut(),
            bytes: 0,
            ctx: self.ctx.clone(),
        };
        std::mem::replace(self, empty)
    }

    /// The address kernels use for this memory (`cuMemHostGetDevicePointer`).
    pub(crate) fn device_ptr(&self, op: Op) -> Result<cu::CUdeviceptr> {
        let _bound = self.ctx.bind()?;
        let mut d: cu::CUdeviceptr = 0;
        // SAFETY: ptr is a live DEVICEMAP allocation of this context; writes one pointer.
        check(op, "cuMemHostGetDevicePointer", unsafe {
            cu::cuMemHostGetDevicePointer_v2(&mut d, self.ptr.cast(), 0)
        })?;
        Ok(d)
    }
}

impl Drop for HostAlloc {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return; // emptied by `take`
        }
        if let Ok(_bound) = self.ctx.bind() {
            // SAFETY: allocated by cuMemHostAlloc and freed once, here. Owners wait for the
            // device work that used it before dropping (the buffers' host gates, Queue's Drop).
            unsafe { cu::cuMemFreeHost(self.ptr.cast()) };
        }
    }
}

/// Blocking copy of `bytes` from host `src` to device `dst` on `stream`.
///
/// # Safety
/// `src` must be readable and `dst` writable for `bytes` bytes.
pub(crate) unsafe fn copy_htod_sync(
    op: Op,
    stream: &Stream,
    dst: cu::CUdeviceptr,
    src: *const u8,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract; the stream sync below finishes the copy before the host
    // memory can be reused.
    unsafe { copy_htod_async(op, stream, dst, src, bytes)? };
    stream.synchronize()
}

/// Asynchronous copy of `bytes` from host `src` to device `dst` on `stream`.
///
/// # Safety
/// `src` must be readable and `dst` writable for `bytes` bytes until the copy completes; if
/// `src` is page-locked the copy runs after this returns, so the caller must keep it unchanged
/// until then (the buffers record an event for that).
pub(crate) unsafe fn copy_htod_async(
    op: Op,
    stream: &Stream,
    dst: cu::CUdeviceptr,
    src: *const u8,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let _bound = stream.context().bind()?;
    // SAFETY: the caller's contract.
    check(op, "cuMemcpyHtoDAsync", unsafe {
        cu::cuMemcpyHtoDAsync_v2(dst, src.cast(), bytes, stream.raw())
    })
}

/// Asynchronous copy of `bytes` from device `src` to host `dst` on `stream`.
///
/// # Safety
/// `dst` must be writable and `src` readable for `bytes` bytes until the copy completes, and
/// nothing may read `dst` before that.
pub(crate) unsafe fn copy_dtoh_async(
    op: Op,
    stream: &Stream,
    dst: *mut u8,
    src: cu::CUdeviceptr,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let _bound = stream.context().bind()?;
    // SAFETY: the caller's contract.
    check(op, "cuMemcpyDtoHAsync", unsafe {
        cu::cuMemcpyDtoHAsync_v2(dst.cast(), src, bytes, stream.raw())
    })
}

/// Asynchronous device-to-device copy on `stream`.
///
/// # Safety
/// `src` readable and `dst` writable for `bytes` bytes in stream order; the ranges do not
/// overlap.
pub(crate) unsafe fn copy_dtod_async(
    op: Op,
    stream: &Stream,
    dst: cu::CUdeviceptr,
    src: cu::CUdeviceptr,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let _bound = stream.context().bind()?;
    // SAFETY: the caller's contract.
    check(op, "cuMemcpyDtoDAsync", unsafe {
        cu::cuMemcpyDtoDAsync_v2(dst, src, bytes, stream.raw())
    })
}
