//! Device buffers, device views and host buffers.
//!
//! [`DeviceBuffer<T>`] owns device memory the way `Vec<T>` owns host memory; [`DeviceView`] and
//! [`DeviceViewMut`] borrow it (or part of it) the way `&[T]` and `&mut [T]` do, and carry a
//! [`Shape`]. The operations on [`Device`] take views, so one call works on a whole buffer, a row
//! range of it, or the device side of a [`CpuGpuBuffer`](crate::CpuGpuBuffer).
//!
//! On the host backend device memory is a second host allocation, and a view of a plain host
//! slice ([`DeviceView::host`]) is a valid device view.

use std::alloc::Layout;
use std::fmt;
use std::ops::{Deref, DerefMut, Range};

use crate::device::{BackendKind, Device, MemoryPlacement};
use crate::element::{nonzero_size_of, Element};
use crate::error::{Error, Op, Result};
use crate::host_vec::{advise_huge_pages, HostVec, HUGE_PAGE_MIN_BYTES};
use crate::pinned::{PinnedBuffer, PinnedMemoryManager};
use crate::shape::Shape;

/// Device memory holding a row-major array of `T`.
pub struct DeviceBuffer<T: Element> {
    storage: Storage<T>,
    shape: Shape,
    device: Device,
}

enum Storage<T: Element> {
    /// Host backend: a second host allocation.
    Host(HostVec<T>),
    /// CUDA: device memory, freed in order on the allocating device's stream.
    #[cfg(cpugpu_cuda)]
    Cuda(crate::cuda::DevAlloc),
}

/// A view of CUDA memory: the device address and the queue of the device that owns it (whose
/// stream copies through the view are issued on).
#[cfg(cpugpu_cuda)]
#[derive(Clone, Copy)]
pub(crate) struct CudaPtr<'a> {
    pub(crate) ptr: u64,
    pub(crate) q: &'a crate::cuda::Queue,
}

#[cfg(cpugpu_cuda)]
impl CudaPtr<'_> {
    fn offset<T>(self, elems: usize) -> Self {
        // Cannot overflow: the element range lies inside the allocation.
        CudaPtr {
            ptr: self.ptr + (elems * std::mem::size_of::<T>()) as u64,
            q: self.q,
        }
    }
}

/// A `Vec` of `len` zeroed elements, or an allocation error naming `op`.
///
/// The memory comes from `alloc_zeroed` (calloc: large blocks are fresh zero pages, nothing is
/// written), and blocks of [`HUGE_PAGE_MIN_BYTES`] or more are advised onto transparent huge
/// pages before anything touches them, as numpy does for its arrays: the first writes then fault
/// in 2 MiB pages instead of 4 KiB ones. Measured on the 2-core x86-64 VM of BENCHMARKS.md, the
/// allocating `pad_to_multiple` of 1,048,573 x 16 f32 took 35.2 ms with a `Vec` zero-filled by
/// `resize`, and 10.45 ms this way (`np.pad`: 13.7 ms).
pub(crate) fn zeroed_vec<T: Element>(op: Op, len: usize) -> Result<Vec<T>> {
    let bytes = len
        .checked_mul(nonzero_size_of::<T>())
        .ok_or(Error::SizeOverflow {
            op,
            what: "the output's size in bytes",
        })?;
    if bytes == 0 {
        return Ok(Vec::new()); // len 0: no allocation
    }
    // Fails only past isize::MAX bytes (the size fits usize, and T's alignment is valid).
    let layout = Layout::array::<T>(len).map_err(|_| Error::AllocationTooLarge {
        op,
        bytes,
        max: isize::MAX as usize,
    })?;
    // SAFETY: the layout's size is `bytes` > 0.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(Error::OutOfMemory { op, bytes });
    }
    // SAFETY: `ptr` comes from the global allocator with `Layout::array::<T>(len)`, the layout a
    // `Vec<T>` of capacity `len` uses, so the Vec may own and free it; all `len` elements are
    // initialised, because an all-zero byte pattern is a valid `T` (`T: Pod` implies
    // `Zeroable`).
    let mut v = unsafe { Vec::from_raw_parts(ptr, len, len) };
    if bytes >= HUGE_PAGE_MIN_BYTES {
        advise_huge_pages(&mut v);
    }
    Ok(v)
}

