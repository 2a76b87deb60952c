//! Export of memory to other libraries without a copy: DLPack (`__dlpack__`,
//! `__dlpack_device__`, legacy and versioned capsules), numpy's `__array_interface__` for
//! host-accessible memory and `__cuda_array_interface__` (version 3) for CUDA memory.
//!
//! A capsule's `manager_ctx` holds an `Arc` of what owns the memory (a buffer's [`Holder`], a
//! device buffer an operation made, or the object a view was cut from), so the memory lives until
//! the consumer calls the deleter (or, unconsumed, until the capsule is collected), whichever
//! Python objects are gone by then. The deleter takes no Python lock, so a consumer may call it
//! from any thread without the GIL, as DLPack allows (an owner that is a Python object is
//! released through PyO3's deferred reference counting).

use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use numpy::PyArrayDescr;
use pyo3::exceptions::{PyAttributeError, PyBufferError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::arrays::{view, Arr, Owner};
use crate::dtype::DType;
use crate::errors::{err, run};

/// DLPack's device type for host memory.
pub(crate) const KDL_CPU: i32 = 1;
/// DLPack's device type for CUDA device memory.
pub(crate) const KDL_CUDA: i32 = 2;
/// DLPack's device type for page-locked host memory of CUDA (`cuMemHostAlloc`): host-accessible,
/// and readable by the GPU.
pub(crate) const KDL_CUDA_HOST: i32 = 3;

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

/// DLPack < 1.0's managed tensor (capsule name `dltensor`).
#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

/// DLPack >= 1.0's managed tensor (capsule name `dltensor_versioned`).
#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

/// `DLPACK_FLAG_BITMASK_READ_ONLY`.
const FLAG_READ_ONLY: u64 = 1;

/// What keeps exported memory alive: a buffer's holder, a device buffer, a Python object.
pub(crate) type Keep = Arc<dyn Send + Sync>;

/// What a capsule owns: the managed tensor (first, so that a pointer to it is a pointer to the
/// whole), its shape and strides, and the memory's owner.
#[repr(C)]
struct Export<M> {
    managed: M,
    shape: Vec<i64>,
    strides: Vec<i64>,
    _keep: Keep,
}

const NAME: &CStr = c"dltensor";
const NAME_VERSIONED: &CStr = c"dltensor_versioned";

/// The deleter of a legacy managed tensor: frees the export (and its hold on the memory).
unsafe extern "C" fn delete_legacy(m: *mut DLManagedTensor) {
    if !m.is_null() {
        // SAFETY: `m` is the first field of a boxed `Export<DLManagedTensor>` made by `export`
        // and handed out once; DLPack calls the deleter once. No unwinding across the C ABI.
        let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
            drop(Box::from_raw(m.cast::<Export<DLManagedTensor>>()))
        }));
    }
}

/// The deleter of a versioned managed tensor.
unsafe extern "C" fn delete_versioned(m: *mut DLManagedTensorVersioned) {
    if !m.is_null() {
        // SAFETY: as in `delete_legacy`.
        let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
            drop(Box::from_raw(m.cast::<Export<DLManagedTensorVersioned>>()))
        }));
    }
}

/// The capsule's destructor: an unconsumed capsule (still named `dltensor`) deletes its tensor;
/// a consumer renames it (`used_dltensor`) and owns the tensor from then on.
unsafe extern "C" fn capsule_legacy(cap: *mut ffi::PyObject) {
    // SAFETY: called by Python with a capsule; IsValid sets no exception, GetPointer is called
    // only for a valid capsule of this name, whose pointer `export` set.
    unsafe {
        if ffi::PyCapsule_IsValid(cap, NAME.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(cap, NAME.as_ptr()).cast::<DLManagedTensor>();
            delete_legacy(m);
        }
    }
}

unsafe extern "C" fn capsule_versioned(cap: *mut ffi::PyObject) {
    // SAFETY: as in `capsule_legacy`.
    unsafe {
        if ffi::PyCapsule_IsValid(cap, NAME_VERSIONED.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(cap, NAME_VERSIONED.as_ptr())
                .cast::<DLManagedTensorVersioned>();
            delete_versioned(m);
        }
    }
}

