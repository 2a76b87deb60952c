//! Host-backend workload benchmark: the issue's workloads, one JSON object per line.
//!
//! ```text
//! cargo run --release --example host_bench [-- --quick] [-- --op NAME] [-- --threads N] [-- --vec]
//! ```
//!
//! Each line is `{"op": "<name>", "bytes": <bytes>, "median_s": <seconds>, ...}` followed by the
//! extra fields `runs`, `min_s`, `threads` (the pool's size), `buffers` (`hostvec` or `vec`)
//! and, for the ops with a bandwidth figure, `traffic_bytes` (the bytes the op must move: read
//! and written) and `ratio`: its traffic per second over `memcpy_par`'s in the same run (the
//! physical limit: a 64 MiB parallel copy reads and writes 128 MiB). With `--op`, `memcpy_par`
//! runs first for the ratio. A summary of the ratios against issue 12's targets goes to
//! stderr. `benches/compare_numpy.py` runs the same workloads in numpy and compares.
//!
//! - `--threads N` runs everything inside a rayon pool of N threads (the caller's explicit
//!   choice; `Device::host_with_pool` is the same for the `Device` API); without it, rayon's
//!   global pool (one thread per core, or `RAYON_NUM_THREADS`).
//! - The large arrays live in [`HostVec`]s (cache-line-aligned, huge pages from 4 MiB: how the
//!   crate's own buffers and pool hold memory); `--vec` keeps them in the plain `Vec`s they are
//!   generated in (16 bytes past a page boundary, 4 KiB pages), to show what placement costs.
//!
//! `bytes` is the number of bytes of *output* the op writes per run (not read + written), so
//! `bytes / median_s` is the output bandwidth and is comparable with `memcpy`'s:
//! - `memcpy`, `gather_rows`, `scatter_rows`: the 64 MiB of rows written;
//! - `memcpy_par` (extra, not an issue workload): the same 64 MiB copy split over rayon's pool
//!   in 256 KiB chunks, the multi-threaded bandwidth ceiling (`memcpy` is one thread);
//! - `pad_to_multiple`: the whole padded destination (data rows plus fill rows);
//! - `offsets`: the `n + 1` i64 offsets;
//! - `offsets_read_pass` (extra, not an op): one parallel read of the 4 Mi lengths, the read
//!   that the offsets' validation adds before anything is written;
//! - `flatten`: the flattened f32 buffer plus its `n + 1` i64 offsets;
//! - `split`: nothing is copied (the segments are views), so `bytes` is the size of the data
//!   the views cover, a nominal figure for the table only;
//! - `gather_small`: the 256 KiB of rows written.
//! - `gather_small_own_pool` (extra): the same through `Device::host_with_pool` of a pool the
//!   calling thread is not in (small enough to run on the calling thread, without a handoff).
//! - the input-preparation rows use the `prepare_step` workload (256 requests: 32 prefills of 1
//!   to 480 new tokens and 224 decodes, max model length 4,096, block size 16, a 4,096-row
//!   request state; `benches/step_reference.py`'s `make_step` builds the same shape for numpy):
//!   `expand_segments` (request id and position of every token: 12 bytes per token),
//!   `slot_mapping` (the step's slots, padded to 16,384: 8 bytes per slot), `gather_windows`
//!   (the step's input_ids from the token table: 4 bytes per token), `staged_write` (the step's
//!   new block ids, one write per request that needs blocks: 4 bytes per id), `pad_to_bucket`
//!   (300 i64 positions to the 304 bucket: the padded bytes), `prepare_step` and
//!   `prepare_step_decode` (4,096 decode-only requests) (the fused step: every output byte
//!   written).
//!
//! Timing: warm-up runs (at least 3 and 0.1 s), then timed runs until there are at least 15 runs
//! *and* 1 s has passed (`--quick`: 5 runs and 0.2 s), stopping early after 5 s once 5 runs are
//! in (slow ops), and at 100,000 runs (tiny ops). The median of the per-run wall times is
//! reported. All data is generated from fixed seeds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cpugpu::{
    cuda_graph_sizes, host, Device, Element, GatherPolicy, HostVec, ScatterPolicy, SegmentBounds,
    StagedWrites, StepPadding, StepRequests, WindowLayout,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

