//! The fused step on the host: the block checks first (per request and group, over the blocks
//! its tokens touch, so the first bad (token, group) pair is found without a pass per token),
//! then every output in one pass over the requests: a `copy_from_slice` of each request's token
//! ids, a run of positions, and each group's slots block by block. Above
//! [`crate::ops::PAR_MIN_BYTES`] of token outputs the requests are cut into chunks of about
//! equal token counts, one rayon task each.
use rayon::prelude::*;

use super::{check_dims, plan, StepPadding, StepPlan, StepRequests};
use crate::ops::slots::host::KvCacheGroup;
use crate::ops::use_par;
use crate::{Error, Op, Result};

const OP: Op = Op::PrepareStep;

/// The persistent request state on the host: the reference's form of
/// [`crate::StepState`].
#[derive(Clone, Copy, Debug)]
pub struct StepTables<'a> {
    /// `rows * max_model_len` token ids, row-major.
    pub token_ids: &'a [i32],
    /// Tokens per row of `token_ids`.
    pub max_model_len: usize,
    /// Each KV-cache group's block table.
    pub kv_groups: &'a [KvCacheGroup<'a, i32>],
}

/// The outputs on the host: the reference's form of [`crate::StepOutputs`] (`slot_mapping` is
/// `groups` rows of `positions.len()` slots, row-major).
#[derive(Debug)]
pub struct StepOutputs<'a> {
    /// `[Q + 1]`.
    pub query_start_loc: &'a mut [i32],
    /// `[Q]`.
    pub seq_lens: &'a mut [i32],
    /// `[T]`.
    pub positions: &'a mut [i64],
    /// `[T]`.
    pub input_ids: &'a mut [i32],
    /// `[groups * T]`.
    pub slot_mapping: &'a mut [i64],
    /// `[Q]`.
    pub logits_indices: &'a mut [i64],
}

/// The fused step on plain slices: see [`Device::prepare_step`](crate::Device::prepare_step).
///
/// # Errors
/// Those of [`Device::prepare_step`](crate::Device::prepare_step); nothing is written then.
///
/// # Example
/// ```
/// use cpugpu::{host, StepPadding, StepRequests};
/// let tokens: Vec<i32> = (0..32).collect(); // 2 states x 16 tokens
/// let group = host::KvCacheGroup { block_table: &[3, 1, 2, 0], max_blocks: 2, num_blocks: &[2, 1], block_size: 8 };
/// let tables = host::StepTables { token_ids: &tokens, max_model_len: 16, kv_groups: &[group] };
/// let req = StepRequests { state_index: &[0], num_computed: &[6], num_scheduled: &[3] };
/// let (mut qsl, mut seq, mut logits) = ([0i32; 3], [0i32; 2], [0i64; 2]);
/// let (mut pos, mut ids, mut slots) = ([0i64; 4], [0i32; 4], [0i64; 4]);
/// let out = host::StepOutputs {
///     query_start_loc: &mut qsl, seq_lens: &mut seq, positions: &mut pos,
///     input_ids: &mut ids, slot_mapping: &mut slots, logits_indices: &mut logits,
/// };
/// let plan = host::prepare_step_into(&req, &tables, StepPadding::Exact(4), out)?;
/// assert_eq!(plan.padded_tokens, 4);
/// assert_eq!(pos, [6, 7, 8, 0]);
/// assert_eq!(ids, [6, 7, 8, 0]);
/// assert_eq!(slots, [30, 31, 8, -1]);
/// # Ok::<(), cpugpu::Error>(())
/// ```
pub fn prepare_step_into(
    requests: &StepRequests<'_>,
    tables: &StepTables<'_>,
    padding: StepPadding<'_>,
    out: StepOutputs<'_>,
) -> Result<StepPlan> {
    let rows = tables
        .token_ids
        .len()
        .checked_div(tables.max_model_len)
        .unwrap_or(0);
    let groups: Vec<_> = tables
        .kv_groups
        .iter()
        .map(|g| {
            (
                g.block_table.len(),
                g.num_blocks.len(),
                g.max_blocks,
                g.num_blocks.len(),
                g.block_size,
            )
        })
        .collect();
    let dims = check_dims(
        tables.token_ids.len(),
        rows,
        tables.max_model_len,
        &groups,
        out.query_start_loc.len(),
        out.seq_lens.len(),
        out.logits_indices.len(),
        out.positions.len(),
        out.input_ids.len(),
        out.slot_mapping.len(),
    )?;
    let plan = plan(requests, &dims, padding)?;
    run(requests, tables, &plan, out)?;
    Ok(plan)
}

/// The first bad (token, group) pair of the step, if any: for each request and group, the first
/// block its tokens touch that is past the row's valid blocks or holds a negative number.
fn check_blocks(req: &StepRequests<'_>, groups: &[KvCacheGroup<'_, i32>]) -> Result<()> {
    let mut t0 = 0usize;
    for r in 0..req.state_index.len() {
        let (s, c, k) = (
            req.state_index[r] as usize,
            req.num_computed[r] as usize,
            req.num_scheduled[r] as usize,
        );
        if k == 0 {
            continue;
        }
        let mut first: Option<(usize, usize, Error)> = None;
        for (gi, g) in groups.iter().enumerate() {
            let bs = g.block_size;
            let row = &g.block_table[s * g.max_blocks..][..g.max_blocks];
            let valid = i64::from(g.num_blocks[s]).clamp(0, g.max_blocks as i64) as usize;
            let (b0, b1) = (c / bs, (c + k - 1) / bs);
            let Some(b) = (b0..=b1).find(|&b| b >= valid || row[b] < 0) else {
                continue;
            };
            let t = t0 + (b * bs).max(c) - c;
            if first
                .as_ref()
                .is_some_and(|&(ft, fg, _)| (ft, fg) <= (t, gi))
            {
                continue;
            }
            let e = if b >= valid {
                Error::BlockOutOfRange {
                    op: OP,
                    position: t,
                    group: gi,
                    block: b as i64,
                    valid: valid as i64,
                }
            } else {
                Error::NegativeBlock {
                    op: OP,
                    position: t,
                    group: gi,
                    value: i64::from(row[b]),
                }
            };
            first = Some((t, gi, e));
        }
        if let Some((_, _, e)) = first {
            return Err(e);
        }
        t0 += k;
    }
    Ok(())
}

