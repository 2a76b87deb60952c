//! The CUDA driver entry points this crate calls, declared with `int` results.
//!
//! cust's raw bindings (`cust::sys`, cust_raw 0.11) declare every entry point as returning a
//! Rust enum generated for an older CUDA. A CUDA 13 driver can answer codes that enum lacks
//! (`CUDA_ERROR_INSUFFICIENT_DRIVER` 35, `CUDA_ERROR_DEVICE_UNAVAILABLE` 46 in exclusive-process
//! mode, `CUDA_ERROR_CONTAINED` 226 after an H100 error containment, `CUDA_ERROR_MPS_*`), and an
//! enum value outside its variants is undefined behaviour in Rust. So the functions are declared
//! here with `i32` results.
//!
//! One set of declarations, two drivers:
//! - `--features cuda`: the handle types come from cust (`cust::sys`) and the symbols from
//!   `libcuda` (cust_raw links it);
//! - `--features emulator`: the same declarations link to the emulated driver built from
//!   `kernels/emu/` (its symbols are prefixed `cpugpu_emu_`, so an emulated build never
//!   interposes on a real `libcuda` loaded into the same process), and the handle types are the
//!   opaque pointers below, the same ABI as cuda.h's.
#![allow(non_snake_case, clippy::too_many_arguments)]

use std::ffi::{c_char, c_int, c_uint, c_void};

#[cfg(not(cpugpu_emulated))]
pub(crate) use cust::sys::{
    CUcontext, CUdevice, CUdeviceptr, CUevent, CUfunction, CUmemoryPool, CUmodule, CUstream,
};

#[cfg(cpugpu_emulated)]
mod handles {
    /// cuda.h's opaque handle types (`struct CUctx_st *` and so on).
    macro_rules! opaque {
        ($($handle:ident = $st:ident;)*) => {$(
            #[doc(hidden)]
            #[repr(C)]
            pub(crate) struct $st {
                _private: [u8; 0],
            }
            pub(crate) type $handle = *mut $st;
        )*};
    }
    opaque! {
        CUcontext = CUctx_st;
        CUevent = CUevent_st;
        CUfunction = CUfunc_st;
        CUmemoryPool = CUmemPoolHandle_st;
        CUmodule = CUmod_st;
        CUstream = CUstream_st;
    }
    /// `typedef int CUdevice`.
    pub(crate) type CUdevice = std::ffi::c_int;
    /// `typedef unsigned long long CUdeviceptr` (64-bit).
    pub(crate) type CUdeviceptr = u64;
}
#[cfg(cpugpu_emulated)]
pub(crate) use handles::*;

/// A driver result code.
pub(crate) type CUresult = i32;

pub(crate) const SUCCESS: CUresult = 0;
pub(crate) const ERROR_OUT_OF_MEMORY: CUresult = 2;
pub(crate) const ERROR_STUB_LIBRARY: CUresult = 34;
pub(crate) const ERROR_INSUFFICIENT_DRIVER: CUresult = 35;
pub(crate) const ERROR_NO_DEVICE: CUresult = 100;
pub(crate) const ERROR_NOT_READY: CUresult = 600;

pub(crate) const STREAM_NON_BLOCKING: c_uint = 1;
pub(crate) const EVENT_DEFAULT: c_uint = 0;
pub(crate) const EVENT_DISABLE_TIMING: c_uint = 2;
pub(crate) const MEMHOSTALLOC_PORTABLE: c_uint = 1;
pub(crate) const MEMHOSTALLOC_DEVICEMAP: c_uint = 2;

pub(crate) const ATTR_MULTIPROCESSOR_COUNT: c_int = 16;
pub(crate) const ATTR_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
pub(crate) const ATTR_COMPUTE_CAPABILITY_MINOR: c_int = 76;
pub(crate) const ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: c_int = 97;
pub(crate) const ATTR_MEMORY_POOLS_SUPPORTED: c_int = 115;
pub(crate) const MEMPOOL_ATTR_RELEASE_THRESHOLD: c_int = 4;
pub(crate) const FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES: c_int = 8;

/// cuda.h's `CUmemPoolProps` (88 bytes): pinned device memory, no export handles.
#[repr(C)]
pub(crate) struct CUmemPoolProps {
    /// `CU_MEM_ALLOCATION_TYPE_PINNED` = 1.
    pub(crate) alloc_type: c_int,
    /// `CU_MEM_HANDLE_TYPE_NONE` = 0.
    pub(crate) handle_types: c_int,
    /// `CU_MEM_LOCATION_TYPE_DEVICE` = 1.
    pub(crate) location_type: c_int,
    /// The device ordinal.
    pub(crate) location_id: c_int,
    pub(crate) win32_security_attributes: *mut c_void,
    pub(crate) max_size: usize,
    pub(crate) usage: u16,
    pub(crate) reserved: [u8; 54],
}
const _: () = assert!(std::mem::size_of::<CUmemPoolProps>() == 88);