const OPS: [&str; 20] = [
    "memcpy",
    "memcpy_par",
    "gather_rows",
    "gather_rows_alloc",
    "scatter_rows",
    "pad_to_multiple",
    "pad_to_multiple_alloc",
    "offsets",
    "offsets_read_pass",
    "flatten",
    "split",
    "gather_small",
    "gather_small_own_pool",
    "expand_segments",
    "slot_mapping",
    "gather_windows",
    "staged_write",
    "pad_to_bucket",
    "prepare_step",
    "prepare_step_decode",
];

/// Row width (f32 elements) of the row workloads: 16 f32 = 64 bytes.
const COLS: usize = 16;
/// Rows of the large row workloads.
const ROWS: usize = 1_048_576;
/// Rows of `pad_to_multiple`'s input (padded to a multiple of `PAD_MULTIPLE`).
const PAD_ROWS: usize = 1_048_573;
const PAD_MULTIPLE: usize = 64;
/// Lengths in the `offsets` workload.
const OFFSETS_N: usize = 4_194_304;
/// Arrays in the `flatten` / `split` workloads, each of 1..=FLATTEN_MAX_LEN elements.
const FLATTEN_N: usize = 8_192;
const FLATTEN_MAX_LEN: usize = 511;
/// Rows (source and gathered) of the `gather_small` workload.
const SMALL_ROWS: usize = 4_096;

struct Config {
    warm_runs: usize,
    warm_time: Duration,
    min_runs: usize,
    min_time: Duration,
    max_time: Duration,
    max_runs: usize,
}

struct Stats {
    median_s: f64,
    min_s: f64,
    runs: usize,
}

fn time_it<F: FnMut()>(cfg: &Config, mut f: F) -> Stats {
    let start = Instant::now();
    let mut n = 0;
    while n < cfg.warm_runs || start.elapsed() < cfg.warm_time {
        f();
        n += 1;
        if n >= 1000 {
            break;
        }
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    loop {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
        let elapsed = start.elapsed();
        let enough = samples.len() >= cfg.min_runs && elapsed >= cfg.min_time;
        let slow = samples.len() >= 5 && elapsed >= cfg.max_time;
        if enough || slow || samples.len() >= cfg.max_runs {
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    let median_s = if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    };
    Stats {
        median_s,
        min_s: samples[0],
        runs: samples.len(),
    }
}

/// One result line. `traffic` is the bytes the op must move (read and written), `None` for
/// the ops without a ratio target; with `memcpy_par` measured first in the run, the line gets
/// `ratio`: the op's traffic per second over `memcpy_par`'s (which reads and writes its 64 MiB).
fn report(op: &str, bytes: usize, traffic: Option<usize>, s: &Stats, run: &mut Run) {
    let mut extra = String::new();
    if let Some(t) = traffic {
        extra += &format!(", \"traffic_bytes\": {t}");
        if let Some(mp) = run.memcpy_par_bw {
            let ratio = t as f64 / s.median_s / mp;
            extra += &format!(", \"ratio\": {ratio:.4}");
            run.ratios.push((op.to_string(), ratio));
        }
    }
    println!(
        "{{\"op\": \"{op}\", \"bytes\": {bytes}, \"median_s\": {:e}, \"runs\": {}, \"min_s\": {:e}, \"threads\": {}, \"buffers\": \"{}\"{extra}}}",
        s.median_s,
        s.runs,
        s.min_s,
        rayon::current_num_threads(),
        if run.plain_vecs { "vec" } else { "hostvec" },
    );
}

/// What one process run carries between workloads.
struct Run {
    /// Hold the workloads' large arrays in plain `Vec`s instead of [`HostVec`]s.
    plain_vecs: bool,
    /// `memcpy_par`'s traffic in bytes per second, once measured.
    memcpy_par_bw: Option<f64>,
    /// Each workload's ratio to `memcpy_par`, for the summary.
    ratios: Vec<(String, f64)>,
}

/// A workload's large array: a [`HostVec`] (cache-line-aligned, huge pages from 4 MiB: how
/// the crate's own buffers hold memory, and what a batching loop's pool gives it) or, with
/// `--vec`, the plain `Vec` it was generated in.
enum Buf<T: Element> {
    Host(HostVec<T>),
    Plain(Vec<T>),
}

impl<T: Element> Buf<T> {
    fn new(run: &Run, v: Vec<T>) -> Self {
        if run.plain_vecs {
            return Buf::Plain(v);
        }
        let mut h = HostVec::zeroed(v.len()).expect("host buffer");
        h.copy_from_slice(&v);
        Buf::Host(h)
    }
}

impl<T: Element> std::ops::Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Buf::Host(h) => h,
            Buf::Plain(v) => v,
        }
    }
}

