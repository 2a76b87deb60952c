//! Host-side parallelism shared by the operations and the buffers: the size threshold above
//! which work goes to rayon's thread pool, and chunked copy and fill.

use rayon::prelude::*;

/// Below this many bytes moved, host operations run on the calling thread.
///
/// Chosen from `host_bench`: gather of 4,096 x 16 f32 rows (256 KiB) runs faster sequentially
/// than through rayon on a 2-core machine, see `BENCHMARKS.md`. Under Miri (CI's memory-model
/// check) it is 4 KiB, so that the parallel paths run on inputs small enough for Miri's speed.
pub const PAR_MIN_BYTES: usize = if cfg!(miri) { 4 * 1024 } else { 512 * 1024 };

/// Bytes per parallel task in the chunked copy and fill helpers (1 KiB under Miri: several
/// tasks per operation at Miri's sizes).
pub(crate) const PAR_CHUNK_BYTES: usize = if cfg!(miri) { 1024 } else { 256 * 1024 };

/// True when an operation moving `bytes` bytes should use the thread pool (never inside
/// [`run_sequential`]).
#[inline]
pub(crate) fn use_par(bytes: usize) -> bool {
    bytes >= PAR_MIN_BYTES && rayon::current_num_threads() > 1 && !SEQUENTIAL.with(|s| s.get())
}

thread_local! {
    /// Set by [`run_sequential`]: this thread's operations stay on it.
    static SEQUENTIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` on the calling thread with every [`use_par`] in it false, so it uses no thread
/// pool at all: how a device with a pool of its own runs an operation too small for the pool
/// when it is called from outside the pool (a handoff costs more than such an operation).
pub(crate) fn run_sequential<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SEQUENTIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SEQUENTIAL.with(|s| s.replace(true)));
    f()
}

/// Elements of `T` per parallel chunk (at least 1).
#[inline]
pub(crate) fn chunk_elems<T>() -> usize {
    (PAR_CHUNK_BYTES / std::mem::size_of::<T>().max(1)).max(1)
}

/// Which stores a large write may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stores {
    /// Streaming stores from [`STREAM_MIN_BYTES`]: for memory the caller already had.
    Auto,
    /// Ordinary stores only: for memory just allocated, whose first write faults its pages in.
    /// The kernel clears each new page through the cache, and streaming over those lines was
    /// slower: the allocating `pad_to_multiple` of 64 MiB took 11.2-11.5 ms streaming (one run
    /// 32 ms) against 7.0-9.0 ms with ordinary stores (`host_bench --op
    /// pad_to_multiple_alloc`, 2-core x86-64 VM, 2026-12-01).
    Cached,
}

/// `dst.copy_from_slice(src)`, split over the thread pool when large, with streaming stores
/// from [`STREAM_MIN_BYTES`]. Lengths must match.
pub(crate) fn par_copy<T: bytemuck::Pod + Send + Sync>(dst: &mut [T], src: &[T]) {
    par_copy_with(dst, src, Stores::Auto);
}

/// [`par_copy`] with the choice of stores.
pub(crate) fn par_copy_with<T: bytemuck::Pod + Send + Sync>(
    dst: &mut [T],
    src: &[T],
    stores: Stores,
) {
    debug_assert_eq!(dst.len(), src.len());
    let bytes = std::mem::size_of_val(src);
    if stores == Stores::Auto && use_stream(bytes) {
        let (d, s): (&mut [u8], &[u8]) = (bytemuck::cast_slice_mut(dst), bytemuck::cast_slice(src));
        // The unaligned head and the tail past the last 16 bytes are copied ordinarily.
        let head = d.as_ptr().align_offset(16).min(d.len());
        let (d_head, d) = d.split_at_mut(head);
        let (s_head, s) = s.split_at(head);
        d_head.copy_from_slice(s_head);
        let body = d.len() - d.len() % 16;
        let (d, d_tail) = d.split_at_mut(body);
        let (s, s_tail) = s.split_at(body);
        d_tail.copy_from_slice(s_tail);
        // SAFETY: `d` and `s` have the same length, a multiple of 16 (and so has every chunk
        // but possibly the last, whose length is the body's remainder, also a multiple of 16,
        // as PAR_CHUNK_BYTES is); `d` starts 16-byte aligned, and so does every chunk; `d` and
        // `s` do not overlap (`&mut` and `&` borrows).
        let task = |(d, s): (&mut [u8], &[u8])| unsafe {
            stream_copy(d.as_mut_ptr(), s.as_ptr(), d.len());
            stream_fence();
        };
        if use_par(bytes) {
            d.par_chunks_mut(PAR_CHUNK_BYTES)
                .zip(s.par_chunks(PAR_CHUNK_BYTES))
                .for_each(task);
        } else {
            task((d, s));
        }
        return;
    }
    if use_par(bytes) {
        let c = chunk_elems::<T>();
        dst.par_chunks_mut(c)
            .zip(src.par_chunks(c))
            .for_each(|(d, s)| d.copy_from_slice(s));
    } else {
        dst.copy_from_slice(src);
    }
}

