//! The GPU paths of the bindings, built with `--features cuda` (a GPU, through libcuda) or
//! `--features emulator` (the crate's emulated GPU: the same CUDA code path against an emulated
//! driver on CPU threads, docs/EMULATOR.md): a buffer's device side as a `DeviceArray` (DLPack
//! `kDLCUDA`, the CUDA array interface) with the stream ordering DLPack asks of a producer,
//! copies between CUDA memory and numpy, CUDA memory of other libraries as arguments of the
//! operations (`__cuda_array_interface__`), and the emulated GPU's test hooks (`_native._emu`).
//!
//! Tested on the emulated GPU only (`python/tests/test_gpu.py`); none of it has run on a GPU.

use std::ffi::c_void;
use std::sync::Arc;

use cpugpu::cuda::Stream;
use cpugpu::{BackendKind, Device, DeviceView, DeviceViewMut, Element};
use numpy::PyArrayDescr;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::dlpack::{parse_stream, DeviceArray, Keep, KDL_CUDA};
use crate::dtype::{resolve, DType};
use crate::errors::{err, guarded, run};
use crate::side::Holder;

/// The CUDA address and DLPack device of a buffer's device side.
pub(crate) fn device_side(py: Python<'_>, h: &Holder) -> PyResult<(u64, (i32, i32))> {
    match (h.device_cuda_ptr, h.device.cuda_info()) {
        (Some(p), Some((ordinal, _, _))) => Ok((p, (KDL_CUDA, ordinal as i32))),
        _ => Err(err(
            py,
            "DeviceError",
            "the device side is neither host memory nor CUDA memory",
        )),
    }
}

/// The stream a device's work is issued to, as an integer (the CUDA array interface's
/// `stream`).
pub(crate) fn stream_int(dev: &Device) -> Option<i64> {
    dev.stream().map(|s| s.as_raw() as i64)
}

/// The package's device when it is a GPU, else `DeviceError` saying why it is not.
fn package_gpu(py: Python<'_>) -> PyResult<&'static Device> {
    let d = crate::device();
    if d.kind() == BackendKind::Host {
        return Err(err(
            py,
            "DeviceError",
            format!(
                "CUDA memory was passed, but cpugpu uses no GPU: {}",
                d.fallback_reason().unwrap_or("the host backend was chosen")
            ),
        ));
    }
    Ok(d)
}

/// `base`'s GPU on stream `raw` (0 or 1: the legacy default stream, 2: the per-thread default
/// stream, else a `CUstream`/`cudaStream_t` handle). The caller vouches for the stream (the
/// contract of every `stream` argument: a live stream of this GPU's primary context, alive for
/// the call), and drops the returned device before the call returns.
fn on_stream(py: Python<'_>, base: &Device, raw: i64) -> PyResult<Device> {
    if raw < 0 {
        return Err(err(
            py,
            "InvalidArgumentError",
            format!("stream {raw}: a CUDA stream handle is not negative"),
        ));
    }
    if Some(raw) == stream_int(base) {
        return Ok(base.clone());
    }
    guarded(|| {
        // SAFETY: the caller's stream of this GPU's primary context (see above); the wrapper is
        // borrowed (never destroyed by cpugpu) and dropped before the call returns.
        let s = unsafe { Stream::from_raw(base, raw as usize as *mut c_void)? };
        base.with_stream(&s)
    })
    .into_py(py)
}

/// DLPack's rule for a producer: the consumer's `stream` must not use the memory before the
/// work already issued on it is done. An event recorded on the memory's stream (`dev`'s) is made
/// a dependency of the consumer's stream (`-1`: the consumer asked for no ordering; `None` and
/// `1`: the legacy default stream; `2`: the per-thread default stream; larger: a
/// `cudaStream_t`). Neither the host nor either stream blocks.
pub(crate) fn order_for_consumer(
    py: Python<'_>,
    dev: &Device,
    stream: Option<i64>,
) -> PyResult<()> {
    let raw = match stream {
        Some(-1) => return Ok(()),
        Some(0) => {
            return Err(pyo3::exceptions::PyBufferError::new_err(
                "__dlpack__: stream 0 is ambiguous in DLPack; pass 1 (legacy default) or 2 \
                 (per-thread default)",
            ))
        }
        Some(s) if s < 0 => {
            return Err(pyo3::exceptions::PyBufferError::new_err(format!(
                "__dlpack__: stream {s} is not a stream"
            )))
        }
        None => 1,
        Some(s) => s,
    };
    guarded(|| {
        let event = dev.record_event(false)?;
        // SAFETY: `raw` is the consumer's stream of this device's primary context (DLPack's
        // contract for the `stream` argument); the wrapper does not outlive this call.
        let consumer = unsafe { Stream::from_raw(dev, raw as usize as *mut c_void)? };
        event.make_wait(&consumer)
    })
    .into_py(py)
}

/// Copies `n` bytes of CUDA memory `a` to host memory at `dst` (writable for `n` bytes, alive
/// for the call), on `stream` (default: the memory's stream), and waits (GIL released).
pub(crate) fn download(
    py: Python<'_>,
    a: &DeviceArray,
    stream: Option<i64>,
    dst: usize,
    n: usize,
) -> PyResult<()> {
    let base = match &a.order {
        Some(d) => d.clone(),
        None => package_gpu(py)?.clone(),
    };
    let dev = match stream {
        None => base,
        Some(raw) => on_stream(py, &base, raw)?,
    };
    copy_to_host(py, &dev, a.addr, dst, n)
}

/// Copies `n` bytes at CUDA address `src` (alive for the call) to host memory at `dst`
/// (writable for `n` bytes, used by nothing else during the call) on `dev`'s stream, and waits
/// (GIL released).
pub(crate) fn copy_to_host(
    py: Python<'_>,
    dev: &Device,
    src: u64,
    dst: usize,
    n: usize,
) -> PyResult<()> {
    if n == 0 {
        return Ok(());
    }
    run(py, usize::MAX, || {
        // SAFETY: the caller's contract: `src` is CUDA memory of this GPU holding `n` bytes,
        // alive for the call.
        let view = unsafe { DeviceView::<u8>::from_raw_cuda(dev, src, &[n])? };
        // SAFETY: the caller's contract: `dst` is host memory of `n` bytes that nothing else
        // uses until copy_to_host has waited for the copy.
        let host = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, n) };
        view.copy_to_host(host)
    })
}

