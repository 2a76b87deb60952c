//! The main job: the input preparation of an inference engine's batching steps, on the best
//! backend this build and machine offer (`Device::auto()`: the host backend by default, a GPU
//! with `--features cuda` when one answers). Host-side inputs go up with `Device::upload`, so the
//! same code runs on both.
//!
//! Each step schedules a mix of prefill requests (hundreds of new tokens) and decode requests (one
//! token), then:
//!
//! 1. `offsets`  — `query_start_loc` from the scheduled token counts (prefix sum);
//! 2. `flatten`  — the requests' ragged token lists into one `input_ids` buffer;
//! 3. `gather`   — each token's position and KV-cache slot (`slot_mapping`), by gathering the
//!    request's block-table entry;
//! 4. `pad`      — `input_ids` and `slot_mapping` to a multiple of 8 (CUDA-graph batch sizes),
//!    padding slots with -1;
//! 5. `upload`   — the active prefix of each input through a round-robin buffer pool;
//! 6. `scatter`  — the step's new key rows into the paged KV cache at `slot_mapping`, skipping
//!    the -1 padding (what `reshape_and_cache` does);
//! 7. `split`    — `input_ids` back into per-request views, checked against the inputs.
//!
//! ```text
//! cargo run --release --example batch_step -- [--requests N] [--steps S] [--seed X]
//! ```

use std::time::Instant;

