//! A device's primary context with the crate's kernel module loaded and its memory pool made:
//! opened once per process and shared by every [`crate::Device`] on that GPU.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::driver as cu;
use super::result::{check, probe};
use crate::error::{Error, Op, Result};
use crate::kernels::list;

/// The architectures the embedded fatbin carries SASS for (PTX for the last); empty for the
/// emulated GPU's image.
pub use build_info::FATBIN_ARCHS;
mod build_info {
    include!(concat!(env!("OUT_DIR"), "/cuda_build_info.rs"));
}

#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

/// The kernel module: every `kernels/*.cu`, compiled by nvcc in build.rs (`--features cuda`), or
/// the emulated GPU's image naming the kernels it holds (`--features emulator`). Aligned, as the
/// driver wants fat binaries.
static IMAGE: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
    env!("OUT_DIR"),
    "/cpugpu_kernels.fatbin"
)));

/// Dynamic shared memory a launch may use without the per-function opt-in.
const DEFAULT_DYNAMIC_SHARED: u32 = 48 * 1024;

/// One kernel of the loaded module.
pub(crate) struct Function {
    pub(crate) raw: cu::CUfunction,
    /// The dynamic shared memory this function was opted in to (0: the default 48 KiB); only
    /// grows, and is changed under `opting`.
    opted_in: AtomicU32,
    opting: Mutex<()>,
}

/// A device's primary context with the kernel module loaded. Lives for the rest of the process
/// once opened (one module load per context, shared by every [`crate::Device`] on it).
pub(crate) struct Context {
    pub(crate) ordinal: u32,
    ctx: cu::CUcontext,
    functions: Vec<Function>,
    pub(crate) name: String,
    pub(crate) cc: (u32, u32),
    /// Streaming multiprocessors: the launch policy sizes grids by them.
    pub(crate) sm_count: u32,
    /// The crate's own stream-ordered memory pool (`None` where the device has none: plain
    /// `cuMemAlloc`). Not the device's default pool, whose settings other libraries in the
    /// process (PyTorch among them) rely on.
    pub(crate) pool: Option<cu::CUmemoryPool>,
    max_dynamic_shared: u32,
    /// Memory an owner dropped while a stream's work may still use it, freed once its event
    /// has completed ([`Context::release_after`], [`Context::sweep`]).
    reclaim: Mutex<Vec<Reclaim>>,
}

// SAFETY: CUcontext, CUmodule, CUfunction and CUmemoryPool handles are process-wide driver
// handles, usable from any thread once the context is made current there (every entry point does
// that, `bind`). The handles are immutable after construction; the opt-in sizes are atomics and
// the reclaim list is behind a mutex.
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

/// Memory a dropped owner left to a stream's in-flight work: freed once `done` has completed.
struct Reclaim {
    done: super::stream::Event,
    _keep: Box<dyn std::any::Any + Send>,
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
        let count = probe().map_err(|no| no.error())?;
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
        let sms = device_attribute(dev, cu::ATTR_MULTIPROCESSOR_COUNT)?;
        let optin = device_attribute(dev, cu::ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let mut c = Context {
            ordinal,
            ctx,
            functions: Vec::new(),
            name,
            cc: (
                u32::try_from(major).unwrap_or(0),
                u32::try_from(minor).unwrap_or(0),
            ),
            sm_count: u32::try_from(sms).unwrap_or(1).max(1),
            pool: None,
            max_dynamic_shared: u32::try_from(optin)
                .unwrap_or(0)
                .max(DEFAULT_DYNAMIC_SHARED),
            reclaim: Mutex::new(Vec::new()),
        };
        let bound = c.bind()?;
        if pools {
            c.pool = Some(create_pool(ord)?);
        }
        let mut module: cu::CUmodule = ptr::null_mut();
        // SAFETY: IMAGE is a complete module image built by build.rs, 64-byte aligned and alive
        // for the program's lifetime; the context is current.
        check(op, "cuModuleLoadData", unsafe {
            cu::cuModuleLoadData(&mut module, IMAGE.0.as_ptr().cast())
        })?;
        let mut functions = Vec::with_capacity(list::KERNEL_NAMES.len());
        for &(name, test_only) in list::KERNEL_NAMES {
            let mut f: cu::CUfunction = ptr::null_mut();
            // The real fatbin holds no test kernels; the emulated image holds them all.
            if !test_only || cfg!(cpugpu_emulated) {
                let cname = CString::new(name).unwrap_or_default();
                // SAFETY: module is loaded; writes one handle.
                check(op, "cuModuleGetFunction", unsafe {
                    cu::cuModuleGetFunction(&mut f, module, cname.as_ptr())
                })?;
            }
            functions.push(Function {
                raw: f,
                opted_in: AtomicU32::new(0),
                opting: Mutex::new(()),
            });
        }
        drop(bound);
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

    /// Keeps `keep` (page-locked memory in-flight work may still use) until `done` has completed;
    /// freed by a later [`Context::sweep`]. No thread waits for it.
    pub(crate) fn release_after(
        &self,
        done: super::stream::Event,
        keep: Box<dyn std::any::Any + Send>,
    ) {
        self.reclaim
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Reclaim { done, _keep: keep });
    }

