//! The CUDA kernels on the emulated GPU (`cargo test --features emulator`), launched by the
//! crate's own CUDA code through `Device` (`common::gpu` uploads host slices at their alignment
//! and reads the outputs back), against the host reference `cpugpu::host::*`: every element
//! width, both index types, boundary sizes, several blocks and a partial last block, every
//! access-width path (16-byte aligned rows, rows that are not a multiple of 16 bytes, misaligned
//! base pointers, proven by the driver's launch log), bounds and overflow errors, scatter
//! duplicates, and the multi-tile scan.
#![cfg(feature = "emulator")]

mod common;

use common::{assert_bits_eq, gpu, poisoned, random_elem, random_indices, random_vec, rng};
use cpugpu::{emu, host, Element, Error, GatherPolicy, Index, Op, ScatterPolicy};

use rand::Rng;

/// Index counts / lengths: the boundary sizes, a few hundred and a few thousand (several blocks
/// with a partial last one).
const SIZES: &[usize] = &[0, 1, 2, 31, 32, 33, 257, 2_100];

/// Row lengths (elements), cycled with the sizes: 1 element, odd sizes, 16-byte multiples for
/// most widths, and rows wider than a warp of 16-byte units.
const ROW_LENS: &[usize] = &[1, 3, 4, 7, 16, 33, 2, 80];

fn idx_vec<I: Index>(v: &[i64]) -> Vec<I> {
    v.iter().map(|&x| I::from_i64(x).unwrap()).collect()
}

/// Runs `body` on both paths of the checked gather and scatter: the one-launch batch path
/// (every block checks every index) and the large-n path (a validation pass first), for every
/// input size.
fn both_paths(body: impl Fn()) {
    for limit in [Some(usize::MAX), Some(0)] {
        emu::set_small_batch(limit);
        body();
    }
    emu::set_small_batch(None);
}

fn width_name<T>() -> String {
    format!(
        "{}B {}",
        std::mem::size_of::<T>(),
        std::any::type_name::<T>()
    )
}

#[test]
fn kernel_table_and_abi_match_the_rust_side() {
    let problems = emu::self_check();
    assert!(problems.is_empty(), "{problems:#?}");
}

// ---------------------------------------------------------------- gather

fn gather_case<T: Element, I: Index>(
    seed: u64,
    n: usize,
    rows: usize,
    row_len: usize,
    policy_fill: bool,
) {
    let mut r = rng(seed);
    let src: Vec<T> = random_vec(&mut r, rows * row_len);
    let mut idx = random_indices(&mut r, n, rows.max(1));
    if rows == 0 {
        idx.iter_mut().for_each(|i| *i = -1);
    }
    let policy = if policy_fill {
        for i in idx.iter_mut().step_by(3) {
            *i = -1;
        }
        GatherPolicy::NegativeFill(random_elem::<T>(&mut r))
    } else {
        GatherPolicy::Checked
    };
    let idx: Vec<I> = idx_vec(&idx);
    let shape = [rows, row_len];
    let mut want = poisoned::<T>(n * row_len);
    let mut got = poisoned::<T>(n * row_len);
    let h = host::gather_rows_into(&src, &shape, &idx, &mut want, policy);
    let e = gpu::gather_rows_into(&src, &shape, &idx, &mut got, policy);
    let case = format!(
        "gather {} {} n={n} rows={rows} row_len={row_len} fill={policy_fill}",
        width_name::<T>(),
        I::NAME
    );
    assert_eq!(e, h, "{case}");
    assert_bits_eq(&got, &want, &case);
}

fn gather_matrix<T: Element>() {
    for (k, &n) in SIZES.iter().enumerate() {
        let row_len = ROW_LENS[k % ROW_LENS.len()];
        let rows = n / 2 + 3;
        gather_case::<T, i32>(k as u64, n, rows, row_len, false);
        gather_case::<T, i64>(k as u64 + 100, n, rows, row_len, k % 2 == 0);
    }
}

#[test]
fn gather_matches_host_for_every_width_index_type_and_size() {
    both_paths(|| for_each_width!(gather_matrix));
}

