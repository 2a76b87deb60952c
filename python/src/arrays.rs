//! numpy arrays in and out, without copies.
//!
//! Inputs: a numpy array is used in place (its data pointer), after checking that the crate
//! can read it as a flat slice: C-contiguous, aligned, a supported dtype, and, for outputs,
//! writeable and not overlapping an input. Anything else is refused with a clear error rather
//! than copied. An object that is not an ndarray but exports DLPack (a PyTorch CPU tensor, a
//! `cpugpu.DeviceArray`) is imported with `numpy.from_dlpack`, which shares its memory.
//!
//! Outputs: new arrays are allocated by numpy (`PyArray_NewFromDescr`, no fill) and written by
//! the crate's allocation-free `_into` forms, or made from memory the crate allocated with a
//! base object that owns it; views (split, buffer sides) are arrays over existing memory whose
//! `base` keeps that memory alive.

use std::ffi::c_int;
use std::os::raw::c_void;

use numpy::npyffi::{self, npy_intp, NPY_ARRAY_ALIGNED, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyInt};
use pyo3::IntoPyObjectExt;

use crate::dtype::DType;
use crate::errors::{err, make};

/// A checked input or output array: C-contiguous, aligned, of a supported dtype.
pub(crate) struct Arr<'py> {
    pub(crate) obj: Bound<'py, PyUntypedArray>,
    pub(crate) dtype: DType,
    /// The data pointer as an address (so that it can cross into GIL-free closures).
    pub(crate) addr: usize,
    pub(crate) len: usize,
}

impl<'py> Arr<'py> {
    /// The shape.
    pub(crate) fn shape(&self) -> &[usize] {
        self.obj.shape()
    }

    /// Bytes of data.
    pub(crate) fn nbytes(&self) -> usize {
        self.len * self.dtype.width()
    }

    /// Whether the array may be written.
    pub(crate) fn writeable(&self) -> bool {
        // SAFETY: `obj` is a live ndarray; reading its flags field.
        unsafe { (*self.obj.as_array_ptr()).flags & NPY_ARRAY_WRITEABLE != 0 }
    }

    /// The elements as a slice of `T` (the array's width).
    ///
    /// # Safety
    /// `size_of::<T>()` is the array's element width, and nothing writes the array while the
    /// slice is used (other than through a slice from [`Arr::slice_mut`] of a non-overlapping
    /// array, which the callers check with [`check_no_overlap`]).
    pub(crate) unsafe fn slice<'a, T>(&self) -> &'a [T] {
        debug_assert_eq!(std::mem::size_of::<T>(), self.dtype.width());
        if self.len == 0 {
            return &[];
        }
        // SAFETY: checked C-contiguous and aligned, `len` elements at `addr`, kept alive by
        // `obj` for the duration of the call that uses the slice (the caller's frame holds it).
        unsafe { std::slice::from_raw_parts(self.addr as *const T, self.len) }
    }

