//! The CUDA backend's runtime: driver calls, contexts, the kernel module, streams, events,
//! device and pinned allocations, and the device error word's read-out.
//!
//! Every driver call goes through `check`, so a failure becomes an [`Error::Driver`](crate::Error::Driver) naming
//! the operation and the driver function. The entry points are declared in `driver.rs` with
//! `int` results (cust's raw enum lacks codes a CUDA 13 driver returns); cust supplies the handle
//! types and the link to `libcuda`. The crate keeps its own thin owners (not cust's
//! `Stream`/`DeviceBuffer`) because it must also accept streams and device pointers made by
//! other libraries in the same process.
//!
//! Contexts are the devices' *primary* contexts (what the CUDA runtime, PyTorch and CuPy use), so
//! memory and streams interoperate. Each context is retained once per process, and the embedded
//! fatbin is loaded into it once (`Context::get`).

pub(crate) mod driver;
pub(crate) mod ops;

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use driver as cu;

use crate::error::{Error, Op, Result};
use crate::kernels::launch::LaunchConfig;
use crate::kernels::{list, Kernel};

/// The architectures the embedded fatbin carries SASS for (PTX for the last).
pub use build_info::FATBIN_ARCHS;
mod build_info {
    include!(concat!(env!("OUT_DIR"), "/cuda_build_info.rs"));
}

#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

/// Every `kernels/*.cu`, compiled by nvcc in build.rs. Aligned, as the driver wants fat binaries.
static FATBIN: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/cpugpu_kernels.fatbin"
)));

/// The driver's name for any result code (static strings owned by the driver).
fn error_name(code: cu::CUresult) -> &'static str {
    let mut p: *const c_char = ptr::null();
    // SAFETY: cuGetErrorName writes a pointer to a static, NUL-terminated string, or fails for
    // unknown codes; it needs no context or cuInit.
    let r = unsafe { cu::cuGetErrorName(code, &mut p) };
    if r != cu::SUCCESS || p.is_null() {
        return "an unknown CUDA error";
    }
    // SAFETY: non-null, static and NUL-terminated per the driver API.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .unwrap_or("an unknown CUDA error")
}

/// `Ok` for `CUDA_SUCCESS`, else an [`Error::Driver`](crate::Error::Driver) naming `op` and `call`.
pub(crate) fn check(op: Op, call: &'static str, r: cu::CUresult) -> Result<()> {
    if r == cu::SUCCESS {
        return Ok(());
    }
    Err(Error::Driver {
        op,
        call,
        code: r as u32,
        name: error_name(r),
    })
}

/// Why no CUDA device can be used.
#[derive(Debug)]
pub(crate) struct NoDevice {
    /// The failing call's result code.
    pub(crate) code: cu::CUresult,
    /// The failing call.
    pub(crate) call: &'static str,
    /// A sentence for [`crate::Device::fallback_reason`].
    pub(crate) reason: String,
}

/// The device count, or why there is no CUDA device to use. Runs `cuInit` once per process.
pub(crate) fn probe() -> std::result::Result<usize, &'static NoDevice> {
    static PROBE: OnceLock<std::result::Result<usize, NoDevice>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let no = |code, call, reason: String| Err(NoDevice { code, call, reason });
            // SAFETY: cuInit may be called any number of times from any thread.
            let r = unsafe { cu::cuInit(0) };
            match r {
                cu::SUCCESS => {}
                cu::ERROR_NO_DEVICE => {
                    return no(
                        r,
                        "cuInit",
                        "no CUDA device: cuInit reported CUDA_ERROR_NO_DEVICE".into(),
                    )
                }
                cu::ERROR_INSUFFICIENT_DRIVER => {
                    return no(
                        r,
                        "cuInit",
                        "the NVIDIA driver is too old for this build \
                         (cuInit: CUDA_ERROR_INSUFFICIENT_DRIVER)"
                            .into(),
                    )
                }
                cu::ERROR_STUB_LIBRARY => {
                    return no(
                        r,
                        "cuInit",
                        "no NVIDIA driver: the libcuda found is a stub \
                         (cuInit: CUDA_ERROR_STUB_LIBRARY)"
                            .into(),
                    )
                }
                other => {
                    return no(
                        r,
                        "cuInit",
                        format!(
                            "no usable NVIDIA driver: cuInit failed with {}",
                            error_name(other)
                        ),
                    )
                }
            }
            let mut n = 0i32;
            // SAFETY: cuInit succeeded; writes one int.
            let r = unsafe { cu::cuDeviceGetCount(&mut n) };
            if r != cu::SUCCESS {
                return no(
                    r,
                    "cuDeviceGetCount",
                    format!("cuDeviceGetCount failed with {}", error_name(r)),
                );
            }
            if n <= 0 {
                return no(
                    cu::ERROR_NO_DEVICE,
                    "cuDeviceGetCount",
                    "no CUDA device: the driver reports 0 devices".into(),
                );
            }
            Ok(usize::try_from(n).unwrap_or(0))
        })
        .as_ref()
        .map(|n| *n)
}

