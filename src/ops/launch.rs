//! What the operations' CUDA launch sequences (`src/ops/<op>/launch.rs`) share: pointer casts,
//! the end of a checked operation, index validation and metadata packing.

use crate::cuda::{CheckKind, CodedReport, Joined, Queue};
use crate::element::Index;
use crate::error::{Op, Result};
use crate::kernels::abi::CpugpuValidateParams;
use crate::kernels::launch::{self, i64_of};
use crate::kernels::Kernel;

/// True for 64-bit indices or offsets.
pub(crate) fn is_i64<I: Index>() -> bool {
    std::mem::size_of::<I>() == 8
}

/// A device address as a kernel parameter's pointer.
pub(crate) fn ptr<T>(p: u64) -> *const T {
    p as *const T
}

/// A device address as a kernel parameter's mutable pointer.
pub(crate) fn ptr_mut<T>(p: u64) -> *mut T {
    p as *mut T
}

/// The end of a checked operation: capture its error word (or, when its kernels could not all
/// be issued, re-arm the word and return that failure), then order the other streams after its
/// work, on every path, since kernels reading their memory may already be queued.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_checked(
    q: &Queue,
    joined: Joined<'_>,
    issued: Result<()>,
    op: Op,
    kind: CheckKind,
    data: u64,
    n: usize,
    elem_bytes: usize,
) -> Result<()> {
    let captured = match issued {
        Err(e) => {
            q.rearm();
            Err(e)
        }
        Ok(()) => q.capture(op, kind, data, n, elem_bytes),
    };
    let finished = joined.finish(q);
    captured.and(finished)
}

/// Launches `validate_indices_<I>`: the first of the `n` indices at `ip` outside `0..rows`
/// (negatives allowed when `allow_negative`) goes to the error word `error`.
pub(crate) fn validate_indices<I: Index>(
    q: &Queue,
    op: Op,
    ip: u64,
    n: usize,
    rows: usize,
    allow_negative: bool,
    error: u64,
) -> Result<()> {
    let pv = CpugpuValidateParams {
        indices: ptr(ip),
        error: ptr_mut(error),
        n: i64_of(n),
        bound: rows as u64,
        allow_negative: i64::from(allow_negative),
    };
    // SAFETY: reads indices[0..n] (the caller's view holds n indices) and atomically updates
    // the queue's error word; both stay valid in stream order.
    unsafe {
        q.launch(
            op,
            launch::validate_kernel(is_i64::<I>()),
            launch::flat_launch(n, 4),
            &pv,
        )
    }
}

/// Packs `u64` words for a metadata upload.
pub(crate) fn words(parts: &[&[u64]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len() * 8).sum());
    for p in parts {
        for w in *p {
            v.extend_from_slice(&w.to_ne_bytes());
        }
    }
    v
}

/// The end of a checked input-preparation operation: its own capture kernel (`capture`, with the
/// operation's parameters `params` and the error word and read-out slot filled in by `set`), or,
/// when its kernels could not all be issued, a re-arm of the error word and that failure; then the
/// other streams are ordered after its work, on every path.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_coded<P: Copy>(
    q: &Queue,
    joined: Joined<'_>,
    issued: Result<()>,
    op: Op,
    decode: fn(&CodedReport) -> crate::Error,
    ctx: [i64; 3],
    capture: Kernel<P>,
    params: P,
    set: fn(&mut P, *mut u64, *mut u64),
) -> Result<()> {
    let captured = match issued {
        Err(e) => {
            q.rearm();
            Err(e)
        }
        // SAFETY: `capture` is the operation's capture kernel, given the parameters its other
        // kernels ran with (inputs alive in stream order until it completes), the queue's error
        // word and one four-word read-out slot; it reads the word and inputs, writes the slot.
        Ok(()) => unsafe {
            q.capture_coded(
                op,
                CheckKind::Coded { decode, ctx },
                capture,
                |error, out| {
                    let mut p = params;
                    set(&mut p, error, out);
                    p
                },
            )
        },
    };
    let finished = joined.finish(q);
    captured.and(finished)
}

/// `value` as the `u64` bits of an `i64` read back from a capture slot.
pub(crate) fn signed(value: u64) -> i64 {
    value as i64
}