/// Writes the token outputs of requests `reqs` (their tokens start at `t0`) into chunks that
/// start at that token: positions, ids, and one slot chunk per group.
fn fill_tokens(
    req: &StepRequests<'_>,
    tables: &StepTables<'_>,
    reqs: std::ops::Range<usize>,
    positions: &mut [i64],
    ids: &mut [i32],
    slots: &mut [&mut [i64]],
) {
    let l = tables.max_model_len;
    let mut at = 0usize;
    for r in reqs {
        let (s, c, k) = (
            req.state_index[r] as usize,
            req.num_computed[r] as usize,
            req.num_scheduled[r] as usize,
        );
        if k == 0 {
            continue;
        }
        for (j, p) in positions[at..at + k].iter_mut().enumerate() {
            *p = (c + j) as i64;
        }
        ids[at..at + k].copy_from_slice(&tables.token_ids[s * l + c..s * l + c + k]);
        for (g, out) in tables.kv_groups.iter().zip(slots.iter_mut()) {
            let bs = g.block_size;
            let row = &g.block_table[s * g.max_blocks..][..g.max_blocks];
            let mut pos = c;
            let mut o = at;
            while pos < c + k {
                let b = pos / bs;
                let run = ((b + 1) * bs).min(c + k) - pos;
                let base = i64::from(row[b]) * bs as i64 - (b * bs) as i64;
                for (j, x) in out[o..o + run].iter_mut().enumerate() {
                    *x = base + (pos + j) as i64;
                }
                pos += run;
                o += run;
            }
        }
        at += k;
    }
}

/// The step after the argument checks: the block checks, then every output.
pub(crate) fn run(
    req: &StepRequests<'_>,
    tables: &StepTables<'_>,
    plan: &StepPlan,
    out: StepOutputs<'_>,
) -> Result<()> {
    check_blocks(req, tables.kv_groups)?;
    let n = plan.num_reqs;
    let nt = plan.num_tokens;
    // Per request.
    let mut acc = 0i32;
    out.query_start_loc[0] = 0;
    for r in 0..n {
        let k = req.num_scheduled[r];
        acc += k;
        out.query_start_loc[r + 1] = acc;
        out.seq_lens[r] = req.num_computed[r] + k;
        out.logits_indices[r] = i64::from(acc) - 1;
    }
    out.query_start_loc[n + 1..].fill(acc);
    out.seq_lens[n..].fill(0);
    // Per token, then the tails.
    let t_cap = out.positions.len();
    let mut slot_rows: Vec<&mut [i64]> = if t_cap == 0 {
        Vec::new()
    } else {
        out.slot_mapping.chunks_mut(t_cap).collect()
    };
    let bytes = nt * (8 + 4 + 8 * slot_rows.len());
    if !use_par(bytes) {
        let mut heads: Vec<&mut [i64]> = slot_rows.iter_mut().map(|s| &mut s[..nt]).collect();
        fill_tokens(
            req,
            tables,
            0..n,
            &mut out.positions[..nt],
            &mut out.input_ids[..nt],
            &mut heads,
        );
    } else {
        // Chunks of requests with about equal token counts, cut on request boundaries.
        let per = crate::ops::PAR_CHUNK_BYTES / (12 + 8 * slot_rows.len()).max(1);
        let mut cuts = vec![(0usize, 0usize)]; // (request, token)
        let mut t = 0usize;
        let mut last = 0usize;
        for r in 0..n {
            t += req.num_scheduled[r] as usize;
            if t - last >= per && r + 1 < n {
                cuts.push((r + 1, t));
                last = t;
            }
        }
        cuts.push((n, nt));
        let mut pos_rest = &mut out.positions[..nt];
        let mut ids_rest = &mut out.input_ids[..nt];
        let mut slot_rest: Vec<&mut [i64]> = slot_rows.iter_mut().map(|s| &mut s[..nt]).collect();
        let mut jobs = Vec::with_capacity(cuts.len());
        for w in cuts.windows(2) {
            let len = w[1].1 - w[0].1;
            let (p, pr) = std::mem::take(&mut pos_rest).split_at_mut(len);
            let (i, ir) = std::mem::take(&mut ids_rest).split_at_mut(len);
            pos_rest = pr;
            ids_rest = ir;
            let mut heads = Vec::with_capacity(slot_rest.len());
            for s in slot_rest.iter_mut() {
                let (h, rest) = std::mem::take(s).split_at_mut(len);
                heads.push(h);
                *s = rest;
            }
            jobs.push((w[0].0..w[1].0, p, i, heads));
        }
        jobs.into_par_iter().for_each(|(reqs, p, i, mut heads)| {
            fill_tokens(req, tables, reqs, p, i, &mut heads);
        });
    }
    out.positions[nt..plan.padded_tokens].fill(0);
    out.input_ids[nt..plan.padded_tokens].fill(0);
    for s in slot_rows.iter_mut() {
        s[nt..].fill(crate::ops::slots::PAD_SLOT_ID);
    }
    Ok(())
}
