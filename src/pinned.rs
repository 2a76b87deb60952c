//! The pinned-memory manager: page-locked host memory under a byte budget.
//!
//! Pinned (page-locked) host memory is what makes host-to-device copies asynchronous and fast,
//! and it is a scarce, system-wide resource: the kernel cannot swap it out. Batching code
//! allocates the same sizes step after step, so [`PinnedMemoryManager`] keeps freed blocks and
//! hands them out again instead of calling the (slow) pinning allocator each time.
//!
//! Unlike PyTorch's caching host allocator, requests are **not** rounded up to a power of two
//! (that rounding doubles pinned memory for unlucky sizes, pytorch/pytorch#95823): a fresh block
//! has exactly the requested size, and a cached block is reused only when it is at most
//! [`REUSE_SLACK_DIVISOR`]-th larger than the request.
//!
//! On a CUDA device the blocks are page-locked and mapped into the device's address space
//! (`cuMemHostAlloc` with `PORTABLE | DEVICEMAP`), so uploads from them are real asynchronous
//! DMA and kernels can read them directly (UVA). On the host backend "pinned" memory is ordinary
//! 256-byte-aligned heap memory with the same accounting and errors, so code written against the
//! manager runs unchanged on any machine.
//!
//! ```
//! use cpugpu::{Device, PinnedMemoryManager, Error};
//!
//! let mgr = PinnedMemoryManager::new(&Device::host(), 1 << 20);
//! let mut a = mgr.allocate::<f32>(1024)?;          // 4 KiB
//! a.fill(1.0);
//! assert_eq!(mgr.allocated_bytes(), 4096);
//! drop(a);                                           // back to the cache, not to the OS
//! assert_eq!(mgr.allocated_bytes(), 0);
//! let b = mgr.allocate::<u32>(1024)?;               // the same block, reused and zeroed
//! assert!(b.iter().all(|&x| x == 0));
//! assert_eq!(mgr.stats().reuses, 1);
//!
//! match mgr.allocate::<u8>(2 << 20) {
//!     Err(Error::PinnedBudgetExceeded { requested, available, .. }) => {
//!         assert_eq!((requested, available), (2 << 20, (1 << 20) - 4096));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), cpugpu::Error>(())
//! ```

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::device::Device;
use crate::element::{nonzero_size_of, Element};
use crate::error::{Error, Op, Result};

/// The least alignment of every pinned block, as `cudaHostAlloc` gives (and enough for 16-byte
/// vector loads). Host-backend blocks of 4 MiB or more start on a 2 MiB huge page.
pub const PINNED_ALIGN: usize = 256;

/// A cached block of `s` bytes serves a request of `r` bytes when `r <= s <= r + r / 4`.
pub const REUSE_SLACK_DIVISOR: usize = 4;

/// The alignment of a host-backend block of `bytes` bytes: [`PINNED_ALIGN`], or a 2 MiB huge
/// page from [`HUGE_PAGE_MIN_BYTES`](crate::HUGE_PAGE_MIN_BYTES) (the block is then advised onto
/// transparent huge pages, as a [`HostVec`](crate::HostVec) is). Under Miri, always
/// `PINNED_ALIGN`.
fn heap_align(bytes: usize) -> usize {
    if bytes >= crate::host_vec::HUGE_PAGE_MIN_BYTES && !cfg!(miri) {
        2 << 20
    } else {
        PINNED_ALIGN
    }
}

/// One page-locked allocation. Freed on drop.
pub(crate) struct RawBlock {
    ptr: NonNull<u8>,
    bytes: usize,
    /// The CUDA allocation behind `ptr` (None: 256-byte-aligned heap memory, host backend).
    #[cfg(cpugpu_cuda)]
    cuda: Option<crate::cuda::HostAlloc>,
}

