//! Paired CPU/GPU buffers.
//!
//! A [`CpuGpuBuffer<T>`] is what vLLM's `CpuGpuBuffer` is: a host side (pinned or pageable) and a
//! device side of the same shape, with dirty flags. Batching code writes the host side, uploads
//! the active prefix (`copy_to_device_rows(n)`), and launches work that reads the device side.
//!
//! ```
//! use cpugpu::{CpuGpuBuffer, Device, MemoryPlacement, SyncOutcome};
//!
//! let dev = Device::auto();
//! let mut positions = CpuGpuBuffer::<i64>::new(&dev, "positions", &[8192], MemoryPlacement::Pinned)?;
//! let n = 5;
//! for (i, p) in positions.host_mut()[..n].iter_mut().enumerate() {
//!     *p = i as i64;
//! }
//! positions.copy_to_device_rows(n)?;   // only the active prefix crosses the bus
//! let on_device = positions.device_view().rows(0..n)?;
//! assert_eq!(on_device.len(), n);
//!
//! // Dirty-flag sync: the host side changed and the device side did not.
//! positions.host_mut()[0] = 42;
//! assert_eq!(positions.sync()?, SyncOutcome::CopiedToDevice);
//! assert_eq!(positions.sync()?, SyncOutcome::UpToDate);
//! # Ok::<(), cpugpu::Error>(())
//! ```

use std::fmt;
use std::ops::Range;

use crate::device::{Device, MemoryPlacement};
use crate::element::{nonzero_size_of, Element};
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut, HostBuffer};
use crate::pinned::PinnedMemoryManager;
use crate::shape::Shape;

/// What [`CpuGpuBuffer::sync`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Neither side was dirty (or the buffer is UVA: one memory, nothing to copy).
    UpToDate,
    /// The host side was dirty and was copied to the device.
    CopiedToDevice,
    /// The device side was dirty and was copied to the host.
    CopiedToHost,
}

/// A host side and a device side of the same shape, with dirty tracking.
///
/// * [`host_mut`](Self::host_mut) and [`host_rows_mut`](Self::host_rows_mut) mark the host side
///   dirty; [`device_view_mut`](Self::device_view_mut) and
///   [`device_rows_mut`](Self::device_rows_mut) mark the device side dirty.
/// * A whole-buffer copy makes both sides equal and clears both flags (it is also how a
///   [`Error::SyncConflict`](crate::Error::SyncConflict) is resolved: copy in the direction you mean). A prefix copy
///   ([`copy_to_device_rows`](Self::copy_to_device_rows)) leaves the flags alone: rows past the
///   prefix may still differ, and the flag keeps saying so.
/// * [`sync`](Self::sync) copies in the direction the flags say; when both sides are dirty it
///   returns [`Error::SyncConflict`](crate::Error::SyncConflict) and overwrites neither.
///
/// A UVA buffer ([`MemoryPlacement::Uva`]) has one memory that both sides see: copies are
/// no-ops and it is never dirty.
///
/// On CUDA, copies between pinned host memory and the device are asynchronous on the device's
/// stream, and host access waits for them: [`host`](Self::host), [`host_mut`](Self::host_mut)
/// and the other host-side accessors first wait for the last copy that reads or writes the host
/// side (an event), and, for a UVA buffer whose device side was handed out, for the work
/// issued to the device's stream since. So the host never overwrites memory an in-flight copy
/// or kernel still reads (vllm-project/vllm#25279), and never reads a download before it
/// lands. Dropping the buffer waits the same way before the memory is released. Work on other
/// streams is the caller's to order. Copies from pageable host memory are synchronous.
pub struct CpuGpuBuffer<T: Element> {
    name: String,
    shape: Shape,
    placement: MemoryPlacement,
    host: HostBuffer<T>,
    /// `None` for UVA buffers, whose device side is the host side.
    device_side: Option<DeviceBuffer<T>>,
    device: Device,
    manager: Option<PinnedMemoryManager>,
    host_dirty: bool,
    device_dirty: bool,
    gate: HostGate,
    /// The device address of a UVA buffer's mapped host side (CUDA only).
    #[cfg(cpugpu_cuda)]
    uva_ptr: Option<u64>,
}

/// What host access to a paired buffer must wait for on CUDA (nothing on the host backend).
///
/// One mutex guards the state and is held across the wait, so a second thread's `host()` cannot
/// slip past a wait in progress; the state is cleared only once the wait succeeded.
#[derive(Default)]
pub(crate) struct HostGate {
    #[cfg(cpugpu_cuda)]
    state: std::sync::Mutex<GateState>,
}

