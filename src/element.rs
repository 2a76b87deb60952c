//! What the operations move: plain-old-data elements, and the integer types of indices and
//! offsets.

use std::fmt::Debug;

/// An element the operations can move: any [`bytemuck::Pod`] type of 1, 2, 4, 8 or 16 bytes.
///
/// That covers `u8`, `i16`, [`half::f16`], [`half::bf16`], `f32`, `i32`, `f64`, `i64`, `u128`,
/// `[f32; 4]` and user `#[repr(C)]` structs deriving `Pod`. The data-movement kernels care about
/// the element's *size*, not its type, and are built for exactly these widths.
///
/// Every type that is `Pod + Send + Sync` implements `Element`; the width is checked at compile
/// time when an operation is instantiated, so a 3-byte element fails to build:
///
/// ```compile_fail
/// let src = [[0u8; 3]; 4];
/// let mut dst = [[0u8; 3]; 2];
/// cpugpu::host::gather_rows_into(&src, &[4, 1][..], &[0i32, 1], &mut dst, Default::default())
///     .unwrap();
/// ```
///
/// A zero-sized type (`()`, `[f32; 0]`) is `Pod` too, but no buffer, view, pool slot or pinned
/// allocation of one can be made: every constructor rejects it at compile time.
///
/// ```compile_fail,E0080
/// use cpugpu::{CpuGpuBuffer, Device, MemoryPlacement};
/// let b = CpuGpuBuffer::<()>::new(&Device::host(), "zst", &[usize::MAX], MemoryPlacement::Host);
/// ```
pub trait Element: bytemuck::Pod + Send + Sync + 'static {}

impl<T: bytemuck::Pod + Send + Sync + 'static> Element for T {}

/// The byte width of `T`, rejected at compile time unless it is 1, 2, 4, 8 or 16.
#[inline(always)]
pub(crate) const fn width_of<T: Element>() -> usize {
    const {
        let w = std::mem::size_of::<T>();
        assert!(
            w == 1 || w == 2 || w == 4 || w == 8 || w == 16,
            "cpugpu elements must be 1, 2, 4, 8 or 16 bytes wide"
        );
        w
    }
}

/// `size_of::<T>()`, rejected at compile time when it is 0.
///
/// A zero-sized element would let a buffer of `usize::MAX` elements exist without memory, and
/// every per-element loop over it (fill, reset, a pool's zeroing) would then run 2^64 times.
/// Every constructor of a buffer or view calls this, so such a buffer cannot be made.
#[inline(always)]
pub(crate) const fn nonzero_size_of<T>() -> usize {
    const {
        let s = std::mem::size_of::<T>();
        assert!(s > 0, "cpugpu elements cannot be zero-sized");
        s
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
}

/// The integer type of indices and offsets: `i32` or `i64`.
///
/// Signed, because a negative index means "padding" under
/// [`GatherPolicy::NegativeFill`](crate::GatherPolicy::NegativeFill) and
/// [`ScatterPolicy::NegativeSkip`](crate::ScatterPolicy::NegativeSkip), as in vLLM's slot
/// mapping. Sealed: the kernels are built for these two types only.
pub trait Index:
    bytemuck::Pod + Copy + Default + Debug + PartialOrd + Send + Sync + 'static + sealed::Sealed
{
    /// `"i32"` or `"i64"`.
    const NAME: &'static str;
    /// The largest value of the type, as `i64`.
    const MAX: i64;
    /// Widens to `i64` (lossless).
    fn to_i64(self) -> i64;
    /// Narrows from `i64`, or `None` when `v` does not fit.
    fn from_i64(v: i64) -> Option<Self>;
    /// Narrows from `i64` keeping the low bits (`v as i32`): for values already known to fit.
    #[doc(hidden)]
    fn from_i64_unchecked_fit(v: i64) -> Self;
}

impl Index for i32 {
    const NAME: &'static str = "i32";
    const MAX: i64 = i32::MAX as i64;
    #[inline(always)]
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    #[inline(always)]
    fn from_i64(v: i64) -> Option<Self> {
        i32::try_from(v).ok()
    }
    #[inline(always)]
    fn from_i64_unchecked_fit(v: i64) -> Self {
        v as i32
    }
}

impl Index for i64 {
    const NAME: &'static str = "i64";
    const MAX: i64 = i64::MAX;
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self
    }
    #[inline(always)]
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
    #[inline(always)]
    fn from_i64_unchecked_fit(v: i64) -> Self {
        v
    }
}

/// Offsets use the same two integer types as indices.
pub use self::Index as Offset;

/// Zero-sized elements are rejected at compile time by every way to make memory of them (each
/// block below must fail to build with a const-evaluation error, E0080); the same calls with a
/// one-byte element build and run:
///
/// ```
/// use cpugpu::*;
/// let dev = Device::host();
/// let mut b = CpuGpuBuffer::<u8>::new(&dev, "b", &[4], MemoryPlacement::Pinned)?;
/// b.fill(1);
/// dev.alloc::<u8>(&[4])?.fill(2);
/// dev.upload(&[0u8; 4], &[4])?;
/// UvaBufferPool::new(&dev, 1).allocate::<u8>("p", &[4])?;
/// PinnedMemoryManager::new(&dev, 64).allocate::<u8>(4)?;
/// PinnedBuffer::<u8>::new(4)?;
/// DeviceViewMut::host_vector(&mut [0u8; 4]).fill(3);
/// let _ = DeviceView::host_vector(&[0u8; 4]);
/// # Ok::<(), cpugpu::Error>(())
/// ```
///
/// ```compile_fail,E0080
/// let dev = cpugpu::Device::host();
/// let mut b = cpugpu::CpuGpuBuffer::<()>::new(&dev, "b", &[usize::MAX], cpugpu::MemoryPlacement::Host)?;
/// b.fill(());
/// # Ok::<(), cpugpu::Error>(())
/// ```
///
/// ```compile_fail,E0080
/// cpugpu::Device::host().alloc::<()>(&[usize::MAX])?.fill(());
/// # Ok::<(), cpugpu::Error>(())
/// ```
///
/// ```compile_fail,E0080
/// cpugpu::Device::host().upload(&[(); 4], &[4])?;
/// # Ok::<(), cpugpu::Error>(())
/// ```
///
/// ```compile_fail,E0080
/// let pool = cpugpu::UvaBufferPool::new(&cpugpu::Device::host(), 1);
/// pool.allocate::<()>("p", &[usize::MAX])?;
/// # Ok::<(), cpugpu::Error>(())
/// ```
///
/// ```compile_fail,E0080
/// let m = cpugpu::PinnedMemoryManager::new(&cpugpu::Device::host(), 64);
/// m.allocate::<()>(usize::MAX)?;
/// # Ok::<(), cpugpu::Error>(())
/// ```
///
/// ```compile_fail,E0080
/// cpugpu::PinnedBuffer::<()>::new(usize::MAX)?;
/// # Ok::<(), cpugpu::Error>(())
/// ```
///
/// ```compile_fail,E0080
/// cpugpu::DeviceViewMut::host_vector(&mut [(); usize::MAX]).fill(());
/// ```
///
/// ```compile_fail,E0080
/// let _ = cpugpu::DeviceView::host_vector(&[(); 8]);
/// ```
#[cfg(doctest)]
pub struct ZeroSizedElementsDoNotBuild;
