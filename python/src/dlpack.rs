//! Export of buffer memory to other libraries without a copy: DLPack (`__dlpack__`,
//! `__dlpack_device__`, legacy and versioned capsules), numpy's `__array_interface__` for host
//! memory and `__cuda_array_interface__` (version 3) for CUDA memory.
//!
//! A capsule's `manager_ctx` holds an `Arc` of the buffer's [`Holder`], so the memory lives until
//! the consumer calls the deleter (or, unconsumed, until the capsule is collected), whichever
//! Python objects are gone by then. The deleter touches no Python object, so a consumer may call
//! it from any thread without the GIL, as DLPack allows.

use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use numpy::PyArrayDescr;
use pyo3::exceptions::{PyAttributeError, PyBufferError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::arrays::{view, Owner};
use crate::dtype::DType;
use crate::errors::err;
use crate::side::Holder;

/// DLPack's device type for host memory.
pub(crate) const KDL_CPU: i32 = 1;
/// DLPack's device type for CUDA device memory.
#[cfg(feature = "cuda")]
pub(crate) const KDL_CUDA: i32 = 2;

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

/// What a capsule owns: the managed tensor (first, so that a pointer to it is a pointer to the
/// whole), its shape and strides, and the memory's holder.
#[repr(C)]
struct Export<M> {
    managed: M,
    shape: Vec<i64>,
    strides: Vec<i64>,
    _keep: Arc<Holder>,
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

/// One side of a buffer as an array other libraries can import without a copy.
///
/// It speaks DLPack (``torch.from_dlpack(a)``, ``np.from_dlpack(a)``, ``cupy.from_dlpack(a)``),
/// and numpy's ``__array_interface__`` for host memory or ``__cuda_array_interface__`` (v3) for
/// CUDA memory (on the host backend the latter is absent: ``hasattr`` is false). Whatever
/// imports it holds the buffer's memory alive until it is done with it; a pool slot is not
/// handed out again while anything does.
#[pyclass(frozen, module = "cpugpu", name = "DeviceArray")]
pub(crate) struct DeviceArray {
    keep: Arc<Holder>,
    addr: u64,
    shape: Vec<usize>,
    dtype: DType,
    descr: Py<PyArrayDescr>,
    /// DLPack device type and id.
    device: (i32, i32),
    readonly: bool,
}

impl DeviceArray {
    pub(crate) fn new(
        keep: Arc<Holder>,
        addr: u64,
        shape: Vec<usize>,
        dtype: DType,
        descr: Py<PyArrayDescr>,
        device: (i32, i32),
    ) -> Self {
        DeviceArray {
            keep,
            addr,
            shape,
            dtype,
            descr,
            device,
            readonly: false,
        }
    }

    /// DLPack's `(device_type, device_id)`.
    pub(crate) fn dlpack_device(&self) -> (i32, i32) {
        self.device
    }

    fn is_host(&self) -> bool {
        self.device.0 == KDL_CPU
    }

    /// The C-contiguous strides in elements.
    fn strides(&self) -> Vec<i64> {
        let mut s = vec![1i64; self.shape.len()];
        for i in (0..self.shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.shape[i + 1] as i64;
        }
        s
    }

    fn tensor(&self, shape: &mut [i64], strides: &mut [i64]) -> DLTensor {
        DLTensor {
            data: self.addr as *mut c_void,
            device: DLDevice {
                device_type: self.device.0,
                device_id: self.device.1,
            },
            ndim: self.shape.len() as i32,
            dtype: DLDataType {
                code: self.dtype.dlpack_code(),
                bits: (self.dtype.width() * 8) as u8,
                lanes: 1,
            },
            shape: shape.as_mut_ptr(),
            strides: strides.as_mut_ptr(),
            byte_offset: 0,
        }
    }

    /// A DLPack capsule of this memory (versioned when `versioned`).
    fn capsule<'py>(&self, py: Python<'py>, versioned: bool) -> PyResult<Bound<'py, PyAny>> {
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
                    dl_tensor: self.tensor(&mut [], &mut []),
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
                    dl_tensor: self.tensor(&mut [], &mut []),
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

    /// The memory's address.
    #[getter]
    fn data_ptr(&self) -> u64 {
        self.addr
    }

    /// Bytes of data.
    #[getter]
    fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.width()
    }

    /// ``"cpu"``, or ``"cuda:N"`` for memory of CUDA device N.
    #[getter]
    fn device(&self) -> String {
        if self.is_host() {
            "cpu".to_owned()
        } else {
            format!("cuda:{}", self.device.1)
        }
    }

    /// DLPack's ``(device_type, device_id)``: ``(1, 0)`` for host memory, ``(2, N)`` for CUDA
    /// device N.
    fn __dlpack_device__(&self) -> (i32, i32) {
        self.device
    }

    /// A DLPack capsule of the memory, without a copy (the DLPack protocol; consumers such as
    /// ``np.from_dlpack`` and ``torch.from_dlpack`` call it).
    ///
    /// ``max_version >= (1, 0)`` gives a versioned capsule, else a legacy one. Host memory takes
    /// no stream (``stream`` must be None); ``dl_device``, if given, must be this array's
    /// device, and ``copy=True`` is refused (``BufferError``): cpugpu exports without copying.
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
        if dl_device.is_some_and(|d| d != self.device) {
            return Err(PyBufferError::new_err(format!(
                "__dlpack__: the array is on device {:?}, dl_device {:?} would need a copy",
                self.device,
                dl_device.unwrap_or_default()
            )));
        }
        if copy == Some(true) {
            return Err(PyBufferError::new_err(
                "__dlpack__: copy=True: cpugpu exports its memory without copying",
            ));
        }
        #[cfg(feature = "cuda")]
        if !self.is_host() {
            crate::cuda::order_for_consumer(py, &self.keep, stream)?;
        }
        self.capsule(py, max_version.is_some_and(|(major, _)| major >= 1))
    }

    /// numpy's array interface (host memory only): ``np.asarray(a)`` views the memory.
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
    /// absent and ``hasattr`` is false).
    #[getter]
    fn __cuda_array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if self.is_host() {
            return Err(PyAttributeError::new_err(
                "__cuda_array_interface__: this is host memory; use __array_interface__ or DLPack",
            ));
        }
        #[cfg(feature = "cuda")]
        let stream = crate::cuda::stream_of(&self.keep);
        #[cfg(not(feature = "cuda"))]
        let stream = None;
        self.interface(py, stream)
    }

    /// The memory as a numpy array (host memory only), a view: writes show on both.
    fn numpy<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.get();
        if !me.is_host() {
            return Err(err(
                py,
                "DeviceError",
                format!("numpy(): the array is in {} memory", me.device()),
            ));
        }
        let base = Bound::new(py, Owner::new(Box::new(me.keep.clone())))?;
        // SAFETY: host memory of `shape` elements of the dtype at `addr`, kept alive by the
        // holder, which the owner (the view's base) holds.
        unsafe {
            view(
                py,
                me.descr.bind(py),
                &me.shape,
                me.addr as usize,
                !me.readonly,
                base.into_any(),
            )
        }
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