// SAFETY: a RawBlock is the unique owner of its allocation; the memory is plain bytes with no
// thread affinity, so moving or sharing the owner across threads is sound.
unsafe impl Send for RawBlock {}
// SAFETY: &RawBlock exposes only the pointer value and size; reads/writes go through the
// borrow-checked PinnedBuffer that owns it.
unsafe impl Sync for RawBlock {}

impl RawBlock {
    /// A zeroed block of `bytes` (> 0) bytes: page-locked and mapped on a CUDA device, heap
    /// memory on the host backend.
    fn new(device: &Device, bytes: usize) -> Result<Self> {
        debug_assert!(bytes > 0);
        #[cfg(cpugpu_cuda)]
        if let Ok(q) = device.cuda_queue(Op::PinnedAllocate) {
            let a = crate::cuda::HostAlloc::new(Op::PinnedAllocate, &q.ctx, bytes, 0)?;
            let ptr = NonNull::new(a.ptr).ok_or(Error::OutOfMemory {
                op: Op::PinnedAllocate,
                bytes,
            })?;
            return Ok(RawBlock {
                ptr,
                bytes,
                cuda: Some(a),
            });
        }
        // Fails only when `bytes`, rounded up to the alignment, exceeds isize::MAX.
        let layout = Layout::from_size_align(bytes, heap_align(bytes)).map_err(|_| {
            Error::AllocationTooLarge {
                op: Op::PinnedAllocate,
                bytes,
                max: isize::MAX as usize,
            }
        })?;
        // The layout has a non-zero size (bytes > 0, checked by every caller). From 4 MiB the
        // block is advised onto huge pages before it is zeroed (on the device's pool).
        let ptr = device
            .host_run(bytes, || {
                crate::host_vec::alloc_zeroed_advised(layout)
                    .map(|p| crate::par::SharedPtr::new(p.as_ptr()))
            })
            .and_then(|p| NonNull::new(p.get()))
            .ok_or(Error::OutOfMemory {
                op: Op::PinnedAllocate,
                bytes,
            })?;
        Ok(RawBlock {
            ptr,
            bytes,
            #[cfg(cpugpu_cuda)]
            cuda: None,
        })
    }

    /// The device address of a CUDA block (mapped memory), if it is one.
    #[cfg(cpugpu_cuda)]
    pub(crate) fn device_ptr(&self, op: Op) -> Option<Result<u64>> {
        self.cuda.as_ref().map(|a| a.device_ptr(op))
    }

    fn zero(&mut self) {
        // SAFETY: ptr is valid for writes of `bytes` bytes (allocated with that size) and we hold
        // the block uniquely (&mut self).
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, self.bytes) };
    }
}

impl Drop for RawBlock {
    fn drop(&mut self) {
        #[cfg(cpugpu_cuda)]
        if self.cuda.is_some() {
            return; // the HostAlloc frees itself
        }
        // SAFETY: ptr was returned by alloc_zeroed with exactly this layout (the size and
        // alignment were validated when the block was made) and is freed only here, once.
        unsafe {
            std::alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.bytes, heap_align(self.bytes)),
            )
        };
    }
}

#[derive(Default)]
struct State {
    budget: usize,
    allocated: usize,
    cached_bytes: usize,
    /// Free blocks by size.
    cache: BTreeMap<usize, Vec<RawBlock>>,
    allocations: u64,
    reuses: u64,
    evictions: u64,
}

impl State {
    /// Frees cached blocks, largest first, until `need` more bytes fit in the budget.
    /// The evicted blocks are returned so that the caller frees them after unlocking.
    fn evict_for(&mut self, need: usize) -> Vec<RawBlock> {
        let mut evicted = Vec::new();
        // Checked: near usize::MAX the sum can overflow, which means "does not fit".
        let fits = |st: &Self| {
            st.allocated
                .checked_add(st.cached_bytes)
                .and_then(|b| b.checked_add(need))
                .is_some_and(|total| total <= st.budget)
        };
        while !fits(self) {
            let Some(mut entry) = self.cache.last_entry() else {
                break;
            };
            let block = entry.get_mut().pop();
            if entry.get().is_empty() {
                entry.remove();
            }
            if let Some(block) = block {
                self.cached_bytes -= block.bytes;
                self.evictions += 1;
                evicted.push(block);
            }
        }
        evicted
    }

