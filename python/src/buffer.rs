//! `cpugpu.CpuGpuBuffer`: a paired buffer whose sides numpy views in place.
//!
//! Ownership: the crate's buffer (or pool slot guard) lives in a [`Holder`] behind an `Arc`. The
//! Python object holds one reference; every numpy array it hands out (`.cpu`, `.gpu`, slices of
//! them, DLPack exports) holds another through its `base` object. So the memory is freed, and a
//! pool slot returned to its pool, only when the buffer object *and* every view are gone,
//! whichever goes first; `close()` drops only the object's own reference.

use std::sync::{Arc, Mutex};

use cpugpu::{CpuGpuBuffer, Error, MemoryPlacement, SyncOutcome};
use numpy::PyArrayDescr;
use pyo3::prelude::*;
use pyo3::sync::{MutexExt, PyOnceLock};
use pyo3::types::{PyTuple, PyType};

use crate::arrays::{parse_shape, view, Owner};
use crate::dlpack::DeviceArray;
use crate::dtype::{by_width, resolve, value_bytes, DType};
use crate::errors::{err, guarded, GIL_RELEASE_MIN_BYTES};
use crate::pinned::PyPinnedMemoryManager;
use crate::side::{Holder, Side};

/// Runs `f` on the holder's buffer: the lock is taken with the GIL released if another thread
/// has it, and the GIL is released during `f` when it moves at least `GIL_RELEASE_MIN_BYTES`, or
/// anything at all on a GPU (where it may wait for the stream).
pub(crate) fn with_side<R: Send>(
    py: Python<'_>,
    h: &Holder,
    bytes: usize,
    f: impl FnOnce(&mut dyn Side) -> Result<R, Error> + Send,
) -> PyResult<R> {
    let mut g = h.lock_attached(py);
    let side: &mut dyn Side = &mut **g;
    // On a GPU any call that moves data may wait for the stream: never with the GIL held.
    let gpu = h.device.kind() != cpugpu::BackendKind::Host;
    let out = if bytes >= GIL_RELEASE_MIN_BYTES || (gpu && bytes > 0) {
        py.detach(|| guarded(|| f(side)))
    } else {
        guarded(|| f(side))
    };
    drop(g);
    out.into_py(py)
}