/// A device's primary context with the kernel module loaded. Lives for the rest of the process
/// once opened (one module load per context, shared by every [`crate::Device`] on it).
pub(crate) struct Context {
    pub(crate) ordinal: u32,
    ctx: cu::CUcontext,
    functions: Vec<cu::CUfunction>,
    pub(crate) name: String,
    pub(crate) cc: (u32, u32),
    pools: bool,
}

// SAFETY: CUcontext, CUmodule and CUfunction handles are process-wide driver handles, usable
// from any thread once the context is made current there (every entry point does that, `bind`).
// The struct is immutable after construction.
unsafe impl Send for Context {}
// SAFETY: as above; shared access only reads the handles.
unsafe impl Sync for Context {}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cuda:{} ({}, sm_{}{})",
            self.ordinal, self.name, self.cc.0, self.cc.1
        )
    }
}

fn device_attribute(dev: cu::CUdevice, attr: std::ffi::c_int) -> Result<i32> {
    let mut v = 0i32;
    // SAFETY: writes one int; `dev` came from cuDeviceGet.
    check(Op::Device, "cuDeviceGetAttribute", unsafe {
        cu::cuDeviceGetAttribute(&mut v, attr, dev)
    })?;
    Ok(v)
}

/// Restores the calling thread's previous current context on drop (see [`Context::bind`]).
pub(crate) struct Bound {
    previous: Option<cu::CUcontext>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(prev) = self.previous {
            // SAFETY: `prev` was current on this thread a moment ago (a live context, or null,
            // which unbinds); restoring it leaves other libraries' state as they set it.
            unsafe { cu::cuCtxSetCurrent(prev) };
        }
    }
}

impl Context {
    /// The context of device `ordinal`, opened (and its module loaded) on first use.
    pub(crate) fn get(ordinal: u32) -> Result<Arc<Context>> {
        static OPEN: OnceLock<Mutex<HashMap<u32, Arc<Context>>>> = OnceLock::new();
        let count = probe().map_err(|no| Error::Driver {
            op: Op::Device,
            call: no.call,
            code: no.code as u32,
            name: error_name(no.code),
        })?;
        if usize::try_from(ordinal).map_or(true, |o| o >= count) {
            return Err(Error::InvalidArgument {
                op: Op::Device,
                name: "the device ordinal",
                value: i128::from(ordinal),
                reason: "no CUDA device has this ordinal",
            });
        }
        let mut open = lock(OPEN.get_or_init(Default::default));
        if let Some(c) = open.get(&ordinal) {
            return Ok(c.clone());
        }
        let c = Arc::new(Context::open(ordinal)?);
        open.insert(ordinal, c.clone());
        Ok(c)
    }

