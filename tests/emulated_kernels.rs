//! The kernels of issue 13 on the emulated GPU, through `Device`, against the host reference:
//!
//! * one launch per operation at batch sizes: a checked gather or scatter of at most 4,096
//!   indices, pad, flatten, split and a prefix sum of one tile are each one kernel launch
//!   (`emu::take_launch_log`), and a failing one still reports position and value at
//!   `Device::synchronize` and writes nothing;
//! * the single-pass look-back scan: sizes around tile boundaries, several grid sizes (blocks
//!   taking one tile or many), negative lengths and overflow in the first, a middle and the last
//!   tile, the earliest error reported, nothing written; and the same in child processes under
//!   every block order of the emulator with 1 and 4 blocks in flight;
//! * the batched copy (flatten, split) at every source and destination alignment modulo 16 and
//!   at the edges of its size tiers and chunks;
//! * scatter's persistent winners array: sized by the destination once, left armed by every
//!   call (failing ones too), grown for a larger destination, one per stream.
#![cfg(feature = "emulator")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_bits_eq, gpu, poisoned, random_indices, random_vec, rng};
use cpugpu::{emu, host, Device, Error, GatherPolicy, Index, Op, ScatterPolicy};
use rand::Rng;

const TILE: usize = 4096;

fn idx_vec<I: Index>(v: &[i64]) -> Vec<I> {
    v.iter().map(|&x| I::from_i64(x).unwrap()).collect()
}

// ---------------------------------------------------------------- launches per operation

#[test]
fn checked_gather_and_scatter_are_one_launch_at_batch_sizes() {
    let mut r = rng(1);
    for n in [1usize, 7, 300, 4096] {
        let rows = 50;
        let src: Vec<f32> = random_vec(&mut r, rows * 16);
        let idx: Vec<i64> = random_indices(&mut r, n, rows);
        let mut got = poisoned::<f32>(n * 16);
        let mut want = poisoned::<f32>(n * 16);
        emu::take_launch_log();
        gpu::gather_rows_into(&src, &[rows, 16], &idx, &mut got, GatherPolicy::Checked).unwrap();
        assert_eq!(
            emu::take_launch_log(),
            ["gather_rows_w16_i64"],
            "gather n={n}"
        );
        host::gather_rows_into(&src, &[rows, 16], &idx, &mut want, GatherPolicy::Checked).unwrap();
        assert_bits_eq(&got, &want, "gather");

        let idx32: Vec<i32> = idx_vec(&idx);
        let init: Vec<f32> = random_vec(&mut r, rows * 16);
        let (mut got, mut want) = (init.clone(), init);
        let src_n: Vec<f32> = random_vec(&mut r, n * 16);
        gpu::scatter_rows_into(
            &src_n,
            &idx32,
            &mut got,
            &[rows, 16],
            ScatterPolicy::Checked,
        )
        .unwrap();
        assert_eq!(
            emu::take_launch_log(),
            ["scatter_rows_w16_i32"],
            "scatter n={n}"
        );
        host::scatter_rows_into(
            &src_n,
            &idx32,
            &mut want,
            &[rows, 16],
            ScatterPolicy::Checked,
        )
        .unwrap();
        assert_bits_eq(&got, &want, "scatter");

        let lens: Vec<i32> = (0..n).map(|_| r.gen_range(0..9)).collect();
        let mut offs = vec![0i64; n + 1];
        gpu::prefix_sum_offsets_into(&lens, &mut offs).unwrap();
        assert_eq!(
            emu::take_launch_log(),
            ["offsets_single_i32_i64"],
            "offsets n={n}"
        );
    }
    // Past the batch size: a checking pass first, then the operation.
    let n = 4097;
    let src: Vec<u32> = random_vec(&mut r, 10 * 4);
    let idx: Vec<i64> = random_indices(&mut r, n, 10);
    let mut got = poisoned::<u32>(n * 4);
    gpu::gather_rows_into(&src, &[10, 4], &idx, &mut got, GatherPolicy::Checked).unwrap();
    assert_eq!(
        emu::take_launch_log(),
        ["validate_indices_i64", "gather_rows_w16_i64"]
    );
    let mut cache = poisoned::<u32>(10 * 4);
    let src_n: Vec<u32> = random_vec(&mut r, n * 4);
    gpu::scatter_rows_into(&src_n, &idx, &mut cache, &[10, 4], ScatterPolicy::Checked).unwrap();
    assert_eq!(
        emu::take_launch_log(),
        ["scatter_winners_i64", "scatter_rows_w16_i64"]
    );
    // The unchecked operations: one launch each, at every size.
    let mut padded = poisoned::<u32>(4104 * 4);
    gpu::pad_to_multiple_into(&src_n, &[n, 4], 0, 8, 0, &mut padded).unwrap();
    assert_eq!(emu::take_launch_log(), ["pad_w16"]);
    let parts: Vec<Vec<u8>> = (0..40).map(|i| random_vec(&mut r, i * 37)).collect();
    let (flat, offs) = gpu::flatten::<u8, i64, _>(&parts).unwrap();
    assert_eq!(emu::take_launch_log(), ["flatten_w16_i64"]);
    let back = gpu::split(&flat, &offs).unwrap();
    assert_eq!(back, parts);
    let mut outs: Vec<Vec<u8>> = parts.iter().map(|p| poisoned(p.len())).collect();
    let mut refs: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
    emu::take_launch_log();
    gpu::split_copy_into(&flat, &offs, &mut refs).unwrap();
    assert_eq!(emu::take_launch_log(), ["split_copy_w16"]);
    assert_eq!(outs, parts);
}