impl<T: Element> DeviceBuffer<T> {
    pub(crate) fn zeroed(device: &Device, shape: Shape) -> Result<Self> {
        nonzero_size_of::<T>();
        let storage = match device.kind() {
            BackendKind::Host => {
                let bytes = shape.numel().saturating_mul(std::mem::size_of::<T>());
                let v = device.host_run(bytes, || HostVec::zeroed_for(Op::Allocate, shape.numel()));
                Storage::Host(v?)
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                let q = device.cuda_queue(Op::Allocate)?;
                Storage::Cuda(crate::cuda::DevAlloc::filled(
                    Op::Allocate,
                    &q.stream,
                    bytes_of::<T>(Op::Allocate, shape.numel())?,
                    0,
                )?)
            }
        };
        Ok(DeviceBuffer {
            storage,
            shape,
            device: device.clone(),
        })
    }

    /// A CUDA buffer whose contents are whatever the allocator returned (every caller
    /// overwrites all of it before anything reads it).
    #[cfg(cpugpu_cuda)]
    pub(crate) fn uninit(device: &Device, shape: Shape) -> Result<Self> {
        let q = device.cuda_queue(Op::Allocate)?;
        let bytes = bytes_of::<T>(Op::Allocate, shape.numel())?;
        Ok(DeviceBuffer {
            storage: Storage::Cuda(crate::cuda::DevAlloc::new(Op::Allocate, &q.stream, bytes)?),
            shape,
            device: device.clone(),
        })
    }

    /// A host-backend buffer taking ownership of `data` (`shape.numel()` elements).
    pub(crate) fn from_host_vec(device: &Device, data: Vec<T>, shape: Shape) -> Self {
        Self::from_host(device, HostVec::from_vec(data), shape)
    }

    /// A host-backend buffer taking ownership of `data` (`shape.numel()` elements).
    pub(crate) fn from_host(device: &Device, data: HostVec<T>, shape: Shape) -> Self {
        nonzero_size_of::<T>();
        debug_assert_eq!(data.len(), shape.numel());
        DeviceBuffer {
            storage: Storage::Host(data),
            shape,
            device: device.clone(),
        }
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The element count.
    pub fn len(&self) -> usize {
        self.shape.numel()
    }

    /// True when the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of device memory.
    pub fn size_bytes(&self) -> usize {
        // Cannot overflow: the allocation exists.
        self.len() * std::mem::size_of::<T>()
    }

    /// The device that owns the memory.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A view of the whole buffer.
    pub fn view(&self) -> DeviceView<'_, T> {
        self.view_as(self.shape)
    }

