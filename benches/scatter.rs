//! Host scatter benchmark: the workload (1,048,576 x 16 f32 rows, random permutation,
//! i64 indices; numpy fancy assignment `dst[idx] = src` 61.7 ms), plus a batch-sized scatter
//! (4,096 x 16 f32 rows into a 1,048,576-row table, as a KV-cache write does). Throughput counts
//! the bytes copied out of `src`.
use std::hint::black_box;
use std::time::Duration;

use cpugpu::{host, ScatterPolicy};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const ROW_LEN: usize = 16;

fn scatter(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut g = c.benchmark_group("host/scatter");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    // The workload.
    let rows = 1 << 20;
    let src: Vec<f32> = (0..rows * ROW_LEN).map(|x| x as f32).collect();
    let mut perm: Vec<i64> = (0..rows as i64).collect();
    perm.shuffle(&mut rng);
    let mut dst = vec![0.0f32; rows * ROW_LEN];
    g.throughput(Throughput::Bytes(std::mem::size_of_val(&src[..]) as u64));
    g.bench_function("1048576x16_f32_perm_i64", |b| {
        b.iter(|| {
            host::scatter_rows_into(
                black_box(&src),
                black_box(&perm),
                &mut dst,
                &[rows, ROW_LEN],
                ScatterPolicy::Checked,
            )
            .unwrap()
        })
    });

    // scatter_small: 4,096 rows to distinct random slots of the same table.
    let small = 4096;
    let slots: Vec<i64> = perm[..small].to_vec();
    let src_small: Vec<f32> = (0..small * ROW_LEN).map(|x| x as f32).collect();
    g.throughput(Throughput::Bytes(
        std::mem::size_of_val(&src_small[..]) as u64
    ));
    g.bench_function("scatter_small_4096x16_f32_i64", |b| {
        b.iter(|| {
            host::scatter_rows_into(
                black_box(&src_small),
                black_box(&slots),
                &mut dst,
                &[rows, ROW_LEN],
                ScatterPolicy::NegativeSkip,
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, scatter);
criterion_main!(benches);
