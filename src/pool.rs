//! A pool of named paired buffers reused across steps, with a round-robin depth.
//!
//! Batching code asks for the same buffers (`"input_ids"`, `"positions"`, `"slot_mapping"`, ...)
//! every step. [`UvaBufferPool`] keeps them by name and element type. Each name has `depth`
//! slots (vLLM's `max_concurrency`): step *k* gets one slot, step *k + 1* the next, so the host
//! can prepare step *k + 1* while step *k*'s copies are still in flight.
//!
//! A slot is handed out as a [`PoolBuffer`] guard that owns it. While the guard lives no other
//! step can get that slot: this is enforced by ownership, not by a comment. Dropping the guard
//! returns the slot. On the host backend every copy has finished when its call returns, so a
//! returned slot is never still being read and a host write cannot race a copy (the
//! vllm-project/vllm#25279 bug). On CUDA, where copies and kernels are asynchronous, the guard
//! records an event when it drops, and the slot is handed out again only once that event has
//! completed (and the host side is written only after the copies reading it have finished).
//!
//! ```
//! use cpugpu::{Device, UvaBufferPool, Error};
//!
//! let pool = UvaBufferPool::new(&Device::auto(), 2);
//! let mut step0 = pool.allocate::<i32>("input_ids", &[8192])?;
//! step0.host_mut()[..3].copy_from_slice(&[101, 2009, 102]);
//! step0.copy_to_device_rows(3)?;
//!
//! let step1 = pool.get::<i32>("input_ids")?;          // the other slot
//! assert_ne!(step0.slot(), step1.slot());
//! assert!(matches!(pool.get::<i32>("input_ids"), Err(Error::PoolSlotsBusy { .. })));
//! drop(step0);                                         // step 0 finished
//! let step2 = pool.get::<i32>("input_ids")?;          // its slot is free again
//! assert_eq!(step2.host()[..3], [101, 2009, 102]);     // get does not reset; allocate does
//! println!("{}", pool.stats());
//! # Ok::<(), cpugpu::Error>(())
//! ```

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, Range};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::buffer::{CpuGpuBuffer, SyncOutcome};
use crate::device::{Device, MemoryPlacement};
use crate::element::Element;
use crate::error::{Error, Op, Result};
use crate::memory::DeviceViewMut;
use crate::pinned::PinnedMemoryManager;
use crate::shape::Shape;