/// Copies `n` bytes of host memory at `src` into CUDA memory `a`, on the memory's stream, and
/// waits (GIL released).
pub(crate) fn upload(py: Python<'_>, a: &DeviceArray, src: usize, n: usize) -> PyResult<()> {
    if n == 0 {
        return Ok(());
    }
    let dev = match &a.order {
        Some(d) => d.clone(),
        None => package_gpu(py)?.clone(),
    };
    let dst = a.addr;
    run(py, usize::MAX, || {
        // SAFETY: `dst` is writable CUDA memory of `n` bytes (not read-only: the caller checked)
        // kept alive by the array's owner; copy_from_host completes the copy before it returns.
        let mut view = unsafe { DeviceViewMut::<u8>::from_raw_cuda(&dev, dst, &[n])? };
        // SAFETY: `src` is the caller's host memory of `n` bytes, alive for the call.
        let host = unsafe { std::slice::from_raw_parts(src as *const u8, n) };
        view.copy_from_host(host)
    })
}

/// The streams of one operation on CUDA memory: the one it runs on, and those its operands'
/// producers named (`__cuda_array_interface__["stream"]`), each a device made for the call.
pub(crate) struct Streams {
    /// The device (GPU and stream) the operation runs on.
    pub(crate) op: Device,
    others: Vec<(i64, Device)>,
}

impl Streams {
    /// The operation runs on `stream` (an int or an object with `cuda_stream`), or cpugpu's
    /// stream when None.
    pub(crate) fn new(py: Python<'_>, stream: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let base = package_gpu(py)?;
        let op = match parse_stream(stream)? {
            None => base.clone(),
            Some(raw) => on_stream(py, base, raw)?,
        };
        Ok(Streams {
            op,
            others: Vec::new(),
        })
    }

    /// The GPU's ordinal.
    fn ordinal(&self) -> i32 {
        self.op.cuda_info().map_or(0, |(o, _, _)| o as i32)
    }

    /// A device on producer stream `raw`, made once per call.
    fn producer(&mut self, py: Python<'_>, raw: i64) -> PyResult<Device> {
        if let Some((_, d)) = self.others.iter().find(|(r, _)| *r == raw) {
            return Ok(d.clone());
        }
        let d = on_stream(py, crate::device(), raw)?;
        self.others.push((raw, d.clone()));
        Ok(d)
    }
}

