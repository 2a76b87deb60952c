//! `host::scatter_rows_into` against a sequential reference.
mod common;

use bytemuck::Pod;
use common::{assert_bits_eq, poisoned, random_indices, random_vec, rng, SIZES};
use cpugpu::host::scatter_rows_into;
use cpugpu::{Element, Error, Index, Op, ScatterPolicy};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::Rng;

/// The obvious sequential scatter: validates every index first (first bad position wins), then
/// copies element by element in index order, so a repeated index ends with its last source row.
fn reference<T: Pod>(
    src: &[T],
    indices: &[i64],
    dst: &mut [T],
    rows: usize,
    row_len: usize,
    skip_negative: bool,
) -> Result<(), (usize, i64)> {
    for (p, &i) in indices.iter().enumerate() {
        let ok = if i < 0 {
            skip_negative
        } else {
            (i as u64) < rows as u64
        };
        if !ok {
            return Err((p, i));
        }
    }
    for (p, &i) in indices.iter().enumerate() {
        if i < 0 {
            continue;
        }
        for k in 0..row_len {
            dst[i as usize * row_len + k] = src[p * row_len + k];
        }
    }
    Ok(())
}

fn idx<I: Index>(v: &[i64]) -> Vec<I> {
    v.iter().map(|&x| I::from_i64(x).unwrap()).collect()
}

fn policy(skip: bool) -> ScatterPolicy {
    if skip {
        ScatterPolicy::NegativeSkip
    } else {
        ScatterPolicy::Checked
    }
}

/// How a case's indices are drawn.
#[derive(Clone, Copy, Debug)]
enum Draw {
    /// A random permutation of `0..n` (`rows == n`).
    Permutation,
    /// Uniform in `0..rows`: duplicates when `rows` is small, untouched rows when large.
    Uniform,
}

/// One seeded case: `n` source rows scattered into a poisoned `dst` of shape `[rows, tail..]`;
/// with `skip`, about a quarter of the indices are negative.
fn check_case<T: Element, I: Index>(
    seed: u64,
    n: usize,
    rows: usize,
    tail: &[usize],
    draw: Draw,
    skip: bool,
) {
    let mut r = rng(seed);
    let row_len: usize = tail.iter().product();
    let src: Vec<T> = random_vec(&mut r, n * row_len);
    let mut ids = match draw {
        Draw::Permutation => {
            assert_eq!(rows, n);
            let mut p: Vec<i64> = (0..n as i64).collect();
            p.shuffle(&mut r);
            p
        }
        Draw::Uniform => random_indices(&mut r, n, rows),
    };
    if skip {
        for v in ids.iter_mut() {
            if r.gen_ratio(1, 4) {
                *v = -r.gen_range(1..=i64::from(i32::MAX) + 1);
            }
        }
    }
    let mut shape = vec![rows];
    shape.extend_from_slice(tail);
    let case = format!(
        "{} {} n={n} shape={shape:?} {draw:?} skip={skip} seed={seed}",
        std::any::type_name::<T>(),
        I::NAME
    );
    let mut expected = poisoned::<T>(rows * row_len);
    reference(&src, &ids, &mut expected, rows, row_len, skip).unwrap();
    let indices: Vec<I> = idx(&ids);
    let mut dst = poisoned::<T>(rows * row_len);
    scatter_rows_into(&src, &indices, &mut dst, &shape, policy(skip)).unwrap();
    assert_bits_eq(&dst, &expected, &case);
}

fn matrix<T: Element>() {
    for (s, &n) in SIZES.iter().enumerate() {
        for tail in [&[1][..], &[3], &[2, 8]] {
            for skip in [false, true] {
                let seed = ((n as u64) << 8) | (s as u64) | (u64::from(skip) << 4);
                check_case::<T, i32>(seed, n, n, tail, Draw::Permutation, skip);
                check_case::<T, i64>(seed + 1, n, n, tail, Draw::Permutation, skip);
                if n > 0 {
                    // Many duplicates, then many untouched rows.
                    check_case::<T, i64>(seed + 2, n, n / 3 + 1, tail, Draw::Uniform, skip);
                    check_case::<T, i32>(seed + 3, n, 2 * n + 5, tail, Draw::Uniform, skip);
                }
            }
        }
    }
}

#[test]
fn matches_reference_every_width_size_and_index_type() {
    for_each_width!(matrix);
}

