//! The numpy dtypes cpugpu moves, and scalar conversion into them.
//!
//! The operations move elements by *width* (1, 2, 4 or 8 bytes), so one instantiation per width
//! serves every dtype of that width; the dtype itself is kept for the arrays cpugpu creates.

use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::errors::err;

/// A dtype cpugpu accepts (native byte order only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum DType {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F16,
    F32,
    F64,
    /// `ml_dtypes.bfloat16` (a 2-byte numpy extension dtype).
    BF16,
}

/// What an unsupported dtype's error says is supported.
const SUPPORTED: &str = "cpugpu moves bool, int8, int16, int32, int64, uint8, uint16, uint32, \
                         uint64, float16, float32, float64 and bfloat16 (ml_dtypes.bfloat16, or \
                         its raw 2-byte form as uint16 or int16), in native byte order";

impl DType {
    /// Bytes per element.
    pub(crate) fn width(self) -> usize {
        match self {
            DType::Bool | DType::I8 | DType::U8 => 1,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// numpy's name for it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::BF16 => "bfloat16",
        }
    }

    /// DLPack's type code for it (`kDLInt` 0, `kDLUInt` 1, `kDLFloat` 2, `kDLBfloat` 4,
    /// `kDLBool` 6).
    pub(crate) fn dlpack_code(self) -> u8 {
        match self {
            DType::I8 | DType::I16 | DType::I32 | DType::I64 => 0,
            DType::U8 | DType::U16 | DType::U32 | DType::U64 => 1,
            DType::F16 | DType::F32 | DType::F64 => 2,
            DType::BF16 => 4,
            DType::Bool => 6,
        }
    }

    /// The dtype of `descr`, or `cpugpu.DtypeError` naming `what` and saying what is supported.
    pub(crate) fn of(descr: &Bound<'_, PyArrayDescr>, what: &str) -> PyResult<DType> {
        let py = descr.py();
        if descr.is_native_byteorder() == Some(false) {
            return Err(err(
                py,
                "DtypeError",
                format!(
                    "{what} has the byte-swapped dtype {}: {SUPPORTED}; convert with \
                     .astype(x.dtype.newbyteorder('='))",
                    repr(descr)
                ),
            ));
        }
        let d = match (descr.kind(), descr.itemsize()) {
            (b'b', 1) => Some(DType::Bool),
            (b'i', 1) => Some(DType::I8),
            (b'i', 2) => Some(DType::I16),
            (b'i', 4) => Some(DType::I32),
            (b'i', 8) => Some(DType::I64),
            (b'u', 1) => Some(DType::U8),
            (b'u', 2) => Some(DType::U16),
            (b'u', 4) => Some(DType::U32),
            (b'u', 8) => Some(DType::U64),
            (b'f', 2) => Some(DType::F16),
            (b'f', 4) => Some(DType::F32),
            (b'f', 8) => Some(DType::F64),
            (_, 2) if !descr.has_fields() && !descr.has_subarray() => descr
                .typeobj()
                .name()
                .ok()
                .filter(|n| n == "bfloat16")
                .map(|_| DType::BF16),
            _ => None,
        };
        d.ok_or_else(|| {
            err(
                py,
                "DtypeError",
                format!("{what} has dtype {}: {SUPPORTED}", repr(descr)),
            )
        })
    }

    /// The dtype of `arr`.
    pub(crate) fn of_array(arr: &Bound<'_, PyUntypedArray>, what: &str) -> PyResult<DType> {
        DType::of(&arr.dtype(), what)
    }
}