impl Holder {
    /// The buffer's lock, taken without holding the GIL while waiting for it.
    fn lock_attached(&self, py: Python<'_>) -> std::sync::MutexGuard<'_, Box<dyn Side>> {
        self.buf_mutex()
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// `placement=` / `pinned=` as the crate's placement.
pub(crate) fn parse_placement(
    py: Python<'_>,
    placement: Option<&Bound<'_, PyAny>>,
    pinned: bool,
) -> PyResult<MemoryPlacement> {
    let Some(p) = placement.filter(|p| !p.is_none()) else {
        return Ok(if pinned {
            MemoryPlacement::Pinned
        } else {
            MemoryPlacement::Host
        });
    };
    let v = match p.getattr("value") {
        Ok(v) => v.str()?.to_string(),
        Err(_) => p.str()?.to_string(),
    };
    match v.to_ascii_lowercase().as_str() {
        "cpu" | "host" => Ok(MemoryPlacement::Host),
        "pinned" => Ok(MemoryPlacement::Pinned),
        "uva" => Ok(MemoryPlacement::Uva),
        "gpu" | "device" => Ok(MemoryPlacement::Device),
        _ => Err(err(
            py,
            "InvalidArgumentError",
            format!("placement {v:?}: expected a MemoryPlacement (CPU, GPU, PINNED or UVA)"),
        )),
    }
}

/// The crate's placement as a `cpugpu.MemoryPlacement` member.
pub(crate) fn placement_to_py(py: Python<'_>, p: MemoryPlacement) -> PyResult<Bound<'_, PyAny>> {
    static CLS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let cls = CLS.import(py, "cpugpu._types", "MemoryPlacement")?;
    cls.call1((match p {
        MemoryPlacement::Host => "cpu",
        MemoryPlacement::Pinned => "pinned",
        MemoryPlacement::Device => "gpu",
        MemoryPlacement::Uva => "uva",
    },))
}

/// The object's own hold on the buffer, and its cached views.
struct Live {
    holder: Arc<Holder>,
    /// The `base` of every view this object makes (it holds the holder).
    owner: Py<Owner>,
    cpu: Option<Py<PyAny>>,
    gpu: Option<Py<PyAny>>,
}

/// Which side.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Cpu,
    Gpu,
}

/// A paired CPU/GPU buffer (the original module's ``CpuGpuBuffer``, on the crate's
/// ``CpuGpuBuffer``): a host side and a device side of the same shape and dtype, with dirty
/// flags.
///
/// ``buf.cpu`` is a numpy array that *is* the host side (a view, not a copy: writes go straight
/// into the buffer's memory); on the host backend ``buf.gpu`` is likewise a numpy view of the
/// device side, and on a GPU it is a :class:`DeviceArray` of the device side's CUDA memory
/// (DLPack ``kDLCUDA``, ``__cuda_array_interface__``; for a UVA buffer, the mapped device
/// address of its one memory). The buffer, and every view and export, keep the memory alive: it
/// is freed when the last of them is gone.
///
/// Make one with ``CpuGpuBuffer.allocate(name, shape, dtype, pinned)`` (or the constructor,
/// same arguments) or get one from a :class:`UvaBufferPool`.
///
/// Semantics (the crate's, where they differ from the original):
///
/// * Writes through ``buf.cpu`` do not mark the buffer dirty (as in the original): call
///   ``mark_cpu_dirty()``. ``mark_cpu_dirty`` does not clear the GPU flag (the original's does):
///   when both sides are marked, ``sync()`` raises :class:`SyncConflictError` and copies
///   nothing; copy explicitly with ``cpu_to_gpu()`` or ``gpu_to_cpu()``.
/// * ``copy_to_gpu(n)`` (vLLM's prefix copy) copies only the first ``n`` rows and leaves the
///   flags alone, since later rows may still differ.
/// * A UVA buffer (``placement=MemoryPlacement.UVA``) has one memory both sides see: copies are
///   no-ops and it is never dirty. ``placement=MemoryPlacement.GPU`` is refused (the host side
///   cannot live in device memory).
/// * ``close()`` (or leaving a ``with`` block) drops this object's hold on the memory; views
///   still alive keep it (and a pool slot) until they go too.
/// * No ``resize``: a buffer's shape is fixed (pool keys depend on it); allocate a new one.
/// * On a GPU, the copies (``cpu_to_gpu``, ``gpu_to_cpu``, ``copy_to_gpu(n)``, ``copy_to_cpu(n)``
///   and a ``sync`` that copies) return once the copy has completed: they synchronize cpugpu's
///   stream, with the GIL released. ``buf.cpu`` is a plain numpy view that cannot wait for
///   anything, so this is what keeps Python from reading a download that has not landed, or
///   overwriting the host side while an upload still reads it (vllm-project/vllm#25279). The
///   cost: no overlap of a copy with Python work, and a stream synchronization (microseconds on
///   a GPU, plus whatever was queued before) per copy. Work on the device side (``fill``,
///   operations on ``buf.gpu``) is ordered on cpugpu's stream and needs no wait.
#[pyclass(frozen, module = "cpugpu", name = "CpuGpuBuffer")]
pub(crate) struct PyCpuGpuBuffer {
    name: String,
    shape: Vec<usize>,
    dtype: DType,
    descr: Py<PyArrayDescr>,
    placement: MemoryPlacement,
    slot: Option<usize>,
    live: Mutex<Option<Live>>,
}

/// A new crate buffer of `dtype`'s width on the module's device (or `manager`'s).
fn alloc_side(
    dtype: DType,
    name: &str,
    shape: &[usize],
    placement: MemoryPlacement,
    manager: Option<&cpugpu::PinnedMemoryManager>,
) -> Result<Box<dyn Side>, Error> {
    by_width!(dtype.width(), T => {
        let b = match manager {
            Some(m) => CpuGpuBuffer::<T>::with_manager(m, name, shape, placement)?,
            None => CpuGpuBuffer::<T>::new(crate::device(), name, shape, placement)?,
        };
        Ok(Box::new(b) as Box<dyn Side>)
    })
}

/// What a Python buffer object knows of its buffer without locking it.
pub(crate) struct Meta {
    pub(crate) name: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    pub(crate) descr: Py<PyArrayDescr>,
    pub(crate) placement: MemoryPlacement,
    /// The pool slot, for a pool buffer.
    pub(crate) slot: Option<usize>,
}

impl PyCpuGpuBuffer {
    /// Wraps a crate buffer (or pool slot) in a Python object.
    pub(crate) fn wrap(py: Python<'_>, side: Box<dyn Side>, meta: Meta) -> PyResult<Self> {
        let Meta {
            name,
            shape,
            dtype,
            descr,
            placement,
            slot,
        } = meta;
        let holder = Holder::new(side);
        let owner = Py::new(py, Owner::new(Box::new(holder.clone())))?;
        Ok(PyCpuGpuBuffer {
            name,
            shape,
            dtype,
            descr,
            placement,
            slot,
            live: Mutex::new(Some(Live {
                holder,
                owner,
                cpu: None,
                gpu: None,
            })),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        py: Python<'_>,
        name: String,
        shape: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
        pinned: bool,
        placement: Option<&Bound<'_, PyAny>>,
        manager: Option<PyRef<'_, PyPinnedMemoryManager>>,
    ) -> PyResult<Self> {
        let shape = parse_shape(shape, "shape")?;
        let (dt, descr) = match dtype {
            Some(d) => resolve(py, d, "dtype")?,
            None => (DType::F32, numpy::dtype::<f32>(py)),
        };
        let placement = parse_placement(py, placement, pinned)?;
        let bytes = shape.iter().product::<usize>().saturating_mul(dt.width());
        let mgr = manager.as_ref().map(|m| m.inner().clone());
        let side = crate::errors::run(py, bytes, || {
            alloc_side(dt, &name, &shape, placement, mgr.as_ref())
        })?;
        Self::wrap(
            py,
            side,
            Meta {
                name,
                shape,
                dtype: dt,
                descr: descr.unbind(),
                placement,
                slot: None,
            },
        )
    }

    /// The holder, or `ClosedBufferError`.
    fn holder(&self, py: Python<'_>) -> PyResult<Arc<Holder>> {
        let live = self
            .live
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
        match &*live {
            Some(l) => Ok(l.holder.clone()),
            None => Err(self.closed_error(py)),
        }
    }

    fn closed_error(&self, py: Python<'_>) -> PyErr {
        err(
            py,
            "ClosedBufferError",
            format!("buffer {:?} is closed", self.name),
        )
    }

    /// Bytes of one side.
    fn side_bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.width()
    }

    /// Bytes of `n` rows.
    fn rows_bytes(&self, n: usize) -> usize {
        n.saturating_mul(self.shape.iter().skip(1).product::<usize>() * self.dtype.width())
    }

    /// The device side's CUDA address as the crate reports it now (`device_view().cuda_ptr()`:
    /// the device memory, or a UVA buffer's mapped address), for the emulated GPU's tests to
    /// compare exports against.
    #[cfg(feature = "emulator")]
    pub(crate) fn crate_device_ptr(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        self.op(py, 0, |b| Ok(b.device_cuda_ptr()))
    }

    fn op<R: Send>(
        &self,
        py: Python<'_>,
        bytes: usize,
        f: impl FnOnce(&mut dyn Side) -> Result<R, Error> + Send,
    ) -> PyResult<R> {
        let h = self.holder(py)?;
        with_side(py, &h, bytes, f)
    }

    /// The numpy view of a side (made once, then cached); on CUDA the device side is a
    /// `DeviceArray` instead.
    fn side_array<'py>(&self, py: Python<'py>, which: Which) -> PyResult<Bound<'py, PyAny>> {
        // Python is never called with `live` locked: a finaliser run by the allocation could
        // come back to this object.
        let (holder, owner) = {
            let live = self
                .live
                .lock_py_attached(py)
                .unwrap_or_else(|e| e.into_inner());
            let l = live.as_ref().ok_or_else(|| self.closed_error(py))?;
            let cached = match which {
                Which::Cpu => &l.cpu,
                Which::Gpu => &l.gpu,
            };
            if let Some(a) = cached {
                return Ok(a.bind(py).clone());
            }
            (l.holder.clone(), l.owner.clone_ref(py))
        };
        let addr = match which {
            Which::Cpu => Some(holder.host_addr),
            Which::Gpu => holder.device_addr,
        };
        let arr = match addr {
            // SAFETY: `addr` is the start of a side of `shape` elements of the dtype (the crate
            // allocated it so, aligned), alive while the holder is, which `owner` (the view's
            // base) holds.
            Some(addr) => unsafe {
                view(
                    py,
                    self.descr.bind(py),
                    &self.shape,
                    addr,
                    true,
                    owner.into_bound(py).into_any(),
                )?
            },
            None => Bound::new(py, self.export_side(py, &holder, Which::Gpu)?)?.into_any(),
        };
        let mut live = self
            .live
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
        if let Some(l) = live.as_mut() {
            let slot = match which {
                Which::Cpu => &mut l.cpu,
                Which::Gpu => &mut l.gpu,
            };
            match slot {
                Some(a) => return Ok(a.bind(py).clone()), // another thread made it first
                None => *slot = Some(arr.clone().unbind()),
            }
        }
        Ok(arr)
    }

    /// A side as a `DeviceArray` (DLPack and the array interfaces): host memory is `kDLCPU`
    /// (`kDLCUDAHost` for the page-locked host side of a buffer on a GPU), the device side of a
    /// buffer on a GPU `kDLCUDA` at its device address (for a UVA buffer, the mapped address of
    /// its one memory).
    fn export_side(
        &self,
        py: Python<'_>,
        holder: &Arc<Holder>,
        which: Which,
    ) -> PyResult<DeviceArray> {
        use crate::dlpack::{KDL_CPU, KDL_CUDA_HOST};
        let on_gpu = holder.device.kind() != cpugpu::BackendKind::Host;
        let page_locked = matches!(
            self.placement,
            MemoryPlacement::Pinned | MemoryPlacement::Uva
        );
        let (addr, device) = match (which, holder.device_addr) {
            (Which::Cpu, _) if on_gpu && page_locked => {
                (holder.host_addr as u64, (KDL_CUDA_HOST, 0))
            }
            (Which::Cpu, _) => (holder.host_addr as u64, (KDL_CPU, 0)),
            (Which::Gpu, Some(a)) => (a as u64, (KDL_CPU, 0)),
            #[cfg(gpu)]
            (Which::Gpu, None) => crate::gpu::device_side(py, holder)?,
            #[cfg(not(gpu))]
            (Which::Gpu, None) => {
                return Err(err(py, "DeviceError", "the device side is not host memory"))
            }
        };
        Ok(DeviceArray {
            keep: holder.clone(),
            addr,
            shape: self.shape.clone(),
            dtype: self.dtype,
            descr: self.descr.clone_ref(py),
            device,
            readonly: false,
            order: on_gpu.then(|| holder.device.clone()),
        })
    }

    fn which(py: Python<'_>, side: &str) -> PyResult<Which> {
        match side {
            "cpu" => Ok(Which::Cpu),
            "gpu" => Ok(Which::Gpu),
            other => Err(err(
                py,
                "InvalidArgumentError",
                format!("side={other:?}: expected \"cpu\" or \"gpu\""),
            )),
        }
    }
}

#[pymethods]
impl PyCpuGpuBuffer {
    /// ``CpuGpuBuffer(name, shape, dtype=np.float32, pinned=False)``: the same as
    /// :meth:`allocate`.
    #[new]
    #[pyo3(signature = (name, shape, dtype = None, pinned = false, *, placement = None, manager = None))]
    fn py_new(
        py: Python<'_>,
        name: String,
        shape: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
        pinned: bool,
        placement: Option<&Bound<'_, PyAny>>,
        manager: Option<PyRef<'_, PyPinnedMemoryManager>>,
    ) -> PyResult<Self> {
        Self::create(py, name, shape, dtype, pinned, placement, manager)
    }

    /// Allocates a zeroed buffer pair: ``allocate(name, shape, dtype=np.float32,
    /// pinned=False)``.
    ///
    /// ``shape`` is an int or a tuple; ``dtype`` any supported numpy dtype (bool, int8..int64,
    /// uint8..uint64, float16, float32, float64, bfloat16). ``pinned=True`` puts the host side
    /// in page-locked memory (what makes uploads asynchronous on a GPU); ``placement`` (a
    /// :class:`MemoryPlacement`) overrides ``pinned``: ``CPU`` (pageable), ``PINNED`` or
    /// ``UVA`` (one mapped memory both sides see). ``manager`` draws pinned memory from a
    /// :class:`PinnedMemoryManager`'s budget.
    #[classmethod]
    #[pyo3(signature = (name, shape, dtype = None, pinned = false, *, placement = None, manager = None))]
    #[allow(clippy::too_many_arguments)]
    fn allocate(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        name: String,
        shape: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
        pinned: bool,
        placement: Option<&Bound<'_, PyAny>>,
        manager: Option<PyRef<'_, PyPinnedMemoryManager>>,
    ) -> PyResult<Self> {
        Self::create(py, name, shape, dtype, pinned, placement, manager)
    }

    /// The buffer's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The shape of each side, as a tuple.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.shape)
    }

    /// The numpy dtype.
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDescr> {
        self.descr.bind(py).clone()
    }

    /// The host side as a numpy array viewing the buffer's memory (not a copy).
    #[getter]
    fn cpu<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.side_array(py, Which::Cpu)
    }