/// 40,000 rows of 16 elements is at least 640 KiB for every width: the rayon path.
fn large<T: Element>() {
    assert!(40_000 * 16 * std::mem::size_of::<T>() >= cpugpu::ops::PAR_MIN_BYTES);
    check_case::<T, i64>(11, 40_000, 40_000, &[16], Draw::Permutation, false);
    // Every destination row named about 40 times, across every partition.
    check_case::<T, i32>(12, 40_000, 1_000, &[4, 4], Draw::Uniform, true);
    // Fewer destination rows than threads.
    check_case::<T, i64>(13, 40_000, 1, &[16], Draw::Uniform, false);
    // Huge rows.
    check_case::<T, i64>(14, 8, 3, &[70_000], Draw::Uniform, true);
}

#[test]
fn parallel_path_matches_reference() {
    for_each_width!(large);
}

#[test]
fn uneven_thread_count_matches_reference() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(7)
        .build()
        .unwrap();
    pool.install(|| {
        check_case::<f32, i64>(21, 40_001, 40_001, &[16], Draw::Permutation, true);
        check_case::<f32, i64>(22, 40_001, 3_334, &[16], Draw::Uniform, false);
        check_case::<u8, i32>(23, 700_001, 5, &[1], Draw::Uniform, false);
        check_case::<u8, i32>(24, 700_001, 6, &[1], Draw::Uniform, true);
    });
}

#[test]
fn duplicates_last_occurrence_wins() {
    // Small (sequential) case, spelled out.
    let src = [10u32, 11, 20, 21, 30, 31, 40, 41];
    let mut dst = [0u32; 6];
    scatter_rows_into(
        &src,
        &[1i32, 1, 0, 1],
        &mut dst,
        &[3, 2],
        ScatterPolicy::Checked,
    )
    .unwrap();
    assert_eq!(dst, [30, 31, 40, 41, 0, 0]);

    // Large (parallel) case: 300,000 source rows onto 4 destination rows; the winner of row r is
    // the last source row that names r, and each source row holds its own position.
    let n = 300_000usize;
    let mut r = rng(5);
    let ids: Vec<i64> = (0..n).map(|_| r.gen_range(0..4)).collect();
    let src: Vec<u64> = (0..n as u64).flat_map(|p| [p, !p]).collect();
    let mut dst = vec![u64::MAX; 8];
    scatter_rows_into(&src, &ids, &mut dst, &[4, 2], ScatterPolicy::Checked).unwrap();
    for row in 0..4 {
        let last = ids.iter().rposition(|&i| i == row as i64).unwrap() as u64;
        assert_eq!(dst[2 * row..2 * row + 2], [last, !last], "row {row}");
    }
}

#[test]
fn negative_skip_leaves_rows_alone() {
    let src = [1i16, 2, 3, 4, 5, 6];
    let mut dst = [-7i16; 8];
    scatter_rows_into(
        &src,
        &[-1i64, 2, i64::MIN],
        &mut dst,
        &[4, 2],
        ScatterPolicy::NegativeSkip,
    )
    .unwrap();
    assert_eq!(dst, [-7, -7, -7, -7, 3, 4, -7, -7]);
    let mut dst = [-7i16; 8];
    scatter_rows_into(
        &src,
        &[3i32, i32::MIN, -2],
        &mut dst,
        &[4, 2],
        ScatterPolicy::NegativeSkip,
    )
    .unwrap();
    assert_eq!(dst, [-7, -7, -7, -7, -7, -7, 1, 2]);
}

#[test]
fn zero_dimensional_destination_is_one_row_of_one() {
    let mut dst = [0.0f64];
    scatter_rows_into(
        &[1.0, 2.0],
        &[0i32, 0],
        &mut dst,
        &[],
        ScatterPolicy::Checked,
    )
    .unwrap();
    assert_eq!(dst, [2.0]);
}

#[test]
fn zero_width_rows_copy_nothing_but_validate() {
    let src: [u8; 0] = [];
    for shape in [&[5, 0][..], &[5, 3, 0], &[5, 0, 3]] {
        let mut dst: [u8; 0] = [];
        scatter_rows_into(&src, &[4i64, 0, 4], &mut dst, shape, ScatterPolicy::Checked).unwrap();
        scatter_rows_into(
            &src,
            &[-1i32, 0],
            &mut dst,
            shape,
            ScatterPolicy::NegativeSkip,
        )
        .unwrap();
        let err = scatter_rows_into(&src, &[4i32, 5, 6], &mut dst, shape, ScatterPolicy::Checked)
            .unwrap_err();
        assert_eq!(err, oob(1, 5, 5));
        let err = scatter_rows_into(&src, &[0i64, -1], &mut dst, shape, ScatterPolicy::Checked)
            .unwrap_err();
        assert_eq!(err, oob(1, -1, 5));
    }
    // Large index arrays validate too (the parallel scan).
    let mut ids = vec![1i64; 200_000];
    ids[150_000] = 2;
    ids[190_000] = 3;
    let err = scatter_rows_into(&src, &ids, &mut [], &[2, 0], ScatterPolicy::Checked).unwrap_err();
    assert_eq!(err, oob(150_000, 2, 2));
}