/// A type-erased pool slot.
trait Slot: Any + Send {
    fn sync(&mut self) -> Result<SyncOutcome>;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<T: Element> Slot for CpuGpuBuffer<T> {
    fn sync(&mut self) -> Result<SyncOutcome> {
        CpuGpuBuffer::sync(self)
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

struct Entry {
    type_id: TypeId,
    type_name: &'static str,
    shape: Shape,
    placement: MemoryPlacement,
    host_bytes: usize,
    device_bytes: usize,
    state: Mutex<EntryState>,
}

struct EntryState {
    /// `None` while the slot is handed out.
    slots: Vec<Option<Box<dyn Slot>>>,
    next: usize,
    /// Set when the name was released or the pool cleared: returning guards drop their buffer.
    released: bool,
}

impl Entry {
    fn lock(&self) -> MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Counters {
    created: u64,
    reused: u64,
}

/// Named paired buffers of mixed element types, each with `depth` round-robin slots.
///
/// Cheap to clone (an `Arc` inside) and safe to share between threads.
#[derive(Clone)]
pub struct UvaBufferPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    device: Device,
    depth: usize,
    manager: Option<PinnedMemoryManager>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    counters: Mutex<Counters>,
}

impl UvaBufferPool {
    /// A pool whose buffers have `depth` slots each (at least 1; 0 is taken as 1).
    pub fn new(device: &Device, depth: usize) -> Self {
        Self::build(device, depth, None)
    }

    /// Like [`UvaBufferPool::new`], with every pinned host side drawn from `manager`'s budget.
    pub fn with_manager(manager: &PinnedMemoryManager, depth: usize) -> Self {
        Self::build(manager.device(), depth, Some(manager.clone()))
    }

    fn build(device: &Device, depth: usize, manager: Option<PinnedMemoryManager>) -> Self {
        UvaBufferPool {
            inner: Arc::new(PoolInner {
                device: device.clone(),
                depth: depth.max(1),
                manager,
                entries: Mutex::new(HashMap::new()),
                counters: Mutex::new(Counters::default()),
            }),
        }
    }

    /// The round-robin depth.
    pub fn depth(&self) -> usize {
        self.inner.depth
    }

    /// The pool's device.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.inner.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next slot of `name`, zeroed, as a pinned host side plus a device side. Creates the
    /// name on first use. The same name with another shape, element type or placement is
    /// [`Error::PoolKeyMismatch`](crate::Error::PoolKeyMismatch); all slots held is [`Error::PoolSlotsBusy`](crate::Error::PoolSlotsBusy).
    pub fn allocate<T: Element>(&self, name: &str, shape: &[usize]) -> Result<PoolBuffer<T>> {
        self.allocate_at(name, shape, MemoryPlacement::Pinned)
    }

    /// Like [`allocate`](Self::allocate), for a zero-copy UVA buffer: mapped pinned memory the
    /// device reads directly, with no device-side copy.
    pub fn allocate_uva<T: Element>(&self, name: &str, shape: &[usize]) -> Result<PoolBuffer<T>> {
        self.allocate_at(name, shape, MemoryPlacement::Uva)
    }

    fn allocate_at<T: Element>(
        &self,
        name: &str,
        shape: &[usize],
        placement: MemoryPlacement,
    ) -> Result<PoolBuffer<T>> {
        let op = Op::PoolAllocate;
        let shape = Shape::for_op(op, shape)?;
        // The look-up (or creation) and the claim of a slot happen under the map's lock, so a
        // concurrent `release` of the name comes either before them (the name is created anew)
        // or after (the slot is ours, and its buffer is freed when the guard drops), never in
        // between. Lock order: the map, then an entry; no path holds an entry's lock while it
        // takes the map's.
        let (entry, slot, buf, created) = {
            let mut entries = self.entries();
            let (entry, created) = match entries.get(name) {
                Some(e) => {
                    if e.type_id != TypeId::of::<T>()
                        || e.shape != shape
                        || e.placement != placement
                    {
                        return Err(Error::PoolKeyMismatch {
                            op,
                            name: name.to_owned(),
                            existing_shape: Box::new(e.shape),
                            existing_type: e.type_name,
                            existing_placement: e.placement,
                            requested_shape: Box::new(shape),
                            requested_type: std::any::type_name::<T>(),
                            requested_placement: placement,
                        });
                    }
                    (e.clone(), false)
                }
                None => {
                    let e = self
                        .new_entry::<T>(name, shape, placement)
                        .map_err(|e| e.in_op(op))?;
                    (Arc::new(e), true)
                }
            };
            let (slot, buf) = Self::claim_slot::<T>(op, name, &entry)?;
            if created {
                entries.insert(name.to_owned(), entry.clone());
            }
            (entry, slot, buf, created)
        };
        let mut buf = Self::hand_out(entry, slot, buf);
        if created {
            self.count(|c| c.created += 1);
        } else {
            self.count(|c| c.reused += 1);
        }
        buf.reset();
        Ok(buf)
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner()))
    }

    fn new_entry<T: Element>(
        &self,
        name: &str,
        shape: Shape,
        placement: MemoryPlacement,
    ) -> Result<Entry> {
        let mut slots: Vec<Option<Box<dyn Slot>>> = Vec::new();
        slots
            .try_reserve_exact(self.inner.depth)
            .map_err(|_| Error::OutOfMemory {
                op: Op::PoolAllocate,
                bytes: self
                    .inner
                    .depth
                    .saturating_mul(std::mem::size_of::<Option<Box<dyn Slot>>>()),
            })?;
        for _ in 0..self.inner.depth {
            let buf = CpuGpuBuffer::<T>::alloc(
                &self.inner.device,
                self.inner.manager.as_ref(),
                name.to_owned(),
                shape.dims(),
                placement,
            )?;
            slots.push(Some(Box::new(buf)));
        }
        let host_bytes = shape.numel() * std::mem::size_of::<T>();
        Ok(Entry {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
            shape,
            placement,
            host_bytes,
            device_bytes: if placement == MemoryPlacement::Uva {
                0
            } else {
                host_bytes
            },
            state: Mutex::new(EntryState {
                slots,
                next: 0,
                released: false,
            }),
        })
    }

    /// The next free slot of `name`, contents as the last step left them. A wrong element type
    /// is [`Error::PoolKeyMismatch`](crate::Error::PoolKeyMismatch), an unknown name [`Error::PoolNameNotFound`](crate::Error::PoolNameNotFound), all slots
    /// held [`Error::PoolSlotsBusy`](crate::Error::PoolSlotsBusy).
    pub fn get<T: Element>(&self, name: &str) -> Result<PoolBuffer<T>> {
        let op = Op::PoolGet;
        let entry = self
            .entries()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::PoolNameNotFound {
                op,
                name: name.to_owned(),
            })?;
        if entry.type_id != TypeId::of::<T>() {
            return Err(Error::PoolKeyMismatch {
                op,
                name: name.to_owned(),
                existing_shape: Box::new(entry.shape),
                existing_type: entry.type_name,
                existing_placement: entry.placement,
                requested_shape: Box::new(entry.shape),
                requested_type: std::any::type_name::<T>(),
                requested_placement: entry.placement,
            });
        }
        // A `release` between the look-up and the claim makes the claim fail with
        // `PoolNameNotFound`: the name was gone before a slot could be taken.
        let (slot, buf) = Self::claim_slot::<T>(op, name, &entry)?;
        Ok(Self::hand_out(entry, slot, buf))
    }