impl<T: Element> std::ops::DerefMut for Buf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Buf::Host(h) => h,
            Buf::Plain(v) => v,
        }
    }
}

/// The ratio targets of issue 12, as fractions of `memcpy_par`'s traffic per second.
const TARGETS: [(&str, f64); 5] = [
    ("gather_rows", 0.70),
    ("scatter_rows", 0.60),
    ("offsets", 0.85),
    ("pad_to_multiple", 0.90),
    ("flatten", 0.90),
];

fn random_f32(rng: &mut SmallRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen::<f32>()).collect()
}

fn permutation(rng: &mut SmallRng, n: usize) -> Vec<i64> {
    let mut idx: Vec<i64> = (0..n)
        .map(|i| i64::try_from(i).expect("row index fits i64"))
        .collect();
    idx.shuffle(rng);
    idx
}

fn ragged_arrays(rng: &mut SmallRng) -> Vec<Vec<f32>> {
    (0..FLATTEN_N)
        .map(|_| {
            let len = rng.gen_range(1..=FLATTEN_MAX_LEN);
            random_f32(rng, len)
        })
        .collect()
}

/// The step workloads' model: max model length, block size, request-state rows.
const STEP_MAX_MODEL_LEN: usize = 4096;
const STEP_BLOCK: usize = 16;
const STEP_MAX_BLOCKS: usize = STEP_MAX_MODEL_LEN / STEP_BLOCK;
/// Token capacity of the mixed step's outputs (the most 32 prefills of 480 and 224 decodes
/// can schedule, rounded up).
const STEP_MAX_TOKENS: usize = 16384;

/// One step's inputs and persistent state, shaped like `benches/step_reference.py`'s
/// `make_step`: `rows` request states with random token rows, requests in distinct random
/// states (prefills of 1..=480 new tokens, the first at the maximum model length, and decodes of
/// one), interleaved; every state owns the blocks its sequence needs, from a shuffled free list.
///
/// The token and block tables live in host-backend device buffers (`Device::alloc`), as the
/// host backend keeps them: large ones are advised onto transparent huge pages, as numpy's are.
struct StepData {
    rows: usize,
    token_buf: cpugpu::DeviceBuffer<i32>,
    table_buf: cpugpu::DeviceBuffer<i32>,
    num_blocks: Vec<i32>,
    state_index: Vec<i32>,
    num_computed: Vec<i32>,
    num_scheduled: Vec<i32>,
}

impl StepData {
    fn token_ids(&self) -> &[i32] {
        self.token_buf.view().as_host_slice().expect("host memory")
    }

    fn table(&self) -> &[i32] {
        self.table_buf.view().as_host_slice().expect("host memory")
    }

    fn tokens(&self) -> usize {
        self.num_scheduled.iter().map(|&k| k as usize).sum()
    }

    fn query_start_loc(&self) -> Vec<i32> {
        let mut q = vec![0i32];
        for &k in &self.num_scheduled {
            q.push(q[q.len() - 1] + k);
        }
        q
    }

    /// Every token's state row and position.
    fn token_rows_and_positions(&self) -> (Vec<i32>, Vec<i64>) {
        let (mut rows, mut pos) = (Vec::new(), Vec::new());
        for r in 0..self.state_index.len() {
            for k in 0..self.num_scheduled[r] {
                rows.push(self.state_index[r]);
                pos.push(i64::from(self.num_computed[r] + k));
            }
        }
        (rows, pos)
    }
}