#[cfg(cpugpu_cuda)]
#[derive(Default)]
struct GateState {
    /// Recorded after the last asynchronous copy (or guard release) touching the host side.
    event: Option<crate::cuda::Event>,
    /// The UVA host side was handed out as a device view since the last wait: kernels issued to
    /// the device's stream (and, through `Queue::join`, to streams ordered before it) may read
    /// or write it.
    exposed: bool,
}

impl HostGate {
    /// Blocks until no device work known to touch the host side is in flight.
    ///
    /// `exclusive` is true for accesses through `&mut self` (and drop): no device view of the
    /// buffer can be alive then, so every kernel that got one was issued already and the UVA
    /// exposure can be cleared once waited for. Through `&self` a `device_view` may still be
    /// alive and used by work issued later, so the exposure is waited for but kept.
    ///
    /// A driver failure while waiting (a dead context: no work will touch the memory any more)
    /// is kept once for the device's next `synchronize`, and the state is cleared.
    pub(crate) fn wait(&self, device: &Device, exclusive: bool) {
        #[cfg(cpugpu_cuda)]
        {
            let Ok(q) = device.cuda_queue(Op::Sync) else {
                return;
            };
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let mut failed = None;
            if st.exposed {
                if let Err(e) = q.stream.synchronize() {
                    failed = Some(e);
                }
            }
            if let Some(e) = &st.event {
                if let Err(err) = e.synchronize() {
                    failed = failed.or(Some(err));
                }
            }
            st.event = None;
            if exclusive || failed.is_some() {
                st.exposed = false;
            }
            if let Some(e) = failed {
                q.defer_error(e);
            }
        }
        #[cfg(not(cpugpu_cuda))]
        let _ = (device, exclusive);
    }

    /// Records "the device's work so far" as what the next host access waits for.
    pub(crate) fn arm(&self, device: &Device) -> Result<()> {
        #[cfg(cpugpu_cuda)]
        if device.cuda_queue(Op::Sync).is_ok() {
            let e = device.record_event(false)?;
            self.state.lock().unwrap_or_else(|e| e.into_inner()).event = Some(e);
        }
        #[cfg(not(cpugpu_cuda))]
        let _ = device;
        Ok(())
    }

    /// Notes that the host side was handed out as device memory (UVA).
    pub(crate) fn expose(&self) {
        #[cfg(cpugpu_cuda)]
        {
            self.state.lock().unwrap_or_else(|e| e.into_inner()).exposed = true;
        }
    }
}

impl<T: Element> Drop for CpuGpuBuffer<T> {
    fn drop(&mut self) {
        // In-flight copies and kernels may still use the host side: let them finish before the
        // page-locked memory is freed or returned to a manager's cache.
        self.gate.wait(&self.device, true);
    }
}

impl<T: Element> CpuGpuBuffer<T> {
    /// A zeroed paired buffer. `placement` is where the host side lives: `Host` (pageable),
    /// `Pinned`, or `Uva` (pinned and mapped: the device reads the host side directly, there is
    /// no separate device side). `Device` is an [`Error::UnsupportedPlacement`](crate::Error::UnsupportedPlacement).
    pub fn new(
        device: &Device,
        name: impl Into<String>,
        shape: &[usize],
        placement: MemoryPlacement,
    ) -> Result<Self> {
        Self::alloc(device, None, name.into(), shape, placement).map_err(|e| e.in_op(Op::Allocate))
    }

    /// Like [`CpuGpuBuffer::new`], with pinned host memory drawn from `manager`'s budget.
    pub fn with_manager(
        manager: &PinnedMemoryManager,
        name: impl Into<String>,
        shape: &[usize],
        placement: MemoryPlacement,
    ) -> Result<Self> {
        Self::alloc(
            manager.device(),
            Some(manager),
            name.into(),
            shape,
            placement,
        )
        .map_err(|e| e.in_op(Op::Allocate))
    }