    fn open(ordinal: u32) -> Result<Context> {
        let op = Op::Device;
        let mut dev: cu::CUdevice = 0;
        let ord = i32::try_from(ordinal).unwrap_or(i32::MAX);
        // SAFETY: writes one CUdevice; the ordinal was checked against the device count.
        check(op, "cuDeviceGet", unsafe { cu::cuDeviceGet(&mut dev, ord) })?;
        let mut ctx: cu::CUcontext = ptr::null_mut();
        // SAFETY: retains the device's primary context (never released: it lives as long as the
        // process, like the CUDA runtime's).
        check(op, "cuDevicePrimaryCtxRetain", unsafe {
            cu::cuDevicePrimaryCtxRetain(&mut ctx, dev)
        })?;
        let mut name_buf = [0 as c_char; 256];
        // SAFETY: writes at most 256 bytes including the NUL.
        check(op, "cuDeviceGetName", unsafe {
            cu::cuDeviceGetName(name_buf.as_mut_ptr(), 256, dev)
        })?;
        // SAFETY: the driver NUL-terminated the name inside the buffer.
        let name = unsafe { CStr::from_ptr(name_buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let major = device_attribute(dev, cu::ATTR_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = device_attribute(dev, cu::ATTR_COMPUTE_CAPABILITY_MINOR)?;
        let pools = device_attribute(dev, cu::ATTR_MEMORY_POOLS_SUPPORTED)? != 0;
        let _ = device_attribute(dev, cu::ATTR_MULTIPROCESSOR_COUNT)?;
        let mut c = Context {
            ordinal,
            ctx,
            functions: Vec::new(),
            name,
            cc: (
                u32::try_from(major).unwrap_or(0),
                u32::try_from(minor).unwrap_or(0),
            ),
            pools,
        };
        let _bound = c.bind()?;
        if pools {
            // Keep memory freed with cuMemFreeAsync in the device's default pool instead of
            // returning it to the OS at every synchronisation, so per-operation scratch (scatter's
            // winners, scan tile sums, batched-copy metadata) is reused, not re-mapped.
            let mut pool: cu::CUmemoryPool = ptr::null_mut();
            // SAFETY: writes one handle for a valid device.
            check(op, "cuDeviceGetDefaultMemPool", unsafe {
                cu::cuDeviceGetDefaultMemPool(&mut pool, dev)
            })?;
            let mut threshold: u64 = u64::MAX;
            // SAFETY: the release threshold attribute takes a pointer to a cuuint64_t.
            check(op, "cuMemPoolSetAttribute", unsafe {
                cu::cuMemPoolSetAttribute(
                    pool,
                    cu::MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&mut threshold as *mut u64).cast(),
                )
            })?;
        }
        let mut module: cu::CUmodule = ptr::null_mut();
        // SAFETY: FATBIN is a complete fat binary produced by nvcc, 64-byte aligned and alive
        // for the program's lifetime; the context is current.
        check(op, "cuModuleLoadData", unsafe {
            cu::cuModuleLoadData(&mut module, FATBIN.0.as_ptr().cast())
        })?;
        let mut functions = Vec::with_capacity(list::KERNEL_NAMES.len());
        for &(name, test_only) in list::KERNEL_NAMES {
            let mut f: cu::CUfunction = ptr::null_mut();
            if !test_only {
                let cname = std::ffi::CString::new(name).unwrap_or_default();
                // SAFETY: module is loaded; writes one handle.
                check(op, "cuModuleGetFunction", unsafe {
                    cu::cuModuleGetFunction(&mut f, module, cname.as_ptr())
                })?;
            }
            functions.push(f);
        }
        drop(_bound);
        c.functions = functions;
        Ok(c)
    }

    /// Makes this context current on the calling thread until the returned guard drops, which
    /// restores whatever was current before (another library's context, or none). Cheap when
    /// this context is already current.
    pub(crate) fn bind(&self) -> Result<Bound> {
        let mut current: cu::CUcontext = ptr::null_mut();
        // SAFETY: writes one handle (null when the thread has none).
        let r = unsafe { cu::cuCtxGetCurrent(&mut current) };
        if r == cu::SUCCESS && current == self.ctx {
            return Ok(Bound { previous: None });
        }
        // SAFETY: ctx is a retained primary context, valid for the process's lifetime.
        check(Op::Device, "cuCtxSetCurrent", unsafe {
            cu::cuCtxSetCurrent(self.ctx)
        })?;
        Ok(Bound {
            previous: (r == cu::SUCCESS).then_some(current),
        })
    }
}

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
        let ctx = &stream.inner.ctx;
        let _bound = ctx.bind()?;
        let mut ptr: cu::CUdeviceptr = 0;
        if bytes > 0 {
            let (call, r) = if ctx.pools {
                // SAFETY: writes one pointer; stream is valid in the bound context.
                ("cuMemAllocAsync", unsafe {
                    cu::cuMemAllocAsync(&mut ptr, bytes, stream.raw())
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
        let Ok(_bound) = self.stream.inner.ctx.bind() else {
            return;
        };
        if self.stream.inner.ctx.pools {
            // SAFETY: allocated by cuMemAllocAsync; the free is ordered after all work already
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
    let _bound = stream.inner.ctx.bind()?;
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
        if let Ok(_bound) = self.ctx.bind() {
            // SAFETY: allocated by cuMemHostAlloc and freed once, here. Owners wait for the
            // device work that used it before dropping (the buffers' host gates, Queue's Drop).
            unsafe { cu::cuMemFreeHost(self.ptr.cast()) };
        }
    }
}

/// Entries of the error read-out ring; a full ring is settled (the stream synchronised and the
/// entries read) before the next capture.
pub(crate) const ERROR_SLOTS: usize = 256;

/// What a pending checked operation reports if its error word was set.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CheckKind {
    /// An index out of `0..bound` (negatives allowed or not).
    Index { bound: usize, signed32: bool },
    /// A negative length, or an offset past `limit`.
    Offsets { limit: i64, signed32: bool },
}

/// A pending report, in issue order.
#[derive(Debug)]
enum Pending {
    /// A `capture_error` kernel writes this slot of the read-out ring.
    Slot {
        op: Op,
        slot: usize,
        kind: CheckKind,
    },
    /// An error already known (a deferred failure, or the first error of a settled ring).
    Ready(Error),
}

struct ErrorRing {
    /// The device error word of this queue (one u64, re-armed by `capture_error`).
    word: DevAlloc,
    /// Mapped pinned memory: 2 u64 per slot (position, value), written by `capture_error`.
    out: HostAlloc,
    out_dev: cu::CUdeviceptr,
    pending: Vec<Pending>,
    next: usize,
}

impl ErrorRing {
    /// The first error among `entries` (issue order): a ready one, or a slot whose capture
    /// recorded a position. The slots' kernels must have completed.
    fn first_error(&self, entries: impl Iterator<Item = Pending>) -> Option<Error> {
        let base = self.out.ptr.cast::<u64>();
        for p in entries {
            let (op, slot, kind) = match p {
                Pending::Ready(e) => return Some(e),
                Pending::Slot { op, slot, kind } => (op, slot, kind),
            };
            // SAFETY: slot < ERROR_SLOTS, so both words lie inside the ring's allocation; the
            // capture kernel that writes them has completed (the caller synchronised the stream
            // after it was issued), and no kernel writes the slot again before it is reissued.
            let (pos, value) = unsafe {
                (
                    ptr::read_volatile(base.add(2 * slot)),
                    ptr::read_volatile(base.add(2 * slot + 1)),
                )
            };
            // SAFETY: as above; the slot is re-armed so a later lap cannot reread these words.
            unsafe {
                ptr::write_volatile(base.add(2 * slot), crate::kernels::abi::NO_ERROR);
                ptr::write_volatile(base.add(2 * slot + 1), 0);
            }
            if pos == crate::kernels::abi::NO_ERROR {
                continue;
            }
            let position = usize::try_from(pos).unwrap_or(usize::MAX);
            let widen = |signed32: bool| {
                if signed32 {
                    i64::from(value as u32 as i32)
                } else {
                    value as i64
                }
            };
            return Some(match kind {
                CheckKind::Index { bound, signed32 } => Error::IndexOutOfBounds {
                    op,
                    position,
                    index: widen(signed32),
                    bound,
                },
                CheckKind::Offsets { limit, signed32 } => {
                    let v = widen(signed32);
                    if v < 0 {
                        Error::NegativeLength {
                            op,
                            position,
                            value: v,
                        }
                    } else {
                        Error::OffsetOverflow {
                            op,
                            position,
                            limit,
                        }
                    }
                }
            });
        }
        None
    }
}

/// A [`crate::Device`] on CUDA: a context, the stream its work goes to, the error read-out and a
/// staging area for small host-to-device uploads of launch metadata.
pub(crate) struct Queue {
    pub(crate) ctx: Arc<Context>,
    pub(crate) stream: Stream,
    errors: Mutex<ErrorRing>,
    staging: Mutex<Vec<Staging>>,
    issue: Mutex<()>,
    settling: Mutex<()>,
}

struct Staging {
    host: HostAlloc,
    done: Option<Event>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Cross-stream ordering of one operation, from [`Queue::join`].
pub(crate) struct Joined<'a> {
    others: Vec<&'a Queue>,
}

impl Queue {
    pub(crate) fn new(ctx: Arc<Context>, stream: Stream) -> Result<Queue> {
        let _bound = ctx.bind()?;
        let word = DevAlloc::filled(Op::Device, &stream, 8, 0xFF)?;
        // Every slot starts as "no error", so a slot read too early could not invent one.
        let out = HostAlloc::new(Op::Device, &ctx, ERROR_SLOTS * 16, 0xFF)?;
        let out_dev = out.device_ptr(Op::Device)?;
        Ok(Queue {
            ctx,
            stream,
            errors: Mutex::new(ErrorRing {
                word,
                out,
                out_dev,
                pending: Vec::new(),
                next: 0,
            }),
            staging: Mutex::new(Vec::new()),
            issue: Mutex::new(()),
            settling: Mutex::new(()),
        })
    }

    /// Held while a checked operation enqueues its kernels and their `capture_error`, so two
    /// host threads sharing this queue cannot interleave on its one error word.
    pub(crate) fn issue(&self) -> MutexGuard<'_, ()> {
        lock(&self.issue)
    }

    /// Keeps `e` to be reported, in issue order, by a later [`Queue::synchronize`].
    pub(crate) fn defer_error(&self, e: Error) {
        lock(&self.errors).pending.push(Pending::Ready(e));
    }

    /// Orders this queue's next work after everything already issued to the streams of
    /// `operands` (the queues owning the memory an operation touches) that differ from this
    /// queue's stream. Call [`Joined::finish`] after the operation's work is issued.
    pub(crate) fn join<'a>(&self, operands: &[Option<&'a Queue>]) -> Result<Joined<'a>> {
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
            let e = Event::new(&o.ctx, false)?;
            e.record(&o.stream)?;
            e.make_wait(&self.stream)?;
        }
        Ok(Joined { others })
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
        let f = usize::try_from(kernel.id())
            .ok()
            .and_then(|i| self.ctx.functions.get(i).copied())
            .filter(|f| !f.is_null())
            .ok_or(Error::InvalidArgument {
                op,
                name: "kernel",
                value: i128::from(kernel.id()),
                reason: "not in the loaded module",
            })?;
        // Static shared memory is under 1 KiB and every plan stays at or below 48 KiB dynamic,
        // the limit without an opt-in; a larger request is a bug in the launch math, refused
        // rather than faulted.
        if cfg.shared_bytes > 47 * 1024 || cfg.grid == 0 || cfg.block == 0 || cfg.block > 1024 {
            return Err(Error::InvalidArgument {
                op,
                name: "launch configuration",
                value: i128::from(cfg.shared_bytes),
                reason: "outside the limits every supported GPU accepts",
            });
        }
        let _bound = self.ctx.bind()?;
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