    /// The smallest cached block that serves `bytes`.
    fn take_cached(&mut self, bytes: usize) -> Option<RawBlock> {
        let max = bytes.saturating_add(bytes / REUSE_SLACK_DIVISOR);
        let (&size, _) = self.cache.range(bytes..=max).next()?;
        let list = self.cache.get_mut(&size)?;
        let block = list.pop();
        if list.is_empty() {
            self.cache.remove(&size);
        }
        block
    }
}

/// A byte budget of pinned host memory, shared by clones (it is an `Arc` inside).
///
/// Allocation returns a [`PinnedBuffer`], or [`Error::PinnedBudgetExceeded`](crate::Error::PinnedBudgetExceeded) stating the
/// requested and the available bytes. A buffer returns its block to the manager when dropped, so
/// nothing can leak; the block is then reused by a later request that fits.
#[derive(Clone)]
pub struct PinnedMemoryManager {
    state: Arc<Mutex<State>>,
    device: Device,
}

impl PinnedMemoryManager {
    /// A manager that lets at most `budget_bytes` of pinned memory exist at once (blocks in use
    /// plus blocks cached for reuse).
    pub fn new(device: &Device, budget_bytes: usize) -> Self {
        PinnedMemoryManager {
            state: Arc::new(Mutex::new(State {
                budget: budget_bytes,
                ..State::default()
            })),
            device: device.clone(),
        }
    }

    /// The device this manager pins memory for.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// A zeroed buffer of `len` elements.
    ///
    /// Errors: [`Error::PinnedBudgetExceeded`](crate::Error::PinnedBudgetExceeded) when `len * size_of::<T>()` bytes do not fit in
    /// the budget next to the blocks in use; [`Error::SizeOverflow`](crate::Error::SizeOverflow) when that product overflows.
    pub fn allocate<T: Element>(&self, len: usize) -> Result<PinnedBuffer<T>> {
        check_align::<T>(Op::PinnedAllocate)?;
        let bytes = len
            .checked_mul(nonzero_size_of::<T>())
            .ok_or(Error::SizeOverflow {
                op: Op::PinnedAllocate,
                what: "len * size_of::<T>()",
            })?;
        if bytes == 0 {
            return Ok(PinnedBuffer::empty(len));
        }
        // Only bookkeeping happens under the lock; zeroing, allocating and freeing memory (slow
        // for large blocks, and a driver call on a GPU) happen after it is released, so one
        // thread's big request does not stall every other thread's small one.
        let mut st = self.lock();
        let block = if let Some(mut block) = st.take_cached(bytes) {
            st.cached_bytes -= block.bytes;
            st.allocated += block.bytes;
            st.reuses += 1;
            drop(st);
            block.zero();
            block
        } else {
            let available = st.budget.saturating_sub(st.allocated);
            if bytes > available {
                return Err(Error::PinnedBudgetExceeded {
                    op: Op::PinnedAllocate,
                    requested: bytes,
                    available,
                    budget: st.budget,
                });
            }
            let evicted = st.evict_for(bytes);
            st.allocated += bytes; // reserved now, so concurrent requests see it
            drop(st);
            drop(evicted);
            match RawBlock::new(&self.device, bytes) {
                Ok(block) => {
                    self.lock().allocations += 1; // counted only once the block exists
                    block
                }
                Err(e) => {
                    self.lock().allocated -= bytes;
                    return Err(e);
                }
            }
        };
        Ok(PinnedBuffer {
            block: Some(block),
            len,
            home: Some(self.state.clone()),
            _t: std::marker::PhantomData,
        })
    }

    /// Frees `buf` now (the same as dropping it): its block goes back to the cache.
    pub fn free<T: Element>(&self, buf: PinnedBuffer<T>) {
        drop(buf);
    }

