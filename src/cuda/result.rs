//! Driver results: [`check`] turns a `CUresult` into an [`Error::Driver`] naming the operation
//! and the call, and [`probe`] says once per process whether a CUDA device can be used at all.

use std::ffi::{c_char, CStr};
use std::ptr;
use std::sync::OnceLock;

use super::driver as cu;
use crate::error::{Error, Op, Result};

/// The driver's name for any result code (static strings owned by the driver).
pub(crate) fn error_name(code: cu::CUresult) -> &'static str {
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

impl NoDevice {
    /// The [`Error::Driver`] an explicit request for a device gets.
    pub(crate) fn error(&self) -> Error {
        Error::Driver {
            op: Op::Device,
            call: self.call,
            code: self.code as u32,
            name: error_name(self.code),
        }
    }
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