/// `dst.fill(value)`, split over the thread pool when large, with streaming stores from
/// [`STREAM_MIN_BYTES`] (for elements whose width divides 16).
pub(crate) fn par_fill<T: bytemuck::Pod + Send + Sync>(dst: &mut [T], value: T) {
    par_fill_with(dst, value, Stores::Auto);
}

/// A pointer into one block that parallel tasks share, each writing only its own disjoint part
/// of it (the scatter's rows, [`zero_raw`]'s chunks). Dereferencing it is `unsafe` as for any
/// raw pointer: each use says why its range is its task's alone.
#[derive(Clone, Copy)]
pub(crate) struct SharedPtr(*mut u8);
// SAFETY: sending the address is harmless; every write through it is to a range no other task
// touches (each dereference's own SAFETY comment shows that).
unsafe impl Send for SharedPtr {}
// SAFETY: as for Send: shared copies only hand out the address.
unsafe impl Sync for SharedPtr {}

impl SharedPtr {
    pub(crate) fn new(p: *mut u8) -> Self {
        SharedPtr(p)
    }

    /// The pointer (a method, so that closures capture the whole `Send` wrapper, not its field).
    pub(crate) fn get(self) -> *mut u8 {
        self.0
    }
}

/// Writes `bytes` zero bytes at `ptr` (memory that may not be initialised yet, so it is never
/// made into a slice first), in parallel chunks when large, with ordinary stores.
///
/// # Safety
/// `ptr` is valid for writes of `bytes` bytes and nothing else accesses them during the call.
pub(crate) unsafe fn zero_raw(ptr: *mut u8, bytes: usize) {
    let base = SharedPtr::new(ptr);
    let zero = move |k: usize| {
        let start = k * PAR_CHUNK_BYTES;
        let len = PAR_CHUNK_BYTES.min(bytes - start);
        // SAFETY: `start + len <= bytes`, so the range lies in the caller's block; chunks are
        // disjoint, and the caller keeps every other access away.
        unsafe { std::ptr::write_bytes(base.get().add(start), 0, len) };
    };
    let chunks = bytes.div_ceil(PAR_CHUNK_BYTES);
    if use_par(bytes) {
        (0..chunks).into_par_iter().for_each(zero);
    } else {
        (0..chunks).for_each(zero);
    }
}

