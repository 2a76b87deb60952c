//! The fused input preparation of one step: `query_start_loc`, `seq_lens`, `positions`,
//! `input_ids`, `slot_mapping` and `logits_indices` from the scheduler's counts and the
//! persistent request state, padded for CUDA graphs.

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use crate::device::{BackendKind, Device};
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::pad_to::{bucket_for, check_buckets};
use crate::ops::slots::{check_group, GroupDims, KvCacheGroup};
use crate::pool::UvaBufferPool;

const OP: Op = Op::PrepareStep;

/// One step's requests, in batch order, as the scheduler hands them over (host memory).
#[derive(Clone, Copy, Debug)]
pub struct StepRequests<'a> {
    /// Each request's row in the persistent request state (vLLM's `idx_mapping`).
    pub state_index: &'a [i32],
    /// Tokens each request has computed so far (its KV cache holds them).
    pub num_computed: &'a [i32],
    /// Tokens scheduled for each request this step (prefill chunks, or 1 for a decode).
    pub num_scheduled: &'a [i32],
}

/// The persistent per-request state on the device, indexed by [`StepRequests::state_index`].
#[derive(Clone, Copy, Debug)]
pub struct StepState<'a> {
    /// `[max_num_reqs, max_model_len]` token ids: prompt and generated tokens of each request
    /// state (vLLM's `all_token_ids`).
    pub token_ids: DeviceView<'a, i32>,
    /// The block table of each KV-cache group (one `slot_mapping` row per group).
    pub kv_groups: &'a [KvCacheGroup<'a, i32>],
}

/// How far the token outputs are padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPadding<'a> {
    /// Not at all: the padded count is the token count.
    None,
    /// To exactly this many tokens (at least the token count).
    Exact(usize),
    /// To the smallest of these sizes (strictly ascending; [`crate::cuda_graph_sizes`] gives
    /// vLLM's defaults) that holds the tokens; above the largest, not at all (vLLM runs such a
    /// batch without a CUDA graph).
    Buckets(&'a [usize]),
}

/// The outputs: the caller's persistent buffers, of `Q` requests and `T` tokens capacity.
#[derive(Debug)]
pub struct StepOutputs<'a> {
    /// `[Q + 1]`: the offsets of each request's tokens; after the `n + 1` real ones, the token
    /// count, so the array stays non-decreasing for the padded requests (FlashAttention needs
    /// that).
    pub query_start_loc: DeviceViewMut<'a, i32>,
    /// `[Q]`: tokens each request's attention sees (computed + scheduled); 0 after `n`.
    pub seq_lens: DeviceViewMut<'a, i32>,
    /// `[T]`: each token's position in its request; 0 from the token count up to the padded
    /// count; the rest untouched.
    pub positions: DeviceViewMut<'a, i64>,
    /// `[T]`: each token's id, read from the token table; 0 from the token count up to the
    /// padded count; the rest untouched.
    pub input_ids: DeviceViewMut<'a, i32>,
    /// `[groups, T]` (a vector for one group): each token's KV-cache slot in each group; the
    /// whole tail is [`crate::PAD_SLOT_ID`] (attention kernels may read past the batch).
    pub slot_mapping: DeviceViewMut<'a, i64>,
    /// `[Q]`: the index of each request's last token (`query_start_loc[r + 1] - 1`); entries
    /// past `n` are untouched.
    pub logits_indices: DeviceViewMut<'a, i64>,
}

/// What a step turned out to be: the sizes the model's forward pass needs on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// Requests in the batch (`n`).
    pub num_reqs: usize,
    /// Tokens scheduled in all.
    pub num_tokens: usize,
    /// The token count after padding (the CUDA graph to replay, when a bucket was found).
    pub padded_tokens: usize,
    /// The longest request of the step, in scheduled tokens.
    pub max_query_len: usize,
    /// The longest `seq_lens` entry.
    pub max_seq_len: usize,
}