/// A checked gather/scatter at batch size whose index `pos` is bad: one launch, the error at
/// synchronisation with position and value, the destination untouched.
#[test]
fn one_launch_errors_name_position_and_value_and_write_nothing() {
    let mut r = rng(2);
    for (n, pos, bad) in [
        (1usize, 0usize, -1i64),
        (33, 32, 10),
        (4096, 2000, i64::from(i32::MIN)),
        (4096, 4095, -7),
    ] {
        let rows = 10;
        let mut idx = random_indices(&mut r, n, rows);
        idx[pos] = bad;
        // A later bad index too: the first one is reported.
        if pos + 1 < n {
            idx[n - 1] = rows as i64;
        }
        let idx32: Vec<i32> = idx_vec(&idx);
        let want = Error::IndexOutOfBounds {
            op: Op::GatherRows,
            position: pos,
            index: bad,
            bound: rows,
        };
        let src: Vec<u64> = random_vec(&mut r, rows * 3);
        let mut got = poisoned::<u64>(n * 3);
        emu::take_launch_log();
        let e = gpu::gather_rows_into(&src, &[rows, 3], &idx32, &mut got, GatherPolicy::Checked);
        assert_eq!(emu::take_launch_log().len(), 1);
        assert_eq!(e, Err(want), "gather n={n}");
        assert_bits_eq(&got, &poisoned::<u64>(n * 3), "gather wrote on error");

        let src_n: Vec<u64> = random_vec(&mut r, n * 3);
        let init: Vec<u64> = random_vec(&mut r, rows * 3);
        let mut got = init.clone();
        let e =
            gpu::scatter_rows_into(&src_n, &idx32, &mut got, &[rows, 3], ScatterPolicy::Checked);
        assert_eq!(emu::take_launch_log().len(), 1);
        assert_eq!(
            e,
            Err(Error::IndexOutOfBounds {
                op: Op::ScatterRows,
                position: pos,
                index: bad,
                bound: rows
            }),
            "scatter n={n}"
        );
        assert_bits_eq(&got, &init, "scatter wrote on error");
        // The next call on the queue is not blamed for the error, and its winners are right.
        let good: Vec<i32> = (0..n as i32).map(|i| i % rows as i32).collect();
        let mut want_dst = init.clone();
        gpu::scatter_rows_into(&src_n, &good, &mut got, &[rows, 3], ScatterPolicy::Checked)
            .unwrap();
        host::scatter_rows_into(
            &src_n,
            &good,
            &mut want_dst,
            &[rows, 3],
            ScatterPolicy::Checked,
        )
        .unwrap();
        assert_bits_eq(&got, &want_dst, "the scatter after a failed one");
    }
}

// ---------------------------------------------------------------- the look-back scan

fn scan_case<L: Index, O: Index>(lengths: &[L], case: &str) {
    let mut want = poisoned::<O>(lengths.len() + 1);
    let mut got = poisoned::<O>(lengths.len() + 1);
    let h = host::prefix_sum_offsets_into(lengths, &mut want);
    let e = gpu::prefix_sum_offsets_into(lengths, &mut got);
    assert_eq!(e, h, "{case}");
    // On error both left the output poisoned, so this also proves nothing was written.
    assert_bits_eq(&got, &want, case);
}