/// A stream argument as DLPack passes it: `None`, an int, or an object with a `cuda_stream`
/// attribute (PyTorch and CuPy streams).
pub(crate) fn parse_stream(stream: Option<&Bound<'_, PyAny>>) -> PyResult<Option<i64>> {
    let Some(s) = stream else { return Ok(None) };
    if s.is_none() {
        return Ok(None);
    }
    if let Ok(v) = s.extract::<i64>() {
        return Ok(Some(v));
    }
    match s.getattr("cuda_stream") {
        Ok(v) => Ok(Some(v.extract::<i64>()?)),
        Err(_) => Err(err(
            s.py(),
            "InvalidArgumentError",
            "stream must be None, an int or an object with a cuda_stream attribute",
        )),
    }
}

/// Memory of one array, exported without a copy: a side of a buffer (``buf.gpu``,
/// ``buf.device_array("cpu")``), a result of an operation on device memory, or a view cut from
/// one.
///
/// It speaks DLPack (``torch.from_dlpack(a)``, ``cupy.from_dlpack(a)``, ``np.from_dlpack(a)``
/// for host memory), numpy's ``__array_interface__`` for host-accessible memory and the CUDA
/// array interface (v3, ``__cuda_array_interface__``) for CUDA memory; ``hasattr`` is false for
/// the interface that does not apply. Whatever imports it holds the memory alive until it is
/// done with it; a pool slot is not handed out again while anything does.
///
/// Devices (``__dlpack_device__``): ``(1, 0)`` (``kDLCPU``) for host memory of the host
/// backend or pageable host memory; ``(3, 0)`` (``kDLCUDAHost``) for the page-locked host side
/// of a buffer on a GPU (exported as ``kDLCPU`` when a consumer asks for ``dl_device=(1, 0)``);
/// ``(2, N)`` (``kDLCUDA``) for memory of CUDA device N, including a UVA buffer's ``gpu`` side
/// (its mapped device address).
///
/// Stream ordering of CUDA memory: work cpugpu issued on the memory (uploads, fills, operations)
/// runs on cpugpu's stream. ``__dlpack__(stream=s)`` makes stream ``s`` wait for that work (an
/// event recorded on cpugpu's stream, waited for on ``s``; ``None`` and ``1`` mean the legacy
/// default stream, ``2`` the per-thread default stream, ``-1`` no ordering);
/// ``__cuda_array_interface__["stream"]`` names cpugpu's stream for the consumer to wait for.
/// Work the consumer issues later is not ordered before cpugpu's later work on the memory: that
/// is the consumer's to arrange, as with any CUDA library.
///
/// Indexing (``a[i]``, ``a[i:j]``, ``a[...]``) gives views along axis 0 (step 1: the result
/// must stay contiguous). ``copy_to_host()`` and ``copy_from_host(x)`` copy between it and numpy.
#[pyclass(frozen, module = "cpugpu", name = "DeviceArray")]
pub(crate) struct DeviceArray {
    /// What keeps the memory alive.
    pub(crate) keep: Keep,
    /// The address (a device address for CUDA memory).
    pub(crate) addr: u64,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    pub(crate) descr: Py<PyArrayDescr>,
    /// DLPack device type and id.
    pub(crate) device: (i32, i32),
    pub(crate) readonly: bool,
    /// The crate device whose stream the memory's work is issued to (memory of a GPU buffer,
    /// page-locked or on the device); `None` for memory no GPU work touches.
    pub(crate) order: Option<cpugpu::Device>,
}

impl DeviceArray {
    /// DLPack's `(device_type, device_id)`.
    pub(crate) fn dlpack_device(&self) -> (i32, i32) {
        self.device
    }

    /// Whether the host can address the memory (`kDLCPU`, `kDLCUDAHost`).
    pub(crate) fn is_host(&self) -> bool {
        matches!(self.device.0, KDL_CPU | KDL_CUDA_HOST)
    }