    /// Takes the next free slot of `entry` out of the pool (its element type is `T`, checked by
    /// the callers). Only bookkeeping happens under the entry's lock.
    fn claim_slot<T: Element>(
        op: Op,
        name: &str,
        entry: &Entry,
    ) -> Result<(usize, CpuGpuBuffer<T>)> {
        let mut st = entry.lock();
        if st.released {
            return Err(Error::PoolNameNotFound {
                op,
                name: name.to_owned(),
            });
        }
        let depth = st.slots.len();
        let start = st.next;
        let Some(slot) = (0..depth)
            .map(|k| (start + k) % depth)
            .find(|&s| st.slots[s].is_some())
        else {
            return Err(Error::PoolSlotsBusy {
                op,
                name: name.to_owned(),
                depth,
            });
        };
        st.next = (slot + 1) % depth;
        let boxed = st.slots[slot].take().map(Slot::into_any);
        match boxed.map(|b| b.downcast::<CpuGpuBuffer<T>>()) {
            Some(Ok(buf)) => Ok((slot, *buf)),
            // Unreachable: the slot was Some and the entry's TypeId is T's (checked by callers).
            _ => Err(Error::PoolNameNotFound {
                op,
                name: name.to_owned(),
            }),
        }
    }

    /// Wraps a claimed slot in its guard, once the device work that used it has finished.
    fn hand_out<T: Element>(entry: Arc<Entry>, slot: usize, buf: CpuGpuBuffer<T>) -> PoolBuffer<T> {
        // On CUDA: the GPU work issued before this slot's last guard dropped (copies, kernels
        // reading it) must finish before the host may write it again.
        buf.wait_idle();
        PoolBuffer {
            buf: Some(buf),
            entry,
            slot,
        }
    }

    /// Forgets `name`: its idle slots are freed now, held ones when their guards drop. Returns
    /// whether the name existed.
    pub fn release(&self, name: &str) -> bool {
        let Some(entry) = self.entries().remove(name) else {
            return false;
        };
        let mut st = entry.lock();
        st.released = true;
        st.slots.clear();
        true
    }

    /// Releases every name.
    pub fn clear(&self) {
        let all: Vec<_> = self.entries().drain().map(|(_, e)| e).collect();
        for e in all {
            let mut st = e.lock();
            st.released = true;
            st.slots.clear();
        }
    }

    /// The number of names.
    pub fn num_buffers(&self) -> usize {
        self.entries().len()
    }

    /// Host plus device bytes of every slot of every name (UVA buffers count once).
    pub fn total_bytes(&self) -> usize {
        let s = self.stats();
        s.host_bytes + s.device_bytes
    }