/// Sizes around tile boundaries, good and with planted errors, at the given grid caps.
fn lookback_cases(caps: &[u32], sizes: &[usize]) {
    let mut r = rng(3);
    for &cap in caps {
        emu::set_grid_cap(cap);
        for &n in sizes {
            let lens: Vec<i32> = (0..n).map(|_| r.gen_range(0..1000)).collect();
            scan_case::<i32, i64>(&lens, &format!("cap {cap} n {n}"));
            let lens64: Vec<i64> = lens.iter().map(|&l| i64::from(l) << 20).collect();
            scan_case::<i64, i64>(&lens64, &format!("i64 cap {cap} n {n}"));
            // Errors in the first, a middle and the last tile: a negative length, an overflow
            // of i32 offsets, and both (the earlier one is reported).
            let tiles = n.div_ceil(TILE);
            for (t, at) in [(0usize, 5usize), (tiles / 2, 17), (tiles - 1, 1)] {
                let p = (t * TILE + at).min(n - 1);
                let mut neg = lens.clone();
                neg[p] = -3;
                scan_case::<i32, i32>(&neg, &format!("negative at {p} cap {cap} n {n}"));
                let mut big = lens.clone();
                big[p] = i32::MAX - 500;
                scan_case::<i32, i32>(&big, &format!("overflow at {p} cap {cap} n {n}"));
                // A negative after the overflow, and one before it.
                if p + 3 < n {
                    big[p + 3] = -1;
                    scan_case::<i32, i32>(&big, &format!("overflow then negative {p}"));
                }
                if p > 3 {
                    big[p - 3] = -2;
                    scan_case::<i32, i32>(&big, &format!("negative then overflow {p}"));
                }
            }
        }
    }
    emu::set_grid_cap(0);
}

#[test]
fn lookback_scan_around_tile_edges_errors_and_grid_sizes() {
    // One block per tile (the default grid holds them all), and 1, 2, 3 blocks taking many
    // tiles each.
    lookback_cases(
        &[0, 1, 2, 3],
        &[
            TILE + 1,
            2 * TILE - 1,
            2 * TILE,
            2 * TILE + 1,
            3 * TILE,
            5 * TILE + 17,
        ],
    );
}

#[test]
fn lookback_scan_with_many_tiles_in_flight() {
    // 70 tiles: look-back windows of 32 tiles are taken more than once, with the prefix found
    // in the first, second or third window.
    lookback_cases(&[0, 7], &[70 * TILE + 3]);
}

/// Set in the child: run the look-back cases under this process's emulator settings.
const CHILD_ENV: &str = "CPUGPU_TEST_LOOKBACK_CHILD";

#[test]
fn lookback_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return; // an ordinary run: the parent below starts this in child processes
    }
    lookback_cases(&[0, 2], &[TILE + 1, 3 * TILE, 9 * TILE + 100]);
}

#[test]
fn lookback_scan_in_every_block_order() {
    // The emulator reads CPUGPU_EMU_ORDER and CPUGPU_EMU_BLOCKS once per process: each setting
    // runs in a child process of this test binary (only `lookback_child`).
    let exe = std::env::current_exe().unwrap();
    for order in ["forward", "reverse", "shuffle"] {
        for blocks in ["1", "4"] {
            let log_path = std::env::temp_dir().join(format!(
                "cpugpu-lookback-{}-{order}-{blocks}.log",
                std::process::id()
            ));
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    "lookback_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, "1")
                .env("CPUGPU_EMU_ORDER", order)
                .env("CPUGPU_EMU_BLOCKS", blocks)
                .env("CPUGPU_EMU_SEED", "7")
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log.try_clone().unwrap()))
                .spawn()
                .unwrap();
            // A block waiting for a tile whose block has not started never returns: a hang is
            // a failure here, not a stuck CI job.
            let deadline = Instant::now() + Duration::from_secs(120);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("order {order}, {blocks} blocks in flight: the scan hung (killed after 120 s)");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let status = child.wait().unwrap();
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = std::fs::remove_file(&log_path);
            assert!(
                status.success() && text.contains("1 passed"),
                "order {order}, {blocks} blocks in flight:\n{text}"
            );
        }
    }
}

// ---------------------------------------------------------------- the batched copy

/// Segment lengths (bytes) at the size tiers' and chunks' edges.
const EDGES: &[usize] = &[
    0, 1, 15, 16, 17, 31, 33, 47, 48, 255, 256, 257, 16_383, 16_384, 16_385, 32_768, 40_007,
];