    fn view_as(&self, shape: Shape) -> DeviceView<'_, T> {
        let repr = match &self.storage {
            Storage::Host(v) => ViewRepr::Host(v),
            #[cfg(cpugpu_cuda)]
            Storage::Cuda(a) => ViewRepr::Cuda(CudaPtr {
                ptr: a.ptr,
                q: self.queue(),
            }),
        };
        DeviceView { repr, shape }
    }

    /// The queue of a CUDA buffer's device (a CUDA buffer is only made by a CUDA device).
    #[cfg(cpugpu_cuda)]
    fn queue(&self) -> &crate::cuda::Queue {
        match self.device.cuda_queue(Op::Slice) {
            Ok(q) => q,
            Err(_) => unreachable!("CUDA storage is only allocated by a CUDA device"),
        }
    }

    fn view_mut_as(&mut self, shape: Shape) -> DeviceViewMut<'_, T> {
        #[cfg(cpugpu_cuda)]
        if let Storage::Cuda(a) = &self.storage {
            let ptr = a.ptr;
            let q = match self.device.cuda_queue(Op::Slice) {
                Ok(q) => q,
                Err(_) => unreachable!("CUDA storage is only allocated by a CUDA device"),
            };
            return DeviceViewMut {
                repr: ViewReprMut::Cuda(CudaPtr { ptr, q }),
                shape,
            };
        }
        let repr = match &mut self.storage {
            Storage::Host(v) => ViewReprMut::Host(v),
            #[cfg(cpugpu_cuda)]
            Storage::Cuda(_) => unreachable!("handled above"),
        };
        DeviceViewMut { repr, shape }
    }

    /// A mutable view of the whole buffer.
    pub fn view_mut(&mut self) -> DeviceViewMut<'_, T> {
        self.view_mut_as(self.shape)
    }

    /// A one-dimensional view of all elements.
    pub fn flat(&self) -> DeviceView<'_, T> {
        self.view_as(Shape::vector(self.len()))
    }

    /// A one-dimensional mutable view of all elements.
    pub fn flat_mut(&mut self) -> DeviceViewMut<'_, T> {
        let shape = Shape::vector(self.len());
        self.view_mut_as(shape)
    }

    /// Copies `src` (exactly [`DeviceBuffer::len`] elements) from the host into the buffer.
    ///
    /// On the host backend the copy runs on the device's thread pool (see
    /// [`Device::host_with_pool`]), as the buffer's other copies and fills do; a view's copies
    /// and fills run on the caller's.
    pub fn copy_from_host(&mut self, src: &[T]) -> Result<()> {
        let dev = self.device.clone();
        dev.host_run(std::mem::size_of_val(src), || {
            self.view_mut().copy_from_host(src)
        })
    }

    /// Copies the buffer into `dst` (exactly [`DeviceBuffer::len`] elements) on the host.
    pub fn copy_to_host(&self, dst: &mut [T]) -> Result<()> {
        self.device
            .host_run(std::mem::size_of_val(dst), || self.view().copy_to_host(dst))
    }

    /// The buffer's contents, downloaded into a new `Vec`.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let mut v = zeroed_vec(Op::CopyToHost, self.len())?;
        match &self.storage {
            // A new Vec: ordinary stores (see `Stores::Cached`).
            Storage::Host(h) => self.device.host_run(std::mem::size_of_val(&**h), || {
                crate::par::par_copy_with(&mut v, h, crate::par::Stores::Cached)
            }),
            #[cfg(cpugpu_cuda)]
            Storage::Cuda(_) => self.copy_to_host(&mut v)?,
        }
        Ok(v)
    }

    /// Sets every element to `value`. On CUDA the fill is enqueued on the owning device's
    /// stream; a driver failure is reported by that device's next
    /// [`Device::synchronize`].
    pub fn fill(&mut self, value: T) {
        let (dev, bytes) = (self.device.clone(), self.size_bytes());
        dev.host_run(bytes, || self.view_mut().fill(value))
    }
}

/// `len * size_of::<T>()`, or [`Error::SizeOverflow`](crate::Error::SizeOverflow).
#[cfg(cpugpu_cuda)]
pub(crate) fn bytes_of<T>(op: Op, len: usize) -> Result<usize> {
    len.checked_mul(std::mem::size_of::<T>())
        .ok_or(Error::SizeOverflow {
            op,
            what: "the size in bytes",
        })
}

impl<T: Element> fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("shape", &self.shape)
            .field("dtype", &std::any::type_name::<T>())
            .field("device", &self.device.kind())
            .finish()
    }
}

#[derive(Clone, Copy)]
enum ViewRepr<'a, T> {
    Host(&'a [T]),
    #[cfg(cpugpu_cuda)]
    Cuda(CudaPtr<'a>),
}

enum ViewReprMut<'a, T> {
    Host(&'a mut [T]),
    #[cfg(cpugpu_cuda)]
    Cuda(CudaPtr<'a>),
}

/// A shaped, shared view of device memory: the device-side `&[T]`.
#[derive(Clone, Copy)]
pub struct DeviceView<'a, T> {
    repr: ViewRepr<'a, T>,
    shape: Shape,
}

/// A shaped, exclusive view of device memory: the device-side `&mut [T]`.
pub struct DeviceViewMut<'a, T> {
    repr: ViewReprMut<'a, T>,
    shape: Shape,
}

fn check_len(op: Op, what: &'static str, shape: &Shape, len: usize) -> Result<()> {
    if shape.numel() != len {
        return Err(Error::LengthMismatch {
            op,
            what,
            expected: shape.numel(),
            actual: len,
        });
    }
    Ok(())
}