use cpugpu::{
    Device, DeviceBuffer, DeviceView, Element, GatherPolicy, ScatterPolicy, UvaBufferPool,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const BLOCK_SIZE: usize = 16;
const MAX_BLOCKS_PER_REQ: usize = 128;
const HEAD_DIM: usize = 64; // one f16 key row per token
const PAD_MULTIPLE: usize = 8;
const MAX_TOKENS: usize = 16384;

struct Args {
    requests: usize,
    steps: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: 256,
        steps: 3,
        seed: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse::<u64>()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--requests" => args.requests = value("--requests")? as usize,
            "--steps" => args.steps = value("--steps")? as usize,
            "--seed" => args.seed = value("--seed")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

struct Stage {
    name: &'static str,
    micros: f64,
    what: String,
}

fn timed<R>(
    stages: &mut Vec<Stage>,
    name: &'static str,
    f: impl FnOnce() -> cpugpu::Result<(R, String)>,
) -> cpugpu::Result<R> {
    let t = Instant::now();
    let (r, what) = f()?;
    stages.push(Stage {
        name,
        micros: t.elapsed().as_secs_f64() * 1e6,
        what,
    });
    Ok(r)
}

/// A view's contents on the host (a download on a GPU).
fn to_vec<T: Element>(v: DeviceView<'_, T>) -> Result<Vec<T>, cpugpu::Error> {
    let mut out = vec![T::zeroed(); v.len()];
    v.copy_to_host(&mut out)?;
    Ok(out)
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

    // Per-request state that lives across steps: the block table and tokens computed so far.
    let n_req = args.requests;
    let block_table: Vec<i32> = (0..n_req * MAX_BLOCKS_PER_REQ)
        .map(|i| i as i32) // request r owns blocks r*128 .. r*128+127
        .collect();
    let block_table_dev = dev.upload(&block_table, &[n_req * MAX_BLOCKS_PER_REQ])?;
    let mut computed: Vec<usize> = (0..n_req).map(|_| rng.gen_range(0..512)).collect();
    let num_slots = n_req * MAX_BLOCKS_PER_REQ * BLOCK_SIZE;
    let mut kv_cache = dev.alloc::<half::f16>(&[num_slots, HEAD_DIM])?;
    let pool = UvaBufferPool::new(&dev, 2);

    for step in 0..args.steps {
        let t_step = Instant::now();
        let mut stages = Vec::new();
        // Schedule: an eighth of the requests prefill 32..512 tokens, the rest decode 1 token,
        // capped at MAX_TOKENS in all.
        let mut tokens: Vec<Vec<i32>> = Vec::with_capacity(n_req);
        let mut budget = MAX_TOKENS;
        for (r, &done) in computed.iter().enumerate() {
            let want = if r % 8 == 0 {
                rng.gen_range(32..512)
            } else {
                1
            };
            let n = want.min(budget).min(MAX_BLOCKS_PER_REQ * BLOCK_SIZE - done);
            budget -= n;
            tokens.push((0..n).map(|_| rng.gen_range(0..50_000)).collect());
        }
        let lens: Vec<i32> = tokens.iter().map(|t| t.len() as i32).collect();

        // 1. query_start_loc
        let qsl: Vec<i32> = timed(&mut stages, "offsets", || {
            let lens_dev = dev.upload(&lens, &[lens.len()])?;
            let o = dev.prefix_sum_offsets::<i32, i32>(lens_dev.view())?;
            let v = o.to_vec()?;
            let what = format!(
                "{} lengths -> {} offsets, {} tokens",
                lens.len(),
                v.len(),
                v[v.len() - 1]
            );
            Ok((v, what))
        })?;
        let n_tok = qsl[n_req] as usize;

        // 2. input_ids
        let token_bufs: Vec<DeviceBuffer<i32>> = tokens
            .iter()
            .map(|t| dev.upload(t, &[t.len()]))
            .collect::<Result<_, _>>()?;
        let parts: Vec<DeviceView<'_, i32>> = token_bufs.iter().map(|b| b.view()).collect();
        let (input_ids, offsets) = timed(&mut stages, "flatten", || {
            let (ids, offs) = dev.flatten::<i32, i32>(&parts)?;
            let what = format!("{} ragged token lists -> {} ids", parts.len(), ids.len());
            Ok(((ids, offs), what))
        })?;
        assert_eq!(
            offsets.to_vec()?,
            qsl,
            "flatten's offsets are query_start_loc"
        );

        // 3. positions and slot_mapping
        let (positions, slots) = timed(&mut stages, "gather", || {
            let mut positions = Vec::with_capacity(n_tok);
            let mut block_idx = Vec::with_capacity(n_tok);
            for (r, t) in tokens.iter().enumerate() {
                for k in 0..t.len() {
                    let pos = computed[r] + k;
                    positions.push(pos as i64);
                    block_idx.push((r * MAX_BLOCKS_PER_REQ + pos / BLOCK_SIZE) as i64);
                }
            }
            let block_idx = dev.upload(&block_idx, &[block_idx.len()])?;
            let blocks = dev.gather_rows(
                block_table_dev.view(),
                block_idx.view(),
                GatherPolicy::Checked,
            )?;
            let slots: Vec<i64> = blocks
                .to_vec()?
                .iter()
                .zip(&positions)
                .map(|(&b, &p)| i64::from(b) * BLOCK_SIZE as i64 + p % BLOCK_SIZE as i64)
                .collect();
            let what = format!(
                "{} block-table rows gathered for {} tokens",
                blocks.len(),
                n_tok
            );
            Ok(((positions, slots), what))
        })?;

        // 4. pad to CUDA-graph sizes
        let (ids_padded, slots_padded) = timed(&mut stages, "pad", || {
            let ids = dev.pad_to_multiple(input_ids.view(), 0, PAD_MULTIPLE, 0)?;
            let slots_dev = dev.upload(&slots, &[slots.len()])?;
            let s = dev.pad_to_multiple(slots_dev.view(), 0, PAD_MULTIPLE, -1)?;
            let what = format!(
                "{} tokens -> {} (multiple of {PAD_MULTIPLE})",
                n_tok,
                ids.shape().rows()
            );
            Ok(((to_vec(ids.view())?, to_vec(s.view())?), what))
        })?;
        let n_pad = ids_padded.len();

        // 5. upload the active prefix through the pool
        let guards = timed(&mut stages, "upload", || {
            let mut ids = pool.allocate::<i32>("input_ids", &[MAX_TOKENS + PAD_MULTIPLE])?;
            ids.host_mut()[..n_pad].copy_from_slice(&ids_padded);
            ids.copy_to_device_rows(n_pad)?;
            let mut pos = pool.allocate::<i64>("positions", &[MAX_TOKENS + PAD_MULTIPLE])?;
            pos.host_mut()[..n_tok].copy_from_slice(&positions);
            pos.copy_to_device_rows(n_tok)?;
            let mut sm = pool.allocate_uva::<i64>("slot_mapping", &[MAX_TOKENS + PAD_MULTIPLE])?;
            sm.host_mut()[..n_pad].copy_from_slice(&slots_padded);
            let what = format!(
                "slots {}/{}/{} of depth {}; {} + {} rows copied, slot_mapping zero-copy (uva)",
                ids.slot(),
                pos.slot(),
                sm.slot(),
                pool.depth(),
                n_pad,
                n_tok
            );
            Ok(((ids, pos, sm), what))
        })?;

        // 6. write the step's keys into the paged KV cache
        let keys: Vec<half::f16> = (0..n_pad * HEAD_DIM)
            .map(|i| half::f16::from_f32((i % 1000) as f32))
            .collect();
        timed(&mut stages, "scatter", || {
            let sm = guards.2.device_rows(0..n_pad)?;
            let keys = dev.upload(&keys, &[n_pad, HEAD_DIM])?;
            dev.scatter_rows_into(
                keys.view(),
                sm,
                kv_cache.view_mut(),
                ScatterPolicy::NegativeSkip,
            )?;
            let what = format!(
                "{n_pad} key rows of {HEAD_DIM} f16 -> kv cache, {} padding rows skipped",
                n_pad - n_tok
            );
            Ok(((), what))
        })?;

        // 7. per-request views of input_ids
        timed(&mut stages, "split", || {
            let views = dev.split(guards.0.device_rows(0..n_tok)?, &qsl)?;
            for (v, t) in views.iter().zip(&tokens) {
                assert_eq!(&to_vec(*v)?, t, "split must give back each request");
            }
            let what = format!(
                "{} zero-copy views, each checked against its request",
                views.len()
            );
            Ok(((), what))
        })?;
        dev.synchronize()?;
        drop(guards); // the step is done: its pool slots may be reused

        for (r, t) in tokens.iter().enumerate() {
            computed[r] += t.len();
        }
        println!(
            "step {step}: {n_req} requests, {n_tok} tokens, {:.1} us",
            t_step.elapsed().as_secs_f64() * 1e6
        );
        for s in &stages {
            println!("  {:<8} {:>9.1} us  {}", s.name, s.micros, s.what);
        }
    }
    println!("{}", pool.stats());
    Ok(())
}
