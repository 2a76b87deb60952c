//! The input-preparation rows of the CUDA bench (`benches/cuda.rs`): per-call latency of the
//! five new operations and of the fused step at 1 to 4,096 requests, 200 back-to-back calls
//! between one event pair (each call's launches, uploads and error capture included; the fused
//! step also pays for its pool slot's upload).

use cpugpu::{
    cuda_graph_sizes, KvCacheGroup, SegmentBounds, StagedWrites, StepOutputs, StepPadding,
    StepRequests, StepState, UvaBufferPool, WindowLayout,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{up, Bench, R};

const MAX_MODEL_LEN: usize = 4096;
const BS: usize = 16;
const MAX_BLOCKS: usize = MAX_MODEL_LEN / BS;
const ROWS: usize = 4096;

pub(super) fn run(b: &mut Bench) -> R<()> {
    let dev = b.dev.clone();
    let mut rng = SmallRng::seed_from_u64(10);
    // Persistent state: a 4,096 x 4,096 token table, full block tables of distinct blocks.
    let tokens: Vec<i32> = (0..ROWS * MAX_MODEL_LEN)
        .map(|_| rng.gen_range(0..50_000))
        .collect();
    let token_ids = up(&dev, &tokens, &[ROWS, MAX_MODEL_LEN])?;
    let table: Vec<i32> = (0..(ROWS * MAX_BLOCKS) as i32).collect();
    let block_table = up(&dev, &table, &[ROWS, MAX_BLOCKS])?;
    let num_blocks = up(&dev, &vec![MAX_BLOCKS as i32; ROWS], &[ROWS])?;
    let groups = [KvCacheGroup {
        block_table: block_table.view(),
        num_blocks: num_blocks.view(),
        block_size: BS,
    }];
    let pool = UvaBufferPool::new(&dev, 2);
    let sizes = cuda_graph_sizes(512);
    for n in [1usize, 16, 256, 1024, 4096] {
        // n decodes in distinct states.
        let state_index: Vec<i32> = (0..n as i32).collect();
        let num_computed: Vec<i32> = (0..n)
            .map(|_| rng.gen_range(0..MAX_MODEL_LEN as i32))
            .collect();
        let num_scheduled = vec![1i32; n];
        let (mut qsl, mut seq, mut logits) = (
            dev.alloc::<i32>(&[n + 1])?,
            dev.alloc::<i32>(&[n])?,
            dev.alloc::<i64>(&[n])?,
        );
        let (mut pos, mut ids, mut slots) = (
            dev.alloc::<i64>(&[n])?,
            dev.alloc::<i32>(&[n])?,
            dev.alloc::<i64>(&[1, n])?,
        );
        let req = StepRequests {
            state_index: &state_index,
            num_computed: &num_computed,
            num_scheduled: &num_scheduled,
        };
        let state = StepState {
            token_ids: token_ids.view(),
            kv_groups: &groups,
        };
        let us = b.time_per_call(200, || {
            let out = StepOutputs {
                query_start_loc: qsl.view_mut(),
                seq_lens: seq.view_mut(),
                positions: pos.view_mut(),
                input_ids: ids.view_mut(),
                slot_mapping: slots.view_mut(),
                logits_indices: logits.view_mut(),
            };
            dev.prepare_step(&pool, &req, &state, StepPadding::Buckets(&sizes), out)
                .map(|_| ())
        })?;
        b.emit("prepare_step", &format!("decode_n{n}"), 0, us, None);

        // The pieces, on the same n tokens.
        let counts = up(&dev, &num_scheduled, &[n])?;
        let starts = up(
            &dev,
            &num_computed
                .iter()
                .map(|&c| i64::from(c))
                .collect::<Vec<_>>(),
            &[n],
        )?;
        let mut req_ids = dev.alloc::<i32>(&[n])?;
        let mut positions = dev.alloc::<i64>(&[n])?;
        let us = b.time_per_call(200, || {
            dev.expand_segments_into(
                SegmentBounds::Counts(counts.view()),
                Some(starts.view()),
                req_ids.view_mut(),
                positions.view_mut(),
            )
        })?;
        b.emit("expand_segments", &format!("n{n}"), 0, us, None);
        let rows = up(&dev, &state_index, &[n])?;
        let us = b.time_per_call(200, || {
            dev.slot_mapping_into(
                rows.view(),
                positions.view(),
                &groups,
                -1i64,
                slots.view_mut(),
            )
        })?;
        b.emit("slot_mapping", &format!("n{n}"), 0, us, None);
        let mut offs = vec![0i32];
        offs.extend((1..=n as i32).collect::<Vec<_>>());
        let offs = up(&dev, &offs, &[n + 1])?;
        let starts32 = up(&dev, &num_computed, &[n])?;
        let us = b.time_per_call(200, || {
            dev.gather_windows_into(
                token_ids.view(),
                rows.view(),
                Some(starts32.view()),
                WindowLayout::Ragged {
                    offsets: offs.view(),
                },
                ids.view_mut(),
            )
        })?;
        b.emit("gather_windows", &format!("n{n}"), 0, us, None);
        let mut bt = dev.alloc::<i32>(&[ROWS, MAX_BLOCKS])?;
        let mut staged = StagedWrites::<i32>::new(&dev, ROWS, MAX_BLOCKS);
        let us = b.time_per_call(200, || {
            for r in 0..n {
                staged.stage(r, r % MAX_BLOCKS, &[r as i32])?;
            }
            staged.apply(bt.view_mut())
        })?;
        b.emit("staged_write", &format!("n{n}"), 0, us, None);
    }
    // The host_bench prepare_step shape: 32 prefills of 1..480 and 224 decodes.
    let mut state_index = Vec::new();
    let mut num_computed = Vec::new();
    let mut num_scheduled = Vec::new();
    for r in 0..256usize {
        let k = if r < 32 { rng.gen_range(1..=480) } else { 1 };
        state_index.push(r as i32);
        num_computed.push(rng.gen_range(0..=(MAX_MODEL_LEN - k) as i32));
        num_scheduled.push(k as i32);
    }
    let t_cap = 16384;
    let (mut qsl, mut seq, mut logits) = (
        dev.alloc::<i32>(&[257])?,
        dev.alloc::<i32>(&[256])?,
        dev.alloc::<i64>(&[256])?,
    );
    let (mut pos, mut ids, mut slots) = (
        dev.alloc::<i64>(&[t_cap])?,
        dev.alloc::<i32>(&[t_cap])?,
        dev.alloc::<i64>(&[1, t_cap])?,
    );
    let req = StepRequests {
        state_index: &state_index,
        num_computed: &num_computed,
        num_scheduled: &num_scheduled,
    };
    let state = StepState {
        token_ids: token_ids.view(),
        kv_groups: &groups,
    };
    let us = b.time_per_call(200, || {
        let out = StepOutputs {
            query_start_loc: qsl.view_mut(),
            seq_lens: seq.view_mut(),
            positions: pos.view_mut(),
            input_ids: ids.view_mut(),
            slot_mapping: slots.view_mut(),
            logits_indices: logits.view_mut(),
        };
        dev.prepare_step(&pool, &req, &state, StepPadding::Buckets(&sizes), out)
            .map(|_| ())
    })?;
    b.emit("prepare_step", "mixed_256", 0, us, None);
    Ok(())
}