fn row_range(op: Op, shape: &Shape, rows: &Range<usize>) -> Result<(Shape, Range<usize>)> {
    if rows.start > rows.end || rows.end > shape.rows() {
        return Err(Error::RowRangeOutOfBounds {
            op,
            start: rows.start,
            end: rows.end,
            rows: shape.rows(),
        });
    }
    let rl = shape.row_len();
    // Cannot overflow: end <= rows and rows * row_len = numel fits in usize.
    let elems = rows.start * rl..rows.end * rl;
    Ok((shape.with_rows(op, rows.end - rows.start)?, elems))
}

impl<'a, T: Element> DeviceView<'a, T> {
    /// A view of `data`, whose length is `shape.numel()` (the caller guarantees it).
    pub(crate) fn from_host_parts(data: &'a [T], shape: Shape) -> Self {
        nonzero_size_of::<T>();
        debug_assert_eq!(data.len(), shape.numel());
        DeviceView {
            repr: ViewRepr::Host(data),
            shape,
        }
    }

    /// A view of CUDA memory owned by the caller (a paired buffer's mapped host side).
    #[cfg(cpugpu_cuda)]
    pub(crate) fn cuda_parts(ptr: u64, device: &'a Device, shape: Shape) -> Self {
        let q = match device.cuda_queue(Op::Slice) {
            Ok(q) => q,
            Err(_) => unreachable!("only called for memory of a CUDA device"),
        };
        DeviceView {
            repr: ViewRepr::Cuda(CudaPtr { ptr, q }),
            shape,
        }
    }