/// The sizes of the state and the outputs, as every backend checks them.
#[derive(Clone, Debug)]
pub(crate) struct StepDims {
    pub state_rows: usize,
    pub max_model_len: usize,
    pub groups: Vec<GroupDims>,
    pub max_reqs: usize,
    pub max_tokens: usize,
}

/// The checks of the shapes: the outputs against each other, each group's table.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_dims(
    token_len: usize,
    state_rows: usize,
    max_model_len: usize,
    groups: &[(usize, usize, usize, usize, usize)],
    qsl_len: usize,
    seq_lens_len: usize,
    logits_len: usize,
    positions_len: usize,
    input_ids_len: usize,
    slot_len: usize,
) -> Result<StepDims> {
    let mismatch = |what, expected, actual| {
        Err(Error::LengthMismatch {
            op: OP,
            what,
            expected,
            actual,
        })
    };
    if state_rows.checked_mul(max_model_len) != Some(token_len) {
        return mismatch(
            "the token table's length (rows x max_model_len)",
            state_rows.saturating_mul(max_model_len),
            token_len,
        );
    }
    if qsl_len == 0 {
        return mismatch("query_start_loc.len() (max requests + 1)", 1, 0);
    }
    let max_reqs = qsl_len - 1;
    if seq_lens_len != max_reqs {
        return mismatch("seq_lens.len() (max requests)", max_reqs, seq_lens_len);
    }
    if logits_len != max_reqs {
        return mismatch("logits_indices.len() (max requests)", max_reqs, logits_len);
    }
    let max_tokens = positions_len;
    if input_ids_len != max_tokens {
        return mismatch("input_ids.len() (max tokens)", max_tokens, input_ids_len);
    }
    if slot_len != groups.len().saturating_mul(max_tokens) {
        return mismatch(
            "slot_mapping.len() (groups x max tokens)",
            groups.len().saturating_mul(max_tokens),
            slot_len,
        );
    }
    let groups = groups
        .iter()
        .map(|&(table_len, rows, cols, nb_len, bs)| {
            check_group(OP, table_len, rows, cols, nb_len, bs, i64::from(i32::MAX))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StepDims {
        state_rows,
        max_model_len,
        groups,
        max_reqs,
        max_tokens,
    })
}

/// Checks the requests against the state and the outputs, and sizes the step.
pub(crate) fn plan(
    req: &StepRequests<'_>,
    d: &StepDims,
    padding: StepPadding<'_>,
) -> Result<StepPlan> {
    let n = req.state_index.len();
    for (what, len) in [
        ("num_computed.len()", req.num_computed.len()),
        ("num_scheduled.len()", req.num_scheduled.len()),
    ] {
        if len != n {
            return Err(Error::LengthMismatch {
                op: OP,
                what,
                expected: n,
                actual: len,
            });
        }
    }
    if n > d.max_reqs {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "the request count",
            value: n as i128,
            reason: "more requests than query_start_loc has room for",
        });
    }
    let bound = d
        .groups
        .iter()
        .map(|g| g.rows)
        .fold(d.state_rows, usize::min);
    let (mut tokens, mut max_q, mut max_seq) = (0i64, 0usize, 0usize);
    for r in 0..n {
        let (s, c, k) = (
            req.state_index[r],
            req.num_computed[r],
            req.num_scheduled[r],
        );
        if s < 0 || s as usize >= bound {
            return Err(Error::IndexOutOfBounds {
                op: OP,
                position: r,
                index: i64::from(s),
                bound,
            });
        }
        if k < 0 {
            return Err(Error::NegativeLength {
                op: OP,
                position: r,
                value: i64::from(k),
            });
        }
        let end = i64::from(c) + i64::from(k);
        if c < 0 || end > d.max_model_len as i64 {
            return Err(Error::WindowOutOfRange {
                op: OP,
                position: r,
                start: i64::from(c),
                len: i64::from(k),
                cols: d.max_model_len,
            });
        }
        tokens += i64::from(k);
        if tokens > i64::from(i32::MAX) {
            return Err(Error::ValueOverflow {
                op: OP,
                position: r,
                limit: i64::from(i32::MAX),
            });
        }
        max_q = max_q.max(k as usize);
        max_seq = max_seq.max(end as usize);
    }
    let num_tokens = tokens as usize;
    let padded = match padding {
        StepPadding::None => num_tokens,
        StepPadding::Exact(p) if p >= num_tokens => p,
        StepPadding::Exact(p) => {
            return Err(Error::InvalidArgument {
                op: OP,
                name: "the padded token count",
                value: p as i128,
                reason: "fewer than the step's tokens",
            })
        }
        StepPadding::Buckets(b) => {
            check_buckets(OP, b)?;
            bucket_for(num_tokens, b).unwrap_or(num_tokens)
        }
    };
    if padded > d.max_tokens {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "positions.len() (max tokens, at least the padded token count)",
            expected: padded,
            actual: d.max_tokens,
        });
    }
    Ok(StepPlan {
        num_reqs: n,
        num_tokens,
        padded_tokens: padded,
        max_query_len: max_q,
        max_seq_len: max_seq,
    })
}

