//! The crate's errors as Python exceptions (classes defined in `cpugpu/_errors.py`), and the
//! binding's own (dtype, layout, closed buffer), raised through the same hierarchy.

use std::panic::{catch_unwind, AssertUnwindSafe};

use cpugpu::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use pyo3::IntoPyObjectExt;

/// The `cpugpu._errors` module, imported once.
fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            PyModule::import(py, "cpugpu._errors").map(Bound::unbind)
        })
        .map(|m| m.bind(py))
}

/// An instance of `cpugpu.<class>` with `message`, and `attrs` set on it.
pub(crate) fn make(
    py: Python<'_>,
    class: &str,
    message: String,
    attrs: &[(&str, Py<PyAny>)],
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = errors_module(py)?.getattr(class)?;
        let exc = cls.call1((message.clone(),))?;
        for (k, v) in attrs {
            exc.setattr(*k, v.bind(py))?;
        }
        Ok(PyErr::from_value(exc))
    };
    // If the classes cannot be loaded (a broken install), still raise something readable.
    build().unwrap_or_else(|e| {
        pyo3::exceptions::PyRuntimeError::new_err(format!("{message} (and cpugpu._errors: {e})"))
    })
}

/// The Python exception for a crate error: the class by kind, the crate's message, and the
/// variant's fields as attributes.
pub(crate) fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    let n = |v: usize| v.into_py_any(py);
    let i = |v: i64| v.into_py_any(py);
    let s = |v: &str| v.into_py_any(py);
    let mut attrs: Vec<(&str, Py<PyAny>)> = Vec::new();
    let mut add = |k: &'static str, v: PyResult<Py<PyAny>>| {
        if let Ok(v) = v {
            attrs.push((k, v));
        }
    };
    // Every variant names its operation (`Error::op`, exhaustive in the crate).
    add("op", s(e.op().name()));
    let class = match &e {
        Error::IndexOutOfBounds {
            op: _,
            position,
            index,
            bound,
        } => {
            add("position", n(*position));
            add("index", i(*index));
            add("bound", n(*bound));
            "IndexOutOfBoundsError"
        }
        Error::RowRangeOutOfBounds {
            op: _,
            start,
            end,
            rows,
        } => {
            add("start", n(*start));
            add("end", n(*end));
            add("rows", n(*rows));
            "IndexOutOfBoundsError"
        }
        Error::NegativeLength {
            op: _,
            position,
            value,
        } => {
            add("position", n(*position));
            add("value", i(*value));
            "OffsetsError"
        }
        Error::OffsetOverflow {
            op: _,
            position,
            limit,
        } => {
            add("position", n(*position));
            add("limit", i(*limit));
            "OffsetsError"
        }
        Error::OffsetsNotMonotonic {
            op: _,
            position,
            previous,
            value,
        } => {
            add("position", n(*position));
            add("previous", i(*previous));
            add("value", i(*value));
            "OffsetsError"
        }
        Error::OffsetOutOfRange {
            op: _,
            position,
            value,
            len,
        } => {
            add("position", n(*position));
            add("value", i(*value));
            add("len", n(*len));
            "OffsetsError"
        }
        Error::LengthMismatch {
            op: _,
            what,
            expected,
            actual,
        } => {
            add("what", s(what));
            add("expected", n(*expected));
            add("actual", n(*actual));
            "ShapeError"
        }
        Error::ShapeMismatch {
            op: _,
            what,
            expected,
            actual,
        } => {
            add("what", s(what));
            add(
                "expected",
                pyo3::types::PyTuple::new(py, expected.dims()).map(|t| t.into_any().unbind()),
            );
            add(
                "actual",
                pyo3::types::PyTuple::new(py, actual.dims()).map(|t| t.into_any().unbind()),
            );
            "ShapeError"
        }
        Error::AxisOutOfRange { op: _, axis, ndim } => {
            add("axis", n(*axis));
            add("ndim", n(*ndim));
            "ShapeError"
        }
        Error::TooManyDims { op: _, ndim, max } => {
            add("ndim", n(*ndim));
            add("max", n(*max));
            "ShapeError"
        }
        Error::SizeOverflow { op: _, .. } => "ShapeError",
        Error::InvalidArgument { op: _, name, .. } => {
            add("name", s(name));
            "InvalidArgumentError"
        }
        Error::UnsupportedPlacement { op: _, .. } => "InvalidArgumentError",
        Error::SyncConflict { op: _, name } => {
            add("name", s(name));
            "SyncConflictError"
        }
        Error::PoolKeyMismatch { op: _, name, .. } => {
            add("name", s(name));
            "PoolKeyError"
        }
        Error::PoolNameNotFound { op: _, name } => {
            add("name", s(name));
            "PoolKeyError"
        }
        Error::PoolSlotsBusy { op: _, name, depth } => {
            add("name", s(name));
            add("depth", n(*depth));
            "PoolBusyError"
        }
        Error::PinnedBudgetExceeded {
            op: _,
            requested,
            available,
            budget,
        } => {
            add("requested", n(*requested));
            add("available", n(*available));
            add("budget", n(*budget));
            "BudgetExceededError"
        }
        Error::OutOfMemory { op: _, bytes } => {
            add("bytes", n(*bytes));
            "OutOfMemoryError"
        }
        Error::Driver { op: _, .. } | Error::WrongDevice { op: _, .. } => "DeviceError",
        Error::BlockOutOfRange {
            op: _,
            position,
            group,
            block,
            valid,
        } => {
            add("position", n(*position));
            add("group", n(*group));
            add("block", i(*block));
            add("valid", i(*valid));
            "IndexOutOfBoundsError"
        }
        Error::NegativeBlock {
            op: _,
            position,
            group,
            value,
        } => {
            add("position", n(*position));
            add("group", n(*group));
            add("value", i(*value));
            "IndexOutOfBoundsError"
        }
        Error::WindowOutOfRange {
            op: _,
            position,
            start,
            len,
            cols,
        } => {
            add("position", n(*position));
            add("start", i(*start));
            add("len", i(*len));
            add("cols", n(*cols));
            "IndexOutOfBoundsError"
        }
        Error::ValueOverflow {
            op: _,
            position,
            limit,
        } => {
            add("position", n(*position));
            add("limit", i(*limit));
            "OffsetsError"
        }
        Error::AboveLargestBucket {
            op: _,
            value,
            largest,
        } => {
            add("value", n(*value));
            add("largest", n(*largest));
            "InvalidArgumentError"
        }
        // `Error` is non-exhaustive: a variant added later still arrives as a cpugpu.Error.
        _ => "Error",
    };
    make(py, class, msg, &attrs)
}

