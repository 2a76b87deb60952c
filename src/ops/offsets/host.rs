//! Host prefix-sum offsets: n lengths to n + 1 offsets starting at 0.
//!
//! Two passes over 256 KiB chunks of the lengths: the first sums each chunk and notes whether
//! it holds a negative length (in parallel above [`crate::ops::PAR_MIN_BYTES`]); a sequential
//! walk over the chunk sums then finds each chunk's starting offset, or the first error; the
//! second pass writes every chunk's offsets from its start (in parallel), with streaming
//! stores from 8 MiB of output ([`crate::par::STREAM_MIN_BYTES`]: the output's lines are not
//! read before they are written). The error reported is always the one a left-to-right loop
//! would hit first, and nothing is written when there is one. Scratch memory is one summary
//! per chunk.
//!
//! Why two passes: a single pass that writes each chunk right after summing it (while its
//! lengths are still in cache) would have written chunks before a bad length further on was
//! found, and a failing call must write nothing. The extra read is the price: on the 2-core
//! machine of `BENCHMARKS.md` the first pass alone (`host_bench`'s `offsets_read_pass`) takes
//! about a third of the whole op's time, which holds the op to about 75% of a parallel copy's
//! traffic rate (issue 12 asked for 85%).
use rayon::prelude::*;

use crate::ops::{chunk_elems, use_par};
use crate::par::{stream_copy, stream_fence, use_stream};
use crate::{Error, Index, Offset, Op, Result};

const OP: Op = Op::PrefixSumOffsets;

/// A chunk's sum (`None` when it overflows `i64`) and whether it holds a negative length.
#[derive(Clone, Copy)]
struct Summary {
    sum: Option<i64>,
    negative: bool,
}

/// The chunk's summary, branch-free so that it vectorises: the lengths' low and high 32-bit
/// halves are summed separately in `u64` (exact for up to 2^32 lengths, and chunks are far
/// shorter), and the sign bits are OR-ed. `sum` is meaningful only when `negative` is false.
fn summarize<L: Index>(chunk: &[L]) -> Summary {
    debug_assert!(chunk.len() as u64 <= 1 << 32);
    let (mut lo, mut hi, mut signs) = (0u64, 0u64, 0u64);
    for &l in chunk {
        let v = l.to_i64() as u64;
        signs |= v;
        lo += v & 0xffff_ffff;
        hi += v >> 32;
    }
    let total = (u128::from(hi) << 32) + u128::from(lo);
    Summary {
        sum: i64::try_from(total).ok(),
        negative: signs >> 63 != 0,
    }
}

/// The first error in `chunk` (starting at position `base`, offset `start`), walking it as a
/// sequential loop would.
fn first_error<L: Index>(chunk: &[L], base: usize, start: i64, limit: i64) -> Error {
    let mut acc = start;
    for (j, &l) in chunk.iter().enumerate() {
        let v = l.to_i64();
        if v < 0 {
            return Error::NegativeLength {
                op: OP,
                position: base + j,
                value: v,
            };
        }
        match acc.checked_add(v).filter(|&a| a <= limit) {
            Some(a) => acc = a,
            None => {
                return Error::OffsetOverflow {
                    op: OP,
                    position: base + j,
                    limit,
                }
            }
        }
    }
    unreachable!("first_error is called only for a chunk that has an error")
}

/// Writes the chunk's offsets from `start`. Validated: no length is negative and no offset
/// exceeds `O::MAX`, so nothing overflows and every value fits `O`. Four lengths at a time:
/// their partial sums do not depend on `acc`, so the loop-carried chain is one add per four
/// offsets instead of one per offset.
/// Returns the last offset written (`start` for an empty chunk).
fn write_chunk<L: Index, O: Offset>(lengths: &[L], out: &mut [O], start: i64) -> i64 {
    let mut acc = start;
    let (l4, l_rest) = lengths.as_chunks::<4>();
    let (o4, o_rest) = out.as_chunks_mut::<4>();
    for (o, l) in o4.iter_mut().zip(l4) {
        let p0 = l[0].to_i64();
        let p1 = p0 + l[1].to_i64();
        let p2 = p1 + l[2].to_i64();
        let p3 = p2 + l[3].to_i64();
        *o = [p0, p1, p2, p3].map(|p| O::from_i64_unchecked_fit(acc + p));
        acc += p3;
    }
    for (o, &l) in o_rest.iter_mut().zip(l_rest) {
        acc += l.to_i64();
        *o = O::from_i64_unchecked_fit(acc);
    }
    acc
}

