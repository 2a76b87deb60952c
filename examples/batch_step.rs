//! The main job: the per-step input preparation of an inference engine (vLLM's GPU model
//! runner), on the best backend this build and machine offer (`Device::auto()`: the host backend
//! by default, a GPU with `--features cuda` when one answers).
//!
//! The engine keeps persistent state across steps, as vLLM does: a token table (every request
//! state's prompt and generated tokens), one block table with per-row valid-block counts, and a
//! KV cache whose blocks are handed out from a shuffled free list. Each step:
//!
//! 1. `schedule` — prefills (chunks of a prompt) and decodes (one token) under a token budget;
//!    finished requests make room for new ones in their state rows;
//! 2. `blocks`   — new KV blocks popped from the free list for the tokens that need them, staged
//!    as block-table writes (a new request's row from 0, a growing one after its blocks) and
//!    applied with one packed upload and one launch (`StagedWrites`), with the step's sampled
//!    tokens written into the token table the same way;
//! 3. `prepare`  — `Device::prepare_step`: `query_start_loc`, `seq_lens`, `positions`,
//!    `input_ids`, `slot_mapping` and `logits_indices`, padded to vLLM's CUDA-graph sizes (1, 2,
//!    4, then multiples of 8 up to 512; above 512 unpadded), in one fused call;
//! 4. `six ops`  — the same step with only the original six operations (prefix sum, two row
//!    gathers, two pads) and host arithmetic, as this crate could do it before; its outputs are
//!    checked to be identical, and its time printed beside the fused one.
//!
//! The first step is labelled warm-up: it pays for first-use allocations (pool slots, staging).
//!
//! ```text
//! cargo run --release --example batch_step -- [--requests N] [--steps S] [--seed X] [--help]
//! ```

use std::time::Instant;