    /// The elements as a mutable slice of `T`.
    ///
    /// # Safety
    /// As [`Arr::slice`], the array is writeable (checked by [`Arr::output`]) and no other slice
    /// of the same memory is in use.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut<'a, T>(&self) -> &'a mut [T] {
        debug_assert_eq!(std::mem::size_of::<T>(), self.dtype.width());
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `slice`; exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut T, self.len) }
    }

    /// `obj` as an array of this one's layout past axis 0 without the full check, when it
    /// plainly is one: an ndarray with the very same descriptor object, C-contiguous and
    /// aligned flags, the same number of dimensions and the same extents past axis 0. `None`
    /// means "check it in full" (it may still be fine, or it may be an error to report).
    pub(crate) fn same_layout(&self, obj: &Bound<'py, PyAny>) -> Option<Arr<'py>> {
        let a = obj.cast::<PyUntypedArray>().ok()?;
        // SAFETY: both are live ndarrays; reading their header fields (`dimensions` holds `nd`
        // extents).
        unsafe {
            let (me, it) = (&*self.obj.as_array_ptr(), &*a.as_array_ptr());
            const NEED: c_int = npyffi::NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED;
            if it.descr != me.descr || it.flags & NEED != NEED || it.nd != me.nd || it.nd < 1 {
                return None;
            }
            let nd = it.nd as usize;
            let dims = std::slice::from_raw_parts(it.dimensions as *const usize, nd);
            let mine = std::slice::from_raw_parts(me.dimensions as *const usize, nd);
            if dims[1..] != mine[1..] {
                return None;
            }
            Some(Arr {
                obj: a.clone(),
                dtype: self.dtype,
                addr: it.data as usize,
                len: dims.iter().product(),
            })
        }
    }

    /// Checks `obj` (already an ndarray) and wraps it; `what` names it in errors.
    pub(crate) fn checked(obj: Bound<'py, PyUntypedArray>, what: &str) -> PyResult<Self> {
        let py = obj.py();
        let dtype = DType::of_array(&obj, what)?;
        if !obj.is_c_contiguous() {
            return Err(err(
                py,
                "LayoutError",
                format!(
                    "{what} is not C-contiguous (shape {:?}, strides {:?}); cpugpu does not copy \
                     its inputs: pass np.ascontiguousarray({what}) if a copy is what you want",
                    obj.shape(),
                    obj.strides()
                ),
            ));
        }
        // SAFETY: `obj` is a live ndarray; reading its header fields.
        let (flags, data) = unsafe {
            let a = &*obj.as_array_ptr();
            (a.flags, a.data as usize)
        };
        let len = obj.len_elems();
        if len > 0 && (flags & NPY_ARRAY_ALIGNED == 0 || data % dtype.width() != 0) {
            return Err(err(
                py,
                "LayoutError",
                format!(
                    "{what} is not aligned for its dtype ({}): cpugpu does not copy its inputs; \
                     pass {what}.copy()",
                    dtype.name()
                ),
            ));
        }
        Ok(Arr {
            obj,
            dtype,
            addr: data,
            len,
        })
    }

    /// A checked input: an ndarray, or an object exporting DLPack (imported without a copy).
    pub(crate) fn input(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        Self::checked(to_ndarray(obj, what)?, what)
    }

    /// A checked output: as [`Arr::input`], and writeable.
    pub(crate) fn output(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        let a = Self::input(obj, what)?;
        if !a.writeable() {
            return Err(err(obj.py(), "LayoutError", format!("{what} is read-only")));
        }
        Ok(a)
    }
}

/// Element count of an array (the product of its shape).
trait LenElems {
    fn len_elems(&self) -> usize;
}

impl LenElems for Bound<'_, PyUntypedArray> {
    fn len_elems(&self) -> usize {
        self.shape().iter().product()
    }
}

/// `numpy.from_dlpack`, looked up once.
fn from_dlpack(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static F: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    F.import(py, "numpy", "from_dlpack")
}

/// `obj` as an ndarray: itself, or, for an object exporting DLPack (a PyTorch CPU tensor, a
/// CuPy array, a `cpugpu.DeviceArray`), numpy's zero-copy import of it. Nothing is copied: an
/// object in device memory is refused by numpy, and that error is raised as a `DeviceError`.
pub(crate) fn to_ndarray<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        return Ok(a.clone());
    }
    let py = obj.py();
    if obj.hasattr("__dlpack__")? {
        let a = from_dlpack(py)?.call1((obj,)).map_err(|e| {
            err(
                py,
                "DeviceError",
                format!(
                    "{what}: numpy cannot view this object's memory without a copy (host \
                     operations take host memory): {e}"
                ),
            )
        })?;
        return a.cast_into::<PyUntypedArray>().map_err(PyErr::from);
    }
    Err(err(
        py,
        "DtypeError",
        format!(
            "{what} must be a numpy array (or an object exporting DLPack, such as a PyTorch CPU \
             tensor), got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ),
    ))
}

/// Whether `obj` is CUDA memory: a `DeviceArray` on a GPU, or an object other than a numpy
/// array exposing `__cuda_array_interface__` (a PyTorch or CuPy tensor on a GPU). An operation
/// given one runs on the GPU (builds with the GPU paths), or raises `DeviceError`.
pub(crate) fn is_cuda(obj: &Bound<'_, PyAny>) -> bool {
    if obj.cast::<PyUntypedArray>().is_ok() {
        return false;
    }
    if let Ok(a) = obj.cast::<crate::dlpack::DeviceArray>() {
        return a.get().device.0 == crate::dlpack::KDL_CUDA;
    }
    obj.hasattr("__cuda_array_interface__").unwrap_or(false)
}