#[test]
fn gather_takes_every_access_width_path() {
    // Rows of 64 bytes from 16-byte aligned buffers: uint4 units.
    let mut r = rng(7);
    let src: Vec<u128> = random_vec(&mut r, 40 * 4);
    let idx: Vec<i64> = random_indices(&mut r, 300, 40);
    let mut got = poisoned::<u128>(300 * 4);
    let mut want = poisoned::<u128>(300 * 4);
    emu::take_launch_log();
    gpu::gather_rows_into(&src, &[40, 4], &idx, &mut got, GatherPolicy::Checked).unwrap();
    assert_eq!(emu::take_launch_log(), ["gather_rows_w16_i64"]);
    host::gather_rows_into(&src, &[40, 4], &idx, &mut want, GatherPolicy::Checked).unwrap();
    assert_bits_eq(&got, &want, "w16");

    // f32 rows of 3 elements (12 bytes, not a multiple of 16 or 8): 4-byte units.
    let src: Vec<f32> = random_vec(&mut r, 50 * 3);
    let idx: Vec<i32> = idx_vec(&random_indices(&mut r, 100, 50));
    let mut got = poisoned::<f32>(300);
    let mut want = poisoned::<f32>(300);
    gpu::gather_rows_into(&src, &[50, 3], &idx, &mut got, GatherPolicy::Checked).unwrap();
    assert_eq!(emu::take_launch_log(), ["gather_rows_w4_i32"]);
    host::gather_rows_into(&src, &[50, 3], &idx, &mut want, GatherPolicy::Checked).unwrap();
    assert_bits_eq(&got, &want, "w4");

    // f64 rows of 3 (24 bytes): 8-byte units.
    let src: Vec<f64> = random_vec(&mut r, 50 * 3);
    let mut got = poisoned::<f64>(300);
    let mut want = poisoned::<f64>(300);
    gpu::gather_rows_into(&src, &[50, 3], &idx, &mut got, GatherPolicy::Checked).unwrap();
    assert_eq!(emu::take_launch_log(), ["gather_rows_w8_i32"]);
    host::gather_rows_into(&src, &[50, 3], &idx, &mut want, GatherPolicy::Checked).unwrap();
    assert_bits_eq(&got, &want, "w8");

    // A view starting one element into the buffer: 16-byte rows of f32, but the base is only
    // 4-byte aligned, so 4-byte units; of u8, 1-byte units; of f16, 2-byte units.
    let buf: Vec<f32> = random_vec(&mut r, 1 + 64 * 4);
    let idx: Vec<i64> = random_indices(&mut r, 257, 64);
    let mut got = poisoned::<f32>(257 * 4);
    let mut want = poisoned::<f32>(257 * 4);
    gpu::gather_rows_into(&buf[1..], &[64, 4], &idx, &mut got, GatherPolicy::Checked).unwrap();
    assert_eq!(emu::take_launch_log(), ["gather_rows_w4_i64"]);
    host::gather_rows_into(&buf[1..], &[64, 4], &idx, &mut want, GatherPolicy::Checked).unwrap();
    assert_bits_eq(&got, &want, "misaligned f32");

    let buf: Vec<u8> = random_vec(&mut r, 1 + 64 * 16);
    let mut got = poisoned::<u8>(257 * 16);
    let mut want = poisoned::<u8>(257 * 16);
    gpu::gather_rows_into(&buf[1..], &[64, 16], &idx, &mut got, GatherPolicy::Checked).unwrap();
    assert_eq!(emu::take_launch_log(), ["gather_rows_w1_i64"]);
    host::gather_rows_into(&buf[1..], &[64, 16], &idx, &mut want, GatherPolicy::Checked).unwrap();
    assert_bits_eq(&got, &want, "misaligned u8");

    let buf: Vec<half::f16> = random_vec(&mut r, 1 + 64 * 8);
    let mut got = poisoned::<half::f16>(257 * 8);
    let mut want = poisoned::<half::f16>(257 * 8);
    gpu::gather_rows_into(&buf[1..], &[64, 8], &idx, &mut got, GatherPolicy::Checked).unwrap();
    assert_eq!(emu::take_launch_log(), ["gather_rows_w2_i64"]);
    host::gather_rows_into(&buf[1..], &[64, 8], &idx, &mut want, GatherPolicy::Checked).unwrap();
    assert_bits_eq(&got, &want, "misaligned f16");

    // u8 rows of 16 from an aligned buffer: 16-byte units although the element is 1 byte.
    let buf: Vec<u128> = random_vec(&mut r, 64);
    let bytes: &[u8] = bytemuck::cast_slice(&buf);
    let mut got = poisoned::<u8>(257 * 16);
    let mut want = poisoned::<u8>(257 * 16);
    gpu::gather_rows_into(bytes, &[64, 16], &idx, &mut got, GatherPolicy::Checked).unwrap();
    let log = emu::take_launch_log();
    // `got` comes from the global allocator: 16-byte aligned on every 64-bit glibc, but only
    // the source's alignment is ours to promise here.
    assert!(
        log[0] == "gather_rows_w16_i64" || !(got.as_ptr() as usize).is_multiple_of(16),
        "{log:?}"
    );
    host::gather_rows_into(bytes, &[64, 16], &idx, &mut want, GatherPolicy::Checked).unwrap();
    assert_bits_eq(&got, &want, "u8 as uint4");
}

