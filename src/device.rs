//! Backends and the [`Device`] handle.

use std::fmt;
use std::sync::Arc;

use crate::element::Element;
use crate::error::{Error, Op, Result};
use crate::memory::DeviceBuffer;
pub use crate::placement::MemoryPlacement;
use crate::shape::Shape;

/// Which implementation runs a [`Device`]'s operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// The rayon host backend: "device" memory is a second host allocation and every operation
    /// runs on the CPU. Works on every machine; it is also the reference the GPU backend is
    /// tested against.
    Host,
    /// A CUDA GPU (`--features cuda`): device memory, page-locked and mapped host memory, the
    /// crate's kernels launched on a stream.
    #[cfg(cpugpu_cuda)]
    Cuda,
}

impl BackendKind {
    /// `"host"` or `"cuda"`.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Host => "host",
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => "cuda",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

struct Inner {
    kind: BackendKind,
    fallback_reason: Option<&'static str>,
    /// The rayon pool the host backend's parallel work runs on (`None`: the caller's current
    /// pool, normally the global one).
    pool: Option<Arc<rayon::ThreadPool>>,
    /// The CUDA context, stream and error read-out (CUDA devices only).
    #[cfg(cpugpu_cuda)]
    cuda: Option<crate::cuda::Queue>,
}

/// A handle to a backend: cheap to clone, `Send + Sync`.
///
/// Batching code takes a `&Device` and calls the operations on it; the same code runs on the
/// host backend (every machine) and, with the `cuda` feature, on a GPU.
///
/// On CUDA a `Device` is a device *and a stream*: every operation is enqueued on that stream and
/// returns without waiting. Errors the kernels find in the data (an index out of bounds, a
/// negative length, an offset overflow) come back from the next [`Device::synchronize`] (or any
/// other call that waits for the stream, such as [`DeviceBuffer::to_vec`]); argument errors
/// (shapes, lengths) come back at once, as on the host. Clones, and every `Device::cuda(n)` /
/// `Device::auto()` of the same GPU, share one stream; `Device::with_stream` and
/// `Device::new_stream` give handles on other streams of the same GPU. An operation on one
/// stream that touches memory allocated through a handle on another stream is ordered after
/// that stream's earlier work, and that stream's later work (a free, a host access) after it,
/// with events, so memory is never freed or overwritten under a kernel still using it.
///
/// ```
/// use cpugpu::Device;
/// let dev = Device::auto();
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
        Self::host_because(None)
    }

    /// The host backend, running every operation's parallel work on `pool`, a rayon thread
    /// pool of the caller's: the explicit thread count for a server where the global pool (one
    /// thread per core) is wrong, for example 8 threads of a 128-core machine next to the
    /// inference engine's own threads. Clones share the pool.
    ///
    /// An operation called from outside the pool is handed to one of its threads and waited
    /// for (`ThreadPool::install`) when it moves [`PAR_MIN_BYTES`](crate::ops::PAR_MIN_BYTES)
    /// or more; a smaller one runs on the calling thread, sequentially, as it would on the pool
    /// (the handoff, about 30 us on a 2-core VM, costs more than such an operation). Called from
    /// inside the pool (a batching loop run under `pool.install`) an operation runs in place.
    /// Uploads, allocations and the copies and fills of its buffers (`DeviceBuffer`,
    /// `CpuGpuBuffer`) go to the pool the same way; a view's copies and fills do not know their
    /// device and run on the caller's pool. [`Device::host`] uses whatever pool the caller is in, normally rayon's global one; so do
    /// the [`host`](crate::host) functions, which a caller points at a pool with
    /// `pool.install(|| ...)`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
    /// let dev = cpugpu::Device::host_with_pool(pool);
    /// assert_eq!(dev.host_threads(), Some(2));
    /// let lens = dev.upload(&[3i64, 1, 4], &[3])?;
    /// let offs = dev.prefix_sum_offsets::<i64, i64>(lens.view())?;
    /// assert_eq!(offs.to_vec()?, [0, 3, 4, 8]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn host_with_pool(pool: Arc<rayon::ThreadPool>) -> Self {
        Device {
            inner: Arc::new(Inner {
                kind: BackendKind::Host,
                fallback_reason: None,
                pool: Some(pool),
                #[cfg(cpugpu_cuda)]
                cuda: None,
            }),
        }
    }

    /// The threads a host-backend device runs its parallel work on: its pool's
    /// ([`Device::host_with_pool`]) or the current pool's (normally rayon's global pool, one per
    /// core, or `RAYON_NUM_THREADS`). `None` on a GPU.
    pub fn host_threads(&self) -> Option<usize> {
        match self.kind() {
            BackendKind::Host => Some(
                self.inner
                    .pool
                    .as_ref()
                    .map_or_else(rayon::current_num_threads, |p| p.current_num_threads()),
            ),
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => None,
        }
    }

    /// Runs a host operation that moves about `bytes` bytes on this device's pool: in place
    /// without one, or when the caller is already one of the pool's threads; handed to the pool
    /// when it is large enough to use it ([`PAR_MIN_BYTES`](crate::ops::PAR_MIN_BYTES)); and
    /// below that, on the calling thread with no pool at all (the handoff to a sleeping pool
    /// thread and back cost about 30 us on the 2-core VM of `BENCHMARKS.md`, four times a
    /// 256 KiB gather).
    pub(crate) fn host_run<R: Send>(&self, bytes: usize, f: impl FnOnce() -> R + Send) -> R {
        match &self.inner.pool {
            Some(p) if p.current_thread_index().is_none() => {
                if bytes < crate::par::PAR_MIN_BYTES {
                    crate::par::run_sequential(f)
                } else {
                    p.install(f)
                }
            }
            _ => f(),
        }
    }

    fn host_because(fallback_reason: Option<&'static str>) -> Self {
        Device {
            inner: Arc::new(Inner {
                kind: BackendKind::Host,
                fallback_reason,
                pool: None,
                #[cfg(cpugpu_cuda)]
                cuda: None,
            }),
        }
    }

    /// The best backend this build and machine offer: CUDA device 0 when the build has the CUDA
    /// backend (`--features cuda`; or `--features emulator`, whose GPU is emulated on CPU
    /// threads) and a device answers, else the host backend, with [`Device::fallback_reason`]
    /// saying why (no GPU backend in the build, no driver, no device, or the device could not be
    /// opened).
    pub fn auto() -> Self {
        #[cfg(cpugpu_cuda)]
        {
            static REASON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            match crate::cuda::probe() {
                Err(no) => Self::host_because(Some(no.reason.as_str())),
                Ok(_) => match Self::cuda(0) {
                    Ok(d) => d,
                    Err(e) => Self::host_because(Some(
                        REASON
                            .get_or_init(|| format!("CUDA device 0 could not be opened: {e}"))
                            .as_str(),
                    )),
                },
            }
        }
        #[cfg(not(cpugpu_cuda))]
        Self::host_because(Some(
            "this build of cpugpu has no GPU backend (build with --features cuda)",
        ))
    }

    /// CUDA device `ordinal` on its default cpugpu stream: every call (and [`Device::auto`])
    /// returns a handle on the same stream, so work issued through any of them is ordered. Each
    /// call's handle (and its clones) reports only the errors of the work it issued. The
    /// device's primary context is retained and the crate's kernels are loaded into it once per
    /// process. [`Device::new_stream`] gives a handle on another stream. Make the handle once
    /// and clone it: each call allocates a small error read-out.
    #[cfg(cpugpu_cuda)]
    pub fn cuda(ordinal: usize) -> Result<Self> {
        let ordinal = u32::try_from(ordinal).map_err(|_| Error::InvalidArgument {
            op: Op::Device,
            name: "the device ordinal",
            value: ordinal as i128,
            reason: "no CUDA device has this ordinal",
        })?;
        static DEFAULTS: std::sync::OnceLock<
            std::sync::Mutex<std::collections::HashMap<u32, crate::cuda::Stream>>,
        > = std::sync::OnceLock::new();
        let ctx = crate::cuda::Context::get(ordinal)?;
        let stream = {
            let mut defaults = DEFAULTS
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match defaults.get(&ordinal) {
                Some(s) => s.clone(),
                None => {
                    let s = crate::cuda::Stream::new(&ctx)?;
                    defaults.insert(ordinal, s.clone());
                    s
                }
            }
        };
        // A queue of its own (error word and read-out) on the shared stream: errors stay with
        // the handle that issued the work, ordering is the stream's.
        Self::on_queue(crate::cuda::Queue::new(ctx, stream)?)
    }

    #[cfg(cpugpu_cuda)]
    fn on_queue(q: crate::cuda::Queue) -> Result<Self> {
        Ok(Device {
            inner: Arc::new(Inner {
                kind: BackendKind::Cuda,
                fallback_reason: None,
                pool: None,
                cuda: Some(q),
            }),
        })
    }

    /// A handle on the same GPU whose operations go to `stream` (for instance one wrapped with
    /// [`Stream::from_raw`](crate::cuda::Stream::from_raw) from PyTorch or the CUDA runtime).
    /// Its device-side errors are reported by its own [`Device::synchronize`].
    #[cfg(cpugpu_cuda)]
    pub fn with_stream(&self, stream: &crate::cuda::Stream) -> Result<Self> {
        let q = self.cuda_queue(Op::Stream)?;
        Self::on_queue(crate::cuda::Queue::new(q.ctx.clone(), stream.clone())?)
    }

    /// A handle on the same GPU with a new stream of its own.
    #[cfg(cpugpu_cuda)]
    pub fn new_stream(&self) -> Result<Self> {
        let q = self.cuda_queue(Op::Stream)?;
        let stream = crate::cuda::Stream::new(&q.ctx)?;
        Self::on_queue(crate::cuda::Queue::new(q.ctx.clone(), stream)?)
    }

    /// The stream this handle's work goes to (`None` on the host backend).
    #[cfg(cpugpu_cuda)]
    pub fn stream(&self) -> Option<&crate::cuda::Stream> {
        self.inner.cuda.as_ref().map(|q| &q.stream)
    }

    /// A new event recorded now on this handle's stream (`timing` enables
    /// [`Event::elapsed_ms`](crate::cuda::Event::elapsed_ms)). Host backend:
    /// [`Error::WrongDevice`](crate::Error::WrongDevice).
    #[cfg(cpugpu_cuda)]
    pub fn record_event(&self, timing: bool) -> Result<crate::cuda::Event> {
        let q = self.cuda_queue(Op::Stream)?;
        let e = crate::cuda::Event::new(&q.ctx, timing)?;
        e.record(&q.stream)?;
        Ok(e)
    }

    /// The CUDA device's ordinal, name and compute capability (`None` on the host backend).
    #[cfg(cpugpu_cuda)]
    pub fn cuda_info(&self) -> Option<(usize, &str, (u32, u32))> {
        self.inner.cuda.as_ref().map(|q| {
            (
                usize::try_from(q.ctx.ordinal).unwrap_or(usize::MAX),
                q.ctx.name.as_str(),
                q.ctx.cc,
            )
        })
    }

    /// This device's CUDA queue, or [`Error::WrongDevice`](crate::Error::WrongDevice) naming `op`.
    #[cfg(cpugpu_cuda)]
    pub(crate) fn cuda_queue(&self, op: Op) -> Result<&crate::cuda::Queue> {
        self.inner.cuda.as_ref().ok_or(Error::WrongDevice {
            op,
            what: "the device",
            expected: "cuda",
            actual: "host",
        })
    }

    /// True for the emulated GPU of `--features emulator` (a CUDA device that runs on CPU
    /// threads: see `docs/EMULATOR.md`), false for a real GPU and the host backend.
    pub fn is_emulated(&self) -> bool {
        cfg!(cpugpu_emulated) && self.kind() != BackendKind::Host
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
    /// synchronously, so this returns at once. On CUDA it waits for the stream, then returns the
    /// first error the kernels recorded since the last synchronisation (the earliest
    /// operation's), naming the operation and the offending position and value.
    pub fn synchronize(&self) -> Result<()> {
        match self.kind() {
            BackendKind::Host => Ok(()),
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => self.cuda_queue(Op::Device)?.synchronize(),
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
                let v = self.host_run(std::mem::size_of_val(data), || {
                    crate::host_vec::HostVec::copied_from(Op::CopyToDevice, data)
                })?;
                Ok(DeviceBuffer::from_host(self, v, shape))
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                let mut b = DeviceBuffer::uninit(self, shape)?;
                b.copy_from_host(data)?;
                Ok(b)
            }
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            BackendKind::Host => write!(
                f,
                "host ({} rayon threads{})",
                self.host_threads().unwrap_or(0),
                if self.inner.pool.is_some() {
                    ", own pool"
                } else {
                    ""
                }
            ),
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => match self.cuda_info() {
                Some((o, name, (ma, mi))) if self.is_emulated() => {
                    write!(f, "cuda:{o} ({name}, emulated sm_{ma}{mi})")
                }
                Some((o, name, (ma, mi))) => write!(f, "cuda:{o} ({name}, sm_{ma}{mi})"),
                None => f.write_str("cuda"),
            },
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
