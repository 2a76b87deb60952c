//! `cpugpu._native`: the Python bindings of the `cpugpu` crate (the package `cpugpu` re-exports
//! them; see `python/cpugpu/__init__.py` and the README's "Python package" section).
//!
//! The original Python module's API on the crate: paired buffers whose sides numpy views in
//! place, a pool of named round-robin slots, a budgeted pinned-memory manager, and the six
//! batching operations on numpy arrays without copying them. Errors are `cpugpu.Error`
//! subclasses carrying the crate's message; the GIL is released while large operations and
//! copies run, and while anything waits for a GPU; panics are caught before they reach Python.
//!
//! With `--features cuda` (or `--features emulator`, the crate's emulated GPU) the GPU paths are
//! built (`cfg(gpu)`, set by build.rs): buffers on a GPU, their device sides exported as
//! `DeviceArray`s (`dlpack.rs`, `gpu.rs`), and the operations on CUDA memory (`gpu_ops.rs`).

use std::sync::OnceLock;

use pyo3::prelude::*;

mod arrays;
mod buffer;
mod dlpack;
mod dtype;
mod errors;
#[cfg(gpu)]
mod gpu;
#[cfg(gpu)]
mod gpu_ops;
mod ops;
mod pinned;
mod pool;
mod prep;
mod side;

/// The device buffers, pools and managers live on: the best this build and machine offer
/// (`Device::auto`: CUDA device 0 with the `cuda` feature and a GPU, else the host backend).
pub(crate) fn device() -> &'static cpugpu::Device {
    static DEVICE: OnceLock<cpugpu::Device> = OnceLock::new();
    DEVICE.get_or_init(cpugpu::Device::auto)
}

/// The backend buffers use: ``{"backend": "host" | "cuda", "device": str, "fallback_reason":
/// str | None, "cuda_feature": bool, "emulated": bool, "gil_release_min_bytes": int}``.
/// ``cuda_feature`` is true for a build with the GPU paths (``--features cuda``, or
/// ``--features emulator``, whose GPU is the crate's emulated one: ``emulated`` is then true).
/// The operations run on the host for numpy arrays and on the GPU for CUDA memory.
#[pyfunction]
fn backend_info(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    let d = device();
    let out = pyo3::types::PyDict::new(py);
    out.set_item("backend", d.kind().name())?;
    out.set_item("device", d.to_string())?;
    out.set_item("fallback_reason", d.fallback_reason())?;
    out.set_item("cuda_feature", cfg!(gpu))?;
    out.set_item("emulated", d.is_emulated())?;
    out.set_item("gil_release_min_bytes", errors::GIL_RELEASE_MIN_BYTES)?;
    Ok(out)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ops::copy_with_indices, m)?)?;
    m.add_function(wrap_pyfunction!(ops::scatter_with_indices, m)?)?;
    m.add_function(wrap_pyfunction!(ops::pad_to_multiple, m)?)?;
    m.add_function(wrap_pyfunction!(ops::compute_cumsum_offsets, m)?)?;
    m.add_function(wrap_pyfunction!(ops::flatten_with_offsets, m)?)?;
    m.add_function(wrap_pyfunction!(ops::split_by_offsets, m)?)?;
    m.add_function(wrap_pyfunction!(prep::expand_segments, m)?)?;
    m.add_function(wrap_pyfunction!(prep::slot_mapping, m)?)?;
    m.add_function(wrap_pyfunction!(prep::gather_windows, m)?)?;
    m.add_function(wrap_pyfunction!(prep::pad_to_length, m)?)?;
    m.add_function(wrap_pyfunction!(prep::pad_to_bucket, m)?)?;
    m.add_function(wrap_pyfunction!(prep::bucket_for, m)?)?;
    m.add_function(wrap_pyfunction!(prep::cuda_graph_sizes, m)?)?;
    m.add_function(wrap_pyfunction!(prep::prepare_step, m)?)?;
    m.add_class::<prep::PyStagedWrites>()?;
    m.add("PAD_SLOT_ID", cpugpu::PAD_SLOT_ID)?;
    m.add_function(wrap_pyfunction!(backend_info, m)?)?;
    m.add_class::<buffer::PyCpuGpuBuffer>()?;
    m.add_class::<pool::PyUvaBufferPool>()?;
    m.add_class::<pinned::PyPinnedMemoryManager>()?;
    m.add_class::<dlpack::DeviceArray>()?;
    m.add("GIL_RELEASE_MIN_BYTES", errors::GIL_RELEASE_MIN_BYTES)?;
    #[cfg(feature = "emulator")]
    m.add_submodule(&gpu::emu::module(m.py())?)?;
    Ok(())
}