    /// A host-backend view of a host slice with the given shape.
    ///
    /// ```
    /// use cpugpu::DeviceView;
    /// let data = [1.0f32, 2.0, 3.0, 4.0];
    /// let v = DeviceView::host(&data, &[2, 2])?;
    /// assert_eq!(v.shape().rows(), 2);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn host(data: &'a [T], shape: &[usize]) -> Result<Self> {
        let shape = Shape::for_op(Op::Slice, shape)?;
        check_len(Op::Slice, "data.len()", &shape, data.len())?;
        Ok(Self::from_host_parts(data, shape))
    }

    /// A one-dimensional host-backend view of a host slice.
    pub fn host_vector(data: &'a [T]) -> Self {
        Self::from_host_parts(data, Shape::vector(data.len()))
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The element count.
    pub fn len(&self) -> usize {
        self.shape.numel()
    }

    /// True when the view has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend whose memory this views.
    pub fn backend(&self) -> BackendKind {
        match self.repr {
            ViewRepr::Host(_) => BackendKind::Host,
            #[cfg(cpugpu_cuda)]
            ViewRepr::Cuda(_) => BackendKind::Cuda,
        }
    }

    /// The memory as a host slice, when it is host-addressable (the host backend).
    pub fn as_host_slice(&self) -> Option<&'a [T]> {
        match self.repr {
            ViewRepr::Host(s) => Some(s),
            #[cfg(cpugpu_cuda)]
            ViewRepr::Cuda(_) => None,
        }
    }

    /// A view of CUDA memory made elsewhere (another library's allocation, a PyTorch tensor's
    /// `data_ptr()`), on `device`'s GPU, with `shape`.
    ///
    /// # Safety
    /// `ptr` must be a device address on `device`'s GPU (or a mapped host address it can read),
    /// aligned for `T`, valid for reads of `shape`'s element count for `'a`, and not written by
    /// anything else while this crate's work on it may run.
    #[cfg(cpugpu_cuda)]
    pub unsafe fn from_raw_cuda(device: &'a Device, ptr: u64, shape: &[usize]) -> Result<Self> {
        let shape = Shape::for_op(Op::Slice, shape)?;
        check_raw::<T>(ptr)?;
        Ok(DeviceView {
            repr: ViewRepr::Cuda(CudaPtr {
                ptr,
                q: device.cuda_queue(Op::Slice)?,
            }),
            shape,
        })
    }

    /// The queue of the device owning a CUDA view's memory.
    #[cfg(cpugpu_cuda)]
    pub(crate) fn cuda_queue(&self) -> Option<&'a crate::cuda::Queue> {
        match self.repr {
            ViewRepr::Cuda(c) => Some(c.q),
            ViewRepr::Host(_) => None,
        }
    }

    /// The device address of a CUDA view (`None` on the host backend), for other libraries'
    /// kernels.
    #[cfg(cpugpu_cuda)]
    pub fn cuda_ptr(&self) -> Option<u64> {
        match self.repr {
            ViewRepr::Cuda(c) => Some(c.ptr),
            ViewRepr::Host(_) => None,
        }
    }

    /// Rows `rows` of the view (axis 0).
    pub fn rows(&self, rows: Range<usize>) -> Result<DeviceView<'a, T>> {
        let (shape, elems) = row_range(Op::Slice, &self.shape, &rows)?;
        Ok(DeviceView {
            repr: match self.repr {
                ViewRepr::Host(s) => ViewRepr::Host(&s[elems]),
                #[cfg(cpugpu_cuda)]
                ViewRepr::Cuda(c) => ViewRepr::Cuda(c.offset::<T>(elems.start)),
            },
            shape,
        })
    }

    /// The same memory with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<DeviceView<'a, T>> {
        let shape = Shape::for_op(Op::Slice, shape)?;
        check_len(Op::Slice, "the view's element count", &shape, self.len())?;
        Ok(DeviceView {
            repr: self.repr,
            shape,
        })
    }

    /// Copies the view into `dst` (exactly [`DeviceView::len`] elements) on the host. On CUDA
    /// this waits for the owning device's stream (and so reports its pending kernel errors, as
    /// [`Device::synchronize`] does).
    pub fn copy_to_host(&self, dst: &mut [T]) -> Result<()> {
        check_len(Op::CopyToHost, "dst.len()", &self.shape, dst.len())?;
        match self.repr {
            ViewRepr::Host(s) => crate::par::par_copy(dst, s),
            #[cfg(cpugpu_cuda)]
            ViewRepr::Cuda(c) => {
                // SAFETY: dst is an exclusive host slice of exactly the view's bytes, and the
                // view's device range holds them; synchronize completes the copy before return.
                unsafe {
                    crate::cuda::copy_dtoh_async(
                        Op::CopyToHost,
                        &c.q.stream,
                        dst.as_mut_ptr().cast(),
                        c.ptr,
                        std::mem::size_of_val(dst),
                    )?
                };
                c.q.synchronize()?;
            }
        }
        Ok(())
    }

    /// Copies this view into `dst` on the device; the element counts must match. On CUDA the
    /// copy is enqueued on the destination's device stream.
    pub fn copy_to(&self, dst: &mut DeviceViewMut<'_, T>) -> Result<()> {
        check_len(Op::CopyToDevice, "dst.len()", &self.shape, dst.len())?;
        match (self.repr, &mut dst.repr) {
            (ViewRepr::Host(s), ViewReprMut::Host(d)) => crate::par::par_copy(d, s),
            #[cfg(cpugpu_cuda)]
            (ViewRepr::Cuda(s), ViewReprMut::Cuda(d)) => {
                let d = *d;
                let joined = d.q.join(Op::CopyDeviceToDevice, &[Some(s.q)])?;
                // SAFETY: both ranges hold len elements; a shared and an exclusive borrow of
                // device memory cannot overlap; the source's stream was ordered before this.
                unsafe {
                    crate::cuda::copy_dtod_async(
                        Op::CopyDeviceToDevice,
                        &d.q.stream,
                        d.ptr,
                        s.ptr,
                        self.len() * std::mem::size_of::<T>(),
                    )?
                };
                joined.finish(d.q)?;
            }
            #[cfg(cpugpu_cuda)]
            (s, _) => {
                return Err(Error::WrongDevice {
                    op: Op::CopyDeviceToDevice,
                    what: "the source",
                    expected: dst.backend().name(),
                    actual: match s {
                        ViewRepr::Host(_) => "host",
                        ViewRepr::Cuda(_) => "cuda",
                    },
                })
            }
        }
        Ok(())
    }

    /// The slice a host-backend operation works on, or [`Error::WrongDevice`](crate::Error::WrongDevice) for CUDA memory.
    #[cfg_attr(not(cpugpu_cuda), allow(unused_variables))]
    pub(crate) fn on_host(&self, op: Op) -> Result<&'a [T]> {
        match self.repr {
            ViewRepr::Host(s) => Ok(s),
            #[cfg(cpugpu_cuda)]
            ViewRepr::Cuda(_) => Err(wrong_for_host(op)),
        }
    }

    /// The CUDA address of this view, or [`Error::WrongDevice`](crate::Error::WrongDevice) when it is host memory or
    /// another GPU's.
    #[cfg(cpugpu_cuda)]
    pub(crate) fn cuda_or(&self, op: Op, what: &'static str, ordinal: u32) -> Result<u64> {
        match self.repr {
            ViewRepr::Cuda(c) if c.q.ctx.ordinal == ordinal => Ok(c.ptr),
            ViewRepr::Cuda(_) => Err(Error::WrongDevice {
                op,
                what,
                expected: "this GPU's",
                actual: "another GPU's",
            }),
            ViewRepr::Host(_) => Err(Error::WrongDevice {
                op,
                what,
                expected: "cuda",
                actual: "host",
            }),
        }
    }
}