#[test]
fn gather_grid_stride_loops_match_host() {
    // Capping the grid at 2 blocks (for this thread's launches) makes every kernel loop; results
    // must not change.
    emu::set_grid_cap(2);
    both_paths(|| {
        for (k, &n) in [2_100usize, 999].iter().enumerate() {
            gather_case::<f32, i64>(50 + k as u64, n, 77, 5, true);
            gather_case::<u8, i32>(60 + k as u64, n, 77, 1, false);
            gather_case::<u128, i32>(65 + k as u64, n, 77, 70, false);
            scatter_case::<u128, i64>(70 + k as u64, n, 500, 3, true);
            scatter_case::<u16, i32>(75 + k as u64, n, 300, 90, false);
            pad_case::<f32>(80 + k as u64, &[n, 3], 0, 64);
        }
    });
    emu::set_grid_cap(0);
}

fn check_gather_error<T: Element, I: Index>(n: usize) {
    let mut r = rng(11);
    let rows = 40usize;
    let src: Vec<T> = random_vec(&mut r, rows * 3);
    let mut idx = random_indices(&mut r, n, rows);
    // Two bad indices: the first is reported; under NegativeFill only the too-large one is bad.
    let (p1, p2) = (n / 3, n - 1);
    idx[p2] = rows as i64;
    idx[p1] = -5;
    let idx: Vec<I> = idx_vec(&idx);
    for policy in [
        GatherPolicy::Checked,
        GatherPolicy::NegativeFill(T::zeroed()),
    ] {
        let mut got = poisoned::<T>(n * 3);
        let mut want = poisoned::<T>(n * 3);
        let e = gpu::gather_rows_into(&src, &[rows, 3], &idx, &mut got, policy).unwrap_err();
        let h = host::gather_rows_into(&src, &[rows, 3], &idx, &mut want, policy).unwrap_err();
        assert_eq!(e, h);
        let expected_pos = if matches!(policy, GatherPolicy::Checked) {
            p1
        } else {
            p2
        };
        assert!(
            matches!(e, Error::IndexOutOfBounds { op: Op::GatherRows, position, bound: 40, .. } if position == expected_pos),
            "{e:?}"
        );
        assert_bits_eq(&got, &poisoned::<T>(n * 3), "dst untouched on error");
    }
    // A bad index and a wrong dst: through `Device` the destination's shape is checked at the
    // call, before any index is read, on every backend (the host slice function, with no shape
    // to check, reports the index first).
    let mut short = poisoned::<T>(1);
    let e = gpu::gather_rows_into(&src, &[rows, 3], &idx, &mut short, GatherPolicy::Checked)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                op: Op::GatherRows,
                what: "dst's shape",
                ..
            }
        ),
        "{e:?}"
    );
    assert_bits_eq(&short, &poisoned::<T>(1), "dst untouched on a shape error");
}

#[test]
fn gather_bounds_errors_match_host_and_leave_dst_untouched() {
    both_paths(|| {
        check_gather_error::<f32, i32>(33);
        check_gather_error::<u128, i64>(2_100);
        check_gather_error::<u8, i64>(2);
    });
    // The allocating form gives the host's answer.
    let src = [0f32; 6];
    assert_eq!(
        gpu::gather_rows(&src, &[3, 2], &[2i64, 0], GatherPolicy::Checked),
        host::gather_rows(&src, &[3, 2], &[2i64, 0], GatherPolicy::Checked)
    );
}

// ---------------------------------------------------------------- scatter

fn scatter_case<T: Element, I: Index>(
    seed: u64,
    n: usize,
    rows: usize,
    row_len: usize,
    skip: bool,
) {
    let mut r = rng(seed);
    let src: Vec<T> = random_vec(&mut r, n * row_len);
    // Fewer destination rows than sources when rows < n: duplicates, last one wins.
    let mut idx = random_indices(&mut r, n, rows.max(1));
    let policy = if skip {
        for i in idx.iter_mut().step_by(4) {
            *i = -1;
        }
        ScatterPolicy::NegativeSkip
    } else {
        ScatterPolicy::Checked
    };
    if rows == 0 {
        idx.iter_mut().for_each(|i| *i = -1);
    }
    let idx: Vec<I> = idx_vec(&idx);
    let init: Vec<T> = random_vec(&mut r, rows * row_len);
    let mut want = init.clone();
    let mut got = init;
    let shape = [rows, row_len];
    let h = host::scatter_rows_into(&src, &idx, &mut want, &shape, policy);
    let e = gpu::scatter_rows_into(&src, &idx, &mut got, &shape, policy);
    let case = format!(
        "scatter {} {} n={n} rows={rows} row_len={row_len} skip={skip}",
        width_name::<T>(),
        I::NAME
    );
    assert_eq!(e, h, "{case}");
    assert_bits_eq(&got, &want, &case);
}