#[test]
fn batched_copy_at_every_alignment_and_tier_edge() {
    let mut r = rng(4);
    // Bytes: every source offset modulo 16 against destination offsets that the running total
    // moves through every residue.
    for round in 0..3 {
        let lens: Vec<usize> = (0..2 * EDGES.len())
            .map(|i| EDGES[(i * 7 + round) % EDGES.len()] + (i % 3))
            .collect();
        let bufs: Vec<Vec<u8>> = lens.iter().map(|&l| random_vec(&mut r, l + 16)).collect();
        let arrays: Vec<&[u8]> = bufs
            .iter()
            .zip(&lens)
            .enumerate()
            .map(|(i, (b, &l))| &b[i % 16..i % 16 + l])
            .collect();
        let want: (Vec<u8>, Vec<i32>) = host::flatten(&arrays).unwrap();
        let got: (Vec<u8>, Vec<i32>) = gpu::flatten(&arrays).unwrap();
        assert!(got == want, "flatten round {round}");
        // Split back into destinations at every alignment.
        let mut dbufs: Vec<Vec<u8>> = lens.iter().map(|&l| poisoned(l + 16)).collect();
        let mut outs: Vec<&mut [u8]> = dbufs
            .iter_mut()
            .zip(&lens)
            .enumerate()
            .map(|(i, (b, &l))| &mut b[(i * 5) % 16..(i * 5) % 16 + l])
            .collect();
        // The flat data one byte in: every segment's source alignment moves too.
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&got.0);
        let offs: Vec<i32> = got.1.iter().map(|&o| o + 1).collect();
        gpu::split_copy_into(&shifted, &offs, &mut outs).unwrap();
        for (o, a) in outs.iter().zip(&arrays) {
            assert!(**o == **a, "split round {round}");
        }
    }
    // Wider elements: f32 and f16 segments of large and odd lengths, misaligned views.
    for misalign in [0usize, 1, 3] {
        let lens = [4099usize, 1, 5000, 63, 0, 12_289, 7];
        let bufs: Vec<Vec<f32>> = lens.iter().map(|&l| random_vec(&mut r, l + 4)).collect();
        let arrays: Vec<&[f32]> = bufs
            .iter()
            .zip(&lens)
            .map(|(b, &l)| &b[misalign..misalign + l])
            .collect();
        let want: (Vec<f32>, Vec<i64>) = host::flatten(&arrays).unwrap();
        let got: (Vec<f32>, Vec<i64>) = gpu::flatten(&arrays).unwrap();
        assert_bits_eq(&got.0, &want.0, "f32 flatten");
        assert_eq!(got.1, want.1);
        let halves: Vec<Vec<half::f16>> = lens
            .iter()
            .map(|&l| random_vec(&mut r, 2 * l + 3))
            .collect();
        let arrays: Vec<&[half::f16]> = halves.iter().map(|h| &h[misalign..]).collect();
        let want: (Vec<half::f16>, Vec<i32>) = host::flatten(&arrays).unwrap();
        let got: (Vec<half::f16>, Vec<i32>) = gpu::flatten(&arrays).unwrap();
        assert_bits_eq(&got.0, &want.0, "f16 flatten");
    }
    // The tiers under a capped grid: blocks take many chunks, warps many segments.
    for cap in [1u32, 2] {
        emu::set_grid_cap(cap);
        let lens: Vec<usize> = (0..300).map(|i| EDGES[i % EDGES.len()]).collect();
        let bufs: Vec<Vec<u8>> = lens.iter().map(|&l| random_vec(&mut r, l)).collect();
        let want: (Vec<u8>, Vec<i64>) = host::flatten(&bufs).unwrap();
        let got: (Vec<u8>, Vec<i64>) = gpu::flatten(&bufs).unwrap();
        assert!(got == want, "flatten cap {cap}");
    }
    emu::set_grid_cap(0);
}

// ---------------------------------------------------------------- scatter's winners array

