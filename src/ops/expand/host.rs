//! Host segment expansion.
//!
//! One sequential pass validates the segments (the errors a left-to-right walk meets first),
//! then the outputs are written: sequentially segment by segment below
//! [`crate::ops::PAR_MIN_BYTES`] of output, else in chunks of consecutive elements on the thread
//! pool, each chunk finding its first segment by binary search in the offsets.
use rayon::prelude::*;

use super::{check_args, SegmentBounds};
use crate::memory::zeroed_vec;
use crate::ops::{chunk_elems, use_par};
use crate::{Error, Index, Op, Result};

const OP: Op = Op::ExpandSegments;

/// True when `start + count - 1 > limit` (`count >= 1`).
pub(crate) fn run_overflows(start: i64, count: u64, limit: i64) -> bool {
    i128::from(start) + i128::from(count) - 1 > i128::from(limit)
}

/// Validates the segments against `total` (`None`: whatever they cover) and returns the total.
fn validate<L: Index, P: Index>(
    bounds: SegmentBounds<&[L]>,
    starts: Option<&[P]>,
    total: Option<usize>,
) -> Result<usize> {
    let start = |s: usize| starts.map_or(0, |st| st[s].to_i64());
    let covered = match bounds {
        SegmentBounds::Counts(counts) => {
            let mut acc = 0i64;
            for (s, &c) in counts.iter().enumerate() {
                let c = c.to_i64();
                if c < 0 {
                    return Err(Error::NegativeLength {
                        op: OP,
                        position: s,
                        value: c,
                    });
                }
                if c > 0 && run_overflows(start(s), c as u64, P::MAX) {
                    return Err(Error::ValueOverflow {
                        op: OP,
                        position: s,
                        limit: P::MAX,
                    });
                }
                acc = acc.saturating_add(c);
            }
            acc as u64
        }
        SegmentBounds::Offsets(offs) => {
            let o0 = offs[0].to_i64();
            if o0 < 0 {
                let n = offs.len() - 1;
                return Err(Error::OffsetOutOfRange {
                    op: OP,
                    position: 0,
                    value: o0,
                    len: total.unwrap_or(offs[n].to_i64().max(0) as usize),
                });
            }
            for q in 1..offs.len() {
                let (prev, o) = (offs[q - 1].to_i64(), offs[q].to_i64());
                if o < prev {
                    return Err(Error::OffsetsNotMonotonic {
                        op: OP,
                        position: q,
                        previous: prev,
                        value: o,
                    });
                }
                if o > prev && run_overflows(start(q - 1), (o - prev) as u64, P::MAX) {
                    return Err(Error::ValueOverflow {
                        op: OP,
                        position: q - 1,
                        limit: P::MAX,
                    });
                }
            }
            (offs[offs.len() - 1].to_i64() - o0) as u64
        }
    };
    let covered = usize::try_from(covered).unwrap_or(usize::MAX);
    match total {
        Some(t) if t != covered => Err(Error::LengthMismatch {
            op: OP,
            what: "the segments' total",
            expected: t,
            actual: covered,
        }),
        _ => Ok(covered),
    }
}

/// Writes the elements of segment `s` from `skip` on (its first `skip` elements belong to an
/// earlier chunk) into the front of the two chunks; returns how many it wrote.
#[inline]
fn fill_segment<S: Index, P: Index>(
    s: usize,
    len: usize,
    skip: usize,
    start: i64,
    seg: &mut [S],
    pos: &mut [P],
) -> usize {
    let k = (len - skip).min(seg.len());
    let id = S::from_i64(s as i64).unwrap_or_default();
    seg[..k].fill(id);
    let first = start + skip as i64;
    for (j, p) in pos[..k].iter_mut().enumerate() {
        // Validated: start + len - 1 fits the position type.
        *p = P::from_i64(first + j as i64).unwrap_or_default();
    }
    k
}