fn scatter_matrix<T: Element>() {
    for (k, &n) in SIZES.iter().enumerate() {
        let row_len = ROW_LENS[(k + 3) % ROW_LENS.len()];
        // rows < n: many duplicates; rows > n: sparse.
        scatter_case::<T, i32>(200 + k as u64, n, n / 3 + 1, row_len, k % 2 == 1);
        scatter_case::<T, i64>(300 + k as u64, n, 2 * n + 1, row_len, k % 2 == 0);
    }
}

#[test]
fn scatter_matches_host_for_every_width_index_type_and_size() {
    both_paths(|| for_each_width!(scatter_matrix));
}

#[test]
fn scatter_duplicates_last_wins() {
    // Every source row goes to one of 3 destination rows: the last occurrence of each wins.
    let n = 2_100;
    let src: Vec<u32> = (0..n as u32).collect();
    let idx: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    let mut got = poisoned::<u32>(3);
    gpu::scatter_rows_into(&src, &idx, &mut got, &[3], ScatterPolicy::Checked).unwrap();
    let n = n as u32;
    assert_eq!(got, [n - 3, n - 2, n - 1]);
    // And with wide, 16-byte-unit rows.
    let src: Vec<u128> = (0..n as u128 * 4).collect();
    let mut got = poisoned::<u128>(3 * 4);
    emu::take_launch_log();
    gpu::scatter_rows_into(&src, &idx, &mut got, &[3, 4], ScatterPolicy::Checked).unwrap();
    assert_eq!(emu::take_launch_log(), ["scatter_rows_w16_i64"]);
    let mut want = poisoned::<u128>(3 * 4);
    host::scatter_rows_into(&src, &idx, &mut want, &[3, 4], ScatterPolicy::Checked).unwrap();
    assert_bits_eq(&got, &want, "last wins, w16");
}

#[test]
fn scatter_bounds_errors_match_host_and_leave_dst_untouched() {
    both_paths(scatter_bounds_errors);
}

fn scatter_bounds_errors() {
    for n in [1usize, 33, 2_100] {
        let mut r = rng(n as u64);
        let src: Vec<f64> = random_vec(&mut r, n * 2);
        let mut idx = random_indices(&mut r, n, 10);
        idx[n / 2] = 10;
        if n > 2 {
            idx[n / 4] = -1;
        }
        for policy in [ScatterPolicy::Checked, ScatterPolicy::NegativeSkip] {
            for idx64 in [false, true] {
                let init: Vec<f64> = random_vec(&mut r, 20);
                let mut got = init.clone();
                let mut want = init.clone();
                let (e, h) = if idx64 {
                    (
                        gpu::scatter_rows_into(&src, &idx, &mut got, &[10, 2], policy),
                        host::scatter_rows_into(&src, &idx, &mut want, &[10, 2], policy),
                    )
                } else {
                    let i32s: Vec<i32> = idx_vec(&idx);
                    (
                        gpu::scatter_rows_into(&src, &i32s, &mut got, &[10, 2], policy),
                        host::scatter_rows_into(&src, &i32s, &mut want, &[10, 2], policy),
                    )
                };
                assert!(
                    matches!(
                        e,
                        Err(Error::IndexOutOfBounds {
                            op: Op::ScatterRows,
                            ..
                        })
                    ),
                    "{e:?}"
                );
                assert_eq!(e, h);
                assert_bits_eq(&got, &init, "dst untouched on error");
            }
        }
    }
}

// ---------------------------------------------------------------- pad

fn pad_case<T: Element>(seed: u64, shape: &[usize], axis: usize, multiple: usize) {
    let mut r = rng(seed);
    let n: usize = shape.iter().product();
    let src: Vec<T> = random_vec(&mut r, n);
    let fill: T = random_elem(&mut r);
    let mut padded_shape = shape.to_vec();
    padded_shape[axis] = shape[axis].next_multiple_of(multiple);
    let m: usize = padded_shape.iter().product();
    let mut want = poisoned::<T>(m);
    let mut got = poisoned::<T>(m);
    let h = host::pad_to_multiple_into(&src, shape, axis, multiple, fill, &mut want);
    let e = gpu::pad_to_multiple_into(&src, shape, axis, multiple, fill, &mut got);
    let case = format!(
        "pad {} {shape:?} axis {axis} to {multiple}",
        width_name::<T>()
    );
    assert_eq!(e, h, "{case}");
    assert_bits_eq(&got, &want, &case);
}