fn make_step(seed: u64, n_prefill: usize, n_decode: usize, rows: usize) -> StepData {
    let mut rng = SmallRng::seed_from_u64(seed);
    let l = STEP_MAX_MODEL_LEN;
    let n = n_prefill + n_decode;
    let token_ids: Vec<i32> = (0..rows * l).map(|_| rng.gen_range(0..50_000)).collect();
    let mut states: Vec<i32> = (0..rows as i32).collect();
    states.shuffle(&mut rng);
    let mut reqs: Vec<(i32, i32, i32)> = (0..n)
        .map(|r| {
            let (k, c) = if r < n_prefill {
                let k = rng.gen_range(1..=480);
                (
                    k,
                    if r == 0 {
                        l - k
                    } else {
                        rng.gen_range(0..=l - k)
                    },
                )
            } else {
                (1, rng.gen_range(0..l))
            };
            (states[r], c as i32, k as i32)
        })
        .collect();
    reqs.shuffle(&mut rng);
    let mut seq = vec![0usize; rows];
    for &(s, c, k) in &reqs {
        seq[s as usize] = (c + k) as usize;
    }
    let mut free: Vec<i32> = (0..(rows * STEP_MAX_BLOCKS) as i32).collect();
    free.shuffle(&mut rng);
    let mut table = vec![-1i32; rows * STEP_MAX_BLOCKS];
    let mut num_blocks = vec![0i32; rows];
    for s in 0..rows {
        let need = if seq[s] > 0 {
            seq[s].div_ceil(STEP_BLOCK)
        } else {
            rng.gen_range(0..=STEP_MAX_BLOCKS)
        };
        for b in 0..need {
            table[s * STEP_MAX_BLOCKS + b] = free.pop().expect("enough blocks");
        }
        num_blocks[s] = need as i32;
    }
    let dev = Device::host();
    let mut token_buf = dev.alloc::<i32>(&[rows, l]).expect("alloc");
    token_buf.copy_from_host(&token_ids).expect("copy");
    let mut table_buf = dev.alloc::<i32>(&[rows, STEP_MAX_BLOCKS]).expect("alloc");
    table_buf.copy_from_host(&table).expect("copy");
    StepData {
        rows,
        token_buf,
        table_buf,
        num_blocks,
        state_index: reqs.iter().map(|r| r.0).collect(),
        num_computed: reqs.iter().map(|r| r.1).collect(),
        num_scheduled: reqs.iter().map(|r| r.2).collect(),
    }
}