/// [`write_chunk`] with streaming stores for the output's whole 64-byte lines: each line's
/// offsets are made in a local block and copied out with one streaming store of 64 bytes, so
/// the output's lines are never read (an ordinary store reads the line it writes first).
/// Ends with a [`stream_fence`].
fn write_chunk_stream<L: Index, O: Offset>(lengths: &[L], out: &mut [O], start: i64) {
    const LINE: usize = 64;
    let per = LINE / std::mem::size_of::<O>();
    debug_assert!(per <= 16 && per * std::mem::size_of::<O>() == LINE);
    // Ordinary stores up to the first 64-byte boundary (`align_offset` may say "never").
    let head = out.as_ptr().align_offset(LINE).min(out.len());
    let (l_head, l_body) = lengths.split_at(head);
    let (o_head, o_body) = out.split_at_mut(head);
    let mut acc = write_chunk(l_head, o_head, start);
    let mut lines = o_body.chunks_exact_mut(per);
    let mut block = [O::default(); 16];
    for (o, l) in (&mut lines).zip(l_body.chunks_exact(per)) {
        acc = write_chunk(l, &mut block[..per], acc);
        // SAFETY: `o` is `per` offsets, 64 bytes, starting on a 64-byte boundary (`head`
        // aligned the body and every line is 64 bytes), so it is a valid, 16-byte-aligned
        // destination of 64 bytes; `block` holds at least `per` offsets (`per <= 16`), 64
        // readable bytes, and is a separate local array.
        unsafe { stream_copy(o.as_mut_ptr().cast(), block.as_ptr().cast(), LINE) };
    }
    let o_tail = lines.into_remainder();
    let done = l_body.len() - o_tail.len();
    write_chunk(&l_body[done..], o_tail, acc);
    stream_fence();
}

/// `offsets[0] = 0`, `offsets[i + 1] = offsets[i] + lengths[i]`, as a new `Vec` of
/// `lengths.len() + 1` offsets.
///
/// # Errors
/// See [`prefix_sum_offsets_into`].
///
/// # Example
/// ```
/// use cpugpu::host::prefix_sum_offsets;
/// let query_start_loc: Vec<i32> = prefix_sum_offsets(&[3i64, 1, 0, 4]).unwrap();
/// assert_eq!(query_start_loc, [0, 3, 4, 4, 8]);
/// assert_eq!(prefix_sum_offsets::<i32, i64>(&[]).unwrap(), [0]);
/// ```
pub fn prefix_sum_offsets<L: Index, O: Offset>(lengths: &[L]) -> Result<Vec<O>> {
    let n = lengths.len().checked_add(1).ok_or(Error::SizeOverflow {
        op: OP,
        what: "lengths.len() + 1",
    })?;
    let mut out = crate::memory::zeroed_vec(OP, n)?;
    prefix_sum_offsets_into(lengths, &mut out)?;
    Ok(out)
}

/// Allocation-free form of [`prefix_sum_offsets`]: `offsets` must hold exactly
/// `lengths.len() + 1` elements.
///
/// # Errors
/// - [`Error::LengthMismatch`](crate::Error::LengthMismatch) (`what: "offsets.len()"`) for an `offsets` of the wrong length;
/// - [`Error::NegativeLength`](crate::Error::NegativeLength) for a negative length;
/// - [`Error::OffsetOverflow`](crate::Error::OffsetOverflow) when an offset would exceed the offset type's maximum
///   (`position` is the length whose addition overflowed).
///
/// The error is the first a left-to-right loop would hit. On error `offsets` is untouched.
///
/// # Example
/// ```
/// use cpugpu::host::prefix_sum_offsets_into;
/// use cpugpu::{Error, Op};
/// let mut out = [0i32; 3];
/// let err = prefix_sum_offsets_into(&[i32::MAX, 1], &mut out).unwrap_err();
/// assert_eq!(err, Error::OffsetOverflow { op: Op::PrefixSumOffsets, position: 1, limit: i32::MAX as i64 });
/// assert_eq!(out, [0; 3]);
/// ```
pub fn prefix_sum_offsets_into<L: Index, O: Offset>(
    lengths: &[L],
    offsets: &mut [O],
) -> Result<()> {
    let n = lengths.len();
    if offsets.len() != n.saturating_add(1) {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "offsets.len()",
            expected: n.saturating_add(1),
            actual: offsets.len(),
        });
    }
    let par = use_par(std::mem::size_of_val(lengths));
    // Chunks also on one thread: `summarize` is exact for chunks of up to 2^32 lengths.
    let c = chunk_elems::<L>();
    let summaries: Vec<Summary> = if par {
        lengths.par_chunks(c).map(summarize).collect()
    } else {
        lengths.chunks(c).map(summarize).collect()
    };
    // Each chunk's starting offset, or the first error.
    let limit = O::MAX;
    let mut starts = Vec::with_capacity(summaries.len());
    let mut acc = 0i64;
    for (k, s) in summaries.iter().enumerate() {
        let next = s
            .sum
            .and_then(|sum| acc.checked_add(sum))
            .filter(|&a| a <= limit);
        match next {
            Some(next) if !s.negative => {
                starts.push(acc);
                acc = next;
            }
            _ => {
                let base = k * c;
                let chunk = &lengths[base..(base + c).min(n)];
                return Err(first_error(chunk, base, acc, limit));
            }
        }
    }
    let write = if use_stream(std::mem::size_of_val(offsets)) {
        write_chunk_stream::<L, O>
    } else {
        |l: &[L], o: &mut [O], start| {
            write_chunk(l, o, start);
        }
    };
    offsets[0] = O::default();
    let out = &mut offsets[1..];
    if par {
        out.par_chunks_mut(c)
            .zip(lengths.par_chunks(c))
            .zip(starts.par_iter())
            .for_each(|((o, l), &start)| write(l, o, start));
    } else {
        for ((o, l), &start) in out.chunks_mut(c).zip(lengths.chunks(c)).zip(&starts) {
            write(l, o, start);
        }
    }
    Ok(())
}
