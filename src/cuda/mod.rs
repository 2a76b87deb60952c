//! The CUDA backend's runtime: driver calls, contexts, the kernel module, streams, events,
//! device and pinned allocations, and the device error word's read-out.
//!
//! Every driver call goes through cust's driver bindings (`cust::sys`) and [`check`], so a
//! failure becomes an [`Error::Driver`] naming the operation and the driver function. The crate
//! keeps its own thin owners (not cust's `Stream`/`DeviceBuffer`) because it must also accept
//! streams and device pointers made by other libraries in the same process.
//!
//! Contexts are the devices' *primary* contexts (what the CUDA runtime, PyTorch and CuPy use), so
//! memory and streams interoperate. Each context is retained once per process, and the embedded
//! fatbin is loaded into it once ([`Context::get`]).

pub(crate) mod ops;

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cust::sys as cu;

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

/// The driver's name for `code` (static strings owned by the driver), or a placeholder.
fn error_name(code: cu::CUresult) -> &'static str {
    let mut p: *const c_char = ptr::null();
    // SAFETY: cuGetErrorName only writes a pointer to a static, NUL-terminated string (or
    // leaves it null for an unknown code); it needs no context or cuInit.
    let r = unsafe { cu::cuGetErrorName(code, &mut p) };
    if r != cu::CUresult::CUDA_SUCCESS || p.is_null() {
        return "CUDA_ERROR_UNKNOWN";
    }
    // SAFETY: non-null, static and NUL-terminated per the driver API.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .unwrap_or("CUDA_ERROR_UNKNOWN")
}

/// Driver entry points declared with `int` results, for calls whose answers may include codes
/// that cust_raw's `CUresult` enum (generated for an older CUDA) lacks.
mod raw {
    extern "C" {
        pub(super) fn cuInit(flags: u32) -> i32;
        pub(super) fn cuGetErrorName(error: i32, p: *mut *const std::ffi::c_char) -> i32;
    }
}

/// The driver's name for any result code (static strings owned by the driver).
fn raw_error_name(code: i32) -> &'static str {
    let mut p: *const c_char = ptr::null();
    // SAFETY: cuGetErrorName writes a pointer to a static string, or fails for unknown codes.
    let r = unsafe { raw::cuGetErrorName(code, &mut p) };
    if r != 0 || p.is_null() {
        return "an unknown CUDA error";
    }
    // SAFETY: non-null, static and NUL-terminated per the driver API.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .unwrap_or("an unknown CUDA error")
}

/// `Ok` for `CUDA_SUCCESS`, else an [`Error::Driver`] naming `op` and `call`.
pub(crate) fn check(op: Op, call: &'static str, r: cu::CUresult) -> Result<()> {
    if r == cu::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    Err(Error::Driver {
        op,
        call,
        code: r as u32,
        name: error_name(r),
    })
}

/// Why there is no CUDA device to use, or `Ok` with the device count.
pub(crate) fn probe() -> std::result::Result<usize, &'static str> {
    static PROBE: OnceLock<std::result::Result<usize, String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // SAFETY: cuInit may be called any number of times from any thread. Declared here
            // returning a plain int (not cust's CUresult enum): an old driver answers
            // CUDA_ERROR_INSUFFICIENT_DRIVER (35), which cust_raw's enum lacks, and an
            // undeclared enum value would be undefined behaviour.
            let r = unsafe { raw::cuInit(0) };
            match r {
                0 => {}
                100 => return Err("no CUDA device: cuInit reported CUDA_ERROR_NO_DEVICE".into()),
                35 => {
                    return Err("the NVIDIA driver is too old for this build \
                        (cuInit: CUDA_ERROR_INSUFFICIENT_DRIVER)"
                        .into())
                }
                34 => {
                    return Err("no NVIDIA driver: the libcuda found is a stub \
                        (cuInit: CUDA_ERROR_STUB_LIBRARY)"
                        .into())
                }
                other => {
                    return Err(format!(
                        "no usable NVIDIA driver: cuInit failed with {}",
                        raw_error_name(other)
                    ))
                }
            }
            let mut n = 0i32;
            // SAFETY: cuInit succeeded; writes one int.
            let r = unsafe { cu::cuDeviceGetCount(&mut n) };
            if r != cu::CUresult::CUDA_SUCCESS {
                return Err(format!("cuDeviceGetCount failed with {}", error_name(r)));
            }
            if n <= 0 {
                return Err("no CUDA device: the driver reports 0 devices".into());
            }
            Ok(usize::try_from(n).unwrap_or(0))
        })
        .as_ref()
        .map(|n| *n)
        .map_err(|s| s.as_str())
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

