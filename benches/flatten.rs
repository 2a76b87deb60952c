//! Host flatten benchmarks: the workload (8,192 f32 arrays of 1..511 elements, numpy
//! `np.concatenate` plus the offsets 1.7 ms), the same with one huge array among them (skewed),
//! and a batch-sized case (256 arrays of 1..63 i32 tokens). Throughput counts the bytes copied
//! into the buffer.
use std::hint::black_box;
use std::time::Duration;

use cpugpu::host;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn ragged<T: Copy>(rng: &mut SmallRng, n: usize, max_len: usize, v: T) -> Vec<Vec<T>> {
    (0..n).map(|_| vec![v; rng.gen_range(1..max_len)]).collect()
}

fn bench_case<T: cpugpu::Element>(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    arrays: &[Vec<T>],
) {
    let total: usize = arrays.iter().map(Vec::len).sum();
    g.throughput(Throughput::Bytes((total * std::mem::size_of::<T>()) as u64));
    // As `np.concatenate` plus `np.cumsum` do: allocate both outputs.
    g.bench_function(format!("{name}_alloc"), |b| {
        b.iter(|| host::flatten::<T, i64, _>(black_box(arrays)).unwrap())
    });
    // Into preallocated outputs.
    let mut dst = vec![T::zeroed(); total];
    let mut offsets = vec![0i64; arrays.len() + 1];
    g.bench_function(format!("{name}_into"), |b| {
        b.iter(|| host::flatten_into(black_box(arrays), &mut dst, &mut offsets).unwrap())
    });
}

fn flatten(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut g = c.benchmark_group("host/flatten");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    // The workload.
    let arrays = ragged(&mut rng, 8192, 512, 1.0f32);
    bench_case(&mut g, "8192_f32_1to511", &arrays);
    let arrays16 = ragged(&mut rng, 8192, 512, half::f16::ONE);
    bench_case(&mut g, "8192_f16_1to511", &arrays16);

    // Skewed: the same plus one array of 4 Mi elements in the middle.
    let mut skewed = arrays.clone();
    skewed.insert(4096, vec![2.0f32; 1 << 22]);
    bench_case(&mut g, "8192_f32_1to511_plus_4Mi", &skewed);

    // Batch-sized: 256 requests of 1..63 i32 tokens.
    let small = ragged(&mut rng, 256, 64, 1i32);
    bench_case(&mut g, "256_i32_1to63", &small);
    g.finish();
}

criterion_group!(benches, flatten);
criterion_main!(benches);