    /// Syncs every idle slot in the direction its dirty flags say. Slots held by a step are
    /// skipped (their owner syncs them). Every slot is tried; each failure (a
    /// [`Error::SyncConflict`](crate::Error::SyncConflict) when both sides of a slot changed) is kept in
    /// [`SyncReport::errors`].
    ///
    /// A slot being synced is taken out of the pool for the duration, exactly as a step holds
    /// it, so no lock is held while its data is copied (a large copy runs on the thread pool,
    /// and a pool task that returned a slot of the same name must not find its lock taken). A
    /// concurrent `get` may therefore see that slot as busy.
    pub fn sync_all(&self) -> SyncReport {
        let entries: Vec<_> = self.entries().values().cloned().collect();
        let mut report = SyncReport::default();
        for e in entries {
            let idle: Vec<(usize, Box<dyn Slot>)> = {
                let mut st = e.lock();
                report.skipped_in_use += st.slots.iter().filter(|s| s.is_none()).count();
                st.slots
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(i, s)| s.take().map(|b| (i, b)))
                    .collect()
            };
            for (i, mut b) in idle {
                match b.sync() {
                    Ok(SyncOutcome::UpToDate) => report.up_to_date += 1,
                    Ok(SyncOutcome::CopiedToDevice) => report.copied_to_device += 1,
                    Ok(SyncOutcome::CopiedToHost) => report.copied_to_host += 1,
                    Err(err) => report.errors.push(err),
                }
                let mut st = e.lock();
                if !st.released {
                    st.slots[i] = Some(b);
                }
            }
        }
        report
    }

    /// A snapshot of the pool's size and counters.
    pub fn stats(&self) -> PoolStats {
        let entries: Vec<_> = self.entries().values().cloned().collect();
        let depth = self.inner.depth;
        let mut s = PoolStats {
            buffers: entries.len(),
            depth,
            ..PoolStats::default()
        };
        for e in &entries {
            s.slots += depth;
            s.slots_in_use += e.lock().slots.iter().filter(|x| x.is_none()).count();
            s.host_bytes += e.host_bytes * depth;
            s.device_bytes += e.device_bytes * depth;
            if e.placement == MemoryPlacement::Uva {
                s.uva_buffers += 1;
            }
        }
        let c = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.created = c.created;
        s.reused = c.reused;
        s
    }
}

impl SyncReport {
    /// `Ok(self)` when no slot failed, else the first failure.
    pub fn into_result(self) -> Result<SyncReport> {
        match self.errors.first() {
            Some(e) => Err(e.clone()),
            None => Ok(self),
        }
    }
}

impl fmt::Debug for UvaBufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UvaBufferPool")
            .field("stats", &self.stats())
            .finish()
    }
}

/// What [`UvaBufferPool::sync_all`] did, slot by slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a sync can fail per slot: check `errors`"]
pub struct SyncReport {
    /// Slots with nothing to copy.
    pub up_to_date: usize,
    /// Slots copied host to device.
    pub copied_to_device: usize,
    /// Slots copied device to host.
    pub copied_to_host: usize,
    /// Slots that could not be synced, e.g. [`Error::SyncConflict`](crate::Error::SyncConflict) for a slot dirty on both
    /// sides (left alone).
    pub errors: Vec<Error>,
    /// Slots held by a step, not touched.
    pub skipped_in_use: usize,
}

/// Size and counters of a [`UvaBufferPool`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Names in the pool.
    pub buffers: usize,
    /// Of which UVA.
    pub uva_buffers: usize,
    /// Slots per name.
    pub depth: usize,
    /// Slots in all.
    pub slots: usize,
    /// Slots held by steps now.
    pub slots_in_use: usize,
    /// Host bytes, all slots.
    pub host_bytes: usize,
    /// Device bytes, all slots (UVA buffers have none).
    pub device_bytes: usize,
    /// `allocate` calls that created a name.
    pub created: u64,
    /// `allocate` calls that reused one.
    pub reused: u64,
}

impl fmt::Display for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pool: {} buffers ({} uva) x depth {} = {} slots, {} in use",
            self.buffers, self.uva_buffers, self.depth, self.slots, self.slots_in_use
        )?;
        write!(
            f,
            "      {} host bytes + {} device bytes; allocate: {} created, {} reused",
            self.host_bytes, self.device_bytes, self.created, self.reused
        )
    }
}

