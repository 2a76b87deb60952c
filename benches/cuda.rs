//! Kernel microbenchmarks on a CUDA device, timed with CUDA events.
//!
//! `cargo bench --features cuda --bench cuda -- [--quick] [--json PATH]`
//!
//! Each case: 5 warm-up runs, then 50 runs each between a pair of events on the device's
//! stream; the median is reported. Bandwidth cases use inputs well above the H100's 50 MiB L2
//! and are reported as GB/s of bytes read + written, next to a device-to-device memcpy moving
//! the same bytes, measured in the same run. Also: 64 MiB uploads from pinned and pageable
//! memory, per-call latency (200 back-to-back calls between one event pair) of checked
//! gathers, scatters (into a 16,384-row table and a 1,048,576-slot KV cache) and prefix sums at
//! batch sizes up to 16,384 (one launch up to 4,096, two beyond: the `launches` field), of a pad
//! that moves 8 bytes (the floor of one launch), and of the input-preparation operations and the
//! fused step (`prep/cuda_prep.rs`, 1 to 4,096 requests). Output: one JSON object per line
//! (stdout, and `--json PATH`), joined with
//! `benches/torch_baseline.py`'s lines by `benches/gpu_summary.py` on (op, case).
//!
//! Without a CUDA device it prints why and exits 0 (exit 2 with `CPUGPU_REQUIRE_GPU=1`).

use std::fmt::Write as _;
use std::io::Write as _;

