//! The CUDA driver entry points this crate calls, declared with `int` results.
//!
//! cust's raw bindings (`cust::sys`, cust_raw 0.11) declare every entry point as returning a
//! Rust enum generated for an older CUDA. A CUDA 13 driver can answer codes that enum lacks
//! (`CUDA_ERROR_INSUFFICIENT_DRIVER` 35, `CUDA_ERROR_DEVICE_UNAVAILABLE` 46 in exclusive-process
//! mode, `CUDA_ERROR_CONTAINED` 226 after an H100 error containment, `CUDA_ERROR_MPS_*`), and an
//! enum value outside its variants is undefined behaviour in Rust. So the functions are declared
//! here with `i32` results; the handle types and the link to `libcuda` still come from cust
//! (`cust::sys` types, cust_raw's `-lcuda`).
#![allow(non_snake_case, clippy::too_many_arguments)]

use std::ffi::{c_char, c_int, c_uint, c_void};

pub(crate) use cust::sys::{
    CUcontext, CUdevice, CUdeviceptr, CUevent, CUfunction, CUmemoryPool, CUmodule, CUstream,
};

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
pub(crate) const ATTR_MEMORY_POOLS_SUPPORTED: c_int = 115;
pub(crate) const MEMPOOL_ATTR_RELEASE_THRESHOLD: c_int = 4;

// The `_v2` names are the symbols current drivers export for these calls (what cuda.h's macros
// map the plain names to); a CUDA 13 driver still exports every one of them.
extern "C" {
    pub(crate) fn cuInit(flags: c_uint) -> CUresult;
    pub(crate) fn cuGetErrorName(error: CUresult, p: *mut *const c_char) -> CUresult;
    pub(crate) fn cuDeviceGetCount(count: *mut c_int) -> CUresult;
    pub(crate) fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult;
    pub(crate) fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult;
    pub(crate) fn cuDeviceGetAttribute(pi: *mut c_int, attrib: c_int, dev: CUdevice) -> CUresult;
    pub(crate) fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult;
    pub(crate) fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult;
    pub(crate) fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult;
    pub(crate) fn cuDeviceGetDefaultMemPool(pool: *mut CUmemoryPool, dev: CUdevice) -> CUresult;
    pub(crate) fn cuMemPoolSetAttribute(
        pool: CUmemoryPool,
        attr: c_int,
        value: *mut c_void,
    ) -> CUresult;
    pub(crate) fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult;
    pub(crate) fn cuModuleGetFunction(
        hfunc: *mut CUfunction,
        hmod: CUmodule,
        name: *const c_char,
    ) -> CUresult;
    pub(crate) fn cuStreamCreate(ph: *mut CUstream, flags: c_uint) -> CUresult;
    pub(crate) fn cuStreamDestroy_v2(h: CUstream) -> CUresult;
    pub(crate) fn cuStreamSynchronize(h: CUstream) -> CUresult;
    pub(crate) fn cuStreamWaitEvent(h: CUstream, ev: CUevent, flags: c_uint) -> CUresult;
    pub(crate) fn cuEventCreate(ph: *mut CUevent, flags: c_uint) -> CUresult;
    pub(crate) fn cuEventRecord(ev: CUevent, h: CUstream) -> CUresult;
    pub(crate) fn cuEventQuery(ev: CUevent) -> CUresult;
    pub(crate) fn cuEventSynchronize(ev: CUevent) -> CUresult;
    pub(crate) fn cuEventElapsedTime(ms: *mut f32, start: CUevent, end: CUevent) -> CUresult;
    pub(crate) fn cuEventDestroy_v2(ev: CUevent) -> CUresult;
    pub(crate) fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytes: usize, h: CUstream) -> CUresult;
    pub(crate) fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult;
    pub(crate) fn cuMemFreeAsync(dptr: CUdeviceptr, h: CUstream) -> CUresult;
    pub(crate) fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult;
    pub(crate) fn cuMemsetD8Async(dst: CUdeviceptr, uc: u8, n: usize, h: CUstream) -> CUresult;
    pub(crate) fn cuMemsetD16Async(dst: CUdeviceptr, us: u16, n: usize, h: CUstream) -> CUresult;
    pub(crate) fn cuMemsetD32Async(dst: CUdeviceptr, ui: u32, n: usize, h: CUstream) -> CUresult;
    pub(crate) fn cuMemHostAlloc(pp: *mut *mut c_void, bytes: usize, flags: c_uint) -> CUresult;
    pub(crate) fn cuMemHostGetDevicePointer_v2(
        pdptr: *mut CUdeviceptr,
        p: *mut c_void,
        flags: c_uint,
    ) -> CUresult;
    pub(crate) fn cuMemFreeHost(p: *mut c_void) -> CUresult;
    pub(crate) fn cuMemcpyHtoDAsync_v2(
        dst: CUdeviceptr,
        src: *const c_void,
        bytes: usize,
        h: CUstream,
    ) -> CUresult;
    pub(crate) fn cuMemcpyDtoHAsync_v2(
        dst: *mut c_void,
        src: CUdeviceptr,
        bytes: usize,
        h: CUstream,
    ) -> CUresult;
    pub(crate) fn cuMemcpyDtoDAsync_v2(
        dst: CUdeviceptr,
        src: CUdeviceptr,
        bytes: usize,
        h: CUstream,
    ) -> CUresult;
    pub(crate) fn cuLaunchKernel(
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
