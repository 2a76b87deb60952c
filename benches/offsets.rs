//! Host prefix-sum benchmarks: the workload (4,194,304 i64 lengths; numpy `np.cumsum`
//! 10.8 ms) and a batch-sized one (4,096 i32 lengths, vLLM's `query_start_loc`). Throughput
//! counts the bytes of offsets written.
use std::hint::black_box;
use std::time::Duration;

use cpugpu::host;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn offsets(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut g = c.benchmark_group("host/offsets");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let n = 1 << 22;
    let lengths: Vec<i64> = (0..n).map(|_| rng.gen_range(0..512)).collect();
    let mut out = vec![0i64; n + 1];
    g.throughput(Throughput::Bytes(std::mem::size_of_val(&out[..]) as u64));
    g.bench_function("4194304_i64", |b| {
        b.iter(|| host::prefix_sum_offsets_into(black_box(&lengths), &mut out).unwrap())
    });

    let n = 4096;
    let lengths: Vec<i32> = (0..n).map(|_| rng.gen_range(1..512)).collect();
    let mut out = vec![0i32; n + 1];
    g.throughput(Throughput::Bytes(std::mem::size_of_val(&out[..]) as u64));
    g.bench_function("batch_4096_i32", |b| {
        b.iter(|| host::prefix_sum_offsets_into(black_box(&lengths), &mut out).unwrap())
    });
    g.finish();
}

criterion_group!(benches, offsets);
criterion_main!(benches);