use cpugpu::{
    bucket_for, cuda_graph_sizes, CpuGpuBuffer, Device, DeviceBuffer, Element, GatherPolicy,
    KvCacheGroup, MemoryPlacement, StagedWrites, StepOutputs, StepPadding, StepPlan, StepRequests,
    StepState, UvaBufferPool,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const MAX_MODEL_LEN: usize = 4096;
const BLOCK_SIZE: usize = 16;
const MAX_BLOCKS: usize = MAX_MODEL_LEN / BLOCK_SIZE;
const TOKEN_BUDGET: usize = 8192;
const PREFILL_CHUNK: usize = 480;
const VOCAB: i32 = 50_000;

const HELP: &str = "batch_step: one inference-engine step of input preparation after another.

usage: cargo run --release --example batch_step -- [--requests N] [--steps S] [--seed X]

  --requests N  request states (default 256; an eighth are prefilling at the start)
  --steps S     steps to run (default 4; the first is a warm-up)
  --seed X      seed of the schedule, prompts and block free list (default 7)
  --help        this text

Each step prints its stages with their times: schedule, blocks (staged block-table and token
writes, one apply each), prepare (the fused prepare_step), and the same step written with only
the six original operations plus host arithmetic, whose outputs must match.";

struct Args {
    requests: usize,
    steps: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: 256,
        steps: 4,
        seed: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{HELP}");
            std::process::exit(0);
        }
        let mut value = |name: &str| {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse::<u64>()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--requests" => args.requests = (value("--requests")? as usize).max(1),
            "--steps" => args.steps = value("--steps")? as usize,
            "--seed" => args.seed = value("--seed")?,
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    Ok(args)
}

/// A request living in one state row.
struct Request {
    prompt_len: usize,
    target_len: usize,
    computed: usize,
}

fn new_request(rng: &mut SmallRng, prefilling: bool) -> Request {
    let prompt_len = rng.gen_range(32..1024);
    let target_len = (prompt_len + rng.gen_range(16..512)).min(MAX_MODEL_LEN);
    Request {
        prompt_len,
        target_len,
        // A decoding request joins with its prompt already computed.
        computed: if prefilling { 0 } else { prompt_len },
    }
}

fn us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

fn to_vec<T: Element>(b: &DeviceBuffer<T>) -> Vec<T> {
    b.to_vec().expect("read back")
}

/// The engine's persistent state and per-step buffers.
struct Engine {
    dev: Device,
    pool: UvaBufferPool,
    token_ids: DeviceBuffer<i32>,
    block_table: DeviceBuffer<i32>,
    num_blocks: CpuGpuBuffer<i32>,
    free: Vec<i32>,
    owned: Vec<Vec<i32>>,
    token_writes: StagedWrites<i32>,
    block_writes: StagedWrites<i32>,
    // Outputs of the fused step (persistent, as vLLM's InputBuffers).
    qsl: DeviceBuffer<i32>,
    seq_lens: DeviceBuffer<i32>,
    positions: DeviceBuffer<i64>,
    input_ids: DeviceBuffer<i32>,
    slots: DeviceBuffer<i64>,
    logits: DeviceBuffer<i64>,
}

/// The six-operation version's outputs, read back for the comparison.
struct Baseline {
    qsl: Vec<i32>,
    seq_lens: Vec<i32>,
    positions: Vec<i64>,
    input_ids: Vec<i32>,
    slots: Vec<i64>,
    logits: Vec<i64>,
}

impl Engine {
    /// The same step with only gather_rows, prefix_sum_offsets and pad_to_multiple plus host
    /// arithmetic (downloads included: the host must see query_start_loc and the block numbers
    /// to compute positions and slots).
    fn six_ops(&self, req: &StepRequests<'_>, plan: &StepPlan) -> cpugpu::Result<Baseline> {
        let dev = &self.dev;
        let n = req.state_index.len();
        let lens = dev.upload(req.num_scheduled, &[n])?;
        let qsl_dev = dev.prefix_sum_offsets::<i32, i32>(lens.view())?;
        let qsl_n = qsl_dev.to_vec()?;
        let nt = plan.num_tokens;
        let (mut positions, mut tok_idx, mut blk_idx) = (
            Vec::with_capacity(nt),
            Vec::with_capacity(nt),
            Vec::with_capacity(nt),
        );
        for r in 0..n {
            let s = req.state_index[r] as i64;
            for k in 0..req.num_scheduled[r] as i64 {
                let p = i64::from(req.num_computed[r]) + k;
                positions.push(p);
                tok_idx.push(s * MAX_MODEL_LEN as i64 + p);
                blk_idx.push(s * MAX_BLOCKS as i64 + p / BLOCK_SIZE as i64);
            }
        }
        let tok_idx = dev.upload(&tok_idx, &[nt])?;
        let table_rows = self.token_ids.view().reshape(&[self.token_ids.len(), 1])?;
        let ids = dev.gather_rows(table_rows, tok_idx.view(), GatherPolicy::Checked)?;
        let blk_idx = dev.upload(&blk_idx, &[nt])?;
        let bt_rows = self
            .block_table
            .view()
            .reshape(&[self.block_table.len(), 1])?;
        let blocks = dev
            .gather_rows(bt_rows, blk_idx.view(), GatherPolicy::Checked)?
            .to_vec()?;
        let slots: Vec<i64> = blocks
            .iter()
            .zip(&positions)
            .map(|(&b, &p)| i64::from(b) * BLOCK_SIZE as i64 + p % BLOCK_SIZE as i64)
            .collect();
        let padded = plan.padded_tokens;
        let pos_dev = dev.upload(&positions, &[nt])?;
        let slots_dev = dev.upload(&slots, &[nt])?;
        let q = self.qsl.len() - 1;
        let pad_to = |len: usize| padded.max(1).max(len);
        let pos_p = dev.pad_to_multiple(pos_dev.view(), 0, pad_to(nt), 0)?;
        let ids_p = dev.pad_to_multiple(ids.view(), 0, pad_to(nt), 0)?;
        let slots_p = dev.pad_to_multiple(slots_dev.view(), 0, self.positions.len(), -1)?;
        let mut qsl = qsl_n;
        qsl.resize(q + 1, nt as i32);
        let mut seq_lens: Vec<i32> = (0..n)
            .map(|r| req.num_computed[r] + req.num_scheduled[r])
            .collect();
        seq_lens.resize(q, 0);
        let logits: Vec<i64> = qsl[1..=n].iter().map(|&x| i64::from(x) - 1).collect();
        let read = |v: cpugpu::DeviceView<'_, i64>| -> cpugpu::Result<Vec<i64>> {
            let mut o = vec![0; v.len()];
            v.copy_to_host(&mut o)?;
            Ok(o)
        };
        let mut id_out = vec![0; ids_p.view().len()];
        ids_p.view().copy_to_host(&mut id_out)?;
        Ok(Baseline {
            qsl,
            seq_lens,
            positions: read(pos_p.view())?[..padded].to_vec(),
            input_ids: id_out[..padded].to_vec(),
            slots: read(slots_p.view())?,
            logits,
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let dev = Device::auto();
    println!(
        "device: {dev}{}",
        dev.fallback_reason()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let n_states = args.requests;
    let sizes = cuda_graph_sizes(512);
    let total_blocks = n_states * MAX_BLOCKS;
    let mut free: Vec<i32> = (0..total_blocks as i32).collect();
    free.shuffle(&mut rng);
    println!(
        "model: {n_states} request states, max_model_len {MAX_MODEL_LEN}, block size {BLOCK_SIZE}, \
         {total_blocks} KV blocks from a shuffled free list; token budget {TOKEN_BUDGET} per step; \
         CUDA-graph sizes 1, 2, 4, 8 .. 512 ({} sizes), unpadded above",
        sizes.len()
    );

    // Persistent state: random prompts in every row; an eighth of the requests start prefilling.
    let tokens: Vec<i32> = (0..n_states * MAX_MODEL_LEN)
        .map(|_| rng.gen_range(0..VOCAB))
        .collect();
    let mut reqs: Vec<Request> = (0..n_states)
        .map(|i| new_request(&mut rng, i % 8 == 0))
        .collect();
    let q_cap = n_states;
    let t_cap = TOKEN_BUDGET;
    let mut eng = Engine {
        pool: UvaBufferPool::new(&dev, 2),
        token_ids: dev.upload(&tokens, &[n_states, MAX_MODEL_LEN])?,
        block_table: dev.upload(&vec![-1i32; total_blocks], &[n_states, MAX_BLOCKS])?,
        num_blocks: CpuGpuBuffer::new(&dev, "num_blocks", &[n_states], MemoryPlacement::Pinned)?,
        free,
        owned: vec![Vec::new(); n_states],
        token_writes: StagedWrites::new(&dev, n_states, MAX_MODEL_LEN),
        block_writes: StagedWrites::new(&dev, n_states, MAX_BLOCKS),
        qsl: dev.alloc(&[q_cap + 1])?,
        seq_lens: dev.alloc(&[q_cap])?,
        positions: dev.alloc(&[t_cap])?,
        input_ids: dev.alloc(&[t_cap])?,
        slots: dev.alloc(&[1, t_cap])?,
        logits: dev.alloc(&[q_cap])?,
        dev: dev.clone(),
    };
    // Decoding requests already hold the blocks of their prompts.
    for (s, r) in reqs.iter().enumerate() {
        let need = r.computed.div_ceil(BLOCK_SIZE);
        let ids: Vec<i32> = (0..need)
            .map(|_| eng.free.pop().expect("free block"))
            .collect();
        eng.block_writes.stage(s, 0, &ids)?;
        eng.owned[s] = ids;
        eng.num_blocks.host_mut()[s] = need as i32;
    }
    eng.block_writes.apply(eng.block_table.view_mut())?;
    let (mut fused_total, mut base_total, mut timed) = (0.0, 0.0, 0);

    for step in 0..args.steps {
        let t_step = Instant::now();
        // 1. schedule
        let t = Instant::now();
        let (mut state_index, mut num_computed, mut num_scheduled) = (vec![], vec![], vec![]);
        let mut budget = TOKEN_BUDGET;
        let (mut n_prefill, mut n_decode) = (0, 0);
        for (s, r) in reqs.iter().enumerate() {
            let want = if r.computed < r.prompt_len {
                (r.prompt_len - r.computed).min(PREFILL_CHUNK)
            } else {
                1
            };
            let k = want.min(budget);
            if k == 0 {
                continue;
            }
            budget -= k;
            if r.computed < r.prompt_len {
                n_prefill += 1;
            } else {
                n_decode += 1;
            }
            state_index.push(s as i32);
            num_computed.push(r.computed as i32);
            num_scheduled.push(k as i32);
        }
        let t_schedule = us(t);

        // 2. blocks: the KV blocks the scheduled tokens need, and last step's sampled tokens.
        let t = Instant::now();
        let mut new_blocks = 0usize;
        for (i, &s) in state_index.iter().enumerate() {
            let s = s as usize;
            let need = (num_computed[i] + num_scheduled[i]) as usize;
            let have = eng.owned[s].len();
            let more = need.div_ceil(BLOCK_SIZE).saturating_sub(have);
            if more > 0 {
                let ids: Vec<i32> = (0..more)
                    .map(|_| eng.free.pop().expect("free block"))
                    .collect();
                eng.block_writes.stage(s, have, &ids)?;
                eng.owned[s].extend_from_slice(&ids);
                eng.num_blocks.host_mut()[s] = eng.owned[s].len() as i32;
                new_blocks += more;
            }
        }
        let writes = eng.block_writes.len();
        eng.block_writes.apply(eng.block_table.view_mut())?;
        let sampled = eng.token_writes.len();
        eng.token_writes.apply(eng.token_ids.view_mut())?;
        eng.num_blocks.copy_to_device()?;
        let t_blocks = us(t);

        // 3. the fused step
        let req = StepRequests {
            state_index: &state_index,
            num_computed: &num_computed,
            num_scheduled: &num_scheduled,
        };
        let t = Instant::now();
        let groups = [KvCacheGroup {
            block_table: eng.block_table.view(),
            num_blocks: eng.num_blocks.device_view(),
            block_size: BLOCK_SIZE,
        }];
        let state = StepState {
            token_ids: eng.token_ids.view(),
            kv_groups: &groups,
        };
        let out = StepOutputs {
            query_start_loc: eng.qsl.view_mut(),
            seq_lens: eng.seq_lens.view_mut(),
            positions: eng.positions.view_mut(),
            input_ids: eng.input_ids.view_mut(),
            slot_mapping: eng.slots.view_mut(),
            logits_indices: eng.logits.view_mut(),
        };
        let plan = dev.prepare_step(&eng.pool, &req, &state, StepPadding::Buckets(&sizes), out)?;
        dev.synchronize()?;
        let t_fused = us(t);

        // 4. the same step with the six original operations and host arithmetic
        let t = Instant::now();
        let base = eng.six_ops(&req, &plan)?;
        dev.synchronize()?;
        let t_base = us(t);
        let n = plan.num_reqs;
        let p = plan.padded_tokens;
        assert_eq!(to_vec(&eng.qsl), base.qsl, "query_start_loc");
        assert_eq!(to_vec(&eng.seq_lens), base.seq_lens, "seq_lens");
        assert_eq!(to_vec(&eng.positions)[..p], base.positions[..], "positions");
        assert_eq!(to_vec(&eng.input_ids)[..p], base.input_ids[..], "input_ids");
        assert_eq!(to_vec(&eng.slots), base.slots, "slot_mapping");
        assert_eq!(to_vec(&eng.logits)[..n], base.logits[..], "logits_indices");

        // Sample: every request at the end of its prompt or decoding gets a new token, written
        // into the token table for the next step; finished requests leave, new ones arrive.
        let mut finished = 0;
        for (i, &s) in state_index.iter().enumerate() {
            let s = s as usize;
            let r = &mut reqs[s];
            r.computed += num_scheduled[i] as usize;
            if r.computed >= r.prompt_len && r.computed < r.target_len {
                eng.token_writes
                    .stage(s, r.computed, &[rng.gen_range(0..VOCAB)])?;
            }
            if r.computed >= r.target_len {
                finished += 1;
                eng.free.append(&mut eng.owned[s]);
                eng.num_blocks.host_mut()[s] = 0;
                *r = new_request(&mut rng, true);
            }
        }

        let label = if step == 0 {
            " (warm-up: first-use allocations)"
        } else {
            ""
        };
        let pad_note = match bucket_for(plan.num_tokens, &sizes) {
            Ok(b) => format!("padded to {b} (CUDA graph)"),
            Err(_) => "above 512: unpadded".to_string(),
        };
        println!(
            "step {step}{label}: {n} requests ({n_prefill} prefill, {n_decode} decode), {} tokens, \
             {pad_note}; {:.1} us",
            plan.num_tokens,
            us(t_step)
        );
        println!("  schedule  {t_schedule:>9.1} us  budget {TOKEN_BUDGET} tokens, prefill chunks of at most {PREFILL_CHUNK}");
        println!(
            "  blocks    {t_blocks:>9.1} us  {new_blocks} new blocks in {writes} staged row writes, {sampled} sampled tokens: two applies"
        );
        println!(
            "  prepare   {t_fused:>9.1} us  prepare_step: query_start_loc, seq_lens, positions, input_ids, slot_mapping, logits_indices (max query {}, max seq {})",
            plan.max_query_len, plan.max_seq_len
        );
        println!(
            "  six ops   {t_base:>9.1} us  the same with prefix_sum_offsets, 2 gather_rows, 3 pad_to_multiple and host arithmetic: identical outputs"
        );
        println!(
            "  speedup   {:>9.2}x  prepare_step against six ops",
            t_base / t_fused
        );
        if finished > 0 {
            println!("  ({finished} requests finished; new ones took their rows)");
        }
        if step > 0 {
            fused_total += t_fused;
            base_total += t_base;
            timed += 1;
        }
    }
    if timed > 0 {
        println!(
            "after warm-up, {timed} steps: prepare_step {:.1} us, six ops {:.1} us per step ({:.2}x)",
            fused_total / timed as f64,
            base_total / timed as f64,
            base_total / fused_total
        );
    }
    println!("{}", eng.pool.stats());
    Ok(())
}
