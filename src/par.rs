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

/// True when an operation moving `bytes` bytes should use the thread pool.
#[inline]
pub(crate) fn use_par(bytes: usize) -> bool {
    bytes >= PAR_MIN_BYTES && rayon::current_num_threads() > 1
}

/// Elements of `T` per parallel chunk (at least 1).
#[inline]
pub(crate) fn chunk_elems<T>() -> usize {
    (PAR_CHUNK_BYTES / std::mem::size_of::<T>().max(1)).max(1)
}

/// `dst.copy_from_slice(src)`, split over the thread pool when large. Lengths must match.
pub(crate) fn par_copy<T: Copy + Send + Sync>(dst: &mut [T], src: &[T]) {
    debug_assert_eq!(dst.len(), src.len());
    if use_par(std::mem::size_of_val(src)) {
        let c = chunk_elems::<T>();
        dst.par_chunks_mut(c)
            .zip(src.par_chunks(c))
            .for_each(|(d, s)| d.copy_from_slice(s));
    } else {
        dst.copy_from_slice(src);
    }
}

/// `dst.fill(value)`, split over the thread pool when large.
pub(crate) fn par_fill<T: Copy + Send + Sync>(dst: &mut [T], value: T) {
    if use_par(std::mem::size_of_val(dst)) {
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