/// An operand in CUDA memory: a `DeviceArray` on a GPU, or an object exposing
/// `__cuda_array_interface__` (a PyTorch or CuPy tensor), checked.
pub(crate) struct DevArg {
    pub(crate) addr: u64,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    pub(crate) descr: Py<PyArrayDescr>,
    pub(crate) readonly: bool,
    /// The device whose stream the memory's earlier work was issued to: a view made on it
    /// orders the operation after that work (and that stream's later work after the operation).
    pub(crate) dev: Device,
    /// What keeps the memory alive (views cut from it hold it).
    pub(crate) keep: Keep,
}

impl DevArg {
    /// Elements.
    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The memory as a crate view.
    ///
    /// # Safety
    /// `size_of::<T>()` is the dtype's width, and nothing but this call's work writes the memory
    /// while the operation runs (the caller checked that outputs do not overlap inputs).
    pub(crate) unsafe fn view<T: Element>(&self) -> cpugpu::Result<DeviceView<'_, T>> {
        debug_assert_eq!(std::mem::size_of::<T>(), self.dtype.width());
        // SAFETY: a checked address of this GPU (unified addressing), aligned for the dtype,
        // holding `shape`'s elements, kept alive by `keep`; the caller's contract for the rest.
        unsafe { DeviceView::from_raw_cuda(&self.dev, self.addr, &self.shape) }
    }

    /// The memory as a writable crate view.
    ///
    /// # Safety
    /// As [`DevArg::view`], the operand is not read-only (checked by [`output`]), and no other
    /// view of the same memory is used by the operation.
    pub(crate) unsafe fn view_mut<T: Element>(&self) -> cpugpu::Result<DeviceViewMut<'_, T>> {
        debug_assert_eq!(std::mem::size_of::<T>(), self.dtype.width());
        // SAFETY: as in `view`.
        unsafe { DeviceViewMut::from_raw_cuda(&self.dev, self.addr, &self.shape) }
    }

    /// A `DeviceArray` over part of this memory (`addr`, `shape` inside it), holding its owner.
    pub(crate) fn part(&self, py: Python<'_>, addr: u64, shape: Vec<usize>) -> DeviceArray {
        DeviceArray {
            keep: self.keep.clone(),
            addr,
            shape,
            dtype: self.dtype,
            descr: self.descr.clone_ref(py),
            device: (
                KDL_CUDA,
                self.dev.cuda_info().map_or(0, |(o, _, _)| o as i32),
            ),
            readonly: self.readonly,
            // Not the producer's stream: that device is dropped with the call. Consumers of the
            // view are ordered after cpugpu's stream (the operation itself has completed).
            order: Some(crate::device().clone()),
        }
    }
}

/// Whether `obj` is CUDA memory (a `DeviceArray` on a GPU, or a non-numpy object with
/// `__cuda_array_interface__`), so an operation taking it runs on the GPU.
pub(crate) fn is_cuda(obj: &Bound<'_, PyAny>) -> bool {
    crate::arrays::is_cuda(obj)
}

/// `obj` as a checked CUDA operand; `what` names it in errors. Host memory is a `DeviceError`
/// (the operation runs on the GPU because another operand is there).
pub(crate) fn arg(obj: &Bound<'_, PyAny>, what: &str, streams: &mut Streams) -> PyResult<DevArg> {
    let py = obj.py();
    let ordinal = streams.ordinal();
    let host = |desc: &str| {
        err(
            py,
            "DeviceError",
            format!(
                "{what} is {desc}, but the operation runs on cuda:{ordinal} because another \
                 operand is CUDA memory: pass every data operand on the same device (cpugpu \
                 does not copy between host and device behind your back)"
            ),
        )
    };
    if let Ok(a) = obj.cast::<DeviceArray>() {
        let a = a.get();
        if a.device.0 != KDL_CUDA {
            return Err(host(&format!("{} memory (a DeviceArray)", a.device())));
        }
        if a.device.1 != ordinal {
            return Err(err(
                py,
                "DeviceError",
                format!(
                    "{what} is on cuda:{}, the operation on cuda:{ordinal}",
                    a.device.1
                ),
            ));
        }
        return Ok(DevArg {
            addr: a.addr,
            shape: a.shape.clone(),
            dtype: a.dtype,
            descr: a.descr.clone_ref(py),
            readonly: a.readonly,
            dev: a.order.clone().unwrap_or_else(|| streams.op.clone()),
            keep: a.keep.clone(),
        });
    }
    if !is_cuda(obj) {
        return Err(host("host memory"));
    }
    cuda_array_interface(obj, what, streams)
}

