//! `cpugpu.UvaBufferPool`: named paired buffers with round-robin slots, on the crate's pool.

use std::collections::HashMap;
use std::sync::Mutex;

use cpugpu::{Error, MemoryPlacement, Op, Shape, UvaBufferPool};
use numpy::PyArrayDescr;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyDict, PyTuple};

use crate::arrays::parse_shape;
use crate::buffer::{parse_placement, Meta, PyCpuGpuBuffer};
use crate::dtype::{by_width, resolve, DType};
use crate::errors::{run, to_py};
use crate::pinned::PyPinnedMemoryManager;
use crate::side::Side;

/// A slot taken from the crate's pool and its index (`None`: `get` found no such name).
type Taken = Option<(Box<dyn Side>, usize)>;

/// What a name was created with: its exact key.
struct Key {
    dtype: DType,
    descr: Py<PyArrayDescr>,
    shape: Vec<usize>,
    placement: MemoryPlacement,
}

/// A pool of named paired buffers reused across steps (the original module's
/// ``UvaBufferPool(name)``, on the crate's pool), with a round-robin ``depth`` (vLLM's
/// ``max_concurrency``, default 2): each name has ``depth`` slots, and each ``allocate`` hands
/// out the next free one, so step *k + 1* can be prepared while step *k*'s copies are in flight.
///
/// Semantics (the crate's, where they differ from the original):
///
/// * **A slot is held while Python holds it**: the returned :class:`CpuGpuBuffer`, or any numpy
///   view of it (``buf.cpu``, slices, DLPack exports), keeps its slot out of the pool. The slot
///   is handed out again only when all of them are gone (or after ``buf.close()`` once no view
///   is left), so a step never sees another step's writes. With every slot held, ``allocate``
///   raises :class:`PoolBusyError`. Rebinding ``buf = pool.allocate(...)`` each step works
///   with ``depth >= 2``.
/// * **Keys are exact**: a name is created with one shape, dtype and placement; asking for it
///   with another raises :class:`PoolKeyError` (the original silently made a second buffer).
/// * ``allocate`` zeroes the slot; ``get`` returns the next free slot as the last step left it.
/// * The host sides are always page-locked (``pinned`` is accepted for compatibility);
///   ``placement=MemoryPlacement.UVA`` gives zero-copy buffers the device reads directly.
/// * ``release(name)`` forgets the name (idle slots are freed now, held ones when released);
///   the original only reset the buffer.
#[pyclass(frozen, module = "cpugpu", name = "UvaBufferPool")]
pub(crate) struct PyUvaBufferPool {
    name: String,
    pool: UvaBufferPool,
    keys: Mutex<HashMap<String, Key>>,
}

/// The crate's `PoolKeyMismatch` for `name`.
fn key_mismatch(
    name: &str,
    k: &Key,
    shape: &[usize],
    dtype: DType,
    placement: MemoryPlacement,
) -> Error {
    let s = |d: &[usize]| Box::new(Shape::new(d).unwrap_or(Shape::vector(0)));
    Error::PoolKeyMismatch {
        op: cpugpu::Op::PoolAllocate,
        name: name.to_owned(),
        existing_shape: s(&k.shape),
        existing_type: k.dtype.name(),
        existing_placement: k.placement,
        requested_shape: s(shape),
        requested_type: dtype.name(),
        requested_placement: placement,
    }
}

impl PyUvaBufferPool {
    /// Takes a slot of `name` (`zeroed`: `allocate`, created on first use and zeroed; else
    /// `get`, as left). `None` when `get` finds no such name.
    fn take(
        &self,
        py: Python<'_>,
        name: &str,
        shape: &[usize],
        dtype: DType,
        placement: MemoryPlacement,
        zeroed: bool,
    ) -> PyResult<Taken> {
        let bytes = shape
            .iter()
            .product::<usize>()
            .saturating_mul(dtype.width());
        let pool = &self.pool;
        let take = || -> Result<Taken, Error> {
            by_width!(dtype.width(), T => {
                let b = match (zeroed, placement) {
                    (false, _) => match pool.get::<T>(name) {
                        Err(Error::PoolNameNotFound { .. }) => return Ok(None),
                        b => b?,
                    },
                    (true, MemoryPlacement::Uva) => pool.allocate_uva::<T>(name, shape)?,
                    (true, _) => pool.allocate::<T>(name, shape)?,
                };
                let slot = b.slot();
                Ok(Some((Box::new(b) as Box<dyn Side>, slot)))
            })
        };
        run(py, if zeroed { bytes } else { 0 }, take)
    }
}