    /// Bytes of one row (axis 0), or of the whole array when it has no axis.
    fn row_bytes(&self) -> usize {
        self.shape.iter().skip(1).product::<usize>() * self.dtype.width()
    }

    /// The C-contiguous strides in elements.
    fn strides(&self) -> Vec<i64> {
        let mut s = vec![1i64; self.shape.len()];
        for i in (0..self.shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.shape[i + 1] as i64;
        }
        s
    }

    fn tensor(&self, device: (i32, i32)) -> DLTensor {
        DLTensor {
            data: self.addr as *mut c_void,
            device: DLDevice {
                device_type: device.0,
                device_id: device.1,
            },
            ndim: self.shape.len() as i32,
            dtype: DLDataType {
                code: self.dtype.dlpack_code(),
                bits: (self.dtype.width() * 8) as u8,
                lanes: 1,
            },
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        }
    }

    /// A DLPack capsule of this memory (versioned when `versioned`) with DLPack device `device`.
    fn capsule<'py>(
        &self,
        py: Python<'py>,
        versioned: bool,
        device: (i32, i32),
    ) -> PyResult<Bound<'py, PyAny>> {
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        let strides = self.strides();
        let ptr: *mut c_void;
        let (name, destructor): (&CStr, unsafe extern "C" fn(*mut ffi::PyObject)) = if versioned {
            let mut e = Box::new(Export {
                managed: DLManagedTensorVersioned {
                    version: DLPackVersion { major: 1, minor: 0 },
                    manager_ctx: std::ptr::null_mut(),
                    deleter: Some(delete_versioned),
                    flags: if self.readonly { FLAG_READ_ONLY } else { 0 },
                    dl_tensor: self.tensor(device),
                },
                shape,
                strides,
                _keep: self.keep.clone(),
            });
            // The Vecs' heap buffers do not move with the box.
            e.managed.dl_tensor.shape = e.shape.as_mut_ptr();
            e.managed.dl_tensor.strides = e.strides.as_mut_ptr();
            let raw = Box::into_raw(e);
            // SAFETY: `raw` is a live box; manager_ctx points to the export itself.
            unsafe { (*raw).managed.manager_ctx = raw.cast() };
            ptr = raw.cast();
            (NAME_VERSIONED, capsule_versioned)
        } else {
            let mut e = Box::new(Export {
                managed: DLManagedTensor {
                    dl_tensor: self.tensor(device),
                    manager_ctx: std::ptr::null_mut(),
                    deleter: Some(delete_legacy),
                },
                shape,
                strides,
                _keep: self.keep.clone(),
            });
            e.managed.dl_tensor.shape = e.shape.as_mut_ptr();
            e.managed.dl_tensor.strides = e.strides.as_mut_ptr();
            let raw = Box::into_raw(e);
            // SAFETY: as above.
            unsafe { (*raw).managed.manager_ctx = raw.cast() };
            ptr = raw.cast();
            (NAME, capsule_legacy)
        };
        // SAFETY: `ptr` is the managed tensor (first field of the export); the name is a static
        // C string; on failure PyCapsule_New returns NULL and the export is freed here.
        let cap = unsafe { ffi::PyCapsule_New(ptr, name.as_ptr(), Some(destructor)) };
        if cap.is_null() {
            // SAFETY: the capsule was not made, so nobody else owns the export.
            unsafe {
                if versioned {
                    delete_versioned(ptr.cast());
                } else {
                    delete_legacy(ptr.cast());
                }
            }
            return Err(PyErr::fetch(py));
        }
        // SAFETY: a new reference.
        Ok(unsafe { Bound::from_owned_ptr(py, cap) })
    }

    /// The `__array_interface__` / `__cuda_array_interface__` dict.
    fn interface<'py>(&self, py: Python<'py>, stream: Option<i64>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let descr = self.descr.bind(py);
        let typestr = descr.getattr("str")?;
        d.set_item("shape", PyTuple::new(py, &self.shape)?)?;
        d.set_item("typestr", &typestr)?;
        d.set_item("descr", vec![("", typestr)])?;
        d.set_item("data", (self.addr, self.readonly))?;
        d.set_item("strides", py.None())?;
        d.set_item("version", 3)?;
        if !self.is_host() {
            d.set_item("stream", stream)?;
        }
        Ok(d)
    }

    /// A view of part of this array: `addr` and `shape` inside it, same owner and device.
    fn part(&self, py: Python<'_>, addr: u64, shape: Vec<usize>) -> DeviceArray {
        DeviceArray {
            keep: self.keep.clone(),
            addr,
            shape,
            dtype: self.dtype,
            descr: self.descr.clone_ref(py),
            device: self.device,
            readonly: self.readonly,
            order: self.order.clone(),
        }
    }

    /// A numpy array over the memory (host-accessible memory only), holding its owner.
    fn host_view<'py>(&self, py: Python<'py>, writeable: bool) -> PyResult<Bound<'py, PyAny>> {
        let base = Bound::new(py, Owner::new(Box::new(self.keep.clone())))?;
        // SAFETY: host-accessible memory of `shape` elements of the dtype at `addr`, kept
        // alive by its owner, which the view's base holds; written only if not read-only.
        unsafe {
            view(
                py,
                self.descr.bind(py),
                &self.shape,
                self.addr as usize,
                writeable && !self.readonly,
                base.into_any(),
            )
        }
    }
}