/// Segment expansion (CSR to COO) on plain slices: for every element `i`, `seg_ids[i]` is its
/// segment `s` and `positions[i] = starts[s] + (i - offsets[s])` (`starts` `None`: 0). The
/// segments must cover exactly `seg_ids.len()` elements, and `positions` must be as long.
///
/// # Errors
/// As [`Device::expand_segments_into`](crate::Device::expand_segments_into): the first error a
/// left-to-right walk over the segments meets; nothing is written then.
///
/// # Example
/// ```
/// use cpugpu::{host, SegmentBounds};
/// let (mut req, mut pos) = ([0i32; 6], [0i64; 6]);
/// let query_start_loc = [0i32, 3, 4, 6];
/// host::expand_segments_into(SegmentBounds::Offsets(&query_start_loc[..]), None, &mut req, &mut pos)?;
/// assert_eq!(req, [0, 0, 0, 1, 2, 2]);
/// assert_eq!(pos, [0, 1, 2, 0, 0, 1]);
/// # Ok::<(), cpugpu::Error>(())
/// ```
pub fn expand_segments_into<L: Index, S: Index, P: Index>(
    bounds: SegmentBounds<&[L]>,
    starts: Option<&[P]>,
    seg_ids: &mut [S],
    positions: &mut [P],
) -> Result<()> {
    let n = check_args::<S>(
        bounds.inner().len(),
        bounds.is_offsets(),
        starts.map(<[P]>::len),
        seg_ids.len(),
        positions.len(),
    )?;
    validate(bounds, starts, Some(seg_ids.len()))?;
    write(bounds, n, starts, seg_ids, positions);
    Ok(())
}

/// Allocating form of [`expand_segments_into`]: the outputs are as long as the segments' total.
#[allow(clippy::type_complexity)]
pub fn expand_segments<L: Index, S: Index, P: Index>(
    bounds: SegmentBounds<&[L]>,
    starts: Option<&[P]>,
) -> Result<(Vec<S>, Vec<P>)> {
    let n = check_args::<S>(
        bounds.inner().len(),
        bounds.is_offsets(),
        starts.map(<[P]>::len),
        0,
        0,
    )?;
    let total = validate(bounds, starts, None)?;
    let mut seg = zeroed_vec(OP, total)?;
    let mut pos = zeroed_vec(OP, total)?;
    write(bounds, n, starts, &mut seg, &mut pos);
    Ok((seg, pos))
}

/// The writes, after validation.
fn write<L: Index, S: Index, P: Index>(
    bounds: SegmentBounds<&[L]>,
    n: usize,
    starts: Option<&[P]>,
    seg_ids: &mut [S],
    positions: &mut [P],
) {
    let start = |s: usize| starts.map_or(0, |st| st[s].to_i64());
    let bytes = seg_ids.len() * (std::mem::size_of::<S>() + std::mem::size_of::<P>());
    if !use_par(bytes) {
        let mut at = 0usize;
        for s in 0..n {
            let len = match bounds {
                SegmentBounds::Counts(c) => c[s].to_i64() as usize,
                SegmentBounds::Offsets(o) => (o[s + 1].to_i64() - o[s].to_i64()) as usize,
            };
            at += fill_segment(
                s,
                len,
                0,
                start(s),
                &mut seg_ids[at..],
                &mut positions[at..],
            );
        }
        return;
    }
    // 0-based offsets, then chunks of consecutive elements in parallel.
    let mut offs = Vec::with_capacity(n + 1);
    match bounds {
        SegmentBounds::Counts(c) => {
            let mut acc = 0i64;
            offs.push(0);
            for &x in c {
                acc += x.to_i64();
                offs.push(acc);
            }
        }
        SegmentBounds::Offsets(o) => {
            let o0 = o[0].to_i64();
            offs.extend(o.iter().map(|x| x.to_i64() - o0));
        }
    }
    let c = chunk_elems::<P>();
    seg_ids
        .par_chunks_mut(c)
        .zip(positions.par_chunks_mut(c))
        .enumerate()
        .for_each(|(k, (seg, pos))| {
            let base = (k * c) as i64;
            // The segment holding `base`: the last s with offs[s] <= base (non-empty from here).
            let mut s = offs[1..].partition_point(|&x| x <= base);
            let mut at = 0usize;
            let mut skip = (base - offs[s]) as usize;
            while at < seg.len() {
                let len = (offs[s + 1] - offs[s]) as usize;
                at += fill_segment(s, len, skip, start(s), &mut seg[at..], &mut pos[at..]);
                skip = 0;
                s += 1;
            }
        });
}