fn run_op(op: &str, cfg: &Config, run: &mut Run) {
    let f32_bytes = std::mem::size_of::<f32>();
    let i64_bytes = std::mem::size_of::<i64>();
    match op {
        "memcpy" => {
            let mut rng = SmallRng::seed_from_u64(1);
            let src = Buf::new(run, random_f32(&mut rng, ROWS * COLS));
            let mut dst = Buf::new(run, vec![0f32; src.len()]);
            let s = time_it(cfg, || {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            });
            report(
                op,
                dst.len() * f32_bytes,
                Some(2 * dst.len() * f32_bytes),
                &s,
                run,
            );
        }
        "memcpy_par" => {
            let mut rng = SmallRng::seed_from_u64(1);
            let src = Buf::new(run, random_f32(&mut rng, ROWS * COLS));
            let mut dst = Buf::new(run, vec![0f32; src.len()]);
            let chunk = 256 * 1024 / f32_bytes;
            let s = time_it(cfg, || {
                dst.par_chunks_mut(chunk)
                    .zip(black_box(&src).par_chunks(chunk))
                    .for_each(|(d, s)| d.copy_from_slice(s));
                black_box(&mut dst);
            });
            let traffic = 2 * dst.len() * f32_bytes;
            run.memcpy_par_bw = Some(traffic as f64 / s.median_s);
            report(op, dst.len() * f32_bytes, Some(traffic), &s, run);
        }
        "gather_rows" => {
            let mut rng = SmallRng::seed_from_u64(2);
            let src = Buf::new(run, random_f32(&mut rng, ROWS * COLS));
            let idx = Buf::new(run, permutation(&mut rng, ROWS));
            let mut dst = Buf::new(run, vec![0f32; idx.len() * COLS]);
            let s = time_it(cfg, || {
                host::gather_rows_into(
                    black_box(&src),
                    &[ROWS, COLS],
                    black_box(&idx),
                    &mut dst,
                    GatherPolicy::Checked,
                )
                .expect("gather_rows_into");
                black_box(&mut dst);
            });
            let rows = dst.len() * f32_bytes;
            report(op, rows, Some(2 * rows + idx.len() * i64_bytes), &s, run);
        }
        "gather_rows_alloc" => {
            // The allocating form, as np.take allocates: includes page-faulting the output.
            let mut rng = SmallRng::seed_from_u64(2);
            let src = Buf::new(run, random_f32(&mut rng, ROWS * COLS));
            let idx = Buf::new(run, permutation(&mut rng, ROWS));
            let s = time_it(cfg, || {
                let out = host::gather_rows(
                    black_box(&src),
                    &[ROWS, COLS],
                    black_box(&idx),
                    GatherPolicy::Checked,
                )
                .expect("gather_rows");
                black_box(out);
            });
            let rows = idx.len() * COLS * f32_bytes;
            report(op, rows, Some(2 * rows + idx.len() * i64_bytes), &s, run);
        }
        "scatter_rows" => {
            let mut rng = SmallRng::seed_from_u64(3);
            let src = Buf::new(run, random_f32(&mut rng, ROWS * COLS));
            let idx = Buf::new(run, permutation(&mut rng, ROWS));
            let mut dst = Buf::new(run, vec![0f32; ROWS * COLS]);
            let s = time_it(cfg, || {
                host::scatter_rows_into(
                    black_box(&src),
                    black_box(&idx),
                    &mut dst,
                    &[ROWS, COLS],
                    ScatterPolicy::Checked,
                )
                .expect("scatter_rows_into");
                black_box(&mut dst);
            });
            let rows = idx.len() * COLS * f32_bytes;
            report(op, rows, Some(2 * rows + idx.len() * i64_bytes), &s, run);
        }
        "pad_to_multiple" => {
            let mut rng = SmallRng::seed_from_u64(4);
            let src = Buf::new(run, random_f32(&mut rng, PAD_ROWS * COLS));
            let padded_rows = PAD_ROWS.div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE;
            let mut dst = Buf::new(run, vec![0f32; padded_rows * COLS]);
            let s = time_it(cfg, || {
                let shape = host::pad_to_multiple_into(
                    black_box(&src),
                    &[PAD_ROWS, COLS],
                    0,
                    PAD_MULTIPLE,
                    0.0f32,
                    &mut dst,
                )
                .expect("pad_to_multiple_into");
                black_box(shape);
                black_box(&mut dst);
            });
            let out = dst.len() * f32_bytes;
            report(op, out, Some(src.len() * f32_bytes + out), &s, run);
        }
        "pad_to_multiple_alloc" => {
            // The allocating form, as np.pad allocates: includes page-faulting the output.
            let mut rng = SmallRng::seed_from_u64(4);
            let src = Buf::new(run, random_f32(&mut rng, PAD_ROWS * COLS));
            let padded_rows = PAD_ROWS.div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE;
            let s = time_it(cfg, || {
                let out = host::pad_to_multiple(
                    black_box(&src),
                    &[PAD_ROWS, COLS],
                    0,
                    PAD_MULTIPLE,
                    0.0f32,
                )
                .expect("pad_to_multiple");
                black_box(out);
            });
            let out = padded_rows * COLS * f32_bytes;
            report(op, out, Some(src.len() * f32_bytes + out), &s, run);
        }
        "offsets" => {
            let mut rng = SmallRng::seed_from_u64(5);
            let lengths = Buf::new(
                run,
                (0..OFFSETS_N).map(|_| rng.gen_range(1..=511)).collect(),
            );
            let mut offsets = Buf::new(run, vec![0i64; OFFSETS_N + 1]);
            let s = time_it(cfg, || {
                host::prefix_sum_offsets_into::<i64, i64>(black_box(&lengths), &mut offsets)
                    .expect("prefix_sum_offsets_into");
                black_box(&mut offsets);
            });
            let out = offsets.len() * i64_bytes;
            report(op, out, Some(lengths.len() * i64_bytes + out), &s, run);
        }
        "offsets_read_pass" => {
            // Not an op: the read the offsets' validation needs before anything is written
            // (sum and sign of every length, in the same 256 KiB chunks on the same pool), to
            // show what the two passes cost. `bytes` and `traffic_bytes`: the lengths read.
            let mut rng = SmallRng::seed_from_u64(5);
            let lengths: Buf<i64> = Buf::new(
                run,
                (0..OFFSETS_N).map(|_| rng.gen_range(1..=511)).collect(),
            );
            let s = time_it(cfg, || {
                let (sum, signs) = black_box(&lengths)
                    .par_chunks(256 * 1024 / i64_bytes)
                    .map(|c| {
                        c.iter()
                            .fold((0i64, 0i64), |(s, g), &l| (s.wrapping_add(l), g | l))
                    })
                    .reduce(|| (0, 0), |a, b| (a.0.wrapping_add(b.0), a.1 | b.1));
                black_box((sum, signs));
            });
            let bytes = lengths.len() * i64_bytes;
            report(op, bytes, Some(bytes), &s, run);
        }
        "flatten" => {
            // The ragged input stays in its 8,192 small `Vec`s (as a caller's per-request
            // arrays are); the output and offsets are large buffers.
            let mut rng = SmallRng::seed_from_u64(6);
            let arrays = ragged_arrays(&mut rng);
            let total: usize = arrays.iter().map(Vec::len).sum();
            let mut dst = Buf::new(run, vec![0f32; total]);
            let mut offsets = Buf::new(run, vec![0i64; FLATTEN_N + 1]);
            let s = time_it(cfg, || {
                host::flatten_into(black_box(&arrays), &mut dst, &mut offsets)
                    .expect("flatten_into");
                black_box(&mut dst);
                black_box(&mut offsets);
            });
            let out = total * f32_bytes + offsets.len() * i64_bytes;
            report(op, out, Some(total * f32_bytes + out), &s, run);
        }
        "split" => {
            let mut rng = SmallRng::seed_from_u64(6);
            let arrays = ragged_arrays(&mut rng);
            let (data, offsets): (Vec<f32>, Vec<i64>) =
                host::flatten(&arrays).expect("flatten for split");
            let s = time_it(cfg, || {
                let segs = host::split(black_box(&data), black_box(&offsets)).expect("split");
                let mut touched = 0usize;
                for seg in segs.iter() {
                    touched += black_box(seg).len();
                }
                black_box(touched);
            });
            report(op, data.len() * f32_bytes, None, &s, run);
        }
        "gather_small" => {
            let mut rng = SmallRng::seed_from_u64(8);
            let src = Buf::new(run, random_f32(&mut rng, SMALL_ROWS * COLS));
            let hi = i64::try_from(SMALL_ROWS).expect("fits i64");
            let idx = Buf::new(run, (0..SMALL_ROWS).map(|_| rng.gen_range(0..hi)).collect());
            let mut dst = Buf::new(run, vec![0f32; idx.len() * COLS]);
            let s = time_it(cfg, || {
                host::gather_rows_into(
                    black_box(&src),
                    &[SMALL_ROWS, COLS],
                    black_box(&idx),
                    &mut dst,
                    GatherPolicy::Checked,
                )
                .expect("gather_rows_into");
                black_box(&mut dst);
            });
            let rows = dst.len() * f32_bytes;
            report(op, rows, Some(2 * rows + idx.len() * i64_bytes), &s, run);
        }
        "gather_small_own_pool" => {
            // gather_small through `Device::host_with_pool` (a 2-thread pool of its own), called
            // from a thread outside that pool. An op this small runs on the calling thread (a
            // handoff to the pool, `ThreadPool::install`, cost 36-41 us per call here when it
            // was made for every op); the difference from `gather_small` is the device path.
            let mut rng = SmallRng::seed_from_u64(8);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .expect("thread pool");
            let dev = Device::host_with_pool(std::sync::Arc::new(pool));
            let src = dev
                .upload(
                    &random_f32(&mut rng, SMALL_ROWS * COLS),
                    &[SMALL_ROWS, COLS],
                )
                .expect("upload");
            let hi = i64::try_from(SMALL_ROWS).expect("fits i64");
            let idx: Vec<i64> = (0..SMALL_ROWS).map(|_| rng.gen_range(0..hi)).collect();
            let idx = dev.upload(&idx, &[SMALL_ROWS]).expect("upload");
            let mut dst = dev.alloc::<f32>(&[SMALL_ROWS, COLS]).expect("alloc");
            let s = time_it(cfg, || {
                dev.gather_rows_into(
                    black_box(src.view()),
                    idx.view(),
                    dst.view_mut(),
                    GatherPolicy::Checked,
                )
                .expect("gather_rows_into");
                black_box(&mut dst);
            });
            report(op, dst.len() * f32_bytes, None, &s, run);
        }
        "expand_segments" => {
            let d = make_step(31, 32, 224, 4096);
            let n_tok = d.tokens();
            let (mut seg, mut pos) = (vec![0i32; n_tok], vec![0i64; n_tok]);
            let starts: Vec<i64> = d.num_computed.iter().map(|&c| i64::from(c)).collect();
            let s = time_it(cfg, || {
                host::expand_segments_into(
                    SegmentBounds::Counts(black_box(&d.num_scheduled[..])),
                    Some(&starts[..]),
                    &mut seg,
                    &mut pos,
                )
                .expect("expand_segments_into");
                black_box((&mut seg, &mut pos));
            });
            report(op, n_tok * 12, None, &s, run);
        }
        "slot_mapping" => {
            let d = make_step(31, 32, 224, 4096);
            let n_tok = d.tokens();
            let (rows, pos) = d.token_rows_and_positions();
            let mut slots = vec![0i64; STEP_MAX_TOKENS];
            let g = host::KvCacheGroup {
                block_table: d.table(),
                max_blocks: STEP_MAX_BLOCKS,
                num_blocks: &d.num_blocks,
                block_size: STEP_BLOCK,
            };
            let s = time_it(cfg, || {
                host::slot_mapping_into(black_box(&rows), &pos, &[g], -1i64, &mut slots)
                    .expect("slot_mapping_into");
                black_box(&mut slots);
            });
            let _ = n_tok;
            report(op, slots.len() * 8, None, &s, run);
        }
        "gather_windows" => {
            let d = make_step(31, 32, 224, 4096);
            let n_tok = d.tokens();
            let qsl = d.query_start_loc();
            let mut ids = vec![0i32; n_tok];
            let s = time_it(cfg, || {
                host::gather_windows_into(
                    black_box(d.token_ids()),
                    &[d.rows, STEP_MAX_MODEL_LEN],
                    &d.state_index,
                    Some(&d.num_computed[..]),
                    WindowLayout::Ragged { offsets: &qsl[..] },
                    &mut ids,
                )
                .expect("gather_windows_into");
                black_box(&mut ids);
            });
            report(op, n_tok * 4, None, &s, run);
        }
        "staged_write" => {
            // The step's new blocks: every request whose tokens cross into blocks it does not
            // hold yet gets them appended after its current ones.
            let d = make_step(31, 32, 224, 4096);
            let mut rng = SmallRng::seed_from_u64(32);
            let mut writes: Vec<(usize, usize, Vec<i32>)> = Vec::new();
            for r in 0..d.state_index.len() {
                let s = d.state_index[r] as usize;
                let have = (d.num_computed[r] as usize).div_ceil(STEP_BLOCK);
                let need = ((d.num_computed[r] + d.num_scheduled[r]) as usize).div_ceil(STEP_BLOCK);
                if need > have {
                    let ids = (have..need).map(|_| rng.gen_range(0..1 << 20)).collect();
                    writes.push((s, have, ids));
                }
            }
            let ids: usize = writes.iter().map(|w| w.2.len()).sum();
            let dev = Device::host();
            let mut table = dev.alloc::<i32>(&[d.rows, STEP_MAX_BLOCKS]).expect("alloc");
            let mut staged = StagedWrites::<i32>::new(&dev, d.rows, STEP_MAX_BLOCKS);
            let s = time_it(cfg, || {
                for (row, start, v) in &writes {
                    staged.stage(*row, *start, v).expect("stage");
                }
                staged.apply(table.view_mut()).expect("apply");
                black_box(&mut table);
            });
            report(op, ids * 4, None, &s, run);
        }
        "pad_to_bucket" => {
            let x: Vec<i64> = (0..300).collect();
            let sizes = cuda_graph_sizes(512);
            let mut out = vec![0i64; 304];
            let s = time_it(cfg, || {
                host::pad_to_bucket_into(black_box(&x), &[300], 0, &sizes, 0, &mut out)
                    .expect("pad_to_bucket_into");
                black_box(&mut out);
            });
            report(op, out.len() * 8, None, &s, run);
        }
        "prepare_step" | "prepare_step_decode" => {
            let d = if op == "prepare_step" {
                make_step(31, 32, 224, 4096)
            } else {
                make_step(33, 0, 4096, 4096)
            };
            let n = d.state_index.len();
            let t_cap = if op == "prepare_step" {
                STEP_MAX_TOKENS
            } else {
                4096
            };
            let sizes = cuda_graph_sizes(512);
            let g = host::KvCacheGroup {
                block_table: d.table(),
                max_blocks: STEP_MAX_BLOCKS,
                num_blocks: &d.num_blocks,
                block_size: STEP_BLOCK,
            };
            let groups = [g];
            let tables = host::StepTables {
                token_ids: d.token_ids(),
                max_model_len: STEP_MAX_MODEL_LEN,
                kv_groups: &groups,
            };
            let req = StepRequests {
                state_index: &d.state_index,
                num_computed: &d.num_computed,
                num_scheduled: &d.num_scheduled,
            };
            let (mut qsl, mut seq, mut logits) = (vec![0i32; n + 1], vec![0i32; n], vec![0i64; n]);
            let (mut pos, mut ids, mut slots) =
                (vec![0i64; t_cap], vec![0i32; t_cap], vec![0i64; t_cap]);
            let mut padded = 0;
            let s = time_it(cfg, || {
                let out = host::StepOutputs {
                    query_start_loc: &mut qsl,
                    seq_lens: &mut seq,
                    positions: &mut pos,
                    input_ids: &mut ids,
                    slot_mapping: &mut slots,
                    logits_indices: &mut logits,
                };
                let plan =
                    host::prepare_step_into(&req, &tables, StepPadding::Buckets(&sizes), out)
                        .expect("prepare_step_into");
                padded = plan.padded_tokens;
                black_box(&mut slots);
            });
            // Bytes written: the request outputs, positions and ids up to the padded count, the
            // whole slot row.
            report(
                op,
                (n + 1) * 4 + n * 4 + n * 8 + padded * 12 + t_cap * 8,
                None,
                &s,
                run,
            );
        }
        _ => unreachable!("op names are checked in main"),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: host_bench [--quick] [--op NAME] [--threads N] [--vec]\n  NAME: one of {}",
        OPS.join(", ")
    );
    std::process::exit(2);
}