/// `cpugpu.<class>(message)` for the binding's own checks.
pub(crate) fn err(py: Python<'_>, class: &str, message: impl Into<String>) -> PyErr {
    make(py, class, message.into(), &[])
}

/// A panic caught before it crossed into Python, as a message.
fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    format!("internal error in cpugpu (please report it): {what}")
}

/// The result of a crate call, with a panic caught and kept as a message (so that it can be
/// raised as `cpugpu.InternalError` once the GIL is held again).
pub(crate) enum Outcome<T> {
    Ok(T),
    Crate(Error),
    Panic(String),
}

/// Runs `f` (a crate call), catching a panic.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Outcome<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Outcome::Ok(v),
        Ok(Err(e)) => Outcome::Crate(e),
        Err(p) => Outcome::Panic(panic_message(p)),
    }
}

impl<T> Outcome<T> {
    /// The value, or the error as a Python exception.
    pub(crate) fn into_py(self, py: Python<'_>) -> PyResult<T> {
        match self {
            Outcome::Ok(v) => Ok(v),
            Outcome::Crate(e) => Err(to_py(py, e)),
            Outcome::Panic(m) => Err(err(py, "InternalError", m)),
        }
    }
}

/// Runs a crate call with the GIL released when it moves at least [`GIL_RELEASE_MIN_BYTES`]
/// (`bytes`), catching panics; errors come back as Python exceptions.
pub(crate) fn run<T: Send>(
    py: Python<'_>,
    bytes: usize,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> PyResult<T> {
    let out = if bytes >= GIL_RELEASE_MIN_BYTES {
        py.detach(|| guarded(f))
    } else {
        guarded(f)
    };
    out.into_py(py)
}

/// Operations moving at least this many bytes release the GIL while they run. Below it the
/// release and re-acquisition (and, with other Python threads busy, the wait for the GIL to come
/// back) would cost more than the operation; numpy makes the same trade with a size threshold.
pub const GIL_RELEASE_MIN_BYTES: usize = 64 * 1024;