    pub(crate) fn alloc(
        device: &Device,
        manager: Option<&PinnedMemoryManager>,
        name: String,
        shape: &[usize],
        placement: MemoryPlacement,
    ) -> Result<Self> {
        nonzero_size_of::<T>();
        let shape = Shape::for_op(Op::Allocate, shape)?;
        let host = HostBuffer::zeroed(device, placement, shape.numel(), manager)?;
        let device_side = match placement {
            MemoryPlacement::Uva => None,
            _ => Some(DeviceBuffer::zeroed(device, shape)?),
        };
        #[cfg(cpugpu_cuda)]
        let uva_ptr = match (&host, placement) {
            (HostBuffer::Pinned(p), MemoryPlacement::Uva) => {
                p.device_ptr(Op::Allocate).transpose()?
            }
            _ => None,
        };
        #[cfg(cpugpu_cuda)]
        if device.kind() == crate::BackendKind::Cuda
            && placement == MemoryPlacement::Uva
            && uva_ptr.is_none()
        {
            // A manager of another backend supplied heap memory the GPU cannot map.
            return Err(Error::UnsupportedPlacement {
                op: Op::Allocate,
                placement,
                reason: "a UVA buffer on CUDA needs page-locked memory from this device",
            });
        }
        Ok(CpuGpuBuffer {
            name,
            shape,
            placement,
            host,
            device_side,
            device: device.clone(),
            manager: manager.cloned(),
            host_dirty: false,
            device_dirty: false,
            gate: HostGate::default(),
            #[cfg(cpugpu_cuda)]
            uva_ptr,
        })
    }

    /// Blocks until the device work known to use this buffer's host side has completed (the
    /// pool calls it before handing a slot out again).
    pub(crate) fn wait_idle(&self) {
        self.gate.wait(&self.device, true);
    }

    /// Records the device's work so far as what the next host access waits for (the pool calls
    /// it when a guard drops). If recording fails, the next wait synchronises the stream.
    pub(crate) fn mark_released(&self) {
        if self.gate.arm(&self.device).is_err() {
            self.gate.expose();
        }
    }

    /// The buffer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shape of each side.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Rows (axis 0).
    pub fn rows(&self) -> usize {
        self.shape.rows()
    }

    /// Elements per row.
    pub fn row_len(&self) -> usize {
        self.shape.row_len()
    }

    /// Elements per side.
    pub fn len(&self) -> usize {
        self.shape.numel()
    }

    /// True when the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the host side lives (`Host`, `Pinned` or `Uva`).
    pub fn placement(&self) -> MemoryPlacement {
        self.placement
    }