/// `numpy.asarray`, looked up once.
pub(crate) fn asarray(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static F: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    F.import(py, "numpy", "asarray")
}

/// A sequence of Python ints (not an array) as a new array of `target`, an integer dtype (that
/// is a conversion of Python objects, not a copy of an array). numpy reads the sequence first,
/// without a dtype; it is refused with `DtypeError` unless numpy reads integers (a float would be
/// truncated, a bool is not an integer here), and with `InvalidArgumentError` naming the first
/// value outside `target`'s range and its (flat) position (numpy's cast would wrap it). An empty
/// sequence gives an empty array. `what` names the argument in errors.
pub(crate) fn int_sequence<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    target: &Bound<'py, PyArrayDescr>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let py = obj.py();
    let f = asarray(py)?;
    let a = f
        .call1((obj,))
        .map_err(|e| not_ints(py, what, &e))?
        .cast_into::<PyUntypedArray>()
        .map_err(PyErr::from)?;
    if a.len_elems() > 0 {
        static IINFO: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let info = IINFO.import(py, "numpy", "iinfo")?.call1((target,))?;
        let (lo, hi): (i128, i128) = (
            info.getattr("min")?.extract()?,
            info.getattr("max")?.extract()?,
        );
        if matches!(a.dtype().kind(), b'i' | b'u') {
            let min: i128 = a
                .call_method0("min")?
                .call_method0("__index__")?
                .extract()?;
            let max: i128 = a
                .call_method0("max")?
                .call_method0("__index__")?
                .extract()?;
            if min < lo || max > hi {
                let items = a.call_method0("ravel")?.call_method0("tolist")?;
                return Err(out_of_range(py, what, &items, lo, hi, target)?);
            }
        } else {
            // Python ints past 64 bits (numpy: object), or past int64 and negative ones mixed
            // (numpy: float64) are out of range, not "not integers": say so.
            let items = f
                .call1((obj, "O"))
                .and_then(|o| o.call_method0("ravel")?.call_method0("tolist"));
            if let Ok(items) = items {
                let all_ints = items.try_iter()?.all(|x| {
                    x.is_ok_and(|x| x.is_instance_of::<PyInt>() && !x.is_instance_of::<PyBool>())
                });
                if all_ints {
                    return Err(out_of_range(py, what, &items, lo, hi, target)?);
                }
            }
            return Err(err(
                py,
                "DtypeError",
                format!(
                    "{what} must be integers, got a sequence numpy reads as {}",
                    a.dtype()
                ),
            ));
        }
    }
    f.call1((a, target))?
        .cast_into::<PyUntypedArray>()
        .map_err(PyErr::from)
}

/// `DtypeError` for a sequence numpy could not read as an array (a ragged list, an object that
/// is not a number); other exceptions (a `KeyboardInterrupt`, a `MemoryError`) pass through.
fn not_ints(py: Python<'_>, what: &str, e: &PyErr) -> PyErr {
    use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
    if e.is_instance_of::<PyValueError>(py)
        || e.is_instance_of::<PyTypeError>(py)
        || e.is_instance_of::<PyOverflowError>(py)
    {
        return err(
            py,
            "DtypeError",
            format!("{what} must be a sequence of integers: {}", e.value(py)),
        );
    }
    e.clone_ref(py)
}

/// `InvalidArgumentError` for the first of `items` (Python ints, flat) outside `lo..=hi`, with
/// its position and value as attributes.
fn out_of_range(
    py: Python<'_>,
    what: &str,
    items: &Bound<'_, PyAny>,
    lo: i128,
    hi: i128,
    target: &Bound<'_, PyArrayDescr>,
) -> PyResult<PyErr> {
    for (position, x) in items.try_iter()?.enumerate() {
        let x = x?;
        // Past i128 is out of range too.
        if x.extract::<i128>().is_ok_and(|v| (lo..=hi).contains(&v)) {
            continue;
        }
        return Ok(make(
            py,
            "InvalidArgumentError",
            format!(
                "{what}[{position}] = {x} does not fit {target} ({lo} to {hi}); cpugpu does not \
                 wrap values"
            ),
            &[
                ("position", position.into_py_any(py)?),
                ("value", x.unbind()),
            ],
        ));
    }
    // Unreachable when the caller found a value out of range; a plain error if not.
    Ok(err(
        py,
        "InvalidArgumentError",
        format!("{what}: a value does not fit {target}"),
    ))
}

