//! Host benchmarks of the input-preparation operations, on batch-sized workloads: segment
//! expansion, slot mapping, the windowed gather of input_ids, staged block-table writes, pad to
//! a CUDA-graph size, and the fused step (256 requests mixed, 4,096 decodes). Throughput counts
//! the bytes of output written. `host_bench` has the same workloads beside numpy.
use std::hint::black_box;
use std::time::Duration;

use cpugpu::{
    cuda_graph_sizes, host, Device, SegmentBounds, StagedWrites, StepPadding, StepRequests,
    WindowLayout,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const L: usize = 4096;
const BS: usize = 16;
const M: usize = L / BS;

struct Step {
    rows: usize,
    tokens: Vec<i32>,
    table: Vec<i32>,
    num_blocks: Vec<i32>,
    state: Vec<i32>,
    computed: Vec<i32>,
    scheduled: Vec<i32>,
}

/// `n_prefill` prefills of 1..=480 and `n_decode` decodes in distinct states of `rows`, each
/// state owning its sequence's blocks from a shuffled free list.
fn step(seed: u64, n_prefill: usize, n_decode: usize, rows: usize) -> Step {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut states: Vec<i32> = (0..rows as i32).collect();
    states.shuffle(&mut rng);
    let mut s = Step {
        rows,
        tokens: (0..rows * L).map(|_| rng.gen_range(0..50_000)).collect(),
        table: vec![-1; rows * M],
        num_blocks: vec![0; rows],
        state: vec![],
        computed: vec![],
        scheduled: vec![],
    };
    let mut free: Vec<i32> = (0..(rows * M) as i32).collect();
    free.shuffle(&mut rng);
    for (r, &st) in states.iter().enumerate().take(n_prefill + n_decode) {
        let k = if r < n_prefill {
            rng.gen_range(1..=480)
        } else {
            1
        };
        let c = rng.gen_range(0..=L - k);
        let st = st as usize;
        let need = (c + k).div_ceil(BS);
        for b in 0..need {
            s.table[st * M + b] = free.pop().unwrap();
        }
        s.num_blocks[st] = need as i32;
        s.state.push(st as i32);
        s.computed.push(c as i32);
        s.scheduled.push(k as i32);
    }
    s
}

fn prepare(c: &mut Criterion) {
    let mut g = c.benchmark_group("host/prepare");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let d = step(31, 32, 224, 4096);
    let nt: usize = d.scheduled.iter().map(|&k| k as usize).sum();
    let mut qsl = vec![0i32];
    for &k in &d.scheduled {
        qsl.push(qsl[qsl.len() - 1] + k);
    }

    let (mut seg, mut pos) = (vec![0i32; nt], vec![0i64; nt]);
    g.throughput(Throughput::Bytes((nt * 12) as u64));
    g.bench_function("expand_segments_step256", |b| {
        b.iter(|| {
            host::expand_segments_into(
                SegmentBounds::Offsets(black_box(&qsl[..])),
                None,
                &mut seg,
                &mut pos,
            )
            .unwrap()
        })
    });

    let rows: Vec<i32> = seg.iter().map(|&r| d.state[r as usize]).collect();
    let positions: Vec<i64> = (0..nt)
        .map(|t| i64::from(d.computed[seg[t] as usize]) + pos[t])
        .collect();
    let group = host::KvCacheGroup {
        block_table: &d.table,
        max_blocks: M,
        num_blocks: &d.num_blocks,
        block_size: BS,
    };
    let mut slots = vec![0i64; 16384];
    g.throughput(Throughput::Bytes((slots.len() * 8) as u64));
    g.bench_function("slot_mapping_step256", |b| {
        b.iter(|| {
            host::slot_mapping_into(black_box(&rows), &positions, &[group], -1i64, &mut slots)
                .unwrap()
        })
    });

    let mut ids = vec![0i32; nt];
    g.throughput(Throughput::Bytes((nt * 4) as u64));
    g.bench_function("gather_windows_step256", |b| {
        b.iter(|| {
            host::gather_windows_into(
                black_box(&d.tokens),
                &[d.rows, L],
                &d.state,
                Some(&d.computed[..]),
                WindowLayout::Ragged { offsets: &qsl[..] },
                &mut ids,
            )
            .unwrap()
        })
    });

    let dev = Device::host();
    let mut bt = dev.alloc::<i32>(&[d.rows, M]).unwrap();
    let mut staged = StagedWrites::<i32>::new(&dev, d.rows, M);
    let new_ids: Vec<i32> = (0..30).collect();
    g.throughput(Throughput::Bytes((256 * 4 + 32 * 30 * 4) as u64));
    g.bench_function("staged_write_256_rows", |b| {
        b.iter(|| {
            for (r, &st) in d.state.iter().enumerate() {
                let k = if r < 32 { 30 } else { 1 };
                staged.stage(st as usize, 0, &new_ids[..k]).unwrap();
            }
            staged.apply(bt.view_mut()).unwrap()
        })
    });

    let sizes = cuda_graph_sizes(512);
    let x: Vec<i64> = (0..300).collect();
    let mut out = vec![0i64; 304];
    g.throughput(Throughput::Bytes((out.len() * 8) as u64));
    g.bench_function("pad_to_bucket_300_i64", |b| {
        b.iter(|| host::pad_to_bucket_into(black_box(&x), &[300], 0, &sizes, 0, &mut out).unwrap())
    });

    for (name, d, t_cap) in [
        ("prepare_step_256", d, 16384usize),
        ("prepare_step_decode_4096", step(33, 0, 4096, 4096), 4096),
    ] {
        let n = d.state.len();
        let group = host::KvCacheGroup {
            block_table: &d.table,
            max_blocks: M,
            num_blocks: &d.num_blocks,
            block_size: BS,
        };
        let groups = [group];
        let tables = host::StepTables {
            token_ids: &d.tokens,
            max_model_len: L,
            kv_groups: &groups,
        };
        let req = StepRequests {
            state_index: &d.state,
            num_computed: &d.computed,
            num_scheduled: &d.scheduled,
        };
        let (mut q, mut s, mut lg) = (vec![0i32; n + 1], vec![0i32; n], vec![0i64; n]);
        let (mut p, mut i, mut sl) = (vec![0i64; t_cap], vec![0i32; t_cap], vec![0i64; t_cap]);
        g.throughput(Throughput::Bytes((n * 16 + t_cap * 20) as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let out = host::StepOutputs {
                    query_start_loc: &mut q,
                    seq_lens: &mut s,
                    positions: &mut p,
                    input_ids: &mut i,
                    slot_mapping: &mut sl,
                    logits_indices: &mut lg,
                };
                host::prepare_step_into(&req, &tables, StepPadding::Buckets(&sizes), out).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, prepare);
criterion_main!(benches);