fn main() {
    let mut quick = false;
    let mut only: Option<String> = None;
    let mut threads: Option<usize> = None;
    let mut plain_vecs = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--vec" => plain_vecs = true,
            "--op" => match args.next() {
                Some(name) if OPS.contains(&name.as_str()) => only = Some(name),
                Some(name) => {
                    eprintln!("host_bench: unknown op {name:?}");
                    usage();
                }
                None => usage(),
            },
            "--threads" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => threads = Some(n),
                _ => usage(),
            },
            "-h" | "--help" => usage(),
            other => {
                eprintln!("host_bench: unknown argument {other:?}");
                usage();
            }
        }
    }
    let cfg = if quick {
        Config {
            warm_runs: 1,
            warm_time: Duration::from_millis(20),
            min_runs: 5,
            min_time: Duration::from_millis(200),
            max_time: Duration::from_secs(2),
            max_runs: 20_000,
        }
    } else {
        Config {
            warm_runs: 3,
            warm_time: Duration::from_millis(100),
            min_runs: 15,
            min_time: Duration::from_secs(1),
            max_time: Duration::from_secs(5),
            max_runs: 100_000,
        }
    };
    let mut run = Run {
        plain_vecs,
        memcpy_par_bw: None,
        ratios: Vec::new(),
    };
    let mut body = || {
        // The ratios need this run's memcpy_par: measure it first when one op is asked for.
        let wanted = |op: &str| only.as_deref().is_none_or(|o| o == op);
        if only.is_some() && !wanted("memcpy_par") {
            run_op("memcpy_par", &cfg, &mut run);
        }
        for op in OPS {
            if wanted(op) {
                run_op(op, &cfg, &mut run);
            }
        }
        summary(&run);
    };
    match threads {
        // The explicit choice a caller makes: a pool of its own, every op run inside it.
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("thread pool")
            .install(body),
        None => body(),
    }
}

/// The ratios to `memcpy_par` against issue 12's targets, on stderr (stdout stays JSON lines).
fn summary(run: &Run) {
    if run.ratios.is_empty() {
        return;
    }
    eprintln!(
        "ratio of traffic per second to memcpy_par ({} threads, {} buffers):",
        rayon::current_num_threads(),
        if run.plain_vecs { "Vec" } else { "HostVec" }
    );
    for (op, r) in &run.ratios {
        match TARGETS.iter().find(|t| t.0 == op) {
            Some((_, t)) => eprintln!(
                "  {op:<22} {:>5.1}%  target {:>3.0}%: {}",
                r * 100.0,
                t * 100.0,
                if r >= t { "met" } else { "MISSED" }
            ),
            None => eprintln!("  {op:<22} {:>5.1}%", r * 100.0),
        }
    }
}
