//! A paired buffer of any width behind one object-safe trait, and the shared holder that numpy
//! views keep alive.

use std::sync::{Arc, Mutex};

use cpugpu::{CpuGpuBuffer, Device, Element, MemoryPlacement, PoolBuffer, Result, SyncOutcome};

/// The paired-buffer operations the Python class uses, for an owned buffer or a pool slot of any
/// element width (the operations move elements by width, so `u8`..`u64` cover every dtype).
///
/// The copies (and a `sync` that copies) return once the copy has completed: on a GPU they
/// synchronize the buffer's stream. The crate's copies from and to page-locked memory are
/// asynchronous, and its own host accessors wait for them; Python's numpy views of the host side
/// cannot wait, so the copy waits instead: a view never reads a download that has not landed,
/// and a write through it never races an upload still reading the memory.
pub(crate) trait Side: Send {
    /// The host side's address.
    fn host_addr(&self) -> usize;
    /// The device side's address when it is host-addressable (the host backend), else `None`.
    fn device_host_addr(&self) -> Option<usize>;
    /// The device side's CUDA address (CUDA backend).
    #[cfg(gpu)]
    fn device_cuda_ptr(&self) -> Option<u64>;
    fn copy_to_device(&mut self) -> Result<()>;
    fn copy_to_device_rows(&mut self, n: usize) -> Result<()>;
    fn copy_to_host(&mut self) -> Result<()>;
    fn copy_to_host_rows(&mut self, n: usize) -> Result<()>;
    fn sync(&mut self) -> Result<SyncOutcome>;
    fn mark_host_dirty(&mut self);
    fn mark_device_dirty(&mut self);
    /// (host dirty, device dirty).
    fn dirty(&self) -> (bool, bool);
    /// Fills both sides with the element whose bytes start `v`.
    fn fill_bytes(&mut self, v: &[u8; 8]);
    fn reset(&mut self);
    /// The device the device side belongs to.
    fn device(&self) -> &Device;
}

/// Waits until a copy just issued has completed, and raises its error if it failed: on a GPU
/// this synchronizes the buffer's stream (so work issued there before the copy is waited for
/// too); on the host backend, and for a UVA buffer (whose copies are no-ops), it returns at once.
fn settle(placement: MemoryPlacement, device: &Device) -> Result<()> {
    if placement == MemoryPlacement::Uva {
        return Ok(());
    }
    device.synchronize()
}

macro_rules! impl_side {
    ($ty:ident) => {
        impl<T: Element> Side for $ty<T> {
            fn host_addr(&self) -> usize {
                self.host().as_ptr() as usize
            }
            fn device_host_addr(&self) -> Option<usize> {
                self.device_view()
                    .as_host_slice()
                    .map(|s| s.as_ptr() as usize)
            }
            #[cfg(gpu)]
            fn device_cuda_ptr(&self) -> Option<u64> {
                self.device_view().cuda_ptr()
            }
            fn copy_to_device(&mut self) -> Result<()> {
                $ty::copy_to_device(self)?;
                settle(self.placement(), CpuGpuBuffer::device(self))
            }
            fn copy_to_device_rows(&mut self, n: usize) -> Result<()> {
                $ty::copy_to_device_rows(self, n)?;
                settle(self.placement(), CpuGpuBuffer::device(self))
            }
            fn copy_to_host(&mut self) -> Result<()> {
                $ty::copy_to_host(self)?;
                settle(self.placement(), CpuGpuBuffer::device(self))
            }
            fn copy_to_host_rows(&mut self, n: usize) -> Result<()> {
                $ty::copy_to_host_rows(self, n)?;
                settle(self.placement(), CpuGpuBuffer::device(self))
            }
            fn sync(&mut self) -> Result<SyncOutcome> {
                let out = $ty::sync(self)?;
                if out != SyncOutcome::UpToDate {
                    settle(self.placement(), CpuGpuBuffer::device(self))?;
                }
                Ok(out)
            }
            fn mark_host_dirty(&mut self) {
                $ty::mark_host_dirty(self)
            }
            fn mark_device_dirty(&mut self) {
                $ty::mark_device_dirty(self)
            }
            fn dirty(&self) -> (bool, bool) {
                (self.is_host_dirty(), self.is_device_dirty())
            }
            fn fill_bytes(&mut self, v: &[u8; 8]) {
                $ty::fill(self, crate::dtype::from_bytes::<T>(v))
            }
            fn reset(&mut self) {
                $ty::reset(self)
            }
            fn device(&self) -> &Device {
                CpuGpuBuffer::device(self)
            }
        }
    };
}

impl_side!(CpuGpuBuffer);
impl_side!(PoolBuffer);

/// One paired buffer (owned, or a pool slot with its guard), shared by the Python object and
/// every numpy view of it through an `Arc`: the memory, and for a pool slot the slot itself,
/// are released only when the last of them is gone.
pub(crate) struct Holder {
    buf: Mutex<Box<dyn Side>>,
    /// The host side's address (stable: the buffer is never resized or moved).
    pub(crate) host_addr: usize,
    /// The device side's address when host-addressable.
    pub(crate) device_addr: Option<usize>,
    /// The device side's CUDA address (CUDA backend).
    #[cfg(gpu)]
    pub(crate) device_cuda_ptr: Option<u64>,
    /// The buffer's device (for CUDA stream ordering of exports).
    pub(crate) device: Device,
}

impl Holder {
    pub(crate) fn new(buf: Box<dyn Side>) -> Arc<Self> {
        Arc::new(Holder {
            host_addr: buf.host_addr(),
            device_addr: buf.device_host_addr(),
            device: buf.device().clone(),
            #[cfg(gpu)]
            device_cuda_ptr: buf.device_cuda_ptr(),
            buf: Mutex::new(buf),
        })
    }

    /// The buffer's mutex (see `buffer::with_side`, which takes it without holding the GIL
    /// while waiting).
    pub(crate) fn buf_mutex(&self) -> &Mutex<Box<dyn Side>> {
        &self.buf
    }
}