/// An index-like argument (indices, lengths, offsets): an int32 or int64 ndarray (or DLPack
/// object) is used in place; a list or other sequence of ints is converted to int64 by
/// [`int_sequence`] (floats and bools refused, values past int64 refused rather than wrapped).
/// Must be one-dimensional.
pub(crate) fn index_input<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Arr<'py>> {
    let py = obj.py();
    let arr = if obj.cast::<PyUntypedArray>().is_ok() || obj.hasattr("__dlpack__")? {
        to_ndarray(obj, what)?
    } else {
        int_sequence(obj, what, &numpy::dtype::<i64>(py))?
    };
    let a = Arr::checked(arr, what)?;
    check_index(py, &a, what)?;
    Ok(a)
}

/// An index-like operand must be one-dimensional int32 or int64.
pub(crate) fn check_index(py: Python<'_>, a: &impl Operand, what: &str) -> PyResult<()> {
    if !matches!(a.dt(), DType::I32 | DType::I64) {
        return Err(err(
            py,
            "DtypeError",
            format!(
                "{what} must be int32 or int64, got {}; cast with {what}.astype(np.int64) (cpugpu \
                 does not convert arrays silently)",
                a.dt().name()
            ),
        ));
    }
    if a.dims().len() != 1 {
        return Err(err(
            py,
            "ShapeError",
            format!("{what} must be one-dimensional, got shape {:?}", a.dims()),
        ));
    }
    Ok(())
}

/// What the shared argument checks of the operations need of an operand, host (`Arr`) or
/// CUDA memory (`gpu::DevArg`).
pub(crate) trait Operand {
    /// The shape.
    fn dims(&self) -> &[usize];
    /// The dtype.
    fn dt(&self) -> DType;
    /// The first byte's address and the byte count.
    fn span(&self) -> (u64, usize);
}

impl Operand for Arr<'_> {
    fn dims(&self) -> &[usize] {
        self.shape()
    }
    fn dt(&self) -> DType {
        self.dtype
    }
    fn span(&self) -> (u64, usize) {
        (self.addr as u64, self.nbytes())
    }
}

/// Raises `LayoutError` when `out` shares memory with `inp` (the crate may not read and write
/// the same memory in one call; numpy would make a temporary copy here).
pub(crate) fn check_no_overlap(
    py: Python<'_>,
    out: &impl Operand,
    out_what: &str,
    inp: &impl Operand,
    in_what: &str,
) -> PyResult<()> {
    let ((a0, an), (b0, bn)) = (out.span(), inp.span());
    let (a1, b1) = (a0 + an as u64, b0 + bn as u64);
    if an > 0 && bn > 0 && a0 < b1 && b0 < a1 {
        return Err(err(
            py,
            "LayoutError",
            format!(
                "{out_what} overlaps {in_what} in memory: cpugpu does not copy inputs to a \
                 temporary; pass {in_what}.copy()"
            ),
        ));
    }
    Ok(())
}

/// `PyArray_Type`.
fn array_type(py: Python<'_>) -> *mut pyo3::ffi::PyTypeObject {
    // SAFETY: the numpy C API is loaded by rust-numpy on first use (importing numpy).
    unsafe { PY_ARRAY_API.get_type_object(py, npyffi::NpyTypes::PyArray_Type) }
}

/// numpy's largest dimension count (NPY_MAXDIMS in numpy 2).
const MAX_DIMS: usize = 64;

/// `shape` as `npy_intp` dims on the stack, or an error for too many dimensions or a dimension
/// past `isize::MAX`.
fn intp_dims(py: Python<'_>, shape: &[usize]) -> PyResult<[npy_intp; MAX_DIMS]> {
    let mut dims = [0 as npy_intp; MAX_DIMS];
    if shape.len() > MAX_DIMS {
        return Err(err(
            py,
            "ShapeError",
            format!("{} dimensions, numpy allows {MAX_DIMS}", shape.len()),
        ));
    }
    for (d, &s) in dims.iter_mut().zip(shape) {
        *d = npy_intp::try_from(s)
            .map_err(|_| err(py, "ShapeError", format!("dimension {s} is too large")))?;
    }
    Ok(dims)
}