#[cfg(cpugpu_cuda)]
fn wrong_for_host(op: Op) -> Error {
    Error::WrongDevice {
        op,
        what: "an operand",
        expected: "host",
        actual: "cuda",
    }
}

/// Alignment check of a caller's raw device pointer.
#[cfg(cpugpu_cuda)]
fn check_raw<T>(ptr: u64) -> Result<()> {
    if !ptr.is_multiple_of(std::mem::align_of::<T>() as u64) {
        return Err(Error::InvalidArgument {
            op: Op::Slice,
            name: "the device pointer",
            value: i128::from(ptr),
            reason: "not aligned for the element type",
        });
    }
    Ok(())
}

impl<'a, T: Element> DeviceViewMut<'a, T> {
    /// A view of `data`, whose length is `shape.numel()` (the caller guarantees it).
    pub(crate) fn from_host_parts(data: &'a mut [T], shape: Shape) -> Self {
        nonzero_size_of::<T>();
        debug_assert_eq!(data.len(), shape.numel());
        DeviceViewMut {
            repr: ViewReprMut::Host(data),
            shape,
        }
    }

    /// A mutable view of CUDA memory owned by the caller (a paired buffer's mapped host side).
    #[cfg(cpugpu_cuda)]
    pub(crate) fn cuda_parts(ptr: u64, device: &'a Device, shape: Shape) -> Self {
        let q = match device.cuda_queue(Op::Slice) {
            Ok(q) => q,
            Err(_) => unreachable!("only called for memory of a CUDA device"),
        };
        DeviceViewMut {
            repr: ViewReprMut::Cuda(CudaPtr { ptr, q }),
            shape,
        }
    }

    /// A host-backend mutable view of a host slice with the given shape.
    pub fn host(data: &'a mut [T], shape: &[usize]) -> Result<Self> {
        let shape = Shape::for_op(Op::Slice, shape)?;
        check_len(Op::Slice, "data.len()", &shape, data.len())?;
        Ok(Self::from_host_parts(data, shape))
    }

    /// A one-dimensional host-backend mutable view of a host slice.
    pub fn host_vector(data: &'a mut [T]) -> Self {
        let shape = Shape::vector(data.len());
        Self::from_host_parts(data, shape)
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The element count.
    pub fn len(&self) -> usize {
        self.shape.numel()
    }

    /// True when the view has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend whose memory this views.
    pub fn backend(&self) -> BackendKind {
        match self.repr {
            ViewReprMut::Host(_) => BackendKind::Host,
            #[cfg(cpugpu_cuda)]
            ViewReprMut::Cuda(_) => BackendKind::Cuda,
        }
    }

    /// A mutable view of CUDA memory made elsewhere, on `device`'s GPU, with `shape`.
    ///
    /// # Safety
    /// As [`DeviceView::from_raw_cuda`], and valid for writes: nothing else reads or writes the
    /// memory while this crate's work on it may run.
    #[cfg(cpugpu_cuda)]
    pub unsafe fn from_raw_cuda(device: &'a Device, ptr: u64, shape: &[usize]) -> Result<Self> {
        let shape = Shape::for_op(Op::Slice, shape)?;
        check_raw::<T>(ptr)?;
        Ok(DeviceViewMut {
            repr: ViewReprMut::Cuda(CudaPtr {
                ptr,
                q: device.cuda_queue(Op::Slice)?,
            }),
            shape,
        })
    }

    /// A shorter-lived mutable view of the same memory (like `&mut *r`).
    pub fn reborrow(&mut self) -> DeviceViewMut<'_, T> {
        DeviceViewMut {
            repr: match &mut self.repr {
                ViewReprMut::Host(s) => ViewReprMut::Host(s),
                #[cfg(cpugpu_cuda)]
                ViewReprMut::Cuda(c) => ViewReprMut::Cuda(*c),
            },
            shape: self.shape,
        }
    }