/// A writable CUDA operand.
pub(crate) fn output(
    obj: &Bound<'_, PyAny>,
    what: &str,
    streams: &mut Streams,
) -> PyResult<DevArg> {
    let a = arg(obj, what, streams)?;
    if a.readonly {
        return Err(err(obj.py(), "LayoutError", format!("{what} is read-only")));
    }
    Ok(a)
}

/// Whether `strides` (bytes) are C-contiguous for `shape` and `width` (axes of one element may
/// have any stride; an empty array is contiguous).
fn c_contiguous(shape: &[usize], strides: &[i64], width: usize) -> bool {
    if strides.len() != shape.len() {
        return false;
    }
    if shape.contains(&0) {
        return true;
    }
    let mut expect = width as i64;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d as i64);
    }
    true
}

/// An object's `__cuda_array_interface__` (versions 0 to 3) as a checked operand: shape,
/// dtype (`typestr`), C-contiguous (`strides` None or C strides), no `mask`, the pointer aligned
/// for the dtype, on this GPU (checked through `__dlpack_device__` when the object has one:
/// PyTorch and CuPy do), and ordered after its producer's `stream`.
fn cuda_array_interface(
    obj: &Bound<'_, PyAny>,
    what: &str,
    streams: &mut Streams,
) -> PyResult<DevArg> {
    let py = obj.py();
    let bad = |m: String| {
        err(
            py,
            "InvalidArgumentError",
            format!("{what}.__cuda_array_interface__: {m}"),
        )
    };
    let cai = obj.getattr("__cuda_array_interface__")?;
    let cai = cai
        .cast::<PyDict>()
        .map_err(|_| bad("not a dict".to_owned()))?;
    let field = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
        Ok(cai.get_item(k)?.filter(|v| !v.is_none()))
    };
    let need = |k: &str| -> PyResult<Bound<'_, PyAny>> {
        field(k)?.ok_or_else(|| bad(format!("no {k:?}")))
    };
    let dims: Vec<i64> = need("shape")?
        .extract()
        .map_err(|_| bad("\"shape\" is not a tuple of ints".to_owned()))?;
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| bad(format!("shape {dims:?} has a negative dimension")))?;
    let (dtype, descr) = resolve(py, &need("typestr")?, what)?;
    let (addr, readonly): (u64, bool) = need("data")?
        .extract()
        .map_err(|_| bad("\"data\" is not (int, bool)".to_owned()))?;
    let width = dtype.width();
    let layout = |m: String| {
        err(
            py,
            "LayoutError",
            format!("{what}: {m}; cpugpu does not copy its inputs"),
        )
    };
    if field("mask")?.is_some() {
        return Err(layout("a masked array".to_owned()));
    }
    if let Some(st) = field("strides")? {
        let st: Vec<i64> = st
            .extract()
            .map_err(|_| bad("\"strides\" is not a tuple of ints".to_owned()))?;
        if !c_contiguous(&shape, &st, width) {
            return Err(layout(format!(
                "not C-contiguous (shape {shape:?}, strides {st:?} bytes)"
            )));
        }
    }
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let Some(numel) = numel else {
        return Err(bad(format!("shape {shape:?} overflows")));
    };
    if numel > 0 && addr == 0 {
        return Err(bad("a null data pointer".to_owned()));
    }
    if numel > 0 && addr % width as u64 != 0 {
        return Err(layout(format!(
            "the data pointer {addr:#x} is not aligned for {}",
            dtype.name()
        )));
    }
    let ordinal = streams.ordinal();
    if obj.hasattr("__dlpack_device__").unwrap_or(false) {
        let (t, id): (i32, i32) = obj.call_method0("__dlpack_device__")?.extract()?;
        if (t, id) != (KDL_CUDA, ordinal) {
            return Err(err(
                py,
                "DeviceError",
                format!(
                    "{what} is on DLPack device ({t}, {id}), the operation on cuda:{ordinal} \
                     ({KDL_CUDA}, {ordinal})"
                ),
            ));
        }
    }
    let dev = match field("stream")? {
        None => streams.op.clone(),
        Some(s) => {
            let raw: i64 = s
                .extract()
                .map_err(|_| bad("\"stream\" is not an int".to_owned()))?;
            if raw == 0 {
                return Err(bad(
                    "stream 0 is disallowed (ambiguous) by the interface".to_owned()
                ));
            }
            streams.producer(py, raw)?
        }
    };
    Ok(DevArg {
        addr,
        shape,
        dtype,
        descr: descr.unbind(),
        readonly,
        dev,
        keep: Arc::new(obj.clone().unbind()),
    })
}