/// `repr(descr)` for messages, e.g. `dtype('complex64')`.
fn repr(descr: &Bound<'_, PyArrayDescr>) -> String {
    descr
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// `numpy.dtype(obj)` (a dtype, a type such as `np.float32`, or a name such as `"int32"`) as a
/// supported dtype and its descriptor.
pub(crate) fn resolve<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<(DType, Bound<'py, PyArrayDescr>)> {
    let descr = PyArrayDescr::new(py, obj).map_err(|e| {
        err(
            py,
            "DtypeError",
            format!("{what}: {obj} is not a numpy dtype ({e})"),
        )
    })?;
    let d = DType::of(&descr, what)?;
    Ok((d, descr))
}

/// `numpy.asarray`, looked up once.
fn asarray(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static F: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    F.import(py, "numpy", "asarray")
}

/// `value` converted to `descr` by numpy's own rules (so out-of-range integers raise as numpy
/// raises), as the element's bytes, little end first in memory order (native order: the bytes
/// as they would sit in an array). Only the first `descr.itemsize` bytes are used.
pub(crate) fn scalar_bytes(
    py: Python<'_>,
    value: &Bound<'_, PyAny>,
    descr: &Bound<'_, PyArrayDescr>,
    what: &str,
) -> PyResult<[u8; 8]> {
    let arr = asarray(py)?.call1((value, descr))?;
    let arr = arr.cast_into::<PyUntypedArray>().map_err(PyErr::from)?;
    if arr.ndim() != 0 {
        return Err(err(
            py,
            "InvalidArgumentError",
            format!(
                "{what} must be a scalar, got an array of shape {:?}",
                arr.shape()
            ),
        ));
    }
    let w = arr.dtype().itemsize();
    let mut out = [0u8; 8];
    // SAFETY: a 0-d array holds exactly one element of `w` (<= 8, a supported dtype's width)
    // bytes at its data pointer; `arr` is alive for the duration of the copy.
    unsafe {
        let data = (*arr.as_array_ptr()).data as *const u8;
        std::ptr::copy_nonoverlapping(data, out.as_mut_ptr(), w.min(8));
    }
    Ok(out)
}

/// Runs `$body` with `$T` bound to the unsigned integer type of width `$w` (1, 2, 4 or 8 bytes).
macro_rules! by_width {
    ($w:expr, $T:ident => $body:expr) => {
        match $w {
            1 => {
                type $T = u8;
                $body
            }
            2 => {
                type $T = u16;
                $body
            }
            4 => {
                type $T = u32;
                $body
            }
            _ => {
                type $T = u64;
                $body
            }
        }
    };
}
pub(crate) use by_width;

/// Runs `$body` with `$I` bound to the index type of `$d` (int32 or int64).
macro_rules! by_index {
    ($d:expr, $I:ident => $body:expr) => {
        match $d {
            DType::I32 => {
                type $I = i32;
                $body
            }
            _ => {
                type $I = i64;
                $body
            }
        }
    };
}
pub(crate) use by_index;

/// An element of width `size_of::<T>()` from the first bytes of `bytes` (native order).
pub(crate) fn from_bytes<T: bytemuck::Pod>(bytes: &[u8; 8]) -> T {
    bytemuck::pod_read_unaligned(&bytes[..std::mem::size_of::<T>()])
}

/// [`scalar_bytes`] with a fast path for a Python `int` into an integer dtype and a Python
/// `int` or `float` into float32 / float64 (what batching code passes: `0`, `-1`, `0.0`); an
/// integer outside the dtype's range, and every other case, goes through numpy, which raises
/// as `np.asarray(value, dtype)` does.
pub(crate) fn value_bytes(
    py: Python<'_>,
    value: &Bound<'_, PyAny>,
    dtype: DType,
    descr: &Bound<'_, PyArrayDescr>,
    what: &str,
) -> PyResult<[u8; 8]> {
    use pyo3::types::{PyFloat, PyInt};
    let mut out = [0u8; 8];
    if value.is_exact_instance_of::<PyInt>() {
        if let Ok(v) = value.extract::<i64>() {
            let fits = |lo: i64, hi: i64| v >= lo && v <= hi;
            let done = match dtype {
                DType::I8 if fits(i8::MIN.into(), i8::MAX.into()) => {
                    Some((v as i8).to_ne_bytes().to_vec())
                }
                DType::I16 if fits(i16::MIN.into(), i16::MAX.into()) => {
                    Some((v as i16).to_ne_bytes().to_vec())
                }
                DType::I32 if fits(i32::MIN.into(), i32::MAX.into()) => {
                    Some((v as i32).to_ne_bytes().to_vec())
                }
                DType::I64 => Some(v.to_ne_bytes().to_vec()),
                DType::U8 if fits(0, u8::MAX.into()) => Some((v as u8).to_ne_bytes().to_vec()),
                DType::U16 if fits(0, u16::MAX.into()) => Some((v as u16).to_ne_bytes().to_vec()),
                DType::U32 if fits(0, u32::MAX.into()) => Some((v as u32).to_ne_bytes().to_vec()),
                DType::U64 if v >= 0 => Some((v as u64).to_ne_bytes().to_vec()),
                // Exactly representable: |v| <= 2^24 (f32), 2^53 (f64), as numpy would store.
                DType::F32 if fits(-(1 << 24), 1 << 24) => Some((v as f32).to_ne_bytes().to_vec()),
                DType::F64 if fits(-(1 << 53), 1 << 53) => Some((v as f64).to_ne_bytes().to_vec()),
                _ => None,
            };
            if let Some(b) = done {
                out[..b.len()].copy_from_slice(&b);
                return Ok(out);
            }
        }
    } else if value.is_exact_instance_of::<PyFloat>() {
        let v: f64 = value.extract()?;
        match dtype {
            DType::F64 => {
                out.copy_from_slice(&v.to_ne_bytes());
                return Ok(out);
            }
            DType::F32 => {
                // numpy rounds to nearest as `as` does (inf for out-of-range values, as numpy).
                out[..4].copy_from_slice(&(v as f32).to_ne_bytes());
                return Ok(out);
            }
            _ => {}
        }
    }
    scalar_bytes(py, value, descr, what)
}