/// Declares each entry point once, linked to `libcuda`'s symbol or to the emulated driver's
/// `cpugpu_emu_<name>`.
macro_rules! driver_api {
    ($( fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> CUresult; )*) => {
        extern "C" {$(
            #[cfg_attr(cpugpu_emulated, link_name = concat!("cpugpu_emu_", stringify!($name)))]
            pub(crate) fn $name($($arg: $ty),*) -> CUresult;
        )*}
    };
}

// The `_v2` names are the symbols current drivers export for these calls (what cuda.h's macros
// map the plain names to); a CUDA 13 driver still exports every one of them.
driver_api! {
    fn cuInit(flags: c_uint) -> CUresult;
    fn cuGetErrorName(error: CUresult, p: *mut *const c_char) -> CUresult;
    fn cuDeviceGetCount(count: *mut c_int) -> CUresult;
    fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult;
    fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult;
    fn cuDeviceGetAttribute(pi: *mut c_int, attrib: c_int, dev: CUdevice) -> CUresult;
    fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult;
    fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult;
    fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult;
    fn cuMemPoolCreate(pool: *mut CUmemoryPool, props: *const CUmemPoolProps) -> CUresult;
    fn cuMemPoolSetAttribute(pool: CUmemoryPool, attr: c_int, value: *mut c_void) -> CUresult;
    fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult;
    fn cuModuleGetFunction(hfunc: *mut CUfunction, hmod: CUmodule, name: *const c_char) -> CUresult;
    fn cuFuncSetAttribute(hfunc: CUfunction, attrib: c_int, value: c_int) -> CUresult;
    fn cuStreamCreate(ph: *mut CUstream, flags: c_uint) -> CUresult;
    fn cuStreamDestroy_v2(h: CUstream) -> CUresult;
    fn cuStreamSynchronize(h: CUstream) -> CUresult;
    fn cuStreamWaitEvent(h: CUstream, ev: CUevent, flags: c_uint) -> CUresult;
    fn cuEventCreate(ph: *mut CUevent, flags: c_uint) -> CUresult;
    fn cuEventRecord(ev: CUevent, h: CUstream) -> CUresult;
    fn cuEventQuery(ev: CUevent) -> CUresult;
    fn cuEventSynchronize(ev: CUevent) -> CUresult;
    fn cuEventElapsedTime(ms: *mut f32, start: CUevent, end: CUevent) -> CUresult;
    fn cuEventDestroy_v2(ev: CUevent) -> CUresult;
    fn cuMemAllocFromPoolAsync(
        dptr: *mut CUdeviceptr,
        bytes: usize,
        pool: CUmemoryPool,
        h: CUstream,
    ) -> CUresult;
    fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult;
    fn cuMemFreeAsync(dptr: CUdeviceptr, h: CUstream) -> CUresult;
    fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult;
    fn cuMemsetD8Async(dst: CUdeviceptr, uc: u8, n: usize, h: CUstream) -> CUresult;
    fn cuMemsetD16Async(dst: CUdeviceptr, us: u16, n: usize, h: CUstream) -> CUresult;
    fn cuMemsetD32Async(dst: CUdeviceptr, ui: u32, n: usize, h: CUstream) -> CUresult;
    fn cuMemHostAlloc(pp: *mut *mut c_void, bytes: usize, flags: c_uint) -> CUresult;
    fn cuMemHostGetDevicePointer_v2(pdptr: *mut CUdeviceptr, p: *mut c_void, flags: c_uint) -> CUresult;
    fn cuMemFreeHost(p: *mut c_void) -> CUresult;
    fn cuMemcpyHtoDAsync_v2(dst: CUdeviceptr, src: *const c_void, bytes: usize, h: CUstream) -> CUresult;
    fn cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: CUdeviceptr, bytes: usize, h: CUstream) -> CUresult;
    fn cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize, h: CUstream) -> CUresult;
    fn cuLaunchKernel(
        f: CUfunction,
        grid_x: c_uint,
        grid_y: c_uint,
        grid_z: c_uint,
        block_x: c_uint,
        block_y: c_uint,
        block_z: c_uint,
        shared_bytes: c_uint,
        h: CUstream,
        params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) -> CUresult;
}