/// The rows `key` selects along axis 0, as (first row, row count, keeps the axis): `key` is an
/// int, a slice of step 1, `...`, or a tuple of one of those followed by full slices (`:`).
fn axis0_key(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    rows: usize,
) -> PyResult<(usize, usize, bool)> {
    use pyo3::types::{PyEllipsis, PySlice, PySliceMethods};
    let refuse = || {
        err(
            py,
            "LayoutError",
            format!(
                "DeviceArray[{key}]: a DeviceArray is indexed along axis 0 only, by an int or a \
                 slice of step 1, so that the result stays contiguous (cpugpu does not copy)"
            ),
        )
    };
    let key = match key.cast::<PyTuple>() {
        Ok(t) if !t.is_empty() => {
            for rest in t.iter().skip(1) {
                let full = rest
                    .cast::<PySlice>()
                    .ok()
                    .map(|s| {
                        ["start", "stop", "step"]
                            .iter()
                            .all(|a| s.getattr(*a).is_ok_and(|v| v.is_none()))
                    })
                    .unwrap_or(false);
                if !full {
                    return Err(refuse());
                }
            }
            t.get_item(0)?
        }
        Ok(_) => return Err(refuse()),
        Err(_) => key.clone(),
    };
    if key.is(PyEllipsis::get(py)) {
        return Ok((0, rows, true));
    }
    if let Ok(s) = key.cast::<PySlice>() {
        let len = isize::try_from(rows).map_err(|_| refuse())?;
        let ind = s.indices(len)?;
        if ind.step != 1 {
            return Err(refuse());
        }
        let start = usize::try_from(ind.start).unwrap_or(0);
        return Ok((start, ind.slicelength, true));
    }
    if let Ok(i) = key.extract::<i64>() {
        let n = rows as i64;
        let j = if i < 0 { i + n } else { i };
        if !(0..n).contains(&j) {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "DeviceArray index {i} is out of bounds for axis 0 of size {rows}"
            )));
        }
        return Ok((j as usize, 1, false));
    }
    Err(refuse())
}