/// [`par_fill`] with the choice of stores.
pub(crate) fn par_fill_with<T: bytemuck::Pod + Send + Sync>(
    dst: &mut [T],
    value: T,
    stores: Stores,
) {
    let bytes = std::mem::size_of_val(dst);
    let w = std::mem::size_of::<T>();
    // Streaming needs the 16-byte pattern in phase with the elements at every 16-byte
    // boundary: so the slice must start on a multiple of the element's width (a `[f32; 4]` is
    // 4-byte aligned and may start 4 bytes past a boundary).
    let in_phase = w > 0 && 16 % w == 0 && (dst.as_ptr() as usize).is_multiple_of(w);
    if stores == Stores::Auto && use_stream(bytes) && in_phase {
        let mut pattern = [0u8; 16];
        for c in pattern.chunks_exact_mut(w) {
            c.copy_from_slice(bytemuck::bytes_of(&value));
        }
        let d: &mut [u8] = bytemuck::cast_slice_mut(dst);
        // The head up to a 16-byte boundary is a whole number of elements (the slice starts on
        // a multiple of the element width, checked above, and so does the boundary: the width
        // divides 16), so the pattern, which starts on an element, stays in phase after it.
        let head = d.as_ptr().align_offset(16).min(d.len());
        let (d_head, d) = d.split_at_mut(head);
        for (b, p) in d_head.iter_mut().zip(pattern.iter().cycle()) {
            *b = *p;
        }
        let body = d.len() - d.len() % 16;
        let (d, d_tail) = d.split_at_mut(body);
        for (b, p) in d_tail.iter_mut().zip(pattern.iter().cycle()) {
            *b = *p;
        }
        // SAFETY: every chunk starts 16-byte aligned and is a multiple of 16 bytes long (see
        // par_copy), and is written only through its own `&mut`.
        let task = |d: &mut [u8]| unsafe {
            stream_fill(d.as_mut_ptr(), &pattern, d.len());
            stream_fence();
        };
        if use_par(bytes) {
            d.par_chunks_mut(PAR_CHUNK_BYTES).for_each(task);
        } else {
            task(d);
        }
        return;
    }
    if use_par(bytes) {
        dst.par_chunks_mut(chunk_elems::<T>())
            .for_each(|d| d.fill(value));
    } else {
        dst.fill(value);
    }
}

/// Hints that `v[i]` will be read soon: for loops bound by random reads (a decode's token-table
/// line, a block-table entry), issued some iterations ahead so the misses overlap. Never faults
/// (a prefetch of any address is harmless) and does nothing on targets without the instruction.
#[inline(always)]
pub(crate) fn prefetch<T>(v: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = v.as_ptr().wrapping_add(i).cast::<i8>();
        // SAFETY: `_mm_prefetch` only hints the cache; it never dereferences for the program,
        // does not fault on any address, and SSE is part of the x86-64 baseline.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, i);
}

/// Outputs of at least this many bytes are written with streaming (non-temporal) stores by the
/// operations that can (gather and scatter when the destination rows are 16-byte aligned, the
/// copies and fills of [`par_copy_with`] and [`par_fill_with`], the offsets' whole lines).
///
/// A streaming store skips reading the line it writes and does not fill the cache with output
/// that the caller reads much later (an upload to the GPU, the next step). Measured on the
/// 2-core x86-64 VM of `BENCHMARKS.md` (scratch program, 64-byte rows in a random order, huge
/// pages, 2026-12-01): a 64 MiB gather took 3.20 ms with streaming stores and prefetch against
/// 5.45 ms without, 0.60 against 0.70 ms at 16 MiB; at 1 to 4 MiB the two were within the
/// run-to-run noise. Below the threshold the output stays in the cache for whoever reads it
/// next.
pub(crate) const STREAM_MIN_BYTES: usize = 8 << 20;

/// True when an output of `bytes` bytes should be written with streaming stores: large enough,
/// on x86-64 (where SSE2's `movntdq` is baseline), and not under Miri (which does not run the
/// intrinsics; the ordinary-store path is the same function otherwise).
#[inline]
pub(crate) fn use_stream(bytes: usize) -> bool {
    cfg!(all(target_arch = "x86_64", not(miri))) && bytes >= STREAM_MIN_BYTES
}

/// Bytes ahead of the current row that the streaming row copies prefetch.
pub(crate) const PREFETCH_BYTES: usize = 2048;

/// Hints that the `len` bytes at `v[at..]` will be read soon: the first few lines and the last
/// (a row that straddles lines gets both). Never faults, whatever the address.
#[inline(always)]
pub(crate) fn prefetch_span(v: &[u8], at: usize, len: usize) {
    let line = |o: usize| (v.as_ptr() as usize).wrapping_add(at).wrapping_add(o) & !63;
    let mut o = 0;
    while o < len.min(256) {
        prefetch(v, at.wrapping_add(o));
        o += 64;
    }
    // The row's last line, unless the loop's last prefetch already covered it.
    let end = len.wrapping_sub(1);
    if len > 0 && line(end) != line(o - 64) {
        prefetch(v, at.wrapping_add(end));
    }
}