    /// Releases every cached block to the system. Buffers in use are not affected.
    pub fn clear(&self) {
        let mut st = self.lock();
        let cache = std::mem::take(&mut st.cache);
        st.cached_bytes = 0;
        drop(st);
        drop(cache); // freed after unlocking, as evicted blocks are
    }

    /// Bytes held by live buffers.
    pub fn allocated_bytes(&self) -> usize {
        self.lock().allocated
    }

    /// Bytes a new request can get: the budget less the bytes in use (cached blocks are evicted
    /// on demand).
    pub fn available_bytes(&self) -> usize {
        let st = self.lock();
        st.budget.saturating_sub(st.allocated)
    }

    /// Bytes in freed blocks kept for reuse.
    pub fn cached_bytes(&self) -> usize {
        self.lock().cached_bytes
    }

    /// The byte budget.
    pub fn budget_bytes(&self) -> usize {
        self.lock().budget
    }

    /// A snapshot of the manager's counters.
    pub fn stats(&self) -> PinnedStats {
        let st = self.lock();
        PinnedStats {
            budget_bytes: st.budget,
            allocated_bytes: st.allocated,
            cached_bytes: st.cached_bytes,
            available_bytes: st.budget.saturating_sub(st.allocated),
            fresh_allocations: st.allocations,
            reuses: st.reuses,
            evictions: st.evictions,
        }
    }
}

impl fmt::Debug for PinnedMemoryManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedMemoryManager")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counters of a [`PinnedMemoryManager`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinnedStats {
    /// The budget.
    pub budget_bytes: usize,
    /// Bytes held by live buffers.
    pub allocated_bytes: usize,
    /// Bytes in freed blocks kept for reuse.
    pub cached_bytes: usize,
    /// What a new request can get.
    pub available_bytes: usize,
    /// Requests served by a fresh block.
    pub fresh_allocations: u64,
    /// Requests served by a cached block.
    pub reuses: u64,
    /// Cached blocks released to make room.
    pub evictions: u64,
}

impl fmt::Display for PinnedStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pinned: {} of {} bytes in use, {} cached, {} available; {} fresh, {} reused, {} evicted",
            self.allocated_bytes,
            self.budget_bytes,
            self.cached_bytes,
            self.available_bytes,
            self.fresh_allocations,
            self.reuses,
            self.evictions
        )
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave State inconsistent in a way that matters for
    // memory safety (blocks are owned values), so recover from poisoning instead of panicking.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn check_align<T>(op: Op) -> Result<()> {
    if std::mem::align_of::<T>() > PINNED_ALIGN {
        return Err(Error::InvalidArgument {
            op,
            name: "align_of::<T>()",
            value: std::mem::align_of::<T>() as i128,
            reason: "element alignment exceeds the 256-byte pinned block alignment",
        });
    }
    Ok(())
}

/// A typed buffer of pinned host memory. Dereferences to `[T]`.
///
/// Made by [`PinnedMemoryManager::allocate`] (counted against its budget, returned to it on
/// drop) or by [`PinnedBuffer::new`] (not counted, freed on drop).
pub struct PinnedBuffer<T: Element> {
    block: Option<RawBlock>,
    len: usize,
    home: Option<Arc<Mutex<State>>>,
    _t: std::marker::PhantomData<T>,
}

impl<T: Element> PinnedBuffer<T> {
    /// A buffer that needs no memory: `len == 0` (element types are never zero-sized).
    fn empty(len: usize) -> Self {
        PinnedBuffer {
            block: None,
            len,
            home: None,
            _t: std::marker::PhantomData,
        }
    }

    /// A zeroed pinned buffer of `len` elements outside any manager's budget, as heap memory
    /// (no device to pin it for; see [`PinnedBuffer::new_on`]).
    pub fn new(len: usize) -> Result<Self> {
        Self::new_on(&Device::host(), len)
    }