    /// A shared view of the same memory.
    pub fn as_view(&self) -> DeviceView<'_, T> {
        DeviceView {
            repr: match &self.repr {
                ViewReprMut::Host(s) => ViewRepr::Host(s),
                #[cfg(cpugpu_cuda)]
                ViewReprMut::Cuda(c) => ViewRepr::Cuda(*c),
            },
            shape: self.shape,
        }
    }

    /// The memory as a mutable host slice, when it is host-addressable (the host backend).
    pub fn as_host_slice_mut(&mut self) -> Option<&mut [T]> {
        match &mut self.repr {
            ViewReprMut::Host(s) => Some(s),
            #[cfg(cpugpu_cuda)]
            ViewReprMut::Cuda(_) => None,
        }
    }

    /// Rows `rows` of the view (axis 0), consuming it.
    pub fn into_rows(self, rows: Range<usize>) -> Result<DeviceViewMut<'a, T>> {
        let (shape, elems) = row_range(Op::Slice, &self.shape, &rows)?;
        Ok(DeviceViewMut {
            repr: match self.repr {
                ViewReprMut::Host(s) => ViewReprMut::Host(&mut s[elems]),
                #[cfg(cpugpu_cuda)]
                ViewReprMut::Cuda(c) => ViewReprMut::Cuda(c.offset::<T>(elems.start)),
            },
            shape,
        })
    }

    /// The same memory with another shape of the same element count, consuming the view.
    pub fn into_reshape(self, shape: &[usize]) -> Result<DeviceViewMut<'a, T>> {
        let shape = Shape::for_op(Op::Slice, shape)?;
        check_len(Op::Slice, "the view's element count", &shape, self.len())?;
        Ok(DeviceViewMut {
            repr: self.repr,
            shape,
        })
    }

    /// Copies `src` (exactly [`DeviceViewMut::len`] elements) from the host into the view. On
    /// CUDA it returns once the copy is done, so `src` may be reused at once (for overlapped
    /// uploads from pinned memory use [`CpuGpuBuffer`](crate::CpuGpuBuffer)).
    pub fn copy_from_host(&mut self, src: &[T]) -> Result<()> {
        check_len(Op::CopyToDevice, "src.len()", &self.shape, src.len())?;
        match &mut self.repr {
            ViewReprMut::Host(d) => crate::par::par_copy(d, src),
            #[cfg(cpugpu_cuda)]
            ViewReprMut::Cuda(c) => {
                // SAFETY: src holds exactly the view's bytes and the view's device range is
                // ours to write (exclusive view); the copy completes before this returns.
                unsafe {
                    crate::cuda::copy_htod_sync(
                        Op::CopyToDevice,
                        &c.q.stream,
                        c.ptr,
                        src.as_ptr().cast(),
                        std::mem::size_of_val(src),
                    )?
                };
            }
        }
        Ok(())
    }

    /// Sets every element to `value`. On CUDA the fill is enqueued on the owning device's
    /// stream; a driver failure is reported by its next [`Device::synchronize`].
    pub fn fill(&mut self, value: T) {
        match &mut self.repr {
            ViewReprMut::Host(d) => crate::par::par_fill(d, value),
            #[cfg(cpugpu_cuda)]
            ViewReprMut::Cuda(c) => {
                let (ptr, q, n) = (c.ptr, c.q, self.shape.numel());
                if let Err(e) = crate::cuda::fill::fill(q, ptr, n, value) {
                    q.defer_error(e);
                }
            }
        }
    }

    /// The slice a host-backend operation works on, consuming the view, or
    /// [`Error::WrongDevice`](crate::Error::WrongDevice) for CUDA memory.
    #[cfg_attr(not(cpugpu_cuda), allow(unused_variables))]
    pub(crate) fn into_host(self, op: Op) -> Result<&'a mut [T]> {
        match self.repr {
            ViewReprMut::Host(s) => Ok(s),
            #[cfg(cpugpu_cuda)]
            ViewReprMut::Cuda(_) => Err(wrong_for_host(op)),
        }
    }

    /// The CUDA address of this view, or [`Error::WrongDevice`](crate::Error::WrongDevice).
    #[cfg(cpugpu_cuda)]
    pub(crate) fn cuda_or(&self, op: Op, what: &'static str, ordinal: u32) -> Result<u64> {
        self.as_view().cuda_or(op, what, ordinal)
    }

    /// The device address of a CUDA view (`None` on the host backend).
    #[cfg(cpugpu_cuda)]
    pub fn cuda_ptr(&self) -> Option<u64> {
        self.as_view().cuda_ptr()
    }

    /// The queue of the device owning a CUDA view's memory.
    #[cfg(cpugpu_cuda)]
    pub(crate) fn cuda_queue(&self) -> Option<&'a crate::cuda::Queue> {
        match self.repr {
            ViewReprMut::Cuda(c) => Some(c.q),
            ViewReprMut::Host(_) => None,
        }
    }
}