/// Copies `len` bytes from `src` to `dst` with streaming stores (ordinary copies off x86-64 and
/// under Miri). The caller ends its batch of streaming stores with [`stream_fence`].
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `len` bytes, the two do not overlap, `dst`
/// is 16-byte aligned and `len` is a multiple of 16.
#[inline(always)]
pub(crate) unsafe fn stream_copy(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!((dst as usize).is_multiple_of(16) && len.is_multiple_of(16));
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let mut o = 0;
        // Whole 64-byte blocks: four loads, then four stores.
        while o + 64 <= len {
            // SAFETY: o + 64 <= len, so the four 16-byte accesses at o, o + 16, o + 32, o + 48
            // lie in the caller's ranges; loads are unaligned-tolerant and each `dst + o + 16j`
            // is 16-byte aligned; SSE2 is part of the x86-64 baseline.
            unsafe {
                let (s, d) = (src.add(o).cast::<__m128i>(), dst.add(o).cast::<__m128i>());
                let (a, b) = (_mm_loadu_si128(s), _mm_loadu_si128(s.add(1)));
                let (c, e) = (_mm_loadu_si128(s.add(2)), _mm_loadu_si128(s.add(3)));
                _mm_stream_si128(d, a);
                _mm_stream_si128(d.add(1), b);
                _mm_stream_si128(d.add(2), c);
                _mm_stream_si128(d.add(3), e);
            }
            o += 64;
        }
        while o < len {
            // SAFETY: o + 16 <= len (len is a multiple of 16), so both 16-byte accesses lie in
            // the caller's ranges; the load is unaligned-tolerant and `dst + o` is 16-byte
            // aligned as `_mm_stream_si128` requires; SSE2 is part of the x86-64 baseline.
            unsafe {
                let v = _mm_loadu_si128(src.add(o).cast::<__m128i>());
                _mm_stream_si128(dst.add(o).cast::<__m128i>(), v);
            }
            o += 16;
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    // SAFETY: the caller's contract: valid, non-overlapping ranges of `len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, len)
    };
}

/// Writes `len` bytes at `dst` with the 16-byte `pattern` repeated, with streaming stores
/// (ordinary stores off x86-64 and under Miri). The caller ends its batch with
/// [`stream_fence`].
///
/// # Safety
/// `dst` is valid for writes of `len` bytes and 16-byte aligned, and `len` is a multiple of 16.
#[inline(always)]
pub(crate) unsafe fn stream_fill(dst: *mut u8, pattern: &[u8; 16], len: usize) {
    debug_assert!((dst as usize).is_multiple_of(16) && len.is_multiple_of(16));
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        // SAFETY: `pattern` is 16 readable bytes; SSE2 is part of the x86-64 baseline.
        let v = unsafe { _mm_loadu_si128(pattern.as_ptr().cast::<__m128i>()) };
        let mut o = 0;
        while o < len {
            // SAFETY: o + 16 <= len, inside the caller's range, and `dst + o` is 16-byte
            // aligned as `_mm_stream_si128` requires.
            unsafe { _mm_stream_si128(dst.add(o).cast::<__m128i>(), v) };
            o += 16;
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    {
        let mut o = 0;
        while o < len {
            // SAFETY: o + 16 <= len, inside the caller's range; `pattern` is a separate array.
            unsafe { std::ptr::copy_nonoverlapping(pattern.as_ptr(), dst.add(o), 16) };
            o += 16;
        }
    }
}

/// Orders this thread's streaming stores before its later stores (and so before the end of the
/// rayon task that made them, which other threads synchronise with). A no-op where
/// [`stream_copy`] stores ordinarily.
#[inline(always)]
pub(crate) fn stream_fence() {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `sfence` has no operands and no preconditions; SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}