impl Device {
    /// The whole input preparation of one step, fused: from the scheduler's counts
    /// ([`StepRequests`]) and the persistent request state ([`StepState`]: the token table and
    /// the block tables), writes `query_start_loc`, `seq_lens`, `positions`, `input_ids`,
    /// `slot_mapping` and `logits_indices` ([`StepOutputs`]), padded as `padding` says, and
    /// returns the step's sizes. The results are those of vLLM's numpy formulation
    /// (`benches/step_reference.py`; `tests/step.rs` checks the identity).
    ///
    /// On CUDA: the small host inputs (the request counts, `query_start_loc`, the block tables'
    /// descriptors) go up in one packed copy through a slot of `pool` (held until the step's
    /// kernels have run), then three launches: validate, write, capture the first error. The
    /// host backend reads everything in place and leaves `pool` alone.
    ///
    /// Errors: the requests are checked on the host, at once ([`Error::IndexOutOfBounds`] for a
    /// state index, [`Error::NegativeLength`] for a negative scheduled count,
    /// [`Error::WindowOutOfRange`] for tokens past `max_model_len`, shape and length errors);
    /// the block tables where they live: a token whose block is past its row's `num_blocks` is
    /// [`Error::BlockOutOfRange`], a negative block number [`Error::NegativeBlock`] (on CUDA
    /// from [`Device::synchronize`]). Nothing is written when there is an error.
    ///
    /// ```
    /// use cpugpu::*;
    /// let dev = Device::auto();
    /// let pool = UvaBufferPool::new(&dev, 2);
    /// // Two request states of a 16-token model, blocks of 4 tokens.
    /// let tokens: Vec<i32> = (100..132).collect();
    /// let token_ids = dev.upload(&tokens, &[2, 16])?;
    /// let table = dev.upload(&[9i32, 4, 0, 0, 7, 0, 0, 0], &[2, 4])?;
    /// let num_blocks = dev.upload(&[2i32, 1], &[2])?;
    /// let groups = [KvCacheGroup { block_table: table.view(), num_blocks: num_blocks.view(), block_size: 4 }];
    /// let state = StepState { token_ids: token_ids.view(), kv_groups: &groups };
    /// // Request 0 (state 1) decodes its 4th token; request 1 (state 0) prefills 5 tokens.
    /// let req = StepRequests { state_index: &[1, 0], num_computed: &[3, 0], num_scheduled: &[1, 5] };
    /// let (mut qsl, mut seq, mut logits) = (dev.alloc::<i32>(&[5])?, dev.alloc::<i32>(&[4])?, dev.alloc::<i64>(&[4])?);
    /// let (mut pos, mut ids, mut slots) = (dev.alloc::<i64>(&[8])?, dev.alloc::<i32>(&[8])?, dev.alloc::<i64>(&[8])?);
    /// let out = StepOutputs {
    ///     query_start_loc: qsl.view_mut(), seq_lens: seq.view_mut(), positions: pos.view_mut(),
    ///     input_ids: ids.view_mut(), slot_mapping: slots.view_mut(), logits_indices: logits.view_mut(),
    /// };
    /// let plan = dev.prepare_step(&pool, &req, &state, StepPadding::Buckets(&cuda_graph_sizes(8)), out)?;
    /// assert_eq!((plan.num_tokens, plan.padded_tokens), (6, 8));
    /// assert_eq!(qsl.to_vec()?, [0, 1, 6, 6, 6]);
    /// assert_eq!(seq.to_vec()?, [4, 5, 0, 0]);
    /// assert_eq!(pos.to_vec()?, [3, 0, 1, 2, 3, 4, 0, 0]);
    /// assert_eq!(ids.to_vec()?, [119, 100, 101, 102, 103, 104, 0, 0]);
    /// assert_eq!(slots.to_vec()?, [31, 36, 37, 38, 39, 16, -1, -1]);
    /// assert_eq!(&logits.to_vec()?[..2], &[0, 5]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn prepare_step(
        &self,
        pool: &UvaBufferPool,
        requests: &StepRequests<'_>,
        state: &StepState<'_>,
        padding: StepPadding<'_>,
        out: StepOutputs<'_>,
    ) -> Result<StepPlan> {
        let ts = state.token_ids.shape();
        let groups: Vec<(usize, usize, usize, usize, usize)> = state
            .kv_groups
            .iter()
            .map(|g| {
                let s = g.block_table.shape();
                (
                    g.block_table.len(),
                    s.rows(),
                    s.row_len(),
                    g.num_blocks.len(),
                    g.block_size,
                )
            })
            .collect();
        let dims = check_dims(
            state.token_ids.len(),
            ts.rows(),
            ts.row_len(),
            &groups,
            out.query_start_loc.len(),
            out.seq_lens.len(),
            out.logits_indices.len(),
            out.positions.len(),
            out.input_ids.len(),
            out.slot_mapping.len(),
        )?;
        let plan = plan(requests, &dims, padding)?;
        match self.kind() {
            BackendKind::Host => {
                let _ = pool;
                let kv = state
                    .kv_groups
                    .iter()
                    .zip(&dims.groups)
                    .map(|(g, d)| {
                        Ok(crate::ops::slots::host::KvCacheGroup {
                            block_table: g.block_table.on_host(OP)?,
                            max_blocks: d.cols,
                            num_blocks: g.num_blocks.on_host(OP)?,
                            block_size: d.block_size,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let tables = host::StepTables {
                    token_ids: state.token_ids.on_host(OP)?,
                    max_model_len: dims.max_model_len,
                    kv_groups: &kv,
                };
                let outs = host::StepOutputs {
                    query_start_loc: out.query_start_loc.into_host(OP)?,
                    seq_lens: out.seq_lens.into_host(OP)?,
                    positions: out.positions.into_host(OP)?,
                    input_ids: out.input_ids.into_host(OP)?,
                    slot_mapping: out.slot_mapping.into_host(OP)?,
                    logits_indices: out.logits_indices.into_host(OP)?,
                };
                // The step's outputs are what it writes; they are a few hundred KiB at most.
                let bytes = std::mem::size_of_val(outs.positions)
                    + std::mem::size_of_val(outs.input_ids)
                    + std::mem::size_of_val(outs.slot_mapping);
                self.host_run(bytes, || host::run(requests, &tables, &plan, outs))?;
                Ok(plan)
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                launch::prepare_step(self, pool, requests, state, &dims, &plan, out)?;
                Ok(plan)
            }
        }
    }
}
