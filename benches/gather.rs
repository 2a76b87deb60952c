//! Host gather benchmarks: the workload (1,048,576 x 16 f32 rows, random permutation,
//! i64 indices; numpy `np.take` 37.0 ms) and a batch-sized gather (4,096 x 16 f32 rows, random
//! i64 indices; numpy 23 us). Throughput counts the bytes copied into `dst`.
use std::hint::black_box;
use std::time::Duration;

use cpugpu::{host, GatherPolicy};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const ROW_LEN: usize = 16;

fn gather(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut g = c.benchmark_group("host/gather");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    // The workload.
    let rows = 1 << 20;
    let src: Vec<f32> = (0..rows * ROW_LEN).map(|x| x as f32).collect();
    let mut perm: Vec<i64> = (0..rows as i64).collect();
    perm.shuffle(&mut rng);
    let mut dst = vec![0.0f32; rows * ROW_LEN];
    g.throughput(Throughput::Bytes(std::mem::size_of_val(&dst[..]) as u64));
    g.bench_function("1048576x16_f32_perm_i64", |b| {
        b.iter(|| {
            host::gather_rows_into(
                black_box(&src),
                &[rows, ROW_LEN],
                black_box(&perm),
                &mut dst,
                GatherPolicy::Checked,
            )
            .unwrap()
        })
    });
    // The same, allocating its output as `np.take` does.
    g.bench_function("1048576x16_f32_perm_i64_alloc", |b| {
        b.iter(|| {
            host::gather_rows(
                black_box(&src),
                &[rows, ROW_LEN],
                black_box(&perm),
                GatherPolicy::Checked,
            )
            .unwrap()
        })
    });

    // gather_small: a batch of 4,096 rows from a 4,096-row table.
    let small = 4096;
    let src: Vec<f32> = (0..small * ROW_LEN).map(|x| x as f32).collect();
    let idx: Vec<i64> = (0..small).map(|_| rng.gen_range(0..small as i64)).collect();
    let mut dst = vec![0.0f32; small * ROW_LEN];
    g.throughput(Throughput::Bytes(std::mem::size_of_val(&dst[..]) as u64));
    g.bench_function("gather_small_4096x16_f32_i64", |b| {
        b.iter(|| {
            host::gather_rows_into(
                black_box(&src),
                &[small, ROW_LEN],
                black_box(&idx),
                &mut dst,
                GatherPolicy::Checked,
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, gather);
criterion_main!(benches);