#[pymethods]
impl DeviceArray {
    /// The shape, as a tuple.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.shape)
    }

    /// The numpy dtype.
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDescr> {
        self.descr.bind(py).clone()
    }

    /// The memory's address (a device address for CUDA memory).
    #[getter]
    fn data_ptr(&self) -> u64 {
        self.addr
    }

    /// Bytes of data.
    #[getter]
    fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.width()
    }

    /// True when the memory may not be written through this array.
    #[getter]
    fn readonly(&self) -> bool {
        self.readonly
    }

    /// ``"cpu"`` for host memory, ``"cuda_host"`` for page-locked host memory of a GPU buffer,
    /// ``"cuda:N"`` for memory of CUDA device N.
    #[getter]
    pub(crate) fn device(&self) -> String {
        match self.device.0 {
            KDL_CPU => "cpu".to_owned(),
            KDL_CUDA_HOST => "cuda_host".to_owned(),
            _ => format!("cuda:{}", self.device.1),
        }
    }

    /// DLPack's ``(device_type, device_id)``: ``(1, 0)`` for host memory, ``(3, 0)`` for
    /// page-locked host memory of a GPU buffer, ``(2, N)`` for CUDA device N.
    fn __dlpack_device__(&self) -> (i32, i32) {
        self.device
    }

    /// A DLPack capsule of the memory, without a copy (the DLPack protocol; consumers such as
    /// ``np.from_dlpack`` and ``torch.from_dlpack`` call it).
    ///
    /// ``max_version >= (1, 0)`` gives a versioned capsule, else a legacy one. CUDA memory:
    /// ``stream`` is the consumer's stream (an int, or an object with ``cuda_stream``), made to
    /// wait for cpugpu's work on the memory (``None`` and ``1``: the legacy default stream,
    /// ``2``: the per-thread default stream, ``-1``: no ordering; ``0`` is refused, as DLPack
    /// says). Host memory takes no stream (None or -1). ``dl_device``, if given, must be this
    /// array's device, or ``(1, 0)`` for page-locked host memory (exported as ``kDLCPU``);
    /// ``copy=True`` is refused (``BufferError``): cpugpu exports without copying.
    #[pyo3(signature = (*, stream = None, max_version = None, dl_device = None, copy = None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<&Bound<'py, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let stream = parse_stream(stream)?;
        if self.is_host() && stream.is_some_and(|s| s != -1) {
            return Err(PyBufferError::new_err(
                "__dlpack__: host memory takes no stream (stream must be None)",
            ));
        }
        let device = match dl_device {
            None => self.device,
            Some(d) if d == self.device => d,
            Some((KDL_CPU, 0)) if self.device.0 == KDL_CUDA_HOST => (KDL_CPU, 0),
            Some(d) => {
                return Err(PyBufferError::new_err(format!(
                    "__dlpack__: the array is on device {:?}, dl_device {d:?} would need a copy",
                    self.device,
                )))
            }
        };
        if copy == Some(true) {
            return Err(PyBufferError::new_err(
                "__dlpack__: copy=True: cpugpu exports its memory without copying",
            ));
        }
        if self.device.0 == KDL_CUDA {
            #[cfg(gpu)]
            if let Some(dev) = &self.order {
                crate::gpu::order_for_consumer(py, dev, stream)?;
            }
        }
        self.capsule(py, max_version.is_some_and(|(major, _)| major >= 1), device)
    }

    /// numpy's array interface (host-accessible memory only): ``np.asarray(a)`` views the
    /// memory.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if !self.is_host() {
            return Err(PyAttributeError::new_err(
                "__array_interface__: this is device memory; use __cuda_array_interface__ or DLPack",
            ));
        }
        self.interface(py, None)
    }

    /// The CUDA array interface, version 3 (CUDA memory only; on host memory this attribute is
    /// absent and ``hasattr`` is false). ``stream`` is cpugpu's stream, which a consumer waits
    /// for before using the memory.
    #[getter]
    fn __cuda_array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if self.is_host() {
            return Err(PyAttributeError::new_err(
                "__cuda_array_interface__: this is host memory; use __array_interface__ or DLPack",
            ));
        }
        #[cfg(gpu)]
        let stream = self.order.as_ref().and_then(crate::gpu::stream_int);
        #[cfg(not(gpu))]
        let stream = None;
        self.interface(py, stream)
    }

    /// The memory as a numpy array (host-accessible memory only), a view: writes show on both.
    fn numpy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if !self.is_host() {
            return Err(err(
                py,
                "DeviceError",
                format!(
                    "numpy(): the array is in {} memory; copy_to_host() copies it",
                    self.device()
                ),
            ));
        }
        self.host_view(py, true)
    }

    /// A new numpy array with a copy of the memory. For CUDA memory the copy is issued on
    /// ``stream`` (an int or an object with ``cuda_stream``; default: cpugpu's stream, so it
    /// follows cpugpu's work on the memory; on another stream it follows only that stream's
    /// work) and waited for, with the GIL released.
    #[pyo3(signature = (*, stream = None))]
    fn copy_to_host<'py>(
        &self,
        py: Python<'py>,
        stream: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let stream = parse_stream(stream)?;
        if self.is_host() {
            if stream.is_some() {
                return Err(err(
                    py,
                    "InvalidArgumentError",
                    "copy_to_host: host memory takes no stream",
                ));
            }
            return self.host_view(py, false)?.call_method0("copy");
        }
        let out = crate::arrays::empty(py, self.descr.bind(py), &self.shape)?;
        let dst = Arr::checked(out, "out")?;
        #[cfg(gpu)]
        crate::gpu::download(py, self, stream, dst.addr, dst.nbytes())?;
        #[cfg(not(gpu))]
        let _ = stream;
        Ok(dst.obj.into_any())
    }

    /// Copies numpy array ``src`` (same dtype and shape, C-contiguous) into the memory. For
    /// CUDA memory the copy is issued on cpugpu's stream and waited for (GIL released).
    /// Raises :class:`LayoutError` when the array is read-only. Writing a buffer's side this
    /// way does not mark it dirty (as writing ``buf.cpu`` does not): call ``mark_gpu_dirty()``.
    fn copy_from_host(&self, py: Python<'_>, src: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.readonly {
            return Err(err(
                py,
                "LayoutError",
                "copy_from_host: the array is read-only",
            ));
        }
        let a = Arr::input(src, "src")?;
        if a.dtype != self.dtype {
            return Err(err(
                py,
                "DtypeError",
                format!(
                    "copy_from_host: src has dtype {}, the array {}",
                    a.dtype.name(),
                    self.dtype.name()
                ),
            ));
        }
        if a.shape() != self.shape.as_slice() {
            return Err(err(
                py,
                "ShapeError",
                format!(
                    "copy_from_host: src has shape {:?}, the array {:?}",
                    a.shape(),
                    self.shape
                ),
            ));
        }
        let (from, to, n) = (a.addr, self.addr as usize, a.nbytes());
        if self.is_host() {
            // SAFETY: both ranges hold `n` bytes (same shape and dtype) of live memory (the
            // array's owner and `a`'s object are held by this frame); `copy` allows overlap.
            return run(py, n, || {
                unsafe { std::ptr::copy(from as *const u8, to as *mut u8, n) };
                Ok(())
            });
        }
        #[cfg(gpu)]
        crate::gpu::upload(py, self, from, n)?;
        #[cfg(not(gpu))]
        let _ = (from, to, n);
        Ok(())
    }

    /// Rows of axis 0 as a view (no copy): ``a[i]``, ``a[i:j]``, ``a[...]``.
    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<DeviceArray> {
        if self.shape.is_empty() {
            return Err(err(
                py,
                "ShapeError",
                "DeviceArray: a zero-dimensional array cannot be indexed",
            ));
        }
        let (start, n, keep_axis) = axis0_key(py, key, self.shape[0])?;
        let mut shape = self.shape.clone();
        if keep_axis {
            shape[0] = n;
        } else {
            shape.remove(0);
        }
        let addr = self.addr + (start * self.row_bytes()) as u64;
        Ok(self.part(py, addr, shape))
    }

    fn __len__(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    fn __repr__(&self) -> String {
        format!(
            "DeviceArray(shape={:?}, dtype={}, device={}, data_ptr={:#x})",
            self.shape,
            self.dtype.name(),
            self.device(),
            self.addr
        )
    }
}