fn pad_matrix<T: Element>() {
    for (k, &n) in SIZES.iter().enumerate() {
        let row = ROW_LENS[k % ROW_LENS.len()];
        pad_case::<T>(400 + k as u64, &[n, row], 0, 64);
        pad_case::<T>(500 + k as u64, &[3, n, row], 1, 8);
        pad_case::<T>(600 + k as u64, &[2, row, n % 40], 2, 16);
    }
}

#[test]
fn pad_matches_host_for_every_width_and_size() {
    for_each_width!(pad_matrix);
}

#[test]
fn pad_takes_every_access_width_path() {
    let mut r = rng(9);
    // f32 [33, 4] to 64 rows: 16-byte rows, aligned: uint4.
    let src: Vec<f32> = random_vec(&mut r, 1 + 33 * 4);
    let mut got = poisoned::<f32>(64 * 4);
    let mut want = poisoned::<f32>(64 * 4);
    emu::take_launch_log();
    gpu::pad_to_multiple_into(&src[..33 * 4], &[33, 4], 0, 64, 1.5, &mut got).unwrap();
    let log = emu::take_launch_log();
    assert!(
        log == ["pad_w16"] || !(got.as_ptr() as usize).is_multiple_of(16),
        "{log:?}"
    );
    host::pad_to_multiple_into(&src[..33 * 4], &[33, 4], 0, 64, 1.5, &mut want).unwrap();
    assert_bits_eq(&got, &want, "pad w16");
    // The same from one element in: 4-byte units.
    gpu::pad_to_multiple_into(&src[1..], &[33, 4], 0, 64, 1.5, &mut got).unwrap();
    assert_eq!(emu::take_launch_log(), ["pad_w4"]);
    host::pad_to_multiple_into(&src[1..], &[33, 4], 0, 64, 1.5, &mut want).unwrap();
    assert_bits_eq(&got, &want, "pad w4 misaligned");
    // u16 [5, 3] padded on axis 1 to 4: 6-byte source rows, 8-byte destination rows: 2-byte units.
    let src: Vec<u16> = random_vec(&mut r, 15);
    let mut got = poisoned::<u16>(20);
    let mut want = poisoned::<u16>(20);
    gpu::pad_to_multiple_into(&src, &[5, 3], 1, 4, 7, &mut got).unwrap();
    assert_eq!(emu::take_launch_log(), ["pad_w2"]);
    host::pad_to_multiple_into(&src, &[5, 3], 1, 4, 7, &mut want).unwrap();
    assert_bits_eq(&got, &want, "pad w2");
}

#[test]
fn pad_errors_and_unchanged_input() {
    let src = [1u8, 2, 3, 4, 5, 6];
    let mut dst = [0u8; 8];
    assert!(matches!(
        gpu::pad_to_multiple_into(&src, &[3, 2], 2, 4, 0, &mut dst),
        Err(Error::AxisOutOfRange {
            op: Op::PadToMultiple,
            axis: 2,
            ndim: 2
        })
    ));
    assert!(matches!(
        gpu::pad_to_multiple_into(&src, &[3, 2], 0, 0, 0, &mut dst),
        Err(Error::InvalidArgument {
            op: Op::PadToMultiple,
            name: "multiple",
            ..
        })
    ));
    // Through `Device` the destination is a view with a shape: a wrong one is reported as such.
    assert!(matches!(
        gpu::pad_to_multiple_into(&src, &[3, 2], 0, 4, 0, &mut dst[..6]),
        Err(Error::ShapeMismatch {
            op: Op::PadToMultiple,
            what: "dst's shape",
            ..
        })
    ));
    let (unchanged, data, _) = gpu::pad_to_multiple(&src, &[3, 2], 1, 2, 0).unwrap();
    assert!(unchanged, "already a multiple: the input itself comes back");
    assert_eq!(data, src);
    let (unchanged, data, _) = gpu::pad_to_multiple(&src, &[3, 2], 0, 4, 9).unwrap();
    assert!(!unchanged);
    assert_eq!(data, [1, 2, 3, 4, 5, 6, 9, 9]);
}

// ---------------------------------------------------------------- prefix-sum offsets

