//! The six batching operations.
//!
//! Each operation has a host implementation on plain slices (`<op>/host.rs`, re-exported as
//! [`crate::host`]): rayon-parallel above [`PAR_MIN_BYTES`] moved, sequential below it so that
//! small batches do not pay for the thread pool. The host path is both the fallback backend and
//! the reference every other backend is tested against.

pub(crate) mod flatten;
pub(crate) mod gather;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;
pub(crate) mod offsets;
pub(crate) mod pad;
pub(crate) mod scatter;
pub(crate) mod split;

use rayon::prelude::*;

use crate::element::Index;

/// Below this many bytes moved, host operations run on the calling thread.
///
/// Chosen from `host_bench`: gather of 4,096 x 16 f32 rows (256 KiB) runs faster sequentially
/// than through rayon on a 2-core machine, see `BENCHMARKS.md`. Under Miri (CI's memory-model
/// check) it is 4 KiB, so that the parallel paths run on inputs small enough for Miri's speed.
pub const PAR_MIN_BYTES: usize = if cfg!(miri) { 4 * 1024 } else { 512 * 1024 };

/// Bytes per parallel task in the chunked copy and fill helpers (1 KiB under Miri: several
/// tasks per operation at Miri's sizes).
pub(crate) const PAR_CHUNK_BYTES: usize = if cfg!(miri) { 1024 } else { 256 * 1024 };

/// What gather does with an index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GatherPolicy<T> {
    /// Every index must be in `0..rows`; the first that is not is an
    /// [`Error::IndexOutOfBounds`](crate::Error::IndexOutOfBounds) and nothing is written.
    #[default]
    Checked,
    /// A negative index writes a row of the fill value (vLLM's padding convention); a
    /// non-negative index must still be in `0..rows`.
    NegativeFill(T),
}

/// What scatter does with an index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScatterPolicy {
    /// Every index must be in `0..rows`; the first that is not is an
    /// [`Error::IndexOutOfBounds`](crate::Error::IndexOutOfBounds) and nothing is written.
    #[default]
    Checked,
    /// A negative index skips its source row (vLLM's padding convention); a non-negative index
    /// must still be in `0..rows`.
    NegativeSkip,
}

/// `Ok` when `actual` is `expected`, else [`crate::Error::ShapeMismatch`] naming `op` and
/// `what`: the device layer's check of a caller-provided output or input shape.
pub(crate) fn check_shape(
    op: crate::Op,
    what: &'static str,
    expected: crate::Shape,
    actual: crate::Shape,
) -> crate::Result<()> {
    if actual == expected {
        return Ok(());
    }
    Err(crate::Error::ShapeMismatch {
        op,
        what,
        expected: Box::new(expected),
        actual: Box::new(actual),
    })
}

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

/// The first position whose index is outside `0..bound` (negative indices are allowed when
/// `allow_negative`), with its value. Parallel over large index arrays; the answer is the
/// smallest such position either way.
///
/// `bound` is compared exactly, also above `i64::MAX` (rows of zero elements can be that many):
/// then no non-negative index is out of bounds.
pub(crate) fn first_bad_index<I: Index>(
    indices: &[I],
    bound: usize,
    allow_negative: bool,
) -> Option<(usize, i64)> {
    // Reinterpreted as u64, a negative index is at least 2^63. With the bound capped at 2^63
    // (every non-negative i64 is below it), one unsigned compare checks both ends exactly.
    let ubound = u64::try_from(bound).unwrap_or(u64::MAX).min(1 << 63);
    let bad = |v: i64| {
        if v < 0 {
            !allow_negative
        } else {
            v as u64 >= ubound
        }
    };
    let scan = |base: usize, chunk: &[I]| {
        // Fast path: a branch-free OR of comparisons (it vectorises) proves most chunks clean;
        // only a chunk that holds a bad index is searched for its first position.
        let any_bad = if allow_negative {
            chunk.iter().fold(false, |acc, &i| {
                let v = i.to_i64();
                acc | ((v >= 0) & (v as u64 >= ubound))
            })
        } else {
            chunk
                .iter()
                .fold(false, |acc, &i| acc | (i.to_i64() as u64 >= ubound))
        };
        if !any_bad {
            return None;
        }
        chunk
            .iter()
            .position(|&i| bad(i.to_i64()))
            .map(|p| (base + p, chunk[p].to_i64()))
    };
    if use_par(std::mem::size_of_val(indices)) {
        let c = chunk_elems::<I>();
        indices
            .par_chunks(c)
            .enumerate()
            .filter_map(|(k, chunk)| scan(k * c, chunk))
            .min_by_key(|&(p, _)| p)
    } else {
        scan(0, indices)
    }
}