    /// A zeroed pinned buffer of `len` elements for `device`, outside any manager's budget:
    /// page-locked and mapped on a CUDA device, heap memory on the host backend.
    pub fn new_on(device: &Device, len: usize) -> Result<Self> {
        check_align::<T>(Op::Allocate)?;
        let bytes = len
            .checked_mul(nonzero_size_of::<T>())
            .ok_or(Error::SizeOverflow {
                op: Op::Allocate,
                what: "len * size_of::<T>()",
            })?;
        if bytes == 0 {
            return Ok(Self::empty(len));
        }
        Ok(PinnedBuffer {
            block: Some(RawBlock::new(device, bytes).map_err(|e| e.in_op(Op::Allocate))?),
            len,
            home: None,
            _t: std::marker::PhantomData,
        })
    }

    /// Bytes of the underlying block (at least `len * size_of::<T>()`).
    pub fn block_bytes(&self) -> usize {
        self.block.as_ref().map_or(0, |b| b.bytes)
    }

    /// The device address of page-locked, mapped (CUDA) memory; `None` for heap memory.
    #[cfg(cpugpu_cuda)]
    pub(crate) fn device_ptr(&self, op: Op) -> Option<Result<u64>> {
        self.block.as_ref().and_then(|b| b.device_ptr(op))
    }

    /// True when the block is page-locked by a CUDA driver.
    pub fn is_page_locked(&self) -> bool {
        #[cfg(cpugpu_cuda)]
        if let Some(b) = &self.block {
            return b.cuda.is_some();
        }
        false
    }

    /// True when the buffer counts against a manager's budget.
    pub fn is_managed(&self) -> bool {
        self.home.is_some()
    }

    /// Shortens the buffer to `len` elements (no effect when it is not longer), keeping its
    /// block: nothing is allocated or freed, and the block counts against the budget as before
    /// ([`block_bytes`](Self::block_bytes) is unchanged) until the buffer is dropped.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl<T: Element> Deref for PinnedBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.block {
            // SAFETY: the block holds at least len * size_of::<T>() bytes (checked at
            // allocation, a reused block is never smaller than the request, and `truncate` only
            // ever lowers len), is aligned to PINNED_ALIGN >= align_of::<T>() (check_align), was
            // zeroed or written through this buffer, and T: Pod accepts any byte pattern. The
            // shared borrow of self keeps it alive and unaliased by writers.
            Some(b) => unsafe { std::slice::from_raw_parts(b.ptr.as_ptr() as *const T, self.len) },
            // SAFETY: no block means `len * size_of::<T>() == 0`, so the slice has no bytes, and
            // a dangling, aligned pointer is valid for such a slice.
            None => unsafe {
                std::slice::from_raw_parts(NonNull::<T>::dangling().as_ptr(), self.len)
            },
        }
    }
}

impl<T: Element> DerefMut for PinnedBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.block {
            // SAFETY: as in deref; &mut self makes this the only reference into the block.
            Some(b) => unsafe {
                std::slice::from_raw_parts_mut(b.ptr.as_ptr() as *mut T, self.len)
            },
            // SAFETY: as in deref.
            None => unsafe {
                std::slice::from_raw_parts_mut(NonNull::<T>::dangling().as_ptr(), self.len)
            },
        }
    }
}

impl<T: Element> Drop for PinnedBuffer<T> {
    fn drop(&mut self) {
        let (Some(block), Some(home)) = (self.block.take(), self.home.take()) else {
            return; // unmanaged: RawBlock frees itself
        };
        let mut st = lock(&home);
        // The block stays counted: it moves from "in use" to "cached".
        st.allocated -= block.bytes;
        st.cached_bytes += block.bytes;
        st.cache.entry(block.bytes).or_default().push(block);
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for PinnedBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedBuffer")
            .field("len", &self.len)
            .field("block_bytes", &self.block_bytes())
            .field("managed", &self.is_managed())
            .finish()
    }
}
