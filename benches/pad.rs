//! Host pad benchmarks: the workload (1,048,573 x 16 f32 padded on axis 0 to a multiple
//! of 64; numpy `np.pad` 8.9 ms), a plain memcpy of the same bytes as the bandwidth baseline
//! (target: pad at >= 75% of it), and a batch-sized pad (4,099 x 16 f32 to a multiple of 8).
//! Throughput counts the bytes written to `dst`.
use std::hint::black_box;
use std::time::Duration;

use cpugpu::host;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ROW_LEN: usize = 16;

fn pad(c: &mut Criterion) {
    let mut g = c.benchmark_group("host/pad");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    for (name, rows, multiple) in [
        ("1048573x16_f32_to_64", 1_048_573usize, 64usize),
        ("small_4099x16_f32_to_8", 4099, 8),
    ] {
        let src: Vec<f32> = (0..rows * ROW_LEN).map(|x| x as f32).collect();
        let padded_rows = rows.next_multiple_of(multiple);
        let mut dst = vec![0.0f32; padded_rows * ROW_LEN];
        g.throughput(Throughput::Bytes(std::mem::size_of_val(&dst[..]) as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                host::pad_to_multiple_into(
                    black_box(&src),
                    &[rows, ROW_LEN],
                    0,
                    multiple,
                    -1.0,
                    &mut dst,
                )
                .unwrap()
            })
        });
        // The bandwidth baseline: a memcpy of the padded output's size.
        let big: Vec<f32> = vec![1.0; dst.len()];
        g.bench_function(format!("memcpy_{name}"), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&big)))
        });
    }
    g.finish();
}

criterion_group!(benches, pad);
criterion_main!(benches);
