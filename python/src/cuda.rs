//! The `cuda` feature's export plumbing: the device side of a buffer on a CUDA device, as a
//! `DeviceArray` with DLPack device `(kDLCUDA, ordinal)`, and the stream ordering DLPack asks
//! of a producer. Built in CI (`--features cuda`) and run there on its no-device path only
//! (`Device::auto()` falls back to the host, so none of this is reached); it has not run on a
//! GPU.

use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;

use crate::dlpack::KDL_CUDA;
use crate::errors::to_py;
use crate::side::Holder;

/// The CUDA address and DLPack device of a buffer's device side.
pub(crate) fn device_side(py: Python<'_>, h: &Holder) -> PyResult<(u64, (i32, i32))> {
    let (ptr, info) = (h.device_cuda_ptr, h.device.cuda_info());
    match (ptr, info) {
        (Some(p), Some((ordinal, _, _))) => Ok((p, (KDL_CUDA, ordinal as i32))),
        _ => Err(crate::errors::err(
            py,
            "DeviceError",
            "the device side is neither host memory nor CUDA memory",
        )),
    }
}

/// The stream the buffer's work is issued to, as `__cuda_array_interface__` reports it.
pub(crate) fn stream_of(h: &Holder) -> Option<i64> {
    h.device.stream().map(|s| s.as_raw() as i64)
}

/// DLPack's rule for a producer: the consumer's `stream` must not use the memory before the
/// work already issued on it is done. An event recorded on the buffer's stream is made a
/// dependency of the consumer's stream (`-1`: the consumer asked for no ordering; `None` and
/// `1`: the legacy default stream; `2`: the per-thread default stream; larger: a
/// `cudaStream_t`).
pub(crate) fn order_for_consumer(py: Python<'_>, h: &Holder, stream: Option<i64>) -> PyResult<()> {
    let raw = match stream {
        Some(-1) => return Ok(()),
        Some(0) => {
            return Err(PyBufferError::new_err(
                "__dlpack__: stream 0 is ambiguous in DLPack; pass 1 (legacy default) or 2 \
                 (per-thread default)",
            ))
        }
        None => 1,
        Some(s) => s,
    };
    let dev = &h.device;
    let run = || -> cpugpu::Result<()> {
        let event = dev.record_event(false)?;
        // SAFETY: `raw` is the consumer's stream of this device's primary context (DLPack's
        // contract for the `stream` argument); the wrapper does not outlive this call.
        let consumer =
            unsafe { cpugpu::cuda::Stream::from_raw(dev, raw as *mut std::ffi::c_void)? };
        event.make_wait(&consumer)
    };
    run().map_err(|e| to_py(py, e))
}
