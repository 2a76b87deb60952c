//! Host split benchmarks: the workload (the flatten workload, 8,192 f32 segments of
//! 1..511 elements, into views; numpy's list of slices 2.0 ms), a batch-sized case (256
//! segments) and 1,048,576 segments (where the offsets' validation runs on the thread pool).
//!
//! Nothing is copied, so throughput counts the offsets' bytes read.
use std::hint::black_box;
use std::time::Duration;

use cpugpu::{host, Offset};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A buffer and the offsets of `n` segments of `1..max_len` elements.
fn workload<O: Offset>(rng: &mut SmallRng, n: usize, max_len: usize) -> (Vec<f32>, Vec<O>) {
    let mut offsets = vec![O::from_i64(0).unwrap()];
    let mut total = 0i64;
    for _ in 0..n {
        total += rng.gen_range(1..max_len as i64);
        offsets.push(O::from_i64(total).unwrap());
    }
    (vec![1.0; total as usize], offsets)
}

fn bench_case<O: Offset>(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    data: &[f32],
    offsets: &[O],
) {
    g.throughput(Throughput::Bytes(std::mem::size_of_val(offsets) as u64));
    // Validation and the `Segments` handle.
    g.bench_function(format!("{name}_{}_split", O::NAME), |b| {
        b.iter(|| host::split(black_box(data), black_box(offsets)).unwrap())
    });
    // Validation and every view through `Segments::get`.
    g.bench_function(format!("{name}_{}_split_get_all", O::NAME), |b| {
        b.iter(|| {
            let segs = host::split(black_box(data), black_box(offsets)).unwrap();
            for i in 0..segs.len() {
                black_box(segs.get(i));
            }
        })
    });
    // Validation and every view through the iterator.
    g.bench_function(format!("{name}_{}_split_iter_all", O::NAME), |b| {
        b.iter(|| {
            for s in host::split(black_box(data), black_box(offsets)).unwrap() {
                black_box(s);
            }
        })
    });
    // Validation and all views collected into a reused `Vec` (the numpy list of slices).
    let mut out = Vec::with_capacity(offsets.len());
    g.bench_function(format!("{name}_{}_split_into", O::NAME), |b| {
        b.iter(|| {
            host::split_into(black_box(data), black_box(offsets), &mut out).unwrap();
            black_box(out.len())
        })
    });
}

fn split(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut g = c.benchmark_group("host/split");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));

    // The workload, both offset types.
    let (data, offsets) = workload::<i64>(&mut rng, 8192, 512);
    bench_case(&mut g, "8192_f32_1to511", &data, &offsets);
    let offsets32: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
    bench_case(&mut g, "8192_f32_1to511", &data, &offsets32);

    // Batch-sized.
    let (data, offsets) = workload::<i32>(&mut rng, 256, 64);
    bench_case(&mut g, "256_f32_1to63", &data, &offsets);

    // Many offsets: validation goes parallel.
    let (data, offsets) = workload::<i64>(&mut rng, 1 << 20, 8);
    bench_case(&mut g, "1Mi_f32_1to7", &data, &offsets);
    g.finish();
}

criterion_group!(benches, split);
criterion_main!(benches);