#[pymethods]
impl PyUvaBufferPool {
    /// ``UvaBufferPool(name="default", depth=2, manager=None)``: ``depth`` slots per name
    /// (at least 1); ``manager`` draws every slot's pinned memory from a
    /// :class:`PinnedMemoryManager`'s budget.
    #[new]
    #[pyo3(signature = (name = "default".to_owned(), depth = 2, manager = None))]
    fn py_new(
        name: String,
        depth: usize,
        manager: Option<PyRef<'_, PyPinnedMemoryManager>>,
    ) -> Self {
        let pool = match &manager {
            Some(m) => UvaBufferPool::with_manager(m.inner(), depth),
            None => UvaBufferPool::new(crate::device(), depth),
        };
        PyUvaBufferPool {
            name,
            pool,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The pool's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Slots per buffer name.
    #[getter]
    fn depth(&self) -> usize {
        self.pool.depth()
    }

    /// ``allocate(name, shape, dtype=np.float32, pinned=True)``: the next free slot of
    /// ``name``, zeroed, as a :class:`CpuGpuBuffer` (created on first use).
    ///
    /// Raises :class:`PoolKeyError` when ``name`` exists with another shape, dtype or
    /// placement, and :class:`PoolBusyError` when all ``depth`` slots are held.
    #[pyo3(signature = (name, shape, dtype = None, pinned = true, *, placement = None))]
    fn allocate(
        &self,
        py: Python<'_>,
        name: &str,
        shape: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
        pinned: bool,
        placement: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCpuGpuBuffer> {
        let _ = pinned; // the pool's host sides are always page-locked
        let shape = parse_shape(shape, "shape")?;
        let (dt, descr) = match dtype {
            Some(d) => resolve(py, d, "dtype")?,
            None => (DType::F32, numpy::dtype::<f32>(py)),
        };
        let placement = match parse_placement(py, placement, true)? {
            p @ (MemoryPlacement::Pinned | MemoryPlacement::Uva) => p,
            p => {
                return Err(to_py(
                    py,
                    Error::UnsupportedPlacement {
                        op: Op::PoolAllocate,
                        placement: p,
                        reason: "a pool's buffers are pinned or UVA",
                    },
                ))
            }
        };
        // The key is checked here because one crate type serves every dtype of a width (the
        // crate would take float32 and int32 for the same key). A new name keeps the map
        // locked until the crate has created it, so two threads cannot create it differently.
        let mut keys = self
            .keys
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
        let taken = match keys.get(name) {
            Some(k) => {
                if k.dtype != dt || k.shape != shape || k.placement != placement {
                    return Err(to_py(py, key_mismatch(name, k, &shape, dt, placement)));
                }
                drop(keys);
                self.take(py, name, &shape, dt, placement, true)?
            }
            None => {
                let taken = self.take(py, name, &shape, dt, placement, true)?;
                keys.insert(
                    name.to_owned(),
                    Key {
                        dtype: dt,
                        descr: descr.clone().unbind(),
                        shape: shape.clone(),
                        placement,
                    },
                );
                drop(keys);
                taken
            }
        };
        // `allocate` always returns a slot (or an error).
        let (side, slot) = taken.ok_or_else(|| {
            to_py(
                py,
                Error::PoolNameNotFound {
                    op: cpugpu::Op::PoolGet,
                    name: name.to_owned(),
                },
            )
        })?;
        let meta = Meta {
            name: name.to_owned(),
            shape,
            dtype: dt,
            descr: descr.unbind(),
            placement,
            slot: Some(slot),
        };
        PyCpuGpuBuffer::wrap(py, side, meta)
    }

    /// The next free slot of ``name``, contents as the last step left them (not zeroed), or
    /// None when the pool has no such name. Raises :class:`PoolBusyError` when all slots are
    /// held.
    fn get(&self, py: Python<'_>, name: &str) -> PyResult<Option<PyCpuGpuBuffer>> {
        let found = {
            let keys = self
                .keys
                .lock_py_attached(py)
                .unwrap_or_else(|e| e.into_inner());
            keys.get(name)
                .map(|k| (k.dtype, k.descr.clone_ref(py), k.shape.clone(), k.placement))
        };
        let Some((dt, descr, shape, placement)) = found else {
            return Ok(None);
        };
        match self.take(py, name, &shape, dt, placement, false)? {
            Some((side, slot)) => {
                let meta = Meta {
                    name: name.to_owned(),
                    shape,
                    dtype: dt,
                    descr,
                    placement,
                    slot: Some(slot),
                };
                Ok(Some(PyCpuGpuBuffer::wrap(py, side, meta)?))
            }
            None => Ok(None), // released by another thread since the look-up
        }
    }

    /// Forgets ``name``: its idle slots are freed now, slots still held when their last
    /// holder goes. Returns whether the name existed.
    fn release(&self, py: Python<'_>, name: &str) -> bool {
        let mut keys = self
            .keys
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
        keys.remove(name);
        self.pool.release(name)
    }

    /// Forgets every name (held slots are freed when their last holder goes).
    fn clear(&self, py: Python<'_>) {
        let mut keys = self
            .keys
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
        keys.clear();
        self.pool.clear();
    }

    /// Host plus device bytes of every slot of every name (a UVA buffer's one memory counts
    /// once).
    #[getter]
    fn total_bytes(&self) -> usize {
        self.pool.total_bytes()
    }

    /// The number of names.
    #[getter]
    fn num_buffers(&self) -> usize {
        self.pool.num_buffers()
    }

    /// Syncs every idle slot in the direction its dirty flags say (held slots are skipped:
    /// their holder syncs them) and returns a report dict (``up_to_date``, ``copied_to_gpu``,
    /// ``copied_to_cpu``, ``skipped_in_use``). Every slot is tried; if any failed (a slot dirty
    /// on both sides), the first failure is raised after all were tried, with the report as
    /// its ``report`` attribute.
    fn sync_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pool = &self.pool;
        let report = py.detach(|| pool.sync_all());
        let d = PyDict::new(py);
        d.set_item("up_to_date", report.up_to_date)?;
        d.set_item("copied_to_gpu", report.copied_to_device)?;
        d.set_item("copied_to_cpu", report.copied_to_host)?;
        d.set_item("skipped_in_use", report.skipped_in_use)?;
        d.set_item("failed", report.errors.len())?;
        if let Some(e) = report.errors.into_iter().next() {
            let e = to_py(py, e);
            e.value(py).setattr("report", &d)?;
            return Err(e);
        }
        Ok(d)
    }

    /// Pool statistics: the original's ``name``, ``num_buffers``, ``total_bytes``, ``total_mb``
    /// and ``buffers`` (per name: ``shape``, ``dtype``, ``bytes`` of all its slots), plus the
    /// crate's ``depth``, ``slots``, ``slots_in_use``, ``host_bytes``, ``device_bytes``,
    /// ``uva_buffers``, ``created`` and ``reused``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.pool.stats();
        let d = PyDict::new(py);
        let total = s.host_bytes + s.device_bytes;
        d.set_item("name", &self.name)?;
        d.set_item("num_buffers", s.buffers)?;
        d.set_item("total_bytes", total)?;
        d.set_item("total_mb", total as f64 / (1024.0 * 1024.0))?;
        let bufs = PyDict::new(py);
        {
            let keys = self
                .keys
                .lock_py_attached(py)
                .unwrap_or_else(|e| e.into_inner());
            for (name, k) in keys.iter() {
                let side = k.shape.iter().product::<usize>() * k.dtype.width();
                let per_slot = if k.placement == MemoryPlacement::Uva {
                    side
                } else {
                    2 * side
                };
                let b = PyDict::new(py);
                b.set_item("shape", PyTuple::new(py, &k.shape)?)?;
                b.set_item("dtype", k.descr.bind(py).str()?)?;
                b.set_item("bytes", per_slot * s.depth)?;
                b.set_item("placement", k.placement.to_string())?;
                bufs.set_item(name, b)?;
            }
        }
        d.set_item("buffers", bufs)?;
        d.set_item("depth", s.depth)?;
        d.set_item("slots", s.slots)?;
        d.set_item("slots_in_use", s.slots_in_use)?;
        d.set_item("host_bytes", s.host_bytes)?;
        d.set_item("device_bytes", s.device_bytes)?;
        d.set_item("uva_buffers", s.uva_buffers)?;
        d.set_item("created", s.created)?;
        d.set_item("reused", s.reused)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let s = self.pool.stats();
        format!(
            "UvaBufferPool(name={:?}, depth={}, buffers={}, slots_in_use={})",
            self.name, s.depth, s.buffers, s.slots_in_use
        )
    }
}