/// The emulated GPU's test hooks (`cpugpu._native._emu`, `--features emulator` only): hold
/// cpugpu's stream so that work stays in flight for as long as a test needs, and make streams
/// of the GPU to pass as `stream` arguments.
#[cfg(feature = "emulator")]
pub(crate) mod emu {
    use std::sync::{Arc, Mutex};

    use pyo3::prelude::*;

    use crate::errors::{guarded, run};

    /// The hold, shared with a `release_after` thread.
    type Shared = Arc<Mutex<Option<cpugpu::emu::Hold>>>;

    fn take(h: &Shared) -> Option<cpugpu::emu::Hold> {
        h.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// A hold on cpugpu's stream (`cpugpu::emu::hold`): work issued to it after the hold waits
    /// until :meth:`release` (or :meth:`release_after`).
    #[pyclass(frozen, module = "cpugpu._native._emu", name = "Hold")]
    pub(crate) struct PyHold {
        hold: Shared,
    }

    #[pymethods]
    impl PyHold {
        /// Lets the stream go on (idempotent).
        fn release(&self) {
            drop(take(&self.hold));
        }

        /// Releases the hold after ``seconds`` (unless released before), from a thread of its
        /// own that needs no GIL: a backstop, so that a call that wrongly keeps the GIL while
        /// it waits for the stream still ends.
        fn release_after(&self, seconds: f64) {
            let h = self.hold.clone();
            let d = std::time::Duration::from_secs_f64(seconds.max(0.0));
            std::thread::spawn(move || {
                std::thread::sleep(d);
                drop(take(&h));
            });
        }

        /// Whether the hold is still in place.
        #[getter]
        fn held(&self) -> bool {
            self.hold
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        }
    }

    /// Holds cpugpu's stream from now on (see :class:`Hold`).
    #[pyfunction]
    fn hold(py: Python<'_>) -> PyResult<PyHold> {
        let h = run(py, 0, || cpugpu::emu::hold(crate::device()))?;
        Ok(PyHold {
            hold: Arc::new(Mutex::new(Some(h))),
        })
    }

    /// A stream of cpugpu's GPU, made for a test: ``cuda_stream`` is its handle (as PyTorch's
    /// and CuPy's streams have), valid while this object lives.
    #[pyclass(frozen, module = "cpugpu._native._emu", name = "Stream")]
    pub(crate) struct PyStream {
        dev: cpugpu::Device,
    }

    #[pymethods]
    impl PyStream {
        /// The stream's handle (`CUstream`) as an int.
        #[getter]
        fn cuda_stream(&self) -> i64 {
            super::stream_int(&self.dev).unwrap_or(0)
        }

        /// Waits for the stream's work (GIL released).
        fn synchronize(&self, py: Python<'_>) -> PyResult<()> {
            let d = self.dev.clone();
            run(py, usize::MAX, move || d.synchronize())
        }
    }

    /// A new stream of cpugpu's GPU (`Device::new_stream`).
    #[pyfunction]
    fn new_stream(py: Python<'_>) -> PyResult<PyStream> {
        let dev = guarded(|| crate::device().new_stream()).into_py(py)?;
        Ok(PyStream { dev })
    }

    /// The device side's CUDA address as the crate reports it (``device_view().cuda_ptr()``),
    /// asked of the buffer now: what its exports must carry.
    #[pyfunction]
    fn device_ptr(
        py: Python<'_>,
        buf: &Bound<'_, crate::buffer::PyCpuGpuBuffer>,
    ) -> PyResult<Option<u64>> {
        buf.get().crate_device_ptr(py)
    }

    /// Sets the emulated driver's random delay before each stream operation (0: off).
    #[pyfunction]
    fn set_delay_us(max_us: u32) {
        cpugpu::emu::set_delay_us(max_us);
    }

    /// The emulated GPU's configuration.
    #[pyfunction]
    fn describe() -> String {
        cpugpu::emu::describe()
    }

    /// The `_emu` submodule.
    pub(crate) fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
        let m = PyModule::new(py, "_emu")?;
        m.add_function(wrap_pyfunction!(hold, &m)?)?;
        m.add_function(wrap_pyfunction!(new_stream, &m)?)?;
        m.add_function(wrap_pyfunction!(set_delay_us, &m)?)?;
        m.add_function(wrap_pyfunction!(device_ptr, &m)?)?;
        m.add_function(wrap_pyfunction!(describe, &m)?)?;
        m.add_class::<PyHold>()?;
        m.add_class::<PyStream>()?;
        Ok(m)
    }
}
