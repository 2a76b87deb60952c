//! Host slot mapping: a sequential validation pass over (token, group) pairs in order, then the
//! writes, group by group, in parallel chunks of tokens above [`crate::ops::PAR_MIN_BYTES`].
use rayon::prelude::*;

use super::{check_group, check_tokens, GroupDims};
use crate::ops::{chunk_elems, use_par};
use crate::{Error, Index, Op, Result};

const OP: Op = Op::SlotMapping;

/// One KV-cache group's block table on the host: the reference's form of
/// [`crate::KvCacheGroup`].
#[derive(Clone, Copy, Debug)]
pub struct KvCacheGroup<'a, B> {
    /// `rows * max_blocks` block numbers, row-major.
    pub block_table: &'a [B],
    /// Entries per block-table row.
    pub max_blocks: usize,
    /// `rows` valid-block counts (one per row).
    pub num_blocks: &'a [B],
    /// Tokens per block.
    pub block_size: usize,
}

/// Where a token's slot comes from, or why it has none.
pub(crate) enum Lookup {
    Slot(i64),
    RowOutOfBounds { row: i64, rows: usize },
    Block { block: i64, valid: i64 },
    Negative(i64),
    Overflow,
}

/// The slot of position `pos` in row `row` of group `g` (rows and tables checked for shape).
#[inline]
pub(crate) fn lookup<B: Index>(
    g: &KvCacheGroup<'_, B>,
    row: i64,
    pos: i64,
    slot_max: i64,
) -> Lookup {
    let rows = g.num_blocks.len();
    if row < 0 || row as u64 >= rows as u64 {
        return Lookup::RowOutOfBounds { row, rows };
    }
    let row = row as usize;
    let bs = g.block_size as i64;
    let (block, offset) = div_rem(pos, g.block_size);
    let valid = g.num_blocks[row].to_i64().clamp(0, g.max_blocks as i64);
    if block < 0 || block >= valid {
        return Lookup::Block { block, valid };
    }
    let entry = g.block_table[row * g.max_blocks + block as usize].to_i64();
    if entry < 0 {
        return Lookup::Negative(entry);
    }
    if entry > (slot_max - offset) / bs {
        return Lookup::Overflow;
    }
    Lookup::Slot(entry * bs + offset)
}

/// The error of a failed lookup of token `t` in group `g`.
pub(crate) fn lookup_error(l: Lookup, op: Op, t: usize, g: usize, slot_max: i64) -> Error {
    match l {
        Lookup::RowOutOfBounds { row, rows } => Error::IndexOutOfBounds {
            op,
            position: t,
            index: row,
            bound: rows,
        },
        Lookup::Block { block, valid } => Error::BlockOutOfRange {
            op,
            position: t,
            group: g,
            block,
            valid,
        },
        Lookup::Negative(value) => Error::NegativeBlock {
            op,
            position: t,
            group: g,
            value,
        },
        Lookup::Overflow | Lookup::Slot(_) => Error::ValueOverflow {
            op,
            position: t,
            limit: slot_max,
        },
    }
}

/// Never produced: a validated token always has a slot.
const PAD_UNREACHABLE: i64 = -1;

/// The run of consecutive positions of one row that the last token continued: the next token
/// of the run gets the next slot without a division, and crossing into the row's next block
/// costs one table read (a prefill's tokens are such a run). 8,192 tokens of a step took 77 us
/// with a division and two table reads per token, 40 us with runs inside blocks, and 38 us with
/// runs across blocks and shifts for power-of-two block sizes (`host_bench --op slot_mapping`;
/// the rest is the decodes' random rows: prefetching them a few tokens ahead was tried and
/// measured slower, 55 us).
#[derive(Clone, Copy, Default)]
struct Run {
    row: i64,
    pos: i64,
    block: i64,
    valid: i64,
    slot: i64,
    /// Slots left in the block after `slot`.
    left: i64,
    live: bool,
}

impl Run {
    /// The slot of (row, pos) when it continues the run and its block is valid and fits.
    #[inline]
    fn next<B: Index>(
        &mut self,
        g: &KvCacheGroup<'_, B>,
        row: i64,
        pos: i64,
        slot_max: i64,
    ) -> Option<i64> {
        if !(self.live && row == self.row && pos == self.pos + 1) {
            return None;
        }
        if self.left > 0 {
            self.pos = pos;
            self.slot += 1;
            self.left -= 1;
            return Some(self.slot);
        }
        // The next block of the same row.
        let block = self.block + 1;
        if block >= self.valid {
            return None;
        }
        let entry = g.block_table[row as usize * g.max_blocks + block as usize].to_i64();
        let bs = g.block_size as i64;
        if entry < 0 || entry > slot_max / bs {
            return None;
        }
        let slot = entry * bs;
        *self = Run {
            row,
            pos,
            block,
            valid: self.valid,
            slot,
            left: (bs - 1).min(slot_max - slot),
            live: true,
        };
        Some(slot)
    }

