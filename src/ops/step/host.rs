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
use crate::par::prefetch;
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

/// Division by a block size: a shift and a mask for powers of two (vLLM's block sizes), else a
/// division. A decode-only step divides a few times per request; a 64-bit division costs tens of
/// cycles, a shift one (with the decode fast paths below, 4,096 decodes went from 84 to 61 us,
/// `host_bench --op prepare_step_decode`).
#[derive(Clone, Copy)]
struct BlockDiv {
    bs: usize,
    shift: u32,
    pow2: bool,
}

impl BlockDiv {
    fn new(bs: usize) -> Self {
        BlockDiv {
            bs,
            shift: bs.trailing_zeros(),
            pow2: bs.is_power_of_two(),
        }
    }

    #[inline(always)]
    fn div(self, x: usize) -> usize {
        if self.pow2 {
            x >> self.shift
        } else {
            x / self.bs
        }
    }
}

/// How many requests ahead the loops prefetch the random reads of a request (its token-table
/// line, its `num_blocks` entry and its block-table line). A decode-only step reads one random
/// line of each per request, so it is bound by memory latency; issuing the loads early lets them
/// overlap. Its effect was not measured in isolation (the VM's load moved more than it would).
const PREFETCH_AHEAD: usize = 8;

/// Prefetches what request `r` reads (no-op past the last request).
#[inline(always)]
fn prefetch_request(req: &StepRequests<'_>, tables: &StepTables<'_>, r: usize) {
    if r >= req.state_index.len() {
        return;
    }
    let s = req.state_index[r] as usize;
    let c = req.num_computed[r] as usize;
    prefetch(tables.token_ids, s * tables.max_model_len + c);
    for g in tables.kv_groups {
        prefetch(g.num_blocks, s);
        prefetch(
            g.block_table,
            s * g.max_blocks + BlockDiv::new(g.block_size).div(c),
        );
    }
}

/// The first bad (token, group) pair of the step, if any: for each request and group, the first
/// block its tokens touch that is past the row's valid blocks or holds a negative number.
fn check_blocks(
    req: &StepRequests<'_>,
    tables: &StepTables<'_>,
    cuts: &[(usize, usize)],
) -> Result<()> {
    if cuts.len() <= 2 {
        return check_range(req, tables, 0..req.state_index.len(), 0);
    }
    // Chunks in parallel; the error of the earliest chunk that has one is the first.
    let found: Vec<Result<()>> = cuts
        .par_windows(2)
        .map(|w| check_range(req, tables, w[0].0..w[1].0, w[0].1))
        .collect();
    found.into_iter().collect()
}

/// [`check_blocks`] over requests `reqs`, whose tokens start at `t0`.
fn check_range(
    req: &StepRequests<'_>,
    tables: &StepTables<'_>,
    reqs: std::ops::Range<usize>,
    mut t0: usize,
) -> Result<()> {
    let groups = tables.kv_groups;
    let end = reqs.end;
    for r in reqs {
        if r + PREFETCH_AHEAD < end {
            prefetch_request(req, tables, r + PREFETCH_AHEAD);
        }
        let (s, c, k) = (
            req.state_index[r] as usize,
            req.num_computed[r] as usize,
            req.num_scheduled[r] as usize,
        );
        if k == 0 {
            continue;
        }
        if k == 1 {
            // A decode: one block per group; the general search below only when it is bad.
            let fine = groups.iter().all(|g| {
                let b = BlockDiv::new(g.block_size).div(c);
                let valid = i64::from(g.num_blocks[s]).clamp(0, g.max_blocks as i64) as usize;
                b < valid && g.block_table[s * g.max_blocks + b] >= 0
            });
            if fine {
                t0 += 1;
                continue;
            }
        }
        let mut first: Option<(usize, usize, Error)> = None;
        for (gi, g) in groups.iter().enumerate() {
            let bs = g.block_size;
            let d = BlockDiv::new(bs);
            let row = &g.block_table[s * g.max_blocks..][..g.max_blocks];
            let valid = i64::from(g.num_blocks[s]).clamp(0, g.max_blocks as i64) as usize;
            let (b0, b1) = (d.div(c), d.div(c + k - 1));
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
    let end = reqs.end;
    for r in reqs {
        if r + PREFETCH_AHEAD < end {
            prefetch_request(req, tables, r + PREFETCH_AHEAD);
        }
        let (s, c, k) = (
            req.state_index[r] as usize,
            req.num_computed[r] as usize,
            req.num_scheduled[r] as usize,
        );
        if k == 0 {
            continue;
        }
        if k == 1 {
            // A decode: one token, no loops.
            positions[at] = c as i64;
            ids[at] = tables.token_ids[s * l + c];
            for (g, out) in tables.kv_groups.iter().zip(slots.iter_mut()) {
                let d = BlockDiv::new(g.block_size);
                let b = d.div(c);
                let entry = g.block_table[s * g.max_blocks + b];
                out[at] = i64::from(entry) * g.block_size as i64 + (c - b * g.block_size) as i64;
            }
            at += 1;
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

/// Cuts of the step's requests for the thread pool, `(first request, first token)`, ending with
/// `(n, num_tokens)`: chunks of about equal token counts above [`crate::ops::PAR_MIN_BYTES`] of
/// token outputs; just `[(0, 0), (n, num_tokens)]` (one sequential chunk) below.
///
/// A decode-only step moves few bytes but reads a few random lines per request, so more threads
/// could overlap more misses; cutting 4,096 decodes into chunks of requests was tried and
/// measured slower on the 2-core VM of BENCHMARKS.md under other agents' load (median 77 to
/// 106 us on two threads against 60 to 62 us on one, `host_bench --op prepare_step_decode`),
/// so request count alone does not make a step parallel.
fn request_cuts(req: &StepRequests<'_>, n: usize, nt: usize, groups: usize) -> Vec<(usize, usize)> {
    if !use_par(nt * (12 + 8 * groups)) {
        return vec![(0, 0), (n, nt)];
    }
    let tokens_per = crate::ops::PAR_CHUNK_BYTES / (12 + 8 * groups);
    let mut cuts = vec![(0usize, 0usize)];
    let (mut t, mut last_t) = (0usize, 0usize);
    for r in 0..n {
        t += req.num_scheduled[r] as usize;
        if t - last_t >= tokens_per && r + 1 < n {
            cuts.push((r + 1, t));
            last_t = t;
        }
    }
    cuts.push((n, nt));
    cuts
}

/// The step after the argument checks: the block checks, then every output.
pub(crate) fn run(
    req: &StepRequests<'_>,
    tables: &StepTables<'_>,
    plan: &StepPlan,
    out: StepOutputs<'_>,
) -> Result<()> {
    let n = plan.num_reqs;
    let nt = plan.num_tokens;
    let groups = tables.kv_groups.len();
    let cuts = request_cuts(req, n, nt, groups);
    check_blocks(req, tables, &cuts)?;
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
    if cuts.len() <= 2 {
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