    /// vLLM's name for the host side's numpy view: the same array as :attr:`cpu`.
    #[getter]
    fn np<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.side_array(py, Which::Cpu)
    }

    /// The device side: on the host backend a numpy array viewing it (not a copy); on a GPU a
    /// :class:`DeviceArray` of its CUDA memory (DLPack, ``__cuda_array_interface__``; read it
    /// with ``copy_to_host()``, pass it to the operations, or import it into PyTorch or CuPy).
    #[getter]
    fn gpu<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.side_array(py, Which::Gpu)
    }

    /// True when the host side is page-locked (``PINNED`` or ``UVA``).
    #[getter]
    fn is_pinned(&self) -> bool {
        matches!(
            self.placement,
            MemoryPlacement::Pinned | MemoryPlacement::Uva
        )
    }

    /// Where the host side lives, a :class:`MemoryPlacement`.
    #[getter]
    fn placement<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        placement_to_py(py, self.placement)
    }

    /// Bytes of both sides (a UVA buffer's one memory counts once).
    #[getter]
    fn nbytes(&self) -> usize {
        let side = self.side_bytes();
        if self.placement == MemoryPlacement::Uva {
            side
        } else {
            2 * side
        }
    }

    /// The pool slot this buffer is (None for a buffer not from a pool).
    #[getter]
    fn slot(&self) -> Option<usize> {
        self.slot
    }

    /// True once :meth:`close` was called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        self.live
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// True when the host side was marked changed since its last whole copy.
    #[getter]
    fn cpu_dirty(&self, py: Python<'_>) -> PyResult<bool> {
        self.op(py, 0, |b| Ok(b.dirty().0))
    }

    /// True when the device side was marked changed since its last whole copy.
    #[getter]
    fn gpu_dirty(&self, py: Python<'_>) -> PyResult<bool> {
        self.op(py, 0, |b| Ok(b.dirty().1))
    }

    /// Copies the whole CPU side to the GPU side; both flags clear. On a GPU it returns once the
    /// copy has completed (the host side may then be overwritten).
    fn cpu_to_gpu(&self, py: Python<'_>) -> PyResult<()> {
        self.op(py, self.side_bytes(), |b| b.copy_to_device())
    }

    /// Copies the whole GPU side to the CPU side; both flags clear. On a GPU it returns once the
    /// copy has landed (``buf.cpu`` then holds it).
    fn gpu_to_cpu(&self, py: Python<'_>) -> PyResult<()> {
        self.op(py, self.side_bytes(), |b| b.copy_to_host())
    }

    /// vLLM's ``copy_to_gpu(n)``: copies the first ``n`` rows (the active prefix) of the CPU
    /// side to the GPU side, leaving the dirty flags alone; ``n=None`` copies everything (and
    /// clears the flags, as :meth:`cpu_to_gpu`). ``n`` past the row count raises
    /// :class:`IndexOutOfBoundsError`.
    #[pyo3(signature = (n = None))]
    fn copy_to_gpu(&self, py: Python<'_>, n: Option<usize>) -> PyResult<()> {
        match n {
            None => self.cpu_to_gpu(py),
            Some(n) => self.op(py, self.rows_bytes(n), |b| b.copy_to_device_rows(n)),
        }
    }

    /// ``copy_to_cpu(n)``: the first ``n`` rows of the GPU side to the CPU side (flags left
    /// alone); ``n=None`` copies everything, as :meth:`gpu_to_cpu`.
    #[pyo3(signature = (n = None))]
    fn copy_to_cpu(&self, py: Python<'_>, n: Option<usize>) -> PyResult<()> {
        match n {
            None => self.gpu_to_cpu(py),
            Some(n) => self.op(py, self.rows_bytes(n), |b| b.copy_to_host_rows(n)),
        }
    }

    /// Copies in the direction the dirty flags say and returns what it did:
    /// ``"copied_to_gpu"``, ``"copied_to_cpu"`` or ``"up_to_date"``. Both sides dirty raises
    /// :class:`SyncConflictError` and overwrites neither (the original copied CPU to GPU).
    fn sync(&self, py: Python<'_>) -> PyResult<&'static str> {
        let out = self.op(py, self.side_bytes(), |b| b.sync())?;
        Ok(match out {
            SyncOutcome::CopiedToDevice => "copied_to_gpu",
            SyncOutcome::CopiedToHost => "copied_to_cpu",
            _ => "up_to_date",
        })
    }

    /// Marks the CPU side as changed (e.g. after writing ``buf.cpu``). The GPU flag is left as
    /// it is (no effect on UVA buffers).
    fn mark_cpu_dirty(&self, py: Python<'_>) -> PyResult<()> {
        self.op(py, 0, |b| {
            b.mark_host_dirty();
            Ok(())
        })
    }

    /// Marks the GPU side as changed. The CPU flag is left as it is (no effect on UVA buffers).
    fn mark_gpu_dirty(&self, py: Python<'_>) -> PyResult<()> {
        self.op(py, 0, |b| {
            b.mark_device_dirty();
            Ok(())
        })
    }

    /// Sets every element of both sides to ``value`` (converted to the dtype as numpy
    /// converts); both flags clear.
    fn fill(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = value_bytes(py, value, self.dtype, self.descr.bind(py), "value")?;
        self.op(py, 2 * self.side_bytes(), move |b| {
            b.fill_bytes(&v);
            Ok(())
        })
    }

    /// Zeroes both sides; both flags clear.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.op(py, 2 * self.side_bytes(), |b| {
            b.reset();
            Ok(())
        })
    }

    /// ``(cpu[slices], gpu[slices])``: numpy views of both sides (basic indexing does not copy;
    /// numpy's advanced indexing does, as in the original).
    #[pyo3(signature = (*slices))]
    fn slice<'py>(
        &self,
        py: Python<'py>,
        slices: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let key = if slices.len() == 1 {
            slices.get_item(0)?
        } else {
            slices.clone().into_any()
        };
        let cpu = self.side_array(py, Which::Cpu)?.get_item(&key)?;
        let gpu = self.side_array(py, Which::Gpu)?.get_item(&key)?;
        PyTuple::new(py, [cpu, gpu])
    }

    /// A side (``"gpu"``, the default, or ``"cpu"``) as a :class:`DeviceArray`, for export
    /// through DLPack and the array interfaces. On a GPU the page-locked host side of a
    /// ``PINNED`` or ``UVA`` buffer is ``kDLCUDAHost`` memory (pageable memory ``kDLCPU``).
    #[pyo3(signature = (side = "gpu"))]
    fn device_array(&self, py: Python<'_>, side: &str) -> PyResult<DeviceArray> {
        let which = Self::which(py, side)?;
        let h = self.holder(py)?;
        self.export_side(py, &h, which)
    }

    /// DLPack export of the device side (``torch.from_dlpack(buf)``, ``np.from_dlpack(buf)``):
    /// see :meth:`DeviceArray.__dlpack__`.
    #[pyo3(signature = (*, stream = None, max_version = None, dl_device = None, copy = None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<&Bound<'py, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.holder(py)?;
        let a = Bound::new(py, self.export_side(py, &h, Which::Gpu)?)?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("stream", stream)?;
        kwargs.set_item("max_version", max_version)?;
        kwargs.set_item("dl_device", dl_device)?;
        kwargs.set_item("copy", copy)?;
        a.call_method("__dlpack__", (), Some(&kwargs))
    }

    /// The device side's DLPack device: ``(1, 0)`` on the host backend, ``(2, N)`` on CUDA
    /// device N.
    fn __dlpack_device__(&self, py: Python<'_>) -> PyResult<(i32, i32)> {
        let h = self.holder(py)?;
        Ok(self.export_side(py, &h, Which::Gpu)?.dlpack_device())
    }

    /// Drops this object's hold on the memory (and its cached views). For a pool buffer the
    /// slot goes back to the pool once no numpy view of it remains. Idempotent.
    fn close(&self, py: Python<'_>) {
        let taken = self
            .live
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(taken); // after unlocking: dropping the views may run Python code
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "CpuGpuBuffer(name={:?}, shape={:?}, dtype={}, placement={}{}{})",
            self.name,
            self.shape,
            self.dtype.name(),
            self.placement,
            self.slot.map(|s| format!(", slot={s}")).unwrap_or_default(),
            if self.closed(py) { ", closed" } else { "" }
        )
    }
}