use cpugpu::{
    BackendKind, CpuGpuBuffer, Device, DeviceBuffer, DeviceView, DeviceViewMut, GatherPolicy,
    MemoryPlacement, ScatterPolicy,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[path = "prep/cuda_prep.rs"]
mod cuda_prep;

const WARMUP: usize = 5;
const RUNS: usize = 50;

struct Bench {
    dev: Device,
    device_name: String,
    out: Vec<String>,
    json: Option<std::fs::File>,
}

type R<T> = Result<T, cpugpu::Error>;

impl Bench {
    /// Median microseconds of `f` between two events (warm-up first).
    fn time(&self, mut f: impl FnMut() -> R<()>) -> R<f64> {
        for _ in 0..WARMUP {
            f()?;
        }
        self.dev.synchronize()?;
        let mut v = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let a = self.dev.record_event(true)?;
            f()?;
            let b = self.dev.record_event(true)?;
            b.synchronize()?;
            v.push(f64::from(b.elapsed_ms(&a)?) * 1e3);
        }
        self.dev.synchronize()?;
        v.sort_by(|a, b| a.total_cmp(b));
        Ok(v[v.len() / 2])
    }

    /// Median microseconds per call of `calls` back-to-back calls of `f`.
    fn time_per_call(&self, calls: usize, mut f: impl FnMut() -> R<()>) -> R<f64> {
        for _ in 0..WARMUP {
            f()?;
        }
        self.dev.synchronize()?;
        let mut v = Vec::new();
        for _ in 0..11 {
            let a = self.dev.record_event(true)?;
            for _ in 0..calls {
                f()?;
            }
            let b = self.dev.record_event(true)?;
            b.synchronize()?;
            self.dev.synchronize()?;
            v.push(f64::from(b.elapsed_ms(&a)?) * 1e3 / calls as f64);
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Ok(v[v.len() / 2])
    }

    /// D2D memcpy of `bytes / 2` bytes (so `bytes` are moved), median microseconds.
    fn memcpy_us(&self, bytes: usize) -> R<f64> {
        let n = bytes / 2 / 16;
        let a = self.dev.alloc::<u128>(&[n])?;
        let mut b = self.dev.alloc::<u128>(&[n])?;
        self.time(|| a.view().copy_to(&mut b.view_mut()))
    }

    /// A per-call latency line, with the kernel launches the call makes.
    fn emit_latency(&mut self, case: &str, us: f64, launches: u32) {
        self.emit_with("launch_latency", case, 0, us, None, Some(launches));
    }

    fn emit(&mut self, op: &str, case: &str, bytes: usize, us: f64, memcpy_us: Option<f64>) {
        self.emit_with(op, case, bytes, us, memcpy_us, None);
    }

    fn emit_with(
        &mut self,
        op: &str,
        case: &str,
        bytes: usize,
        us: f64,
        memcpy_us: Option<f64>,
        launches: Option<u32>,
    ) {
        let gbps = if us > 0.0 {
            bytes as f64 / us / 1e3
        } else {
            0.0
        };
        let mut line = format!(
            "{{\"suite\":\"cpugpu\",\"op\":\"{op}\",\"case\":\"{case}\",\"bytes\":{bytes},\"median_us\":{us:.3},\"gbps\":{gbps:.2},\"device\":\"{}\"",
            self.device_name
        );
        if let Some(m) = memcpy_us {
            let mg = bytes as f64 / m / 1e3;
            let _ = write!(
                line,
                ",\"memcpy_gbps\":{mg:.2},\"pct_memcpy\":{:.1}",
                100.0 * gbps / mg
            );
        }
        if let Some(k) = launches {
            let _ = write!(line, ",\"launches\":{k}");
        }
        line.push('}');
        println!("{line}");
        if let Some(f) = &mut self.json {
            let _ = writeln!(f, "{line}");
        }
        self.out.push(line);
    }
}

fn up<T: cpugpu::Element>(dev: &Device, data: &[T], shape: &[usize]) -> R<DeviceBuffer<T>> {
    dev.upload(data, shape)
}

fn gather_scatter(b: &mut Bench, rng: &mut SmallRng, rows: usize, row_len: usize) -> R<()> {
    let n = rows;
    let case = format!("f32x{row_len}_rows{rows}_n{n}_i64");
    let src = b.dev.alloc::<f32>(&[rows, row_len])?;
    let idx: Vec<i64> = (0..n).map(|_| rng.gen_range(0..rows as i64)).collect();
    let idx = up(&b.dev, &idx, &[n])?;
    let mut dst = b.dev.alloc::<f32>(&[n, row_len])?;
    let bytes = n * row_len * 4 * 2 + n * 8;
    let mc = b.memcpy_us(bytes)?;
    let dev = b.dev.clone();
    let us = b.time(|| {
        dev.gather_rows_into(
            src.view(),
            idx.view(),
            dst.view_mut(),
            GatherPolicy::Checked,
        )
    })?;
    b.emit("gather_rows", &case, bytes, us, Some(mc));
    // Scatter with a permutation (no duplicates), like torch's index_copy_.
    let mut perm: Vec<i64> = (0..n as i64).collect();
    for k in (1..n).rev() {
        perm.swap(k, rng.gen_range(0..=k));
    }
    let perm = up(&b.dev, &perm, &[n])?;
    let us = b.time(|| {
        dev.scatter_rows_into(
            src.view(),
            perm.view(),
            dst.view_mut(),
            ScatterPolicy::Checked,
        )
    })?;
    b.emit("scatter_rows", &case, bytes, us, Some(mc));
    Ok(())
}

fn pad(b: &mut Bench, rows: usize) -> R<()> {
    let src = b.dev.alloc::<f32>(&[rows, 16])?;
    let padded = rows.next_multiple_of(64);
    let mut dst = b.dev.alloc::<f32>(&[padded, 16])?;
    let bytes = (rows + padded) * 16 * 4;
    let mc = b.memcpy_us(bytes)?;
    let dev = b.dev.clone();
    let us = b.time(|| dev.pad_to_multiple_into(src.view(), 0, 64, 0.0, dst.view_mut()))?;
    b.emit(
        "pad",
        &format!("f32_{rows}x16_axis0_mult64"),
        bytes,
        us,
        Some(mc),
    );
    Ok(())
}

fn offsets(b: &mut Bench, rng: &mut SmallRng, n: usize) -> R<()> {
    let lengths: Vec<i32> = (0..n).map(|_| rng.gen_range(0..16)).collect();
    let l = up(&b.dev, &lengths, &[n])?;
    let mut o = b.dev.alloc::<i64>(&[n + 1])?;
    let bytes = 4 * n + 8 * (n + 1);
    let mc = b.memcpy_us(bytes)?;
    let dev = b.dev.clone();
    let us = b.time(|| dev.prefix_sum_offsets_into(l.view(), o.view_mut()))?;
    b.emit("offsets", &format!("i32_n{n}"), bytes, us, Some(mc));
    Ok(())
}

fn flatten_split(b: &mut Bench, quick: bool) -> R<()> {
    let dev = b.dev.clone();
    // 1,024 small i32 segments (torch.cat's worst case: many launches' worth of metadata).
    // The same formula as benches/torch_baseline.py, so both move the same bytes.
    let lens: Vec<usize> = (0..1024usize).map(|k| 1 + (k * 7919) % 512).collect();
    let parts: Vec<DeviceBuffer<i32>> = lens
        .iter()
        .map(|&l| dev.alloc::<i32>(&[l]))
        .collect::<R<_>>()?;
    let views: Vec<DeviceView<'_, i32>> = parts.iter().map(|p| p.view()).collect();
    let total: usize = lens.iter().sum();
    let mut flat = dev.alloc::<i32>(&[total])?;
    let mut offs = dev.alloc::<i64>(&[1025])?;
    let bytes = 2 * total * 4;
    let mc = b.memcpy_us(bytes)?;
    let us = b.time(|| dev.flatten_into(&views, flat.view_mut(), offs.view_mut()))?;
    b.emit("flatten", "i32_1024segs_small", bytes, us, Some(mc));
    // 256 f32 segments, sizes proportional to (i + 1)^2, 64 Mi elements in all (256 MiB).
    let target: usize = if quick { 1 << 25 } else { 1 << 26 };
    let weights: Vec<usize> = (1..=256usize).map(|i| i * i).collect();
    let wsum: usize = weights.iter().sum();
    let mut lens: Vec<usize> = weights.iter().map(|w| w * target / wsum).collect();
    let short = target - lens.iter().sum::<usize>();
    *lens.last_mut().unwrap_or(&mut 0) += short;
    let parts: Vec<DeviceBuffer<f32>> = lens
        .iter()
        .map(|&l| dev.alloc::<f32>(&[l]))
        .collect::<R<_>>()?;
    let views: Vec<DeviceView<'_, f32>> = parts.iter().map(|p| p.view()).collect();
    let mut flat = dev.alloc::<f32>(&[target])?;
    let mut offs = dev.alloc::<i64>(&[257])?;
    let bytes = 2 * target * 4;
    let mc = b.memcpy_us(bytes)?;
    let case = if quick {
        "f32_256segs_skewed_128MiB"
    } else {
        "f32_256segs_skewed_256MiB"
    };
    let us = b.time(|| dev.flatten_into(&views, flat.view_mut(), offs.view_mut()))?;
    b.emit("flatten", case, bytes, us, Some(mc));
    let offsets: Vec<i64> = offs.to_vec()?;
    let mut outs: Vec<DeviceBuffer<f32>> = lens
        .iter()
        .map(|&l| dev.alloc::<f32>(&[l]))
        .collect::<R<_>>()?;
    let us = b.time(|| {
        let mut ov: Vec<DeviceViewMut<'_, f32>> = outs.iter_mut().map(|o| o.view_mut()).collect();
        dev.split_copy_into(flat.view(), &offsets, &mut ov)
    })?;
    b.emit("split_copy", case, bytes, us, Some(mc));
    Ok(())
}

fn uploads(b: &mut Bench) -> R<()> {
    let n = (64 << 20) / 4;
    for (placement, case) in [
        (MemoryPlacement::Pinned, "pinned_64MiB"),
        (MemoryPlacement::Host, "pageable_64MiB"),
    ] {
        let mut buf = CpuGpuBuffer::<f32>::new(&b.dev, "upload", &[n], placement)?;
        buf.host_mut().fill(1.0);
        let us = b.time(|| buf.copy_to_device())?;
        b.emit("upload", case, 64 << 20, us, None);
    }
    Ok(())
}

/// Batch sizes of the latency cases: up to the one-launch limit (4,096), just past it (a
/// checking pass first: one more launch) and beyond.
const LATENCY_N: [usize; 7] = [1, 16, 256, 1024, 4096, 4097, 16384];

/// Kernel launches a checked gather, scatter or prefix sum of `n` makes (src/kernels/launch.rs:
/// SMALL_BATCH and SCAN_TILE are both 4,096), for the latency lines' `launches` field.
fn checked_launches(n: usize) -> u32 {
    if n <= 4096 {
        1
    } else {
        2
    }
}

fn latency(b: &mut Bench) -> R<()> {
    let dev = b.dev.clone();
    let rows = 16384;
    let table = dev.alloc::<f32>(&[rows, 16])?;
    let mut cache = dev.alloc::<f32>(&[rows, 16])?;
    // A KV-cache-sized destination: 1,048,576 slots of 16 f32 (64 MiB). Scatter's scratch is the
    // queue's winners array, made once, so a call costs what its rows cost, not the cache's size.
    let kv_rows = 1 << 20;
    let mut kv = dev.alloc::<f32>(&[kv_rows, 16])?;
    for n in LATENCY_N {
        let launches = checked_launches(n);
        let idx: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % rows as i64).collect();
        let idx = up(&dev, &idx, &[n])?;
        let src = dev.alloc::<f32>(&[n, 16])?;
        let mut out = dev.alloc::<f32>(&[n, 16])?;
        let us = b.time_per_call(200, || {
            dev.gather_rows_into(
                table.view(),
                idx.view(),
                out.view_mut(),
                GatherPolicy::Checked,
            )
        })?;
        b.emit_latency(&format!("gather_f32x16_n{n}"), us, launches);
        let us = b.time_per_call(200, || {
            dev.scatter_rows_into(
                src.view(),
                idx.view(),
                cache.view_mut(),
                ScatterPolicy::Checked,
            )
        })?;
        b.emit_latency(&format!("scatter_f32x16_n{n}"), us, launches);
        let kv_idx: Vec<i64> = (0..n as i64)
            .map(|i| (i * 104_729) % kv_rows as i64)
            .collect();
        let kv_idx = up(&dev, &kv_idx, &[n])?;
        let us = b.time_per_call(200, || {
            dev.scatter_rows_into(
                src.view(),
                kv_idx.view(),
                kv.view_mut(),
                ScatterPolicy::NegativeSkip,
            )
        })?;
        b.emit_latency(&format!("scatter_kv1M_f32x16_n{n}"), us, launches);
        let lens = up(&dev, &vec![3i32; n], &[n])?;
        let mut offs = dev.alloc::<i64>(&[n + 1])?;
        let us = b.time_per_call(200, || {
            dev.prefix_sum_offsets_into(lens.view(), offs.view_mut())
        })?;
        b.emit_latency(&format!("offsets_i32_n{n}"), us, launches);
    }
    // The floor: one launch that moves (almost) nothing, a pad of 5 bytes to 8.
    let tiny = dev.alloc::<u8>(&[5])?;
    let mut tiny_out = dev.alloc::<u8>(&[8])?;
    let us = b.time_per_call(200, || {
        dev.pad_to_multiple_into(tiny.view(), 0, 8, 0, tiny_out.view_mut())
    })?;
    b.emit_latency("pad_u8_n8", us, 1);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .map(|p| std::fs::File::create(p).expect("create the --json file"));
    let dev = Device::auto();
    if dev.kind() != BackendKind::Cuda {
        let reason = dev.fallback_reason().unwrap_or("unknown");
        eprintln!("cuda bench: no CUDA device ({reason}); nothing to measure");
        let required = std::env::var("CPUGPU_REQUIRE_GPU").is_ok_and(|v| v == "1");
        std::process::exit(if required { 2 } else { 0 });
    }
    let device_name = dev
        .cuda_info()
        .map(|(_, n, _)| n.replace('"', "'"))
        .unwrap_or_default();
    eprintln!("cuda bench on {dev}");
    let mut b = Bench {
        dev,
        device_name,
        out: Vec::new(),
        json,
    };
    let mut rng = SmallRng::seed_from_u64(0);
    let scale = if quick { 2 } else { 1 };
    let run = |name: &str, r: R<()>| {
        if let Err(e) = r {
            eprintln!("cuda bench: {name} failed: {e}");
            std::process::exit(1);
        }
    };
    run(
        "gather/scatter 64 B rows",
        gather_scatter(&mut b, &mut rng, (1 << 22) / scale, 16),
    );
    run(
        "gather/scatter 256 B rows",
        gather_scatter(&mut b, &mut rng, (1 << 20) / scale, 64),
    );
    run("pad", pad(&mut b, (1 << 22) / scale - 3));
    run("offsets", offsets(&mut b, &mut rng, (1 << 26) / scale));
    run("flatten/split", flatten_split(&mut b, quick));
    run("uploads", uploads(&mut b));
    run("latency", latency(&mut b));
    run("input preparation", cuda_prep::run(&mut b));
    eprintln!("cuda bench: {} results", b.out.len());
}
