//! The fused step on CUDA: the host inputs packed into one pool slot and uploaded in one copy,
//! then `step_validate`, `step_write` and `step_capture`.

use super::{StepDims, StepOutputs, StepPlan, StepRequests, StepState, OP};
use crate::cuda::CodedReport;
use crate::error::{Error, Result};
use crate::kernels::abi::CpugpuStepParams;
use crate::kernels::launch::{self, i64_of};
use crate::kernels::list;
use crate::ops::launch::{finish_coded, ptr, ptr_mut, signed};
use crate::ops::slots::PAD_SLOT_ID;
use crate::pool::UvaBufferPool;
use crate::Device;

/// `i32` words per group descriptor (`CpugpuKvGroup`: five 8-byte fields).
const GROUP_WORDS: usize = 10;

/// The coded error of `step.cu`; `ctx` is (groups, unused, unused).
fn decode(r: &CodedReport) -> Error {
    let groups = r.ctx[0] as u64;
    let (t, g) = (
        (r.position / groups) as usize,
        (r.position % groups) as usize,
    );
    if r.code == 2 {
        Error::BlockOutOfRange {
            op: r.op,
            position: t,
            group: g,
            block: signed(r.values[0]),
            valid: signed(r.values[1]),
        }
    } else {
        Error::NegativeBlock {
            op: r.op,
            position: t,
            group: g,
            value: signed(r.values[0]),
        }
    }
}

/// The fused step on CUDA (arguments checked and the step planned by the caller).
pub(crate) fn prepare_step(
    dev: &Device,
    pool: &UvaBufferPool,
    req: &StepRequests<'_>,
    state: &StepState<'_>,
    dims: &StepDims,
    plan: &StepPlan,
    out: StepOutputs<'_>,
) -> Result<()> {
    let q = dev.cuda_queue(OP)?;
    let ord = q.ctx.ordinal;
    let n = plan.num_reqs;
    let g = state.kv_groups.len();
    // Every pointer first: a host view is an error before anything is uploaded.
    let tok = state.token_ids.cuda_or(OP, "token_ids", ord)?;
    let outs = [
        out.query_start_loc.cuda_or(OP, "query_start_loc", ord)?,
        out.seq_lens.cuda_or(OP, "seq_lens", ord)?,
        out.positions.cuda_or(OP, "positions", ord)?,
        out.input_ids.cuda_or(OP, "input_ids", ord)?,
        out.slot_mapping.cuda_or(OP, "slot_mapping", ord)?,
        out.logits_indices.cuda_or(OP, "logits_indices", ord)?,
    ];
    let meta = crate::ops::slots::launch::descriptors(OP, state.kv_groups, &dims.groups, ord)?;
    // One pool slot, sized by the capacities (a stable key step after step): the group
    // descriptors, then query_start_loc (n + 1), num_computed (n), state_index (n), as i32.
    let words = GROUP_WORDS * g + 3 * dims.max_reqs + 1;
    let name = format!("cpugpu::prepare_step inputs [{words}]");
    let mut buf = match pool.get::<i32>(&name) {
        Ok(b) => b,
        Err(Error::PoolNameNotFound { .. }) => pool.allocate::<i32>(&name, &[words])?,
        Err(e) => return Err(e.in_op(OP)),
    };
    let used = GROUP_WORDS * g + 3 * n + 1;
    {
        let host = buf.host_mut(); // waits until the slot's last step has finished with it
        host[..GROUP_WORDS * g].copy_from_slice(bytemuck::cast_slice(&meta));
        let inputs = &mut host[GROUP_WORDS * g..used];
        let (qsl, rest) = inputs.split_at_mut(n + 1);
        let (computed, states) = rest.split_at_mut(n);
        let mut acc = 0i32;
        qsl[0] = 0;
        for r in 0..n {
            acc += req.num_scheduled[r];
            qsl[r + 1] = acc;
        }
        computed.copy_from_slice(req.num_computed);
        states.copy_from_slice(req.state_index);
    }
    buf.copy_to_device_rows(used)?; // one packed, asynchronous upload
    let base = buf.device_view().cuda_ptr().unwrap_or(0);
    let _bound = q.ctx.bind()?;
    let mut operands = vec![
        state.token_ids.cuda_queue(),
        out.query_start_loc.cuda_queue(),
        out.seq_lens.cuda_queue(),
        out.positions.cuda_queue(),
        out.input_ids.cuda_queue(),
        out.slot_mapping.cuda_queue(),
        out.logits_indices.cuda_queue(),
        buf.device_view().cuda_queue(),
    ];
    for k in state.kv_groups {
        operands.push(k.block_table.cuda_queue());
        operands.push(k.num_blocks.cuda_queue());
    }
    let joined = q.join(OP, &operands)?;
    let _issue = q.issue();
    let p = CpugpuStepParams {
        inputs: ptr(base + (GROUP_WORDS * g * 4) as u64),
        groups: ptr(base),
        token_ids: ptr(tok),
        query_start_loc: ptr_mut(outs[0]),
        seq_lens: ptr_mut(outs[1]),
        positions: ptr_mut(outs[2]),
        input_ids: ptr_mut(outs[3]),
        slot_mapping: ptr_mut(outs[4]),
        logits_indices: ptr_mut(outs[5]),
        error: ptr_mut(q.error_word(OP)?),
        report: std::ptr::null_mut(),
        n: i64_of(n),
        n_groups: i64_of(g),
        num_tokens: i64_of(plan.num_tokens),
        padded_tokens: i64_of(plan.padded_tokens),
        max_reqs: i64_of(dims.max_reqs),
        max_tokens: i64_of(dims.max_tokens),
        token_cols: i64_of(dims.max_model_len),
        pad_slot: PAD_SLOT_ID,
    };
    let work = (dims.max_reqs + 1)
        .max(plan.padded_tokens)
        .max(g * dims.max_tokens);
    // SAFETY (both launches): the packed inputs were checked on the host (state indices inside
    // every table, positions inside max_model_len), uploaded before the kernels in stream order
    // and kept until they finish (the pool slot's guard records an event when dropped below);
    // the validation reads one num_blocks entry and at most one valid table entry per (token,
    // group); the write kernel writes the outputs within the capacities checked by check_dims
    // (Q + 1, Q, T, T, groups x T, n) and only when the error word is clear.
    let issued = unsafe {
        q.launch(
            OP,
            list::step_validate,
            launch::flat_launch(plan.num_tokens * g, 2),
            &p,
        )
        .and_then(|()| q.launch(OP, list::step_write, launch::flat_launch(work, 2), &p))
    };
    let done = finish_coded(
        q,
        joined,
        issued,
        OP,
        decode,
        [i64_of(g.max(1)), 0, 0],
        list::step_capture,
        p,
        |p, error, report| {
            p.error = error;
            p.report = report;
        },
    );
    drop(buf); // the slot comes back once this step's kernels are done with it
    done
}