    /// Starts a run at a validated (row, pos) with this slot; it ends at the block's end, or
    /// where the next slot would pass the slot type's maximum.
    #[inline]
    fn start<B: Index>(
        &mut self,
        g: &KvCacheGroup<'_, B>,
        row: i64,
        pos: i64,
        slot: i64,
        slot_max: i64,
    ) {
        let bs = g.block_size as i64;
        let (block, offset) = div_rem(pos, g.block_size);
        *self = Run {
            row,
            pos,
            block,
            valid: g.num_blocks[row as usize]
                .to_i64()
                .clamp(0, g.max_blocks as i64),
            slot,
            left: (bs - 1 - offset).min(slot_max - slot),
            live: true,
        };
    }
}

/// Floor division and remainder of a position by a block size: a shift and a mask for the
/// (usual) power-of-two sizes and non-negative positions.
#[inline(always)]
fn div_rem(pos: i64, bs: usize) -> (i64, i64) {
    if pos >= 0 && bs.is_power_of_two() {
        let shift = bs.trailing_zeros();
        (pos >> shift, pos & (bs as i64 - 1))
    } else {
        let bs = bs as i64;
        (pos.div_euclid(bs), pos.rem_euclid(bs))
    }
}

/// Slot mapping on plain slices: `slots` holds `groups.len()` rows of `slots.len() /
/// groups.len()` slots (at least `rows.len()`); see
/// [`Device::slot_mapping_into`](crate::Device::slot_mapping_into).
///
/// # Errors
/// The first bad (token, group) pair in token order, then group order; nothing is written then.
///
/// # Example
/// ```
/// use cpugpu::host::{slot_mapping_into, KvCacheGroup};
/// let group = KvCacheGroup { block_table: &[7i32, 2, 5, -1], max_blocks: 2, num_blocks: &[2, 1], block_size: 4 };
/// let mut slots = [0i64; 4];
/// slot_mapping_into(&[0i32, 0, 1], &[3i64, 4, 1], &[group], -1, &mut slots)?;
/// assert_eq!(slots, [31, 8, 21, -1]);
/// # Ok::<(), cpugpu::Error>(())
/// ```
pub fn slot_mapping_into<I: Index, P: Index, B: Index, O: Index>(
    rows: &[I],
    positions: &[P],
    groups: &[KvCacheGroup<'_, B>],
    pad: O,
    slots: &mut [O],
) -> Result<()> {
    let n = rows.len();
    let stride = check_tokens(n, positions.len(), groups.len(), slots.len())?;
    for g in groups {
        let _: GroupDims = check_group(
            OP,
            g.block_table.len(),
            g.num_blocks.len(),
            g.max_blocks,
            g.num_blocks.len(),
            g.block_size,
            O::MAX,
        )?;
    }
    // Validation: a token continuing its predecessor's run (same row, next position, same
    // block) reuses its block's check; only run starts and block boundaries do a full lookup.
    let mut runs: Vec<Run> = vec![Run::default(); groups.len()];
    for t in 0..n {
        let (row, pos) = (rows[t].to_i64(), positions[t].to_i64());
        for (gi, g) in groups.iter().enumerate() {
            if runs[gi].next(g, row, pos, O::MAX).is_some() {
                continue;
            }
            match lookup(g, row, pos, O::MAX) {
                Lookup::Slot(s) => runs[gi].start(g, row, pos, s, O::MAX),
                l => return Err(lookup_error(l, OP, t, gi, O::MAX)),
            }
        }
    }
    let fill = |g: &KvCacheGroup<'_, B>, base: usize, out: &mut [O]| {
        let mut run = Run::default();
        for (k, o) in out.iter_mut().enumerate() {
            let t = base + k;
            *o = if t < n {
                let (row, pos) = (rows[t].to_i64(), positions[t].to_i64());
                let slot = match run.next(g, row, pos, O::MAX) {
                    Some(s) => s,
                    None => match lookup(g, row, pos, O::MAX) {
                        Lookup::Slot(s) => {
                            run.start(g, row, pos, s, O::MAX);
                            s
                        }
                        _ => PAD_UNREACHABLE, // validated above
                    },
                };
                O::from_i64(slot).unwrap_or(pad)
            } else {
                pad
            };
        }
    };
    if stride == 0 {
        return Ok(());
    }
    for (g, out) in groups.iter().zip(slots.chunks_mut(stride)) {
        if use_par(std::mem::size_of_val(out)) {
            let c = chunk_elems::<O>();
            out.par_chunks_mut(c)
                .enumerate()
                .for_each(|(k, o)| fill(g, k * c, o));
        } else {
            fill(g, 0, out);
        }
    }
    Ok(())
}