fn device_attribute(dev: cu::CUdevice, attr: cu::CUdevice_attribute) -> Result<i32> {
    let mut v = 0i32;
    // SAFETY: writes one int; `dev` came from cuDeviceGet.
    check(Op::Device, "cuDeviceGetAttribute", unsafe {
        cu::cuDeviceGetAttribute(&mut v, attr, dev)
    })?;
    Ok(v)
}

impl Context {
    /// The context of device `ordinal`, opened (and its module loaded) on first use.
    pub(crate) fn get(ordinal: u32) -> Result<Arc<Context>> {
        static OPEN: OnceLock<Mutex<HashMap<u32, Arc<Context>>>> = OnceLock::new();
        let count = probe().map_err(|_| Error::Driver {
            op: Op::Device,
            call: "cuInit",
            code: cu::CUresult::CUDA_ERROR_NO_DEVICE as u32,
            name: "CUDA_ERROR_NO_DEVICE",
        })?;
        if usize::try_from(ordinal).map_or(true, |o| o >= count) {
            return Err(Error::InvalidArgument {
                op: Op::Device,
                name: "the device ordinal",
                value: i128::from(ordinal),
                reason: "no CUDA device has this ordinal",
            });
        }
        let mut open = OPEN
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
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
        // SAFETY: retains the device's primary context (released never: it lives as long as
        // the process, like the CUDA runtime's).
        check(op, "cuDevicePrimaryCtxRetain", unsafe {
            cu::cuDevicePrimaryCtxRetain(&mut ctx, dev)
        })?;
        // SAFETY: ctx is the valid context just retained.
        check(op, "cuCtxSetCurrent", unsafe { cu::cuCtxSetCurrent(ctx) })?;
        let mut name_buf = [0 as c_char; 256];
        // SAFETY: writes at most 256 bytes including the NUL.
        check(op, "cuDeviceGetName", unsafe {
            cu::cuDeviceGetName(name_buf.as_mut_ptr(), 256, dev)
        })?;
        // SAFETY: the driver NUL-terminated the name inside the buffer.
        let name = unsafe { CStr::from_ptr(name_buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        use cu::CUdevice_attribute_enum as A;
        let major = device_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = device_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let pools = device_attribute(dev, A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)? != 0;
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
        Ok(Context {
            ordinal,
            ctx,
            functions,
            name,
            cc: (
                u32::try_from(major).unwrap_or(0),
                u32::try_from(minor).unwrap_or(0),
            ),
            pools,
        })
    }

    /// Makes the context current on the calling thread (every entry point calls it). The
    /// thread is left on this device's primary context, the one the CUDA runtime itself uses
    /// for the device, so runtime-API libraries on the same device are unaffected.
    pub(crate) fn bind(&self) -> Result<()> {
        let mut current: cu::CUcontext = ptr::null_mut();
        // SAFETY: writes one handle (null when the thread has none).
        let r = unsafe { cu::cuCtxGetCurrent(&mut current) };
        if r == cu::CUresult::CUDA_SUCCESS && current == self.ctx {
            return Ok(());
        }
        // SAFETY: ctx is a retained primary context, valid for the process's lifetime.
        check(Op::Device, "cuCtxSetCurrent", unsafe {
            cu::cuCtxSetCurrent(self.ctx)
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
        if self.owned && self.ctx.bind().is_ok() {
            // SAFETY: this crate created the stream and no handle to it remains; pending work
            // still completes (cuStreamDestroy does not cancel it).
            unsafe { cu::cuStreamDestroy_v2(self.raw) };
        }
    }
}

impl Stream {
    pub(crate) fn new(ctx: &Arc<Context>) -> Result<Stream> {
        ctx.bind()?;
        let mut raw: cu::CUstream = ptr::null_mut();
        // SAFETY: writes one handle; non-blocking, so it never syncs with the legacy stream 0.
        check(Op::Stream, "cuStreamCreate", unsafe {
            cu::cuStreamCreate(
                &mut raw,
                cu::CUstream_flags_enum::CU_STREAM_NON_BLOCKING as u32,
            )
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
        self.inner.ctx.bind()?;
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
        ctx.bind()?;
        let flags = if timing {
            cu::CUevent_flags_enum::CU_EVENT_DEFAULT as u32
        } else {
            cu::CUevent_flags_enum::CU_EVENT_DISABLE_TIMING as u32
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
        self.ctx.bind()?;
        // SAFETY: both handles are valid in this context.
        check(Op::Stream, "cuEventRecord", unsafe {
            cu::cuEventRecord(self.raw, stream.raw())
        })
    }

    /// True when the work before the last [`Event::record`] has completed (or it was never
    /// recorded).
    pub fn query(&self) -> Result<bool> {
        self.ctx.bind()?;
        // SAFETY: a valid event.
        match unsafe { cu::cuEventQuery(self.raw) } {
            cu::CUresult::CUDA_SUCCESS => Ok(true),
            cu::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            other => check(Op::Stream, "cuEventQuery", other).map(|()| false),
        }
    }

    /// Blocks until the work before the last [`Event::record`] has completed.
    pub fn synchronize(&self) -> Result<()> {
        self.ctx.bind()?;
        // SAFETY: a valid event.
        check(Op::Stream, "cuEventSynchronize", unsafe {
            cu::cuEventSynchronize(self.raw)
        })
    }

    /// Milliseconds of GPU time between `start` and this event (both recorded with timing
    /// and completed).
    pub fn elapsed_ms(&self, start: &Event) -> Result<f32> {
        let mut ms = 0f32;
        self.ctx.bind()?;
        // SAFETY: two valid events of the same context; writes one float.
        check(Op::Stream, "cuEventElapsedTime", unsafe {
            cu::cuEventElapsedTime(&mut ms, start.raw, self.raw)
        })?;
        Ok(ms)
    }

    /// Makes `stream` wait (on the GPU, the host does not block) for this event.
    pub fn make_wait(&self, stream: &Stream) -> Result<()> {
        self.ctx.bind()?;
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
        if self.ctx.bind().is_ok() {
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
/// supported), freed in order on the stream it was allocated on.
pub(crate) struct DevAlloc {
    pub(crate) ptr: cu::CUdeviceptr,
    stream: Stream,
}

impl DevAlloc {
    /// `bytes` of uninitialised device memory, valid for work on `stream` from now on.
    pub(crate) fn new(op: Op, stream: &Stream, bytes: usize) -> Result<DevAlloc> {
        let ctx = &stream.inner.ctx;
        ctx.bind()?;
        let mut ptr: cu::CUdeviceptr = 0;
        if bytes > 0 {
            let r = if ctx.pools {
                // SAFETY: writes one pointer; stream is valid in the bound context.
                unsafe { cu::cuMemAllocAsync(&mut ptr, bytes, stream.raw()) }
            } else {
                // SAFETY: writes one pointer.
                unsafe { cu::cuMemAlloc_v2(&mut ptr, bytes) }
            };
            if r == cu::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                return Err(Error::OutOfMemory { op, bytes });
            }
            check(op, "cuMemAllocAsync", r)?;
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
        if self.ptr == 0 || self.stream.inner.ctx.bind().is_err() {
            return;
        }
        if self.stream.inner.ctx.pools {
            // SAFETY: allocated by cuMemAllocAsync; the free is ordered after all work already
            // enqueued on the allocating stream, so in-flight kernels on it finish first.
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
    /// `bytes` (> 0) of zeroed, page-locked, mapped host memory.
    pub(crate) fn new(op: Op, ctx: &Arc<Context>, bytes: usize) -> Result<HostAlloc> {
        debug_assert!(bytes > 0);
        ctx.bind()?;
        let mut p: *mut c_void = ptr::null_mut();
        // SAFETY: writes one pointer.
        let r = unsafe {
            cu::cuMemHostAlloc(
                &mut p,
                bytes,
                cu::CU_MEMHOSTALLOC_PORTABLE | cu::CU_MEMHOSTALLOC_DEVICEMAP,
            )
        };
        if r == cu::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            return Err(Error::OutOfMemory { op, bytes });
        }
        check(op, "cuMemHostAlloc", r)?;
        // SAFETY: p points at `bytes` writable bytes just allocated and owned by us.
        unsafe { ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
        Ok(HostAlloc {
            ptr: p.cast(),
            bytes,
            ctx: ctx.clone(),
        })
    }

    /// The address kernels use for this memory (`cuMemHostGetDevicePointer`).
    pub(crate) fn device_ptr(&self, op: Op) -> Result<cu::CUdeviceptr> {
        self.ctx.bind()?;
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
        if self.ctx.bind().is_ok() {
            // SAFETY: allocated by cuMemHostAlloc and freed once, here. Owners wait for the
            // device work that used it before dropping (the buffers' host gates).
            unsafe { cu::cuMemFreeHost(self.ptr.cast()) };
        }
    }
}

/// Entries of the error read-out ring; a full ring synchronises the stream first.
const ERROR_SLOTS: usize = 256;

/// What a pending checked operation reports if its error word was set.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CheckKind {
    /// An index out of `0..bound` (negatives allowed or not).
    Index { bound: usize, signed32: bool },
    /// A negative length, or an offset past `limit`.
    Offsets { limit: i64, signed32: bool },
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    op: Op,
    slot: usize,
    kind: CheckKind,
}

struct ErrorRing {
    /// The device error word of this queue (one u64, re-armed by `capture_error`).
    word: DevAlloc,
    /// Mapped pinned memory: 2 u64 per slot (position, value), written by `capture_error`.
    out: HostAlloc,
    out_dev: cu::CUdeviceptr,
    pending: Vec<Pending>,
    next: usize,
    /// A failure of an infallible-looking call (a fill), reported at the next synchronise.
    deferred: Option<Error>,
}

/// A [`crate::Device`] on CUDA: a context, the stream its work goes to, the error read-out and a
/// staging area for small host-to-device uploads of launch metadata.
pub(crate) struct Queue {
    pub(crate) ctx: Arc<Context>,
    pub(crate) stream: Stream,
    errors: Mutex<ErrorRing>,
    staging: Mutex<Vec<Staging>>,
    issue: Mutex<()>,
}

struct Staging {
    host: HostAlloc,
    done: Option<Event>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queue {
    pub(crate) fn new(ctx: Arc<Context>, stream: Stream) -> Result<Queue> {
        ctx.bind()?;
        let word = DevAlloc::filled(Op::Device, &stream, 8, 0xFF)?;
        let out = HostAlloc::new(Op::Device, &ctx, ERROR_SLOTS * 16)?;
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
                deferred: None,
            }),
            staging: Mutex::new(Vec::new()),
            issue: Mutex::new(()),
        })
    }

    /// Held while a checked operation enqueues its kernels and their `capture_error`, so two
    /// host threads sharing this queue cannot interleave on its one error word.
    pub(crate) fn issue(&self) -> MutexGuard<'_, ()> {
        lock(&self.issue)
    }

    /// Keeps `e` for the next [`Queue::synchronize`] (the first one kept wins).
    pub(crate) fn defer_error(&self, e: Error) {
        let mut ring = lock(&self.errors);
        if ring.deferred.is_none() {
            ring.deferred = Some(e);
        }
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
        // Static shared memory is 0 and every plan stays at or below 48 KiB, the limit without
        // an opt-in; a larger request is a bug in the launch math, refused rather than faulted.
        if cfg.shared_bytes > 48 * 1024 || cfg.grid == 0 || cfg.block == 0 || cfg.block > 1024 {
            return Err(Error::InvalidArgument {
                op,
                name: "launch configuration",
                value: i128::from(cfg.shared_bytes),
                reason: "outside the limits every supported GPU accepts",
            });
        }
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

    /// After a checked operation's kernels: captures its error word (position and the element
    /// of `data` there, `data` holding `n` elements of `elem_bytes`) into a read-out slot, read
    /// at the next [`Queue::synchronize`].
    pub(crate) fn capture(
        &self,
        op: Op,
        kind: CheckKind,
        data: cu::CUdeviceptr,
        n: usize,
        elem_bytes: usize,
    ) -> Result<()> {
        let full = lock(&self.errors).pending.len() >= ERROR_SLOTS;
        if full {
            self.synchronize()?;
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
        // slot `slot` of the mapped read-out ring (ours; not read by the host until after a
        // stream sync).
        unsafe { self.launch(op, list::capture_error, cfg, &p)? };
        ring.pending.push(Pending { op, slot, kind });
        Ok(())
    }

    /// Waits for all work on the stream, then reports the first device-detected error of the
    /// operations issued since the last synchronisation (the earliest one; later ones are
    /// dropped with it).
    pub(crate) fn synchronize(&self) -> Result<()> {
        let synced = self.stream.synchronize();
        let mut ring = lock(&self.errors);
        if let Some(e) = ring.deferred.take() {
            ring.pending.clear();
            return Err(e);
        }
        synced?;
        let pending = std::mem::take(&mut ring.pending);
        let base = ring.out.ptr.cast::<u64>();
        for p in pending {
            // SAFETY: slot < ERROR_SLOTS, so both words lie inside the ring's allocation; the
            // stream is synchronised, so capture_error's writes are complete and visible, and
            // no kernel writes the slot until it is reused after this read.
            let (pos, value) = unsafe {
                (
                    ptr::read_volatile(base.add(2 * p.slot)),
                    ptr::read_volatile(base.add(2 * p.slot + 1)),
                )
            };
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
            return Err(match p.kind {
                CheckKind::Index { bound, signed32 } => Error::IndexOutOfBounds {
                    op: p.op,
                    position,
                    index: widen(signed32),
                    bound,
                },
                CheckKind::Offsets { limit, signed32 } => {
                    let v = widen(signed32);
                    if v < 0 {
                        Error::NegativeLength {
                            op: p.op,
                            position,
                            value: v,
                        }
                    } else {
                        Error::OffsetOverflow {
                            op: p.op,
                            position,
                            limit,
                        }
                    }
                }
            });
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
        let i = match pick {
            Some(i) => i,
            None => {
                let bytes = data.len().next_power_of_two().max(64 * 1024);
                pool.push(Staging {
                    host: HostAlloc::new(op, &self.ctx, bytes)?,
                    done: None,
                });
                pool.len() - 1
            }
        };
        let s = &mut pool[i];
        // SAFETY: the staging block has at least data.len() bytes and no copy reads it (its
        // event completed or it is new); we hold the pool lock, so nobody else writes it.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), s.host.ptr, data.len()) };
        // SAFETY: dst has data.len() bytes; the source is page-locked and stays untouched until
        // the event recorded below completes.
        check(op, "cuMemcpyHtoDAsync", unsafe {
            cu::cuMemcpyHtoDAsync_v2(dst.ptr, s.host.ptr.cast(), data.len(), self.stream.raw())
        })?;
        let e = match s.done.take() {
            Some(e) => e,
            None => Event::new(&self.ctx, false)?,
        };
        e.record(&self.stream)?;
        s.done = Some(e);
        Ok(dst)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The staging blocks and the error read-out ring are page-locked host memory that
        // in-flight copies and capture kernels may still use: let the stream drain first.
        if self.ctx.bind().is_ok() {
            let _ = self.stream.synchronize();
        }
    }
}

/// Blocking copy of `bytes` from host `src` to device `dst` on `stream`.
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
    q.ctx.bind()?;
    // SAFETY: the caller's contract; the stream sync below finishes the copy before the host
    // memory can be reused.
    check(op, "cuMemcpyHtoDAsync", unsafe {
        cu::cuMemcpyHtoDAsync_v2(dst, src.cast(), bytes, q.stream.raw())
    })?;
    q.stream.synchronize()
}

/// Asynchronous copy of `bytes` from host `src` to device `dst` on `stream`.
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
    q.ctx.bind()?;
    // SAFETY: the caller's contract.
    check(op, "cuMemcpyHtoDAsync", unsafe {
        cu::cuMemcpyHtoDAsync_v2(dst, src.cast(), bytes, q.stream.raw())
    })
}

/// Asynchronous copy of `bytes` from device `src` to host `dst` on `stream`.
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
    q.ctx.bind()?;
    // SAFETY: the caller's contract.
    check(op, "cuMemcpyDtoHAsync", unsafe {
        cu::cuMemcpyDtoHAsync_v2(dst.cast(), src, bytes, q.stream.raw())
    })
}

/// Asynchronous device-to-device copy on `stream`.
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
    q.ctx.bind()?;
    // SAFETY: the caller's contract.
    check(op, "cuMemcpyDtoDAsync", unsafe {
        cu::cuMemcpyDtoDAsync_v2(dst, src, bytes, q.stream.raw())
    })
}