fn offsets_case<L: Index, O: Index>(seed: u64, n: usize, max_len: i64) {
    let mut r = rng(seed);
    let lengths: Vec<L> = (0..n)
        .map(|_| L::from_i64(r.gen_range(0..=max_len)).unwrap())
        .collect();
    let mut want = poisoned::<O>(n + 1);
    let mut got = poisoned::<O>(n + 1);
    let h = host::prefix_sum_offsets_into(&lengths, &mut want);
    let e = gpu::prefix_sum_offsets_into(&lengths, &mut got);
    let case = format!("offsets {}->{} n={n}", L::NAME, O::NAME);
    assert_eq!(e, h, "{case}");
    assert_bits_eq(&got, &want, &case);
}

#[test]
fn offsets_match_host_single_and_multi_tile() {
    // One tile is 4,096 lengths: 4,096 is the largest single launch, 4,097 the smallest
    // look-back scan (check, then look-back), 20,000 five tiles with a partial last one.
    for (k, &n) in SIZES
        .iter()
        .chain(&[4_095, 4_096, 4_097, 20_000])
        .enumerate()
    {
        let s = 700 + k as u64;
        offsets_case::<i32, i32>(s, n, 1000);
        offsets_case::<i32, i64>(s, n, i64::from(i32::MAX));
        offsets_case::<i64, i32>(s, n, 50);
        offsets_case::<i64, i64>(s, n, 1 << 40);
    }
    emu::take_launch_log();
    let mut out = vec![0i64; 20_001];
    gpu::prefix_sum_offsets_into(&vec![1i32; 20_000], &mut out).unwrap();
    assert_eq!(
        emu::take_launch_log(),
        ["offsets_check_i32", "offsets_lookback_i32_i64"]
    );
    assert_eq!(out[20_000], 20_000);
    emu::set_grid_cap(2);
    offsets_case::<i32, i64>(999, 20_000, 100);
    emu::set_grid_cap(0);
}

fn offsets_error_case<L: Index, O: Index>(lengths: &[L]) {
    let mut got = poisoned::<O>(lengths.len() + 1);
    let mut want = poisoned::<O>(lengths.len() + 1);
    let e = gpu::prefix_sum_offsets_into(lengths, &mut got);
    let h = host::prefix_sum_offsets_into(lengths, &mut want);
    assert!(e.is_err(), "{e:?}");
    assert_eq!(e, h, "{} -> {} n={}", L::NAME, O::NAME, lengths.len());
    assert_bits_eq(
        &got,
        &poisoned::<O>(lengths.len() + 1),
        "offsets untouched on error",
    );
}

#[test]
fn offsets_negative_and_overflow_are_reported_on_the_device() {
    for n in [1usize, 33, 4_096, 4_097, 20_000] {
        // A negative length.
        let mut l = vec![3i32; n];
        l[n - 1] = -2;
        offsets_error_case::<i32, i32>(&l);
        offsets_error_case::<i32, i64>(&l);
        // Overflow of i32 offsets near the end; then a negative after it (overflow first) and
        // before it (negative first).
        let mut l = vec![i64::from(i32::MAX) / (n as i64 * 2) + 1; n];
        let big = n - n / 4 - 1;
        l[big] = i64::from(i32::MAX) + 1 - l[0].min(big as i64);
        offsets_error_case::<i64, i32>(&l);
        if big + 1 < n {
            l[big + 1] = -1;
            offsets_error_case::<i64, i32>(&l);
        }
        if big > 0 {
            l[big - 1] = -7;
            offsets_error_case::<i64, i32>(&l);
        }
        // Overflow of i64 offsets: the saturating scan must not wrap.
        let l = vec![i64::MAX / 2 + 1; n.min(3) + 1];
        offsets_error_case::<i64, i64>(&l);
    }
    let mut o = [0i32; 2];
    assert!(matches!(
        gpu::prefix_sum_offsets_into(&[1i32, 2], &mut o),
        Err(Error::LengthMismatch {
            what: "offsets.len()",
            expected: 3,
            actual: 2,
            ..
        })
    ));
}

// ---------------------------------------------------------------- flatten and split