/// A new, uninitialised C-contiguous array of `shape` and `descr` (numpy's own memory).
pub(crate) fn empty<'py>(
    py: Python<'py>,
    descr: &Bound<'py, PyArrayDescr>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let mut dims = intp_dims(py, shape)?;
    // SAFETY: PyArray_NewFromDescr steals a reference to the descriptor (hence the clone) and
    // allocates the data itself (data = NULL); it returns NULL with an exception set on failure.
    let ptr = unsafe {
        PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            array_type(py),
            descr.clone().into_dtype_ptr(),
            shape.len() as c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: a new reference or NULL (with the Python error set).
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, ptr)? };
    obj.cast_into::<PyUntypedArray>().map_err(PyErr::from)
}

/// An array of `shape` and `descr` over memory at `addr` that `base` keeps alive: the array's
/// `base` attribute is `base`, so the memory lives as long as any array (or view of one) made
/// here does.
///
/// # Safety
/// `addr` points to at least `shape`'s element count of `descr` elements, aligned for them,
/// valid (and, if `writeable`, writable) for as long as `base` is alive.
pub(crate) unsafe fn view<'py>(
    py: Python<'py>,
    descr: &Bound<'py, PyArrayDescr>,
    shape: &[usize],
    addr: usize,
    writeable: bool,
    base: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut dims = intp_dims(py, shape)?;
    let flags = npyffi::NPY_ARRAY_C_CONTIGUOUS
        | NPY_ARRAY_ALIGNED
        | if writeable { NPY_ARRAY_WRITEABLE } else { 0 };
    // SAFETY: as `empty`, with caller-provided data (the caller's contract); numpy does not
    // own or free `addr`.
    let ptr = unsafe {
        PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            array_type(py),
            descr.clone().into_dtype_ptr(),
            shape.len() as c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            addr as *mut c_void,
            flags,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: a new reference or NULL (with the Python error set).
    let arr = unsafe { Bound::from_owned_ptr_or_err(py, ptr)? };
    // SAFETY: SetBaseObject steals the reference to `base` (into_ptr) even on failure, and
    // returns -1 with an exception set on failure, after which `arr` is dropped (freed).
    let rc = unsafe {
        PY_ARRAY_API.PyArray_SetBaseObject(
            py,
            arr.as_ptr() as *mut npyffi::PyArrayObject,
            base.into_ptr(),
        )
    };
    if rc < 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(arr)
}

/// A Python object owning a Rust allocation, used as the `base` of numpy arrays over it.
#[pyclass(frozen, module = "cpugpu._native", name = "_Owner")]
pub(crate) struct Owner {
    _data: Box<dyn Send + Sync>,
}

impl Owner {
    /// Wraps `data` (memory the caller then views through [`view`]).
    pub(crate) fn new(data: Box<dyn Send + Sync>) -> Self {
        Owner { _data: data }
    }
}

/// A numpy array taking ownership of `v` without copying it (its base owns the `Vec`).
pub(crate) fn from_vec<'py, T: Send + Sync + 'static>(
    py: Python<'py>,
    descr: &Bound<'py, PyArrayDescr>,
    shape: &[usize],
    v: Vec<T>,
) -> PyResult<Bound<'py, PyAny>> {
    debug_assert_eq!(v.len(), shape.iter().product::<usize>());
    let addr = v.as_ptr() as usize;
    let owner = Bound::new(py, Owner::new(Box::new(v)))?;
    // SAFETY: the Vec's heap buffer does not move when the Vec is moved into the owner; it
    // holds shape's element count of `T` (the descriptor's width), aligned, and lives as long
    // as the owner, which the array's base keeps alive.
    unsafe { view(py, descr, shape, addr, true, owner.into_any()) }
}

/// A shape argument: an int or a sequence of ints, each >= 0.
pub(crate) fn parse_shape(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<usize>> {
    let py = obj.py();
    let dims: Vec<i64> = if let Ok(n) = obj.extract::<i64>() {
        vec![n]
    } else {
        obj.extract::<Vec<i64>>().map_err(|_| {
            err(
                py,
                "InvalidArgumentError",
                format!("{what} must be an int or a sequence of ints, got {obj}"),
            )
        })?
    };
    dims.iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                err(
                    py,
                    "InvalidArgumentError",
                    format!("{what} = {dims:?}: dimensions must be >= 0"),
                )
            })
        })
        .collect()
}