fn oob(position: usize, index: i64, bound: usize) -> Error {
    Error::IndexOutOfBounds {
        op: Op::ScatterRows,
        position,
        index,
        bound,
    }
}

/// Asserts `scatter_rows_into` fails with `expected` and leaves a poisoned `dst` untouched.
#[track_caller]
fn assert_fails<T: Element, I: Index>(
    src: &[T],
    ids: &[I],
    dst_len: usize,
    shape: &[usize],
    policy: ScatterPolicy,
    expected: Error,
) {
    let mut dst = poisoned::<T>(dst_len);
    let err = scatter_rows_into(src, ids, &mut dst, shape, policy).unwrap_err();
    assert_eq!(err, expected);
    assert!(err.to_string().starts_with("scatter_rows: "), "{err}");
    assert_bits_eq(
        &dst,
        &poisoned::<T>(dst_len),
        "dst must be untouched on error",
    );
}

fn out_of_bounds_at_each_position<I: Index>() {
    for n in [1usize, 2, 33, 300_000] {
        let rows = 10;
        let src: Vec<f32> = (0..n * 2).map(|x| x as f32).collect();
        let last = n - 1;
        let mid = n / 2;
        for &(pos, bad) in &[(0, 10i64), (mid, 11), (last, I::MAX)] {
            let mut ids = vec![3i64; n];
            ids[pos] = bad;
            // A later bad index never hides an earlier one.
            if pos < last {
                ids[last] = 12;
            }
            let ids: Vec<I> = idx(&ids);
            for skip in [false, true] {
                assert_fails(
                    &src,
                    &ids,
                    rows * 2,
                    &[rows, 2],
                    policy(skip),
                    oob(pos, bad, rows),
                );
            }
        }
        // Negative indices are out of bounds under `Checked` only.
        let mut ids = vec![3i64; n];
        ids[mid] = -1;
        ids[last] = if I::MAX == i64::MAX {
            i64::MIN
        } else {
            -(1 << 31)
        };
        let ids: Vec<I> = idx(&ids);
        let first = ids[mid].to_i64();
        let p = ScatterPolicy::Checked;
        assert_fails(&src, &ids, rows * 2, &[rows, 2], p, oob(mid, first, rows));
        let mut dst = vec![-5.0f32; rows * 2];
        scatter_rows_into(
            &src,
            &ids,
            &mut dst,
            &[rows, 2],
            ScatterPolicy::NegativeSkip,
        )
        .unwrap();
        let mut expected = vec![-5.0f32; rows * 2];
        if let Some(p) = ids.iter().rposition(|&i| i.to_i64() == 3) {
            expected[6..8].copy_from_slice(&src[2 * p..2 * p + 2]);
        }
        assert_eq!(dst, expected);
    }
}

#[test]
fn index_out_of_bounds_first_middle_last_i32_and_i64() {
    out_of_bounds_at_each_position::<i32>();
    out_of_bounds_at_each_position::<i64>();
}

#[test]
fn empty_destination_accepts_only_negative_indices_with_skip() {
    let mut dst: [f32; 0] = [];
    scatter_rows_into(
        &[1.0, 2.0],
        &[-1i64],
        &mut dst,
        &[0, 2],
        ScatterPolicy::NegativeSkip,
    )
    .unwrap();
    scatter_rows_into::<f32, i32>(&[], &[], &mut dst, &[0, 2], ScatterPolicy::Checked).unwrap();
    assert_fails::<f32, i32>(
        &[1.0, 2.0],
        &[0],
        0,
        &[0, 2],
        ScatterPolicy::NegativeSkip,
        oob(0, 0, 0),
    );
}

#[test]
fn length_mismatches() {
    let src = [1u64, 2, 3, 4];
    let ids = [0i64, 2];
    for dst_len in [0, 5, 7] {
        assert_fails(
            &src,
            &ids,
            dst_len,
            &[3, 2],
            ScatterPolicy::Checked,
            Error::LengthMismatch {
                op: Op::ScatterRows,
                what: "dst.len()",
                expected: 6,
                actual: dst_len,
            },
        );
    }
    for src_len in [0, 3, 6] {
        let src = vec![1u64; src_len];
        assert_fails(
            &src,
            &ids,
            6,
            &[3, 2],
            ScatterPolicy::Checked,
            Error::LengthMismatch {
                op: Op::ScatterRows,
                what: "src.len()",
                expected: 4,
                actual: src_len,
            },
        );
    }
}