fn flatten_case<T: Element, O: Index>(seed: u64, n: usize, skew: bool, misalign: bool) {
    let mut r = rng(seed);
    let lens: Vec<usize> = (0..n)
        .map(|i| {
            if skew && i == n / 2 {
                3_000
            } else {
                r.gen_range(0..if skew { 3 } else { 40 })
            }
        })
        .collect();
    let bufs: Vec<Vec<T>> = lens.iter().map(|&l| random_vec(&mut r, l + 1)).collect();
    let off = usize::from(misalign);
    let arrays: Vec<&[T]> = bufs
        .iter()
        .zip(&lens)
        .map(|(b, &l)| &b[off..off + l])
        .collect();
    let total: usize = lens.iter().sum();
    let (mut want, mut got) = (poisoned::<T>(total), poisoned::<T>(total));
    let (mut want_o, mut got_o) = (poisoned::<O>(n + 1), poisoned::<O>(n + 1));
    let h = host::flatten_into(&arrays, &mut want, &mut want_o);
    let e = gpu::flatten_into(&arrays, &mut got, &mut got_o);
    let case = format!(
        "flatten {} {} n={n} skew={skew} misalign={misalign}",
        width_name::<T>(),
        O::NAME
    );
    assert_eq!(e, h, "{case}");
    assert_bits_eq(&got, &want, &case);
    assert_bits_eq(&got_o, &want_o, &case);

    // Split's copying form takes it back apart.
    let mut outs: Vec<Vec<T>> = lens.iter().map(|&l| poisoned::<T>(l)).collect();
    let mut out_refs: Vec<&mut [T]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
    gpu::split_copy_into(&got, &got_o, &mut out_refs).unwrap();
    for (o, a) in outs.iter().zip(&arrays) {
        assert_bits_eq(o, a, &format!("split copy: {case}"));
    }
}

fn flatten_matrix<T: Element>() {
    for (k, &n) in SIZES.iter().enumerate() {
        flatten_case::<T, i32>(800 + k as u64, n, false, k % 2 == 0);
        flatten_case::<T, i64>(900 + k as u64, n, k % 3 == 0, k % 2 == 1);
    }
}

#[test]
fn flatten_and_split_copy_match_host_for_every_width_and_size() {
    for_each_width!(flatten_matrix);
}

#[test]
fn flatten_vector_paths_and_errors() {
    // 16-byte elements from aligned buffers, and [u32; 4] views one u32 in: both move as
    // 16-byte units (the second with its source shifted into place), whatever the alignment.
    let mut r = rng(5);
    let a: Vec<u128> = random_vec(&mut r, 100);
    let b: Vec<u128> = random_vec(&mut r, 7);
    emu::take_launch_log();
    let (flat, offs) = gpu::flatten::<u128, i64, _>(&[&a[..], &b[..]]).unwrap();
    assert_eq!(emu::take_launch_log(), ["flatten_w16_i64"]);
    assert_eq!(offs, [0, 100, 107]);
    assert_eq!(&flat[..100], &a[..]);
    let words: Vec<u32> = random_vec(&mut r, 1 + 4 * 50);
    let quads: &[[u32; 4]] = bytemuck::cast_slice(&words[1..]);
    let (flat, _) = gpu::flatten::<[u32; 4], i32, _>(&[quads, quads]).unwrap();
    assert_eq!(emu::take_launch_log(), ["flatten_w16_i32"]);
    assert_eq!(&flat[50..], quads);

    // Offset overflow: i32 offsets of a total above i32::MAX cannot be built without 2 GiB
    // arrays, but the check is the host's: same error, before anything is launched.
    let mut dst = [0u8; 3];
    let mut offs = [0i32; 2];
    assert_eq!(
        gpu::flatten_into(&[[1u8, 2, 3]], &mut dst, &mut offs[..1]),
        host::flatten_into(&[[1u8, 2, 3]], &mut dst, &mut offs[..1])
    );
    assert_eq!(
        gpu::flatten_into(&[[1u8, 2, 3]], &mut dst[..2], &mut offs),
        host::flatten_into(&[[1u8, 2, 3]], &mut dst[..2], &mut offs)
    );
    // Split errors are the host's (same validation).
    let data = [1u16, 2, 3, 4];
    let mut out = [0u16; 2];
    let mut outs: Vec<&mut [u16]> = vec![&mut out];
    assert!(matches!(
        gpu::split_copy_into(&data, &[0i64, 5], &mut outs),
        Err(Error::OffsetOutOfRange {
            op: Op::Split,
            position: 1,
            value: 5,
            len: 4
        })
    ));
    assert!(matches!(
        gpu::split_copy_into(&data, &[0i64, 3], &mut outs),
        Err(Error::LengthMismatch { op: Op::Split, .. })
    ));
}

// ---------------------------------------------------------------- errors, op by op

