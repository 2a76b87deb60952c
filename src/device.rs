//! Backends and the [`Device`] handle.

use std::fmt;
use std::sync::Arc;

use crate::element::Element;
use crate::error::{Error, Op, Result};
use crate::memory::DeviceBuffer;
use crate::shape::Shape;

/// Which implementation runs a [`Device`]'s operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// The rayon host backend: "device" memory is a second host allocation and every operation
    /// runs on the CPU. Works on every machine; it is also the reference the GPU backend is
    /// tested against.
    Host,
}

impl BackendKind {
    /// `"host"`.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Host => "host",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an allocation lives.
///
/// | placement | what it is | on the host backend |
/// |---|---|---|
/// | `Host` | ordinary pageable host memory; uploads from it are staged by the driver | a `Vec` |
/// | `Pinned` | page-locked host memory: asynchronous, full-bandwidth uploads; scarce, so budgeted by [`PinnedMemoryManager`](crate::PinnedMemoryManager) | 256-byte-aligned heap memory |
/// | `Device` | device memory, read by kernels at full bandwidth | a second host allocation |
/// | `Uva` | pinned host memory mapped into the device's address space: kernels read it directly over the bus, no upload; best for data written every step and read once | one host allocation seen by both sides |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryPlacement {
    /// Pageable host memory.
    Host,
    /// Page-locked host memory.
    Pinned,
    /// Device memory.
    Device,
    /// Mapped pinned host memory the device reads directly (zero copy).
    Uva,
}

impl fmt::Display for MemoryPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryPlacement::Host => "host",
            MemoryPlacement::Pinned => "pinned",
            MemoryPlacement::Device => "device",
            MemoryPlacement::Uva => "uva",
        })
    }
}

#[derive(Debug)]
struct Inner {
    kind: BackendKind,
    fallback_reason: Option<&'static str>,
}

/// A handle to a backend: cheap to clone, `Send + Sync`.
///
/// Batching code takes a `&Device` and calls the operations on it; the same code runs on the
/// host backend (every machine) and, once the `cuda` feature lands, on a GPU.
///
/// ```
/// use cpugpu::{BackendKind, Device};
/// let dev = Device::auto();
/// assert_eq!(dev.kind(), BackendKind::Host); // this build has no GPU backend
/// println!("running on {dev} ({})", dev.fallback_reason().unwrap_or("requested"));
/// dev.synchronize()?;
/// # Ok::<(), cpugpu::Error>(())
/// ```
#[derive(Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

impl Device {
    /// The host backend.
    pub fn host() -> Self {
        Device {
            inner: Arc::new(Inner {
                kind: BackendKind::Host,
                fallback_reason: None,
            }),
        }
    }

    /// The best backend this build and machine offer. Today that is always the host backend,
    /// and [`Device::fallback_reason`] says why.
    pub fn auto() -> Self {
        Device {
            inner: Arc::new(Inner {
                kind: BackendKind::Host,
                fallback_reason: Some("this build of cpugpu has no GPU backend"),
            }),
        }
    }

    /// Which backend runs this device's work.
    pub fn kind(&self) -> BackendKind {
        self.inner.kind
    }

    /// Why [`Device::auto`] fell back to the host backend, or `None` if it was asked for.
    pub fn fallback_reason(&self) -> Option<&'static str> {
        self.inner.fallback_reason
    }

    /// Waits for all work issued to this device. The host backend runs every operation
    /// synchronously, so this returns at once.
    pub fn synchronize(&self) -> Result<()> {
        match self.kind() {
            BackendKind::Host => Ok(()),
        }
    }

    /// A zeroed device buffer of the given shape.
    ///
    /// ```
    /// let dev = cpugpu::Device::host();
    /// let buf = dev.alloc::<f32>(&[4, 16])?;
    /// assert_eq!(buf.shape().dims(), &[4, 16]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn alloc<T: Element>(&self, shape: &[usize]) -> Result<DeviceBuffer<T>> {
        let shape = Shape::for_op(Op::Allocate, shape)?;
        DeviceBuffer::zeroed(self, shape)
    }

    /// A device buffer holding a copy of `data`, whose length must be `shape`'s element count.
    ///
    /// ```
    /// let dev = cpugpu::Device::host();
    /// let buf = dev.upload(&[1i32, 2, 3, 4, 5, 6], &[2, 3])?;
    /// assert_eq!(buf.to_vec()?, vec![1, 2, 3, 4, 5, 6]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn upload<T: Element>(&self, data: &[T], shape: &[usize]) -> Result<DeviceBuffer<T>> {
        let shape = Shape::for_op(Op::CopyToDevice, shape)?;
        if data.len() != shape.numel() {
            return Err(Error::LengthMismatch {
                op: Op::CopyToDevice,
                what: "data.len()",
                expected: shape.numel(),
                actual: data.len(),
            });
        }
        match self.kind() {
            BackendKind::Host => {
                let mut v = Vec::new();
                v.try_reserve_exact(data.len())
                    .map_err(|_| Error::OutOfMemory {
                        op: Op::CopyToDevice,
                        bytes: std::mem::size_of_val(data),
                    })?;
                v.extend_from_slice(data);
                Ok(DeviceBuffer::from_host_vec(self, v, shape))
            }
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            BackendKind::Host => write!(f, "host ({} rayon threads)", rayon::current_num_threads()),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("kind", &self.kind())
            .field("fallback_reason", &self.fallback_reason())
            .finish()
    }
}

impl Default for Device {
    /// [`Device::auto`].
    fn default() -> Self {
        Device::auto()
    }
}