impl<T: Element> fmt::Debug for DeviceView<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DeviceView<{}>{}",
            std::any::type_name::<T>(),
            self.shape
        )
    }
}

impl<T: Element> fmt::Debug for DeviceViewMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DeviceViewMut<{}>{}",
            std::any::type_name::<T>(),
            self.shape
        )
    }
}

/// The host side of a paired buffer: pageable or pinned host memory. Dereferences to `[T]`.
pub enum HostBuffer<T: Element> {
    /// Pageable memory (cache-line-aligned; huge pages from 4 MiB).
    Pageable(HostVec<T>),
    /// Pinned memory, budgeted by a manager or not.
    Pinned(PinnedBuffer<T>),
}

impl<T: Element> HostBuffer<T> {
    /// A zeroed host buffer of `len` elements at `placement` (`Host`, `Pinned` or `Uva`; a
    /// UVA buffer's host side is pinned memory). With a manager, pinned memory comes from its
    /// budget.
    pub(crate) fn zeroed(
        device: &Device,
        placement: MemoryPlacement,
        len: usize,
        manager: Option<&PinnedMemoryManager>,
    ) -> Result<Self> {
        match (placement, manager) {
            (MemoryPlacement::Host, _) => {
                let bytes = len.saturating_mul(std::mem::size_of::<T>());
                let v = device.host_run(bytes, || HostVec::zeroed_for(Op::Allocate, len));
                Ok(HostBuffer::Pageable(v?))
            }
            (MemoryPlacement::Pinned | MemoryPlacement::Uva, Some(m)) => {
                Ok(HostBuffer::Pinned(m.allocate(len)?))
            }
            (MemoryPlacement::Pinned | MemoryPlacement::Uva, None) => {
                Ok(HostBuffer::Pinned(PinnedBuffer::new_on(device, len)?))
            }
            (MemoryPlacement::Device, _) => Err(Error::UnsupportedPlacement {
                op: Op::Allocate,
                placement,
                reason: "a host buffer cannot live in device memory; use Host, Pinned or Uva",
            }),
        }
    }

    /// True for pinned memory.
    pub fn is_pinned(&self) -> bool {
        matches!(self, HostBuffer::Pinned(_))
    }

    /// Shortens the buffer to `len` elements in place (no effect when it is not longer).
    pub(crate) fn truncate(&mut self, len: usize) {
        match self {
            HostBuffer::Pageable(v) => v.truncate(len),
            HostBuffer::Pinned(p) => p.truncate(len),
        }
    }
}

impl<T: Element> Deref for HostBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            HostBuffer::Pageable(v) => v,
            HostBuffer::Pinned(p) => p,
        }
    }
}

impl<T: Element> DerefMut for HostBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            HostBuffer::Pageable(v) => v,
            HostBuffer::Pinned(p) => p,
        }
    }
}