/// One slot of a pool buffer, owned by the step that got it; dropping it returns the slot to
/// the pool.
///
/// It dereferences to [`CpuGpuBuffer<T>`] for reading and offers the buffer's writing methods
/// itself. It does not hand out `&mut CpuGpuBuffer<T>`: a step could then `resize` the slot or
/// swap in another buffer and break the pool's key (name, shape, type, placement).
///
/// ```compile_fail
/// let pool = cpugpu::UvaBufferPool::new(&cpugpu::Device::host(), 2);
/// let mut step = pool.allocate::<u8>("x", &[4]).unwrap();
/// step.resize(8).unwrap(); // no: the slot's shape is part of the pool's key
/// ```
pub struct PoolBuffer<T: Element> {
    buf: Option<CpuGpuBuffer<T>>,
    entry: Arc<Entry>,
    slot: usize,
}

impl<T: Element> PoolBuffer<T> {
    /// Which of the `depth` slots this is.
    pub fn slot(&self) -> usize {
        self.slot
    }

    fn buf(&mut self) -> &mut CpuGpuBuffer<T> {
        // Invariant: `buf` is Some from construction until drop.
        self.buf
            .as_mut()
            .expect("PoolBuffer holds its buffer until dropped")
    }

    /// [`CpuGpuBuffer::host_mut`].
    pub fn host_mut(&mut self) -> &mut [T] {
        self.buf().host_mut()
    }

    /// [`CpuGpuBuffer::host_rows_mut`].
    pub fn host_rows_mut(&mut self, rows: Range<usize>) -> Result<&mut [T]> {
        self.buf().host_rows_mut(rows)
    }

    /// [`CpuGpuBuffer::device_view_mut`].
    pub fn device_view_mut(&mut self) -> DeviceViewMut<'_, T> {
        self.buf().device_view_mut()
    }

    /// [`CpuGpuBuffer::device_rows_mut`].
    pub fn device_rows_mut(&mut self, rows: Range<usize>) -> Result<DeviceViewMut<'_, T>> {
        self.buf().device_rows_mut(rows)
    }

    /// [`CpuGpuBuffer::copy_to_device`].
    pub fn copy_to_device(&mut self) -> Result<()> {
        self.buf().copy_to_device()
    }

    /// [`CpuGpuBuffer::copy_to_device_rows`].
    pub fn copy_to_device_rows(&mut self, n: usize) -> Result<()> {
        self.buf().copy_to_device_rows(n)
    }

    /// [`CpuGpuBuffer::copy_to_host`].
    pub fn copy_to_host(&mut self) -> Result<()> {
        self.buf().copy_to_host()
    }

    /// [`CpuGpuBuffer::copy_to_host_rows`].
    pub fn copy_to_host_rows(&mut self, n: usize) -> Result<()> {
        self.buf().copy_to_host_rows(n)
    }

    /// [`CpuGpuBuffer::sync`].
    pub fn sync(&mut self) -> Result<SyncOutcome> {
        self.buf().sync()
    }

    /// [`CpuGpuBuffer::mark_host_dirty`].
    pub fn mark_host_dirty(&mut self) {
        self.buf().mark_host_dirty()
    }

    /// [`CpuGpuBuffer::mark_device_dirty`].
    pub fn mark_device_dirty(&mut self) {
        self.buf().mark_device_dirty()
    }

    /// [`CpuGpuBuffer::fill`].
    pub fn fill(&mut self, value: T) {
        self.buf().fill(value)
    }

    /// [`CpuGpuBuffer::reset`].
    pub fn reset(&mut self) {
        self.buf().reset()
    }
}

impl<T: Element> Deref for PoolBuffer<T> {
    type Target = CpuGpuBuffer<T>;
    fn deref(&self) -> &CpuGpuBuffer<T> {
        // Invariant: `buf` is Some from construction until drop.
        self.buf
            .as_ref()
            .expect("PoolBuffer holds its buffer until dropped")
    }
}

impl<T: Element> Drop for PoolBuffer<T> {
    fn drop(&mut self) {
        let Some(buf) = self.buf.take() else { return };
        // On CUDA: mark the end of the work issued while the slot was held; the next `get` of
        // this slot waits for it (event-based, so other slots are not held up).
        buf.mark_released();
        let mut st = self.entry.lock();
        if !st.released {
            st.slots[self.slot] = Some(Box::new(buf));
        }
    }
}

impl<T: Element> fmt::Debug for PoolBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuffer")
            .field("slot", &self.slot)
            .field("buffer", &**self)
            .finish()
    }
}