#[test]
fn bad_shapes() {
    assert_fails(
        &[0u8; 4],
        &[0i32],
        4,
        &[1, 1, 1, 1, 1, 1, 1, 1, 4],
        ScatterPolicy::Checked,
        Error::TooManyDims {
            op: Op::ScatterRows,
            ndim: 9,
            max: 8,
        },
    );
    assert_fails(
        &[0u8; 4],
        &[0i32],
        4,
        &[usize::MAX, 2],
        ScatterPolicy::Checked,
        Error::SizeOverflow {
            op: Op::ScatterRows,
            what: "the shape's element count",
        },
    );
    // numel 0 but a row length so long that two source rows overflow.
    assert_fails::<u8, i64>(
        &[],
        &[-1, -1],
        0,
        &[0, usize::MAX / 2 + 1],
        ScatterPolicy::NegativeSkip,
        Error::SizeOverflow {
            op: Op::ScatterRows,
            what: "indices.len() * row_len",
        },
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any indices (duplicates, negative, past the end), any policy: the same result or the same
    /// first error as the sequential reference, and an untouched `dst` on error.
    #[test]
    fn prop_matches_reference(
        rows in 0usize..20,
        row_len in 0usize..6,
        ids in proptest::collection::vec(-3i64..24, 0..64),
        skip in any::<bool>(),
        seed in any::<u64>(),
        wide in any::<bool>(),
    ) {
        let src: Vec<u16> = random_vec(&mut rng(seed), ids.len() * row_len);
        let mut expected = poisoned::<u16>(rows * row_len);
        let want = reference(&src, &ids, &mut expected, rows, row_len, skip);
        let mut dst = poisoned::<u16>(rows * row_len);
        let got = if wide {
            scatter_rows_into(&src, &ids, &mut dst, &[rows, row_len], policy(skip))
        } else {
            let ids32: Vec<i32> = idx(&ids);
            scatter_rows_into(&src, &ids32, &mut dst, &[rows, row_len], policy(skip))
        };
        match want {
            Ok(()) => prop_assert_eq!(got, Ok(())),
            Err((position, index)) => prop_assert_eq!(got, Err(Error::IndexOutOfBounds {
                op: Op::ScatterRows, position, index, bound: rows,
            })),
        }
        prop_assert_eq!(dst, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Large duplicate-heavy scatters through the thread pool agree with the reference.
    #[test]
    fn prop_parallel_duplicates(
        rows in 1usize..64,
        seed in any::<u64>(),
        threads in 2usize..6,
    ) {
        let n = 40_000;
        let mut r = rng(seed);
        let ids = random_indices(&mut r, n, rows);
        let src: Vec<u32> = random_vec(&mut r, n * 4);
        let mut expected = poisoned::<u32>(rows * 4);
        reference(&src, &ids, &mut expected, rows, 4, false).unwrap();
        let mut dst = poisoned::<u32>(rows * 4);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| scatter_rows_into(&src, &ids, &mut dst, &[rows, 4], ScatterPolicy::Checked))
            .unwrap();
        prop_assert_eq!(dst, expected);
    }
}

#[test]
fn row_counts_past_i64_max_are_compared_exactly() {
    // Rows of zero elements can number more than i64::MAX; before the fix the bound was clamped
    // to i64::MAX, so index i64::MAX was refused and [i64::MAX, -1] named position 0.
    let src: [f32; 0] = [];
    let mut dst: [f32; 0] = [];
    for rows in [i64::MAX as usize + 1, usize::MAX] {
        let shape = [rows, 0];
        for policy in [ScatterPolicy::Checked, ScatterPolicy::NegativeSkip] {
            scatter_rows_into(&src, &[i64::MAX, 0], &mut dst, &shape, policy).unwrap();
        }
        let err = scatter_rows_into(
            &src,
            &[i64::MAX, -1],
            &mut dst,
            &shape,
            ScatterPolicy::Checked,
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::IndexOutOfBounds {
                op: Op::ScatterRows,
                position: 1,
                index: -1,
                bound: rows
            }
        );
        assert_eq!(
            err.to_string(),
            format!("scatter_rows: indices[1] = -1 is out of bounds for {rows} rows")
        );
        let mut ids = vec![i64::MAX; 200_000];
        ids[99_999] = -2;
        let err =
            scatter_rows_into(&src, &ids, &mut dst, &shape, ScatterPolicy::Checked).unwrap_err();
        assert!(
            matches!(
                err,
                Error::IndexOutOfBounds {
                    position: 99_999,
                    index: -2,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
