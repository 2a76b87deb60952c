//! [`HostVec`]: the host memory the crate allocates for its own buffers.
//!
//! Random row reads and full-line streaming stores care where memory starts. A `Vec` of 64 MiB
//! from glibc starts 16 bytes into a page, so every 64-byte row straddles two cache lines, and
//! its pages are 4 KiB unless someone advises otherwise, so a random row read misses the TLB.
//! Measured on the 2-core x86-64 VM of `BENCHMARKS.md` (a scratch program gathering 1,048,576
//! rows of 64 bytes in a random order on 2 threads, streaming stores and prefetch on, 2026-12-01):
//! 5.76 ms on cache-line-aligned 4 KiB pages, 4.69 ms on huge pages starting 16 bytes into a
//! line, 3.07 ms on both, against 2.54 ms for a parallel copy of the same rows.
//!
//! So a [`HostVec`] starts on a cache line (64 bytes) and, from [`HUGE_PAGE_MIN_BYTES`], on a
//! 2 MiB boundary with the whole block advised onto transparent huge pages.

use std::alloc::Layout;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::element::{nonzero_size_of, Element};
use crate::error::{Error, Op, Result};

/// Blocks of at least this many bytes are 2 MiB-aligned and advised onto transparent huge pages
/// (numpy advises its arrays from 4 MiB too).
pub const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// The alignment of every [`HostVec`] below [`HUGE_PAGE_MIN_BYTES`]: one cache line.
pub const HOST_ALIGN: usize = 64;

const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length, zero-initialised host array that starts on a cache line, and, when it holds
/// [`HUGE_PAGE_MIN_BYTES`] or more, on a 2 MiB boundary with transparent huge pages requested
/// (Linux; elsewhere and where the kernel says no, ordinary pages). Dereferences to `[T]`.
///
/// The host backend's [`DeviceBuffer`](crate::DeviceBuffer)s and the pageable host side of a
/// [`CpuGpuBuffer`](crate::CpuGpuBuffer) live in one. Batching code that keeps its own large
/// host arrays for the `host` functions can allocate them the same way:
///
/// ```
/// use cpugpu::HostVec;
/// let mut rows = HostVec::<f32>::zeroed(1 << 20)?;
/// rows[3] = 1.5;
/// assert_eq!(rows.as_ptr() as usize % 64, 0);
/// assert_eq!(rows.iter().sum::<f32>(), 1.5);
/// # Ok::<(), cpugpu::Error>(())
/// ```
pub struct HostVec<T: Element> {
    ptr: NonNull<T>,
    len: usize,
    /// The layout the block was allocated with (size 0: nothing allocated, `ptr` dangling).
    layout: Layout,
}

// SAFETY: a HostVec uniquely owns its block of plain-data `T` (`Element: Send + Sync`), like a
// `Vec<T>`; nothing in it is tied to a thread.
unsafe impl<T: Element> Send for HostVec<T> {}
// SAFETY: shared access hands out only `&[T]`, which is `Sync` because `T: Sync`.
unsafe impl<T: Element> Sync for HostVec<T> {}

impl<T: Element> HostVec<T> {
    /// `len` zeroed elements (an all-zero `T` is valid: `T: Pod`).
    ///
    /// # Errors
    /// [`Error::SizeOverflow`] when `len * size_of::<T>()` overflows, [`Error::AllocationTooLarge`]
    /// past `isize::MAX` bytes, [`Error::OutOfMemory`] when the system refuses; all name
    /// [`Op::Allocate`].
    pub fn zeroed(len: usize) -> Result<Self> {
        Self::zeroed_for(Op::Allocate, len)
    }

    /// [`HostVec::zeroed`], with errors naming `op`.
    pub(crate) fn zeroed_for(op: Op, len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(nonzero_size_of::<T>())
            .ok_or(Error::SizeOverflow {
                op,
                what: "the host buffer's size in bytes",
            })?;
        if bytes == 0 {
            return Ok(HostVec {
                ptr: NonNull::dangling(),
                len,
                layout: Layout::new::<()>(),
            });
        }
        let align = if bytes >= HUGE_PAGE_MIN_BYTES && !cfg!(miri) {
            HUGE_PAGE
        } else {
            HOST_ALIGN
        }
        .max(std::mem::align_of::<T>());
        let layout =
            Layout::from_size_align(bytes, align).map_err(|_| Error::AllocationTooLarge {
                op,
                bytes,
                max: isize::MAX as usize,
            })?;
        let ptr = alloc_zeroed_advised(layout).ok_or(Error::OutOfMemory { op, bytes })?;
        Ok(HostVec {
            ptr: ptr.cast::<T>(),
            len,
            layout,
        })
    }

    /// Takes over a `Vec`'s block as it is (its alignment, its pages): the allocating host
    /// functions return `Vec`s, and wrapping one copies nothing.
    pub(crate) fn from_vec(v: Vec<T>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        let (len, cap) = (v.len(), v.capacity());
        // A Vec of a non-zero-sized T with capacity `cap` > 0 was allocated by the global
        // allocator with `Layout::array::<T>(cap)` (the layout `Vec` documents); capacity 0
        // allocated nothing.
        let layout = match Layout::array::<T>(cap) {
            Ok(l) if cap > 0 => l,
            _ => Layout::new::<()>(),
        };
        HostVec {
            // A Vec's pointer is never null (dangling and aligned when nothing is allocated).
            ptr: NonNull::new(v.as_mut_ptr()).unwrap_or(NonNull::dangling()),
            len,
            layout,
        }
    }