    /// The device the device side belongs to.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of one side.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.host)
    }

    /// Bytes of device memory held (0 for UVA buffers).
    pub fn device_bytes(&self) -> usize {
        self.device_side.as_ref().map_or(0, |d| d.size_bytes())
    }

    /// The host side (on CUDA, after in-flight copies into it have landed).
    pub fn host(&self) -> &[T] {
        self.gate.wait(&self.device, false);
        &self.host
    }

    /// The host side, for writing; marks it dirty. On CUDA it first waits until no in-flight
    /// copy or kernel reads it.
    pub fn host_mut(&mut self) -> &mut [T] {
        self.gate.wait(&self.device, true);
        self.mark_host_dirty();
        &mut self.host
    }

    /// Rows `rows` of the host side, for writing; marks it dirty (waits as
    /// [`host_mut`](Self::host_mut)).
    pub fn host_rows_mut(&mut self, rows: Range<usize>) -> Result<&mut [T]> {
        let elems = self.elem_range(Op::Slice, &rows)?;
        self.gate.wait(&self.device, true);
        self.mark_host_dirty();
        Ok(&mut self.host[elems])
    }

    /// The device side.
    pub fn device_view(&self) -> DeviceView<'_, T> {
        match &self.device_side {
            Some(d) => d.view(),
            None => self.uva_view(),
        }
    }

    /// The device side, for writing; marks it dirty (not for UVA buffers, which have one side).
    pub fn device_view_mut(&mut self) -> DeviceViewMut<'_, T> {
        self.mark_device_dirty();
        #[cfg(cpugpu_cuda)]
        if let (None, Some(ptr)) = (&self.device_side, self.uva_ptr) {
            self.gate.expose();
            return DeviceViewMut::cuda_parts(ptr, &self.device, self.shape);
        }
        match &mut self.device_side {
            Some(d) => d.view_mut(),
            None => DeviceViewMut::from_host_parts(&mut self.host, self.shape),
        }
    }

    /// Rows `rows` of the device side.
    pub fn device_rows(&self, rows: Range<usize>) -> Result<DeviceView<'_, T>> {
        self.device_view().rows(rows)
    }

    /// Rows `rows` of the device side, for writing; marks it dirty.
    pub fn device_rows_mut(&mut self, rows: Range<usize>) -> Result<DeviceViewMut<'_, T>> {
        self.elem_range(Op::Slice, &rows)?;
        self.device_view_mut().into_rows(rows)
    }

    fn uva_view(&self) -> DeviceView<'_, T> {
        #[cfg(cpugpu_cuda)]
        if let Some(ptr) = self.uva_ptr {
            // CUDA: the mapped host memory's device address; kernels read it over the bus.
            self.gate.expose();
            return DeviceView::cuda_parts(ptr, &self.device, self.shape);
        }
        // Host backend: the mapped memory is the host memory itself.
        DeviceView::from_host_parts(&self.host, self.shape)
    }

    fn elem_range(&self, op: Op, rows: &Range<usize>) -> Result<Range<usize>> {
        let n = self.rows();
        if rows.start > rows.end || rows.end > n {
            return Err(Error::RowRangeOutOfBounds {
                op,
                start: rows.start,
                end: rows.end,
                rows: n,
            });
        }
        let rl = self.row_len();
        Ok(rows.start * rl..rows.end * rl)
    }

    /// Copies the whole host side to the device side; both sides are then equal, so both flags
    /// clear.
    pub fn copy_to_device(&mut self) -> Result<()> {
        self.copy_rows(Op::CopyToDevice, self.rows())?;
        self.host_dirty = false;
        self.device_dirty = false;
        Ok(())
    }

    /// Copies the first `n` rows (the active prefix) to the device side, as vLLM's
    /// `copy_to_gpu(n)`. Flags are left alone.
    pub fn copy_to_device_rows(&mut self, n: usize) -> Result<()> {
        self.copy_rows(Op::CopyToDevice, n)
    }

    /// Copies the whole device side to the host side; both sides are then equal, so both flags
    /// clear.
    pub fn copy_to_host(&mut self) -> Result<()> {
        self.copy_rows(Op::CopyToHost, self.rows())?;
        self.host_dirty = false;
        self.device_dirty = false;
        Ok(())
    }

    /// Copies the first `n` rows of the device side to the host side. Flags are left alone.
    pub fn copy_to_host_rows(&mut self, n: usize) -> Result<()> {
        self.copy_rows(Op::CopyToHost, n)
    }

    fn copy_rows(&mut self, op: Op, n: usize) -> Result<()> {
        let elems = self.elem_range(op, &(0..n))?;
        let Some(dev) = &mut self.device_side else {
            return Ok(()); // UVA: one memory
        };
        #[cfg(cpugpu_cuda)]
        if let (Some(q), HostBuffer::Pinned(p)) = (self.device.cuda_queue(op).ok(), &self.host) {
            if p.is_page_locked() {
                // Page-locked: a real asynchronous copy; host access waits for its event.
                self.gate.wait(&self.device, true);
                let bytes = elems.len() * std::mem::size_of::<T>();
                let dptr = dev.view().cuda_ptr().unwrap_or(0);
                let hptr = self.host.as_ptr().cast::<u8>().cast_mut();
                // SAFETY: both sides hold at least `elems` elements from their starts (same
                // shape); the host block stays alive and untouched until the event armed below
                // completes (every host accessor and Drop wait for it).
                unsafe {
                    match op {
                        Op::CopyToHost => {
                            crate::cuda::copy_dtoh_async(op, &q.stream, hptr, dptr, bytes)?
                        }
                        _ => crate::cuda::copy_htod_async(op, &q.stream, dptr, hptr, bytes)?,
                    }
                }
                if let Err(e) = self.gate.arm(&self.device) {
                    // No event covers the copy: make the next host access wait for the stream.
                    self.gate.expose();
                    return Err(e);
                }
                return Ok(());
            }
        }
        let host = &mut self.host[elems.clone()];
        let mut part = dev.flat_mut().into_rows(elems)?;
        // On the device's thread pool (a copy of 512 KiB or more is parallel).
        self.device
            .host_run(std::mem::size_of_val(host), || match op {
                Op::CopyToHost => part.as_view().copy_to_host(host),
                _ => part.copy_from_host(host),
            })
    }

    /// Copies in the direction the dirty flags say. Both sides dirty is
    /// [`Error::SyncConflict`](crate::Error::SyncConflict): nothing is copied, and the caller decides with an explicit
    /// [`copy_to_device`](Self::copy_to_device) or [`copy_to_host`](Self::copy_to_host).
    pub fn sync(&mut self) -> Result<SyncOutcome> {
        match (self.host_dirty, self.device_dirty) {
            (true, true) => Err(Error::SyncConflict {
                op: Op::Sync,
                name: self.name.clone(),
            }),
            (true, false) => self.copy_to_device().map(|()| SyncOutcome::CopiedToDevice),
            (false, true) => self.copy_to_host().map(|()| SyncOutcome::CopiedToHost),
            (false, false) => Ok(SyncOutcome::UpToDate),
        }
    }

    /// Marks the host side as changed (no effect on UVA buffers).
    pub fn mark_host_dirty(&mut self) {
        self.host_dirty = self.device_side.is_some();
    }

    /// Marks the device side as changed, e.g. after a kernel wrote it through a raw pointer
    /// (no effect on UVA buffers).
    pub fn mark_device_dirty(&mut self) {
        self.device_dirty = self.device_side.is_some();
    }

    /// True when the host side changed since it was last copied whole to the device.
    pub fn is_host_dirty(&self) -> bool {
        self.host_dirty
    }

    /// True when the device side changed since it was last copied whole to the host.
    pub fn is_device_dirty(&self) -> bool {
        self.device_dirty
    }

    /// Sets every element of both sides to `value`; both sides then agree, so the flags clear.
    pub fn fill(&mut self, value: T) {
        self.gate.wait(&self.device, true);
        let host = &mut *self.host;
        self.device.host_run(std::mem::size_of_val(host), || {
            crate::par::par_fill(host, value)
        });
        if let Some(d) = &mut self.device_side {
            d.fill(value);
        }
        self.host_dirty = false;
        self.device_dirty = false;
    }

    /// Zeroes both sides and clears the flags.
    pub fn reset(&mut self) {
        self.fill(T::zeroed());
    }

    /// Rows `rows` of both sides.
    pub fn slice(&self, rows: Range<usize>) -> Result<BufferSlice<'_, T>> {
        let elems = self.elem_range(Op::Slice, &rows)?;
        self.gate.wait(&self.device, false);
        Ok(BufferSlice {
            host: &self.host[elems],
            device: self.device_view().rows(rows)?,
        })
    }

    /// Changes the row count to `rows`, keeping the first `min(old, new)` rows of both sides;
    /// new rows are zero. The flags are kept. Reallocates both sides (from the same pinned
    /// manager, if any); errors name [`Op::Resize`](crate::Op::Resize), and on error the buffer
    /// is as it was.
    ///
    /// Shrinking cannot fail for want of room for a second host block (a buffer holding the
    /// whole pinned budget can shrink): when the smaller block cannot be had, the host side keeps
    /// its block, shortened, and the block stays counted against the budget until the buffer is
    /// dropped or resized again.
    pub fn resize(&mut self, rows: usize) -> Result<()> {
        self.resize_to(rows).map_err(|e| e.in_op(Op::Resize))
    }

    fn resize_to(&mut self, rows: usize) -> Result<()> {
        let shape = self.shape.with_rows(Op::Resize, rows)?;
        let keep = self.row_len() * self.rows().min(rows);
        let mut next = match Self::alloc(
            &self.device,
            self.manager.as_ref(),
            self.name.clone(),
            shape.dims(),
            self.placement,
        ) {
            Ok(next) => next,
            Err(_) if rows < self.rows() => return self.shrink_in_place(shape),
            Err(e) => return Err(e),
        };
        self.gate.wait(&self.device, true);
        next.host[..keep].copy_from_slice(&self.host[..keep]);
        if let (Some(old), Some(new)) = (&self.device_side, &mut next.device_side) {
            let old = old.flat().rows(0..keep)?;
            old.copy_to(&mut new.flat_mut().into_rows(0..keep)?)?;
        }
        next.host_dirty = self.host_dirty;
        next.device_dirty = self.device_dirty;
        *self = next;
        Ok(())
    }

    /// Shrinks to `shape` (fewer rows) keeping the host block: only the device side is
    /// reallocated (device memory has no budget). Nothing changes unless it succeeds.
    fn shrink_in_place(&mut self, shape: Shape) -> Result<()> {
        let keep = shape.numel();
        let device_side = match &self.device_side {
            Some(old) => {
                let mut new = DeviceBuffer::zeroed(&self.device, shape)?;
                old.flat().rows(0..keep)?.copy_to(&mut new.flat_mut())?;
                Some(new)
            }
            None => None, // UVA: the host block is the device side, and it stays where it is
        };
        self.gate.wait(&self.device, true);
        self.host.truncate(keep);
        self.device_side = device_side;
        self.shape = shape;
        Ok(())
    }
}

impl<T: Element> fmt::Debug for CpuGpuBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuGpuBuffer")
            .field("name", &self.name)
            .field("dtype", &std::any::type_name::<T>())
            .field("shape", &self.shape)
            .field("placement", &self.placement)
            .field("host_dirty", &self.host_dirty)
            .field("device_dirty", &self.device_dirty)
            .finish()
    }
}

/// A row range of both sides of a [`CpuGpuBuffer`].
#[derive(Clone, Copy, Debug)]
pub struct BufferSlice<'a, T: Element> {
    /// The host rows.
    pub host: &'a [T],
    /// The device rows.
    pub device: DeviceView<'a, T>,
}
