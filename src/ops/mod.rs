//! The six batching operations.
//!
//! Each operation has a host implementation on plain slices (`<op>/host.rs`, re-exported as
//! [`crate::host`]): rayon-parallel above [`PAR_MIN_BYTES`] moved, sequential below it so that
//! small batches do not pay for the thread pool. The host path is both the fallback backend and
//! the reference every other backend is tested against.

pub(crate) mod expand;
pub(crate) mod flatten;
pub(crate) mod gather;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;
pub(crate) mod offsets;
pub(crate) mod pad;
pub(crate) mod pad_to;
pub(crate) mod scatter;
pub(crate) mod slots;
pub(crate) mod split;
pub(crate) mod staged;
pub(crate) mod step;
pub(crate) mod windows;

use rayon::prelude::*;

use crate::element::Index;

pub use crate::par::PAR_MIN_BYTES;
pub(crate) use crate::par::{chunk_elems, par_copy, use_par, PAR_CHUNK_BYTES};

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