    /// The error word to pass to a checked operation's kernels.
    pub(crate) fn error_word(&self) -> cu::CUdeviceptr {
        lock(&self.errors).word.ptr
    }

    /// Re-arms the error word after a checked operation failed to issue all its kernels (its
    /// capture will not run), so the next operation does not see a stale error.
    pub(crate) fn rearm(&self) {
        let word = lock(&self.errors).word.ptr;
        if let Err(e) = memset_u8(Op::Device, &self.stream, word, 0xFF, 8) {
            self.defer_error(e);
        }
    }

    /// After a checked operation's kernels: captures its error word (position and the element
    /// of `data` there, `data` holding `n` elements of `elem_bytes`) into a read-out slot, read
    /// at the next [`Queue::synchronize`]. Always issues the capture (which re-arms the word);
    /// a full ring is settled first, its first error kept for the next synchronisation.
    pub(crate) fn capture(
        &self,
        op: Op,
        kind: CheckKind,
        data: cu::CUdeviceptr,
        n: usize,
        elem_bytes: usize,
    ) -> Result<()> {
        let slots_in_use = |ring: &ErrorRing| {
            ring.pending
                .iter()
                .filter(|p| matches!(p, Pending::Slot { .. }))
                .count()
        };
        if slots_in_use(&lock(&self.errors)) >= ERROR_SLOTS {
            drop(self.settle());
        }
        let mut ring = lock(&self.errors);
        let slot = ring.next;
        ring.next = (ring.next + 1) % ERROR_SLOTS;
        let p = crate::kernels::abi::CpugpuErrorCaptureParams {
            error: ring.word.ptr as *mut u64,
            data: data as *const c_void,
            out: (ring.out_dev + (slot as u64) * 16) as *mut u64,
            n: crate::kernels::launch::i64_of(n),
            elem_bytes: crate::kernels::launch::i64_of(elem_bytes),
        };
        let cfg = LaunchConfig {
            grid: 1,
            block: 32,
            shared_bytes: 0,
        };
        // SAFETY: one thread reads the error word (8 bytes, ours), data[pos] only for pos < n
        // (the caller's input of n elements, alive in stream order), and writes 16 bytes of
        // slot `slot` of the mapped read-out ring (ours; no other pending entry uses the slot,
        // since at most ERROR_SLOTS are pending, and the host reads it only after a stream
        // synchronisation that follows this launch).
        if let Err(e) = unsafe { self.launch(op, list::capture_error, cfg, &p) } {
            drop(ring);
            self.rearm(); // the capture would have re-armed the word
            return Err(e);
        }
        ring.pending.push(Pending::Slot { op, slot, kind });
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
        let count = count.min(ring.pending.len());
        let done: Vec<Pending> = ring.pending.drain(..count).collect();
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

/// Page-locked staging blocks kept per queue for launch metadata; beyond this many in flight,
/// an upload waits for the oldest.
const MAX_STAGING_BLOCKS: usize = 8;

impl Joined<'_> {
    /// Orders the other streams' next work (a free, a memset, a host-gate wait) after the work
    /// this queue issued for the operation.
    pub(crate) fn finish(self, q: &Queue) -> Result<()> {
        if self.others.is_empty() {
            return Ok(());
        }
        let e = Event::new(&q.ctx, false)?;
        e.record(&q.stream)?;
        for o in self.others {
            e.make_wait(&o.stream)?;
        }
        Ok(())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The staging blocks and the error read-out ring are page-locked host memory that
        // in-flight copies and capture kernels may still use: let the stream drain first.
        let _ = self.stream.synchronize();
    }
}

/// Blocking copy of `bytes` from host `src` to device `dst` on `q`'s stream.
///
/// # Safety
/// `src` must be readable and `dst` writable for `bytes` bytes.
pub(crate) unsafe fn copy_htod_sync(
    op: Op,
    q: &Queue,
    dst: cu::CUdeviceptr,
    src: *const u8,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract; the stream sync below finishes the copy before the host
    // memory can be reused.
    unsafe { copy_htod_async(op, q, dst, src, bytes)? };
    q.stream.synchronize()
}

/// Asynchronous copy of `bytes` from host `src` to device `dst` on `q`'s stream.
///
/// # Safety
/// `src` must be readable and `dst` writable for `bytes` bytes until the copy completes; if
/// `src` is page-locked the copy runs after this returns, so the caller must keep it unchanged
/// until then (the buffers record an event for that).
pub(crate) unsafe fn copy_htod_async(
    op: Op,
    q: &Queue,
    dst: cu::CUdeviceptr,
    src: *const u8,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let _bound = q.ctx.bind()?;
    // SAFETY: the caller's contract.
    check(op, "cuMemcpyHtoDAsync", unsafe {
        cu::cuMemcpyHtoDAsync_v2(dst, src.cast(), bytes, q.stream.raw())
    })
}

/// Asynchronous copy of `bytes` from device `src` to host `dst` on `q`'s stream.
///
/// # Safety
/// `dst` must be writable and `src` readable for `bytes` bytes until the copy completes, and
/// nothing may read `dst` before that.
pub(crate) unsafe fn copy_dtoh_async(
    op: Op,
    q: &Queue,
    dst: *mut u8,
    src: cu::CUdeviceptr,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let _bound = q.ctx.bind()?;
    // SAFETY: the caller's contract.
    check(op, "cuMemcpyDtoHAsync", unsafe {
        cu::cuMemcpyDtoHAsync_v2(dst.cast(), src, bytes, q.stream.raw())
    })
}

/// Asynchronous device-to-device copy on `q`'s stream.
///
/// # Safety
/// `src` readable and `dst` writable for `bytes` bytes in stream order; the ranges do not
/// overlap.
pub(crate) unsafe fn copy_dtod_async(
    op: Op,
    q: &Queue,
    dst: cu::CUdeviceptr,
    src: cu::CUdeviceptr,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let _bound = q.ctx.bind()?;
    // SAFETY: the caller's contract.
    check(op, "cuMemcpyDtoDAsync", unsafe {
        cu::cuMemcpyDtoDAsync_v2(dst, src, bytes, q.stream.raw())
    })
}