#[test]
fn scatter_winners_array_is_made_once_and_left_armed() {
    let dev: Device = gpu::dev().new_stream().unwrap();
    let tag = 0x5ca77e5;
    emu::set_tag(tag);
    let mut r = rng(5);
    let rows = 100_000; // a KV cache of 100,000 slots of 8 f32
    let init: Vec<f32> = random_vec(&mut r, rows * 8);
    let mut cache = dev.upload(&init, &[rows, 8]).unwrap();
    let mut want = init;
    let run = |dev: &Device,
               cache: &mut cpugpu::DeviceBuffer<f32>,
               want: &mut Vec<f32>,
               idx: &[i64],
               src: &[f32]| {
        let n = idx.len();
        let i = dev.upload(idx, &[n]).unwrap();
        let s = dev.upload(src, &[n, 8]).unwrap();
        dev.scatter_rows_into(
            s.view(),
            i.view(),
            cache.view_mut(),
            ScatterPolicy::NegativeSkip,
        )
        .unwrap();
        drop((i, s));
        dev.synchronize().unwrap(); // the stream-ordered frees have executed
        host::scatter_rows_into(src, idx, want, &[rows, 8], ScatterPolicy::NegativeSkip).unwrap();
    };
    dev.synchronize().unwrap();
    // The first scatter makes the array (8 bytes per destination row) ...
    let before = emu::stats(tag);
    let idx: Vec<i64> = (0..64).map(|i| (i * 7919) % rows as i64).collect();
    run(
        &dev,
        &mut cache,
        &mut want,
        &idx,
        &random_vec(&mut r, 64 * 8),
    );
    let made = emu::stats(tag);
    assert_eq!(made.device_allocs, before.device_allocs + 1);
    assert!(made.device_bytes - before.device_bytes >= rows as u64 * 8);
    // ... and no later one allocates or clears anything proportional to the destination, on
    // either path, with duplicates, skipped rows and the same rows again at earlier positions
    // (a winner left behind by an earlier call would make them lose).
    for (k, limit) in [None, Some(0), None, Some(0)].into_iter().enumerate() {
        emu::set_small_batch(limit);
        let n = 1400 - 300 * k; // shrinking: a stale later position would win
        let idx: Vec<i64> = (0..n)
            .map(|i| {
                if i % 11 == 0 {
                    -1
                } else {
                    ((i * 7919) % (rows / 1000)) as i64 * (k as i64 + 1)
                }
            })
            .collect();
        run(
            &dev,
            &mut cache,
            &mut want,
            &idx,
            &random_vec(&mut r, n * 8),
        );
        let now = emu::stats(tag);
        assert_eq!(now.device_allocs, made.device_allocs, "call {k}");
        assert_eq!(now.device_bytes, made.device_bytes, "call {k}");
    }
    emu::set_small_batch(None);
    assert_bits_eq(&cache.to_vec().unwrap(), &want, "cache after the calls");
    // A larger destination grows the array once; the smaller one still works.
    let big_rows = rows + 1000;
    let mut big = dev
        .upload(&vec![0f32; big_rows * 8], &[big_rows, 8])
        .unwrap();
    let i = dev.upload(&[big_rows as i64 - 1, 3], &[2]).unwrap();
    let s = dev.upload(&[1f32; 16], &[2, 8]).unwrap();
    dev.scatter_rows_into(s.view(), i.view(), big.view_mut(), ScatterPolicy::Checked)
        .unwrap();
    dev.synchronize().unwrap();
    assert_eq!(big.to_vec().unwrap()[(big_rows - 1) * 8], 1.0);
    let idx: Vec<i64> = vec![5, 9, 5];
    run(
        &dev,
        &mut cache,
        &mut want,
        &idx,
        &random_vec(&mut r, 3 * 8),
    );
    assert_bits_eq(&cache.to_vec().unwrap(), &want, "cache after growth");
    emu::set_tag(0);
}

#[test]
fn scatter_on_concurrent_streams_keeps_last_wins() {
    // Each stream's queue has its own winners array: scatters issued on two streams without a
    // synchronisation in between, every one with duplicates, both paths.
    let base = gpu::dev();
    let devs = [base.new_stream().unwrap(), base.new_stream().unwrap()];
    let mut r = rng(6);
    let rows = 64;
    let mut caches: Vec<_> = devs
        .iter()
        .map(|d| d.upload(&vec![0u32; rows * 4], &[rows, 4]).unwrap())
        .collect();
    let mut wants = vec![vec![0u32; rows * 4]; 2];
    let mut keep = Vec::new();
    for round in 0..6 {
        emu::set_small_batch(if round % 2 == 0 { None } else { Some(0) });
        for (k, dev) in devs.iter().enumerate() {
            let n = 300 + 100 * round + k;
            let idx: Vec<i64> = random_indices(&mut r, n, rows);
            let src: Vec<u32> = random_vec(&mut r, n * 4);
            let i = dev.upload(&idx, &[n]).unwrap();
            let s = dev.upload(&src, &[n, 4]).unwrap();
            dev.scatter_rows_into(
                s.view(),
                i.view(),
                caches[k].view_mut(),
                ScatterPolicy::Checked,
            )
            .unwrap();
            host::scatter_rows_into(
                &src,
                &idx,
                &mut wants[k],
                &[rows, 4],
                ScatterPolicy::Checked,
            )
            .unwrap();
            keep.push((i, s));
        }
    }
    emu::set_small_batch(None);
    for (k, dev) in devs.iter().enumerate() {
        dev.synchronize().unwrap();
        assert_bits_eq(&caches[k].to_vec().unwrap(), &wants[k], "stream cache");
    }
}