    /// Frees every reclaimed block whose work has completed (or whose event can no longer be
    /// asked: nothing uses the memory any more). Called at handle creation, drop and
    /// synchronisation.
    pub(crate) fn sweep(&self) {
        let finished: Vec<Reclaim> = {
            let mut list = self.reclaim.lock().unwrap_or_else(|e| e.into_inner());
            let (done, pending): (Vec<Reclaim>, Vec<Reclaim>) = std::mem::take(&mut *list)
                .into_iter()
                .partition(|r| r.done.query().unwrap_or(true));
            *list = pending;
            done
        };
        drop(finished); // freed after unlocking
    }

    /// Kernel `id` of the module, ready for a launch with `shared_bytes` of dynamic shared
    /// memory (opting the function in above 48 KiB, once), or an error naming `op`.
    pub(crate) fn function(&self, op: Op, id: u32, shared_bytes: u32) -> Result<cu::CUfunction> {
        let f = usize::try_from(id)
            .ok()
            .and_then(|i| self.functions.get(i))
            .filter(|f| !f.raw.is_null())
            .ok_or(Error::InvalidArgument {
                op,
                name: "kernel",
                value: i128::from(id),
                reason: "not in the loaded module",
            })?;
        if shared_bytes > DEFAULT_DYNAMIC_SHARED
            && f.opted_in.load(Ordering::Acquire) < shared_bytes
        {
            if shared_bytes > self.max_dynamic_shared {
                return Err(Error::InvalidArgument {
                    op,
                    name: "dynamic shared memory",
                    value: i128::from(shared_bytes),
                    reason: "more than the device allows a block",
                });
            }
            // One opt-in at a time, and never downwards: two launches asking for different
            // sizes leave the function opted in to the larger.
            let _opting = f.opting.lock().unwrap_or_else(|e| e.into_inner());
            if f.opted_in.load(Ordering::Acquire) < shared_bytes {
                // SAFETY: a function of this context's module (the caller has it bound); the
                // value is within the device's opt-in maximum.
                check(op, "cuFuncSetAttribute", unsafe {
                    cu::cuFuncSetAttribute(
                        f.raw,
                        cu::FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        i32::try_from(shared_bytes).unwrap_or(i32::MAX),
                    )
                })?;
                f.opted_in.store(shared_bytes, Ordering::Release);
            }
        }
        Ok(f.raw)
    }
}

/// The crate's memory pool on device `ordinal`: stream-ordered allocations from it are reused
/// (its release threshold keeps freed memory) without touching the device's default pool.
fn create_pool(ordinal: i32) -> Result<cu::CUmemoryPool> {
    let op = Op::Device;
    let props = cu::CUmemPoolProps {
        alloc_type: 1,
        handle_types: 0,
        location_type: 1,
        location_id: ordinal,
        win32_security_attributes: ptr::null_mut(),
        max_size: 0,
        usage: 0,
        reserved: [0; 54],
    };
    let mut pool: cu::CUmemoryPool = ptr::null_mut();
    // SAFETY: props is a complete CUmemPoolProps (reserved bytes zero); writes one handle.
    check(op, "cuMemPoolCreate", unsafe {
        cu::cuMemPoolCreate(&mut pool, &props)
    })?;
    let mut threshold: u64 = u64::MAX;
    // SAFETY: the release threshold attribute takes a pointer to a cuuint64_t; the pool is ours.
    check(op, "cuMemPoolSetAttribute", unsafe {
        cu::cuMemPoolSetAttribute(
            pool,
            cu::MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    })?;
    Ok(pool)
}