    /// A copy of `data` in a new `HostVec`.
    pub(crate) fn copied_from(op: Op, data: &[T]) -> Result<Self> {
        let mut v = Self::zeroed_for(op, data.len())?;
        crate::par::par_copy_with(&mut v, data, crate::par::Stores::Cached);
        Ok(v)
    }

    /// Shortens the array to `len` elements (no effect when it is not longer). The memory stays
    /// allocated until the `HostVec` is dropped.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// A zeroed block of `layout` (non-zero size) from the global allocator, advised onto
/// transparent huge pages from [`HUGE_PAGE_MIN_BYTES`]; `None` when the allocator refuses.
/// Free it with `dealloc(ptr, layout)`.
///
/// The advice must come before the first write to a page, or the page is already a 4 KiB one
/// (`alloc_zeroed` of an over-aligned layout writes its zeroes itself). So a large block is
/// allocated, advised, then zeroed (in parallel when large).
pub(crate) fn alloc_zeroed_advised(layout: Layout) -> Option<NonNull<u8>> {
    let bytes = layout.size();
    debug_assert!(bytes > 0);
    if bytes < HUGE_PAGE_MIN_BYTES {
        // SAFETY: the caller's layout has a non-zero size.
        return NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) });
    }
    // SAFETY: the caller's layout has a non-zero size.
    let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) })?;
    advise_huge_range(ptr.as_ptr() as usize, bytes);
    // SAFETY: `ptr` is valid for writes of `bytes` bytes (just allocated with that size) and
    // nothing else refers to it yet.
    unsafe { crate::par::zero_raw(ptr.as_ptr(), bytes) };
    Some(ptr)
}

impl<T: Element> Drop for HostVec<T> {
    fn drop(&mut self) {
        if self.layout.size() != 0 {
            // SAFETY: `ptr` is a block the global allocator gave with `self.layout` (from
            // `alloc_zeroed_advised`, or a `Vec`'s block whose layout `from_vec` rebuilt), and it
            // is freed only here, once.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), self.layout) };
        }
    }
}

impl<T: Element> Deref for HostVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` is valid for reads of `len` initialised `T` (zeroed at allocation or a
        // `Vec`'s initialised elements, and `len` only shrinks) or dangling-and-aligned with a
        // zero-byte block, and the memory is borrowed through `&self` for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Element> DerefMut for HostVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Element> fmt::Debug for HostVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostVec")
            .field("len", &self.len)
            .field("align", &self.layout.align())
            .finish()
    }
}

/// Asks the kernel to back the 2 MiB-aligned part of `v` with huge pages (a hint; Linux only).
pub(crate) fn advise_huge_pages<T>(v: &mut [T]) {
    advise_huge_range(v.as_mut_ptr() as usize, std::mem::size_of_val(v));
}

/// [`advise_huge_pages`] for the `len` bytes at address `start`, which the caller owns.
#[cfg(target_os = "linux")]
fn advise_huge_range(start: usize, len: usize) {
    extern "C" {
        // From the C library std links on Linux: `int madvise(void *, size_t, int)`.
        fn madvise(
            addr: *mut std::ffi::c_void,
            len: usize,
            advice: std::ffi::c_int,
        ) -> std::ffi::c_int;
    }
    const MADV_HUGEPAGE: std::ffi::c_int = 14;
    let end = start + len;
    let (Some(a), b) = (
        start.checked_next_multiple_of(HUGE_PAGE),
        end - end % HUGE_PAGE,
    ) else {
        return;
    };
    // Miri cannot run the system call; the range arithmetic above still runs under it.
    if b > a && !cfg!(miri) {
        // SAFETY: `a..b` lies inside the caller's allocation (`start..start + len`), and `a`
        // is page-aligned as madvise requires. MADV_HUGEPAGE only hints
        // which pages back the range; it never changes the memory's contents or mapping as the
        // program sees it. The result is ignored on purpose: without transparent huge pages the
        // call fails (EINVAL) and nothing changes.
        unsafe { madvise(a as *mut std::ffi::c_void, b - a, MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_range(_: usize, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_length_and_zeroes() {
        for len in [0usize, 1, 15, 16, 1000, (HUGE_PAGE_MIN_BYTES / 4) + 3] {
            let v = HostVec::<u32>::zeroed(len).unwrap();
            assert_eq!(v.len(), len);
            if len > 0 {
                let want = if len * 4 >= HUGE_PAGE_MIN_BYTES && !cfg!(miri) {
                    HUGE_PAGE
                } else {
                    HOST_ALIGN
                };
                assert_eq!(v.as_ptr() as usize % want, 0, "len {len}");
            }
            assert!(v.iter().all(|&x| x == 0));
        }
        let mut v = HostVec::<u8>::zeroed(10).unwrap();
        v.truncate(4);
        assert_eq!(v.len(), 4);
        v.truncate(9);
        assert_eq!(v.len(), 4);
        assert_eq!(
            HostVec::<u64>::zeroed(usize::MAX / 4).unwrap_err(),
            Error::SizeOverflow {
                op: Op::Allocate,
                what: "the host buffer's size in bytes"
            }
        );
    }
}
