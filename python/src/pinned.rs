//! `cpugpu.PinnedMemoryManager`: pinned host memory under a byte budget, handed out as numpy
//! arrays over the crate's blocks.

use std::collections::HashMap;
use std::sync::Mutex;

use cpugpu::PinnedBuffer;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::PyDict;

use crate::arrays::{parse_shape, view};
use crate::dtype::{by_width, resolve, DType};
use crate::errors::{err, run};

/// One pinned block, the `base` of the numpy array made over it: the block goes back to its
/// manager when the last array viewing it is gone.
#[pyclass(frozen, module = "cpugpu._native", name = "_PinnedBlock")]
pub(crate) struct PinnedBlock {
    _buf: Box<dyn Send + Sync>,
}

/// Pinned (page-locked) host memory under a byte budget (the original module's
/// ``PinnedMemoryManager(max_bytes)``, on the crate's manager).
///
/// ``allocate(shape, dtype)`` returns a zeroed numpy array over a pinned block; freed blocks
/// are kept and reused for requests of about the same size (no power-of-two rounding). On the
/// host backend "pinned" memory is 256-byte-aligned heap memory with the same accounting.
///
/// Differences from the original:
///
/// * A request that does not fit raises :class:`BudgetExceededError` (a ``MemoryError``) with
///   the requested and available bytes, instead of returning None.
/// * The manager holds each array it made until :meth:`free` (or :meth:`clear`), as the
///   original does; the block returns to the budget when nothing views it any more, so memory
///   a numpy array still uses is never reused. ``allocated_bytes`` counts blocks in use, and
///   drops when the array (and its views) are gone, not at the ``free`` call while they live.
#[pyclass(frozen, module = "cpugpu", name = "PinnedMemoryManager")]
pub(crate) struct PyPinnedMemoryManager {
    inner: cpugpu::PinnedMemoryManager,
    registry: Mutex<HashMap<usize, Py<PinnedBlock>>>,
}

impl PyPinnedMemoryManager {
    /// The crate's manager.
    pub(crate) fn inner(&self) -> &cpugpu::PinnedMemoryManager {
        &self.inner
    }
}

#[pymethods]
impl PyPinnedMemoryManager {
    /// ``PinnedMemoryManager(max_bytes=None)``: a budget of ``max_bytes`` (default 1 GiB, as the
    /// original) of pinned memory in use or cached at once.
    #[new]
    #[pyo3(signature = (max_bytes = None))]
    fn py_new(max_bytes: Option<usize>) -> Self {
        PyPinnedMemoryManager {
            inner: cpugpu::PinnedMemoryManager::new(crate::device(), max_bytes.unwrap_or(1 << 30)),
            registry: Mutex::new(HashMap::new()),
        }
    }

    /// A zeroed numpy array of ``shape`` and ``dtype`` (default float32) in pinned memory from
    /// the budget. Raises :class:`BudgetExceededError` when it does not fit.
    #[pyo3(signature = (shape, dtype = None))]
    fn allocate<'py>(
        &self,
        py: Python<'py>,
        shape: &Bound<'py, PyAny>,
        dtype: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let shape = parse_shape(shape, "shape")?;
        let (dt, descr) = match dtype {
            Some(d) => resolve(py, d, "dtype")?,
            None => (DType::F32, numpy::dtype::<f32>(py)),
        };
        let len = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| err(py, "ShapeError", format!("shape {shape:?} overflows")))?;
        let bytes = len.saturating_mul(dt.width());
        let (block, addr) = by_width!(dt.width(), T => {
            let b: PinnedBuffer<T> = run(py, bytes, || self.inner.allocate::<T>(len))?;
            let addr = b.as_ptr() as usize;
            (PinnedBlock { _buf: Box::new(b) }, addr)
        });
        let block = Bound::new(py, block)?;
        let key = block.as_ptr() as usize;
        // SAFETY: the block holds `len` zeroed elements of the dtype's width at `addr`,
        // 256-byte aligned, alive as long as the block object, the array's base.
        let arr = unsafe { view(py, &descr, &shape, addr, true, block.clone().into_any())? };
        self.registry
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, block.unbind());
        Ok(arr)
    }

    /// Releases the manager's hold on an array it allocated; returns whether it had one. The
    /// block returns to the budget once no array views it (at once if ``buf`` was the only
    /// one and is dropped).
    fn free(&self, py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(base) = buf.getattr("base") else {
            return Ok(false);
        };
        if base.cast::<PinnedBlock>().is_err() {
            return Ok(false);
        }
        let key = base.as_ptr() as usize;
        let removed = self
            .registry
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        Ok(removed.is_some()) // dropped after unlocking
    }

    /// Releases the manager's hold on every array it allocated, and returns its cached blocks
    /// to the system. Arrays still alive keep their blocks.
    fn clear(&self, py: Python<'_>) {
        let all = std::mem::take(
            &mut *self
                .registry
                .lock_py_attached(py)
                .unwrap_or_else(|e| e.into_inner()),
        );
        drop(all);
        self.inner.clear();
    }

    /// The budget in bytes.
    #[getter]
    fn max_bytes(&self) -> usize {
        self.inner.budget_bytes()
    }

    /// Bytes of blocks in use (viewed by a live array).
    #[getter]
    fn allocated_bytes(&self) -> usize {
        self.inner.allocated_bytes()
    }

    /// Bytes a new request can get: the budget less the bytes in use (cached blocks are
    /// released on demand).
    #[getter]
    fn available_bytes(&self) -> usize {
        self.inner.available_bytes()
    }

    /// Bytes of freed blocks kept for reuse.
    #[getter]
    fn cached_bytes(&self) -> usize {
        self.inner.cached_bytes()
    }

    /// The crate's counters: ``budget_bytes``, ``allocated_bytes``, ``cached_bytes``,
    /// ``available_bytes``, ``fresh_allocations``, ``reuses``, ``evictions``, and
    /// ``held_arrays`` (arrays the manager holds until ``free``).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let held = self
            .registry
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let d = PyDict::new(py);
        d.set_item("budget_bytes", s.budget_bytes)?;
        d.set_item("allocated_bytes", s.allocated_bytes)?;
        d.set_item("cached_bytes", s.cached_bytes)?;
        d.set_item("available_bytes", s.available_bytes)?;
        d.set_item("fresh_allocations", s.fresh_allocations)?;
        d.set_item("reuses", s.reuses)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("held_arrays", held)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("PinnedMemoryManager({})", self.inner.stats())
    }
}