#[test]
fn bad_inputs_give_the_host_errors() {
    // pad: axis and multiple errors, as the host reports them. (A source whose length is not
    // its shape's, or a shape over 8 dimensions, cannot be a device view at all.)
    let src = [1u8, 2, 3, 4, 5, 6];
    let mut dst = [0u8; 8];
    for (shape, axis, multiple, n) in [
        (&[3usize, 2][..], 2usize, 4usize, 6usize),
        (&[3, 2], 0, 0, 6),
        (&[3, 2], 7, 0, 6),
    ] {
        let e = gpu::pad_to_multiple_into(&src[..n], shape, axis, multiple, 0, &mut dst);
        let h = host::pad_to_multiple_into(&src[..n], shape, axis, multiple, 0, &mut dst);
        assert!(e.is_err());
        assert_eq!(e, h, "{shape:?} axis {axis} multiple {multiple}");
        assert_eq!(
            gpu::pad_to_multiple(&src[..n], shape, axis, multiple, 0).map(|p| p.2),
            host::pad_to_multiple(&src[..n], shape, axis, multiple, 0).map(|p| p.shape)
        );
    }
    // offsets: wrong output length, negative, overflow.
    let mut o = [0i32; 3];
    for lens in [&[1i64, 2][..], &[1, -2, 3, 4][..], &[1, 2, i64::MAX][..]] {
        let mut o2 = vec![0i32; lens.len() + 1];
        assert_eq!(
            gpu::prefix_sum_offsets_into(lens, &mut o),
            host::prefix_sum_offsets_into(lens, &mut o)
        );
        assert_eq!(
            gpu::prefix_sum_offsets_into(lens, &mut o2),
            host::prefix_sum_offsets_into(lens, &mut o2)
        );
        assert_eq!(
            gpu::prefix_sum_offsets::<i64, i32>(lens),
            host::prefix_sum_offsets::<i64, i32>(lens)
        );
    }
    // flatten: wrong offsets and data lengths.
    let arrays = [vec![1u16, 2], vec![], vec![3]];
    let mut flat = [0u16; 3];
    let mut offs = [0i64; 4];
    assert_eq!(
        gpu::flatten_into(&arrays, &mut flat, &mut offs[..3]),
        host::flatten_into(&arrays, &mut flat, &mut offs[..3])
    );
    assert_eq!(
        gpu::flatten_into(&arrays, &mut flat[..2], &mut offs),
        host::flatten_into(&arrays, &mut flat[..2], &mut offs)
    );
    assert_eq!(
        gpu::flatten::<u16, i32, _>(&arrays),
        host::flatten::<u16, i32, _>(&arrays)
    );
    // split: the views and every offsets error.
    let data: Vec<u32> = (0..10).collect();
    for offsets in [
        &[0i64, 3, 3, 10][..],
        &[2, 5],
        &[],
        &[-1, 3],
        &[0, 11],
        &[0, 5, 4],
        &[0, 12, 4],
    ] {
        let mut b = Vec::new();
        let e = gpu::split(&data, offsets);
        let h = host::split_into(&data, offsets, &mut b);
        match (e, h) {
            (Ok(a), Ok(())) => {
                let b: Vec<Vec<u32>> = b.iter().map(|s| s.to_vec()).collect();
                assert_eq!(a, b, "{offsets:?}");
            }
            (e, h) => assert_eq!(e.map(|_| ()), h, "{offsets:?}"),
        }
    }
}

#[test]
fn split_copy_with_a_nonzero_first_offset() {
    let data: Vec<u64> = (0..100).collect();
    let offsets = [10i32, 10, 45, 99];
    let mut parts: Vec<Vec<u64>> = vec![poisoned(0), poisoned(35), poisoned(54)];
    let mut refs: Vec<&mut [u64]> = parts.iter_mut().map(|p| p.as_mut_slice()).collect();
    emu::take_launch_log();
    gpu::split_copy_into(&data, &offsets, &mut refs).unwrap();
    assert_eq!(emu::take_launch_log(), ["split_copy_w16"]);
    let mut views = Vec::new();
    host::split_into(&data, &offsets, &mut views).unwrap();
    for (p, v) in parts.iter().zip(&views) {
        assert_eq!(p.as_slice(), *v);
    }
}

// ---------------------------------------------------------------- the emulator itself

#[test]
fn emulator_primitives_exchange_lane_values() {
    let threads = 64u64;
    let out = emu::canary::warp_selftest(&gpu::dev(), threads as u32).unwrap();
    let ballot: u64 = (0..32).filter(|l| l % 3 == 0).map(|l| 1u64 << l).sum();
    for tid in 0..threads {
        let lane = tid % 32;
        let got = &out[tid as usize * 8..][..8];
        let want = [
            ((lane + 1) % 32) * 10,
            if lane >= 3 { lane - 3 } else { lane },
            if lane + 5 < 32 { lane + 5 } else { lane },
            lane ^ 1,
            ballot,
            1 + 2, // any(lane == 7), all(lane < 32), not all(lane < 31)
            lane & !7,
            (threads / 2) * 1000 + 10 + 1,
        ];
        assert_eq!(got, want, "thread {tid}");
    }
    assert_eq!(out[threads as usize * 8], threads, "atomicAdd total");
    assert_eq!(out[threads as usize * 8 + 1], threads - 1, "atomicMax");
}
