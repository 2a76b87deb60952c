//! `host::gather_rows_into` / `host::gather_rows` against a sequential reference.
mod common;

use bytemuck::Pod;
use common::{assert_bits_eq, poisoned, random_elem, random_indices, random_vec, rng, SIZES};
use cpugpu::host::{gather_rows, gather_rows_into};
use cpugpu::{Element, Error, GatherPolicy, Index, Op};
use proptest::prelude::*;
use rand::Rng;

/// The obvious sequential gather: validates every index first (first bad position wins), then
/// copies element by element.
fn reference<T: Pod>(
    src: &[T],
    rows: usize,
    row_len: usize,
    indices: &[i64],
    fill: Option<T>,
) -> Result<Vec<T>, (usize, i64)> {
    for (p, &i) in indices.iter().enumerate() {
        let ok = if i < 0 {
            fill.is_some()
        } else {
            (i as u64) < rows as u64
        };
        if !ok {
            return Err((p, i));
        }
    }
    let mut out = Vec::new();
    for &i in indices {
        for k in 0..row_len {
            if i < 0 {
                out.push(fill.unwrap());
            } else {
                out.push(src[i as usize * row_len + k]);
            }
        }
    }
    Ok(out)
}

fn idx<I: Index>(v: &[i64]) -> Vec<I> {
    v.iter().map(|&x| I::from_i64(x).unwrap()).collect()
}

fn policy<T: Copy>(fill: Option<T>) -> GatherPolicy<T> {
    match fill {
        Some(f) => GatherPolicy::NegativeFill(f),
        None => GatherPolicy::Checked,
    }
}

/// One seeded case: `n` indices into `rows` rows of shape `[rows, tail..]`; with a fill, about a
/// quarter of the indices are negative. Checks both the `_into` and the allocating form.
fn check_case<T: Element, I: Index>(
    seed: u64,
    n: usize,
    rows: usize,
    tail: &[usize],
    with_fill: bool,
) {
    let mut r = rng(seed);
    let row_len: usize = tail.iter().product();
    let src: Vec<T> = random_vec(&mut r, rows * row_len);
    let mut ids = random_indices(&mut r, n, rows);
    let fill = with_fill.then(|| random_elem::<T>(&mut r));
    if with_fill {
        for v in ids.iter_mut() {
            if r.gen_ratio(1, 4) {
                *v = -r.gen_range(1..=i64::from(i32::MAX) + 1);
            }
        }
    }
    let mut shape = vec![rows];
    shape.extend_from_slice(tail);
    let case = format!(
        "{} {} n={n} shape={shape:?} fill={with_fill} seed={seed}",
        std::any::type_name::<T>(),
        I::NAME
    );
    let expected = reference(&src, rows, row_len, &ids, fill).unwrap();
    let indices: Vec<I> = idx(&ids);
    let mut dst = poisoned::<T>(n * row_len);
    gather_rows_into(&src, &shape, &indices, &mut dst, policy(fill)).unwrap();
    assert_bits_eq(&dst, &expected, &case);
    let alloc = gather_rows(&src, &shape, &indices, policy(fill)).unwrap();
    assert_bits_eq(&alloc, &expected, &case);
}

fn matrix<T: Element>() {
    for (s, &n) in SIZES.iter().enumerate() {
        for tail in [&[1][..], &[3], &[2, 8]] {
            let rows = (n / 2).max(1) + s;
            for with_fill in [false, true] {
                let seed = ((n as u64) << 8) | (s as u64) | (u64::from(with_fill) << 4);
                check_case::<T, i32>(seed, n, rows, tail, with_fill);
                check_case::<T, i64>(seed + 1, n, rows, tail, with_fill);
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
    check_case::<T, i64>(11, 40_000, 40_000, &[16], false);
    check_case::<T, i32>(12, 40_000, 1_000, &[4, 4], true);
    // Huge rows: fewer rows than one parallel chunk's worth each.
    check_case::<T, i64>(13, 8, 3, &[70_000], true);
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
        check_case::<f32, i64>(21, 40_001, 3_333, &[16], true);
        check_case::<u8, i32>(22, 700_001, 5, &[1], false);
    });
}

#[test]
fn zero_dimensional_source_is_one_row_of_one() {
    let src = [7.5f32];
    let out = gather_rows(&src, &[], &[0i32, 0, 0], GatherPolicy::Checked).unwrap();
    assert_eq!(out, [7.5, 7.5, 7.5]);
    let err = gather_rows(&src, &[], &[0i64, 1], GatherPolicy::Checked).unwrap_err();
    assert_eq!(
        err,
        Error::IndexOutOfBounds {
            op: Op::GatherRows,
            position: 1,
            index: 1,
            bound: 1
        }
    );
}

#[test]
fn zero_width_rows_copy_nothing_but_validate() {
    let src: [u16; 0] = [];
    for shape in [&[5, 0][..], &[5, 3, 0], &[5, 0, 3]] {
        let mut dst: [u16; 0] = [];
        gather_rows_into(&src, shape, &[4i64, 0, 2], &mut dst, GatherPolicy::Checked).unwrap();
        let out = gather_rows(&src, shape, &[4i32, -1], GatherPolicy::NegativeFill(9)).unwrap();
        assert!(out.is_empty());
        let err = gather_rows_into(&src, shape, &[4i32, 5, 6], &mut dst, GatherPolicy::Checked)
            .unwrap_err();
        assert_eq!(
            err,
            Error::IndexOutOfBounds {
                op: Op::GatherRows,
                position: 1,
                index: 5,
                bound: 5
            }
        );
        let err = gather_rows(&src, shape, &[0i64, -1], GatherPolicy::Checked).unwrap_err();
        assert_eq!(
            err,
            Error::IndexOutOfBounds {
                op: Op::GatherRows,
                position: 1,
                index: -1,
                bound: 5
            }
        );
    }
    // A large zero-width gather (above the parallel threshold by index bytes) validates too.
    let mut ids = vec![1i64; 200_000];
    ids[150_000] = 2;
    ids[190_000] = 3;
    let err = gather_rows(&src, &[2, 0], &ids, GatherPolicy::Checked).unwrap_err();
    assert_eq!(
        err,
        Error::IndexOutOfBounds {
            op: Op::GatherRows,
            position: 150_000,
            index: 2,
            bound: 2
        }
    );
}

#[test]
fn row_counts_past_i64_max_are_compared_exactly() {
    // Rows of zero elements can number more than i64::MAX. Before the fix the bound was clamped
    // to i64::MAX: index i64::MAX was called out of bounds ("indices[0] = 9223372036854775807 is
    // out of bounds for 18446744073709551615 rows") and [i64::MAX, -1] named position 0, not 1.
    let src: [u32; 0] = [];
    for rows in [i64::MAX as usize + 1, usize::MAX] {
        let shape = [rows, 0];
        for policy in [GatherPolicy::Checked, GatherPolicy::NegativeFill(7)] {
            let out = gather_rows(&src, &shape, &[i64::MAX, 0, i64::MAX - 1], policy).unwrap();
            assert!(out.is_empty());
        }
        let err = gather_rows(&src, &shape, &[i64::MAX, -1], GatherPolicy::Checked).unwrap_err();
        assert_eq!(
            err,
            Error::IndexOutOfBounds {
                op: Op::GatherRows,
                position: 1,
                index: -1,
                bound: rows
            }
        );
        assert_eq!(
            err.to_string(),
            format!("gather_rows: indices[1] = -1 is out of bounds for {rows} rows")
        );
        // The same through the parallel scan (200,000 i64 indices, above PAR_MIN_BYTES), with
        // every negative value, not only -1, caught.
        for bad in [-1i64, -2, i64::MIN] {
            let mut ids = vec![i64::MAX; 200_000];
            ids[123_457] = bad;
            ids[190_000] = -1;
            let err = gather_rows(&src, &shape, &ids, GatherPolicy::Checked).unwrap_err();
            assert_eq!(
                err,
                Error::IndexOutOfBounds {
                    op: Op::GatherRows,
                    position: 123_457,
                    index: bad,
                    bound: rows
                }
            );
            let mut ids32 = vec![i32::MAX; 200_000];
            ids32[7] = i32::MIN;
            let err = gather_rows(&src, &shape, &ids32, GatherPolicy::Checked).unwrap_err();
            assert!(
                matches!(err, Error::IndexOutOfBounds { position: 7, .. }),
                "{err:?}"
            );
            gather_rows(&src, &shape, &ids, GatherPolicy::NegativeFill(0)).unwrap();
        }
    }
}

#[test]
fn empty_source_accepts_only_negative_indices_with_fill() {
    let src: [f64; 0] = [];
    let out = gather_rows(&src, &[0, 2], &[-1i64, -5], GatherPolicy::NegativeFill(1.5)).unwrap();
    assert_eq!(out, [1.5; 4]);
    let out = gather_rows::<f64, i32>(&src, &[0, 2], &[], GatherPolicy::Checked).unwrap();
    assert!(out.is_empty());
    let err = gather_rows(&src, &[0, 2], &[-1i32, 0], GatherPolicy::NegativeFill(1.5)).unwrap_err();
    assert_eq!(
        err,
        Error::IndexOutOfBounds {
            op: Op::GatherRows,
            position: 1,
            index: 0,
            bound: 0
        }
    );
}

/// Asserts `gather_rows_into` fails with `expected` and leaves a poisoned `dst` untouched.
#[track_caller]
fn assert_fails<T: Element + std::fmt::Debug, I: Index>(
    src: &[T],
    shape: &[usize],
    ids: &[I],
    dst_len: usize,
    policy: GatherPolicy<T>,
    expected: Error,
) {
    let mut dst = poisoned::<T>(dst_len);
    let err = gather_rows_into(src, shape, ids, &mut dst, policy).unwrap_err();
    assert_eq!(err, expected);
    assert!(err.to_string().starts_with("gather_rows: "), "{err}");
    assert_bits_eq(
        &dst,
        &poisoned::<T>(dst_len),
        "dst must be untouched on error",
    );
    if !matches!(
        expected,
        Error::LengthMismatch {
            what: "dst.len()",
            ..
        }
    ) {
        assert_eq!(gather_rows(src, shape, ids, policy).unwrap_err(), expected);
    }
}

fn oob(position: usize, index: i64, bound: usize) -> Error {
    Error::IndexOutOfBounds {
        op: Op::GatherRows,
        position,
        index,
        bound,
    }
}

fn out_of_bounds_at_each_position<I: Index>() {
    for n in [1usize, 2, 33, 300_000] {
        let rows = 10;
        let src: Vec<f32> = (0..rows * 2).map(|x| x as f32).collect();
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
            for policy in [GatherPolicy::Checked, GatherPolicy::NegativeFill(0.5)] {
                assert_fails(&src, &[rows, 2], &ids, n * 2, policy, oob(pos, bad, rows));
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
        let first = if mid == last { ids[last] } else { ids[mid] };
        assert_fails(
            &src,
            &[rows, 2],
            &ids,
            n * 2,
            GatherPolicy::Checked,
            oob(mid, first.to_i64(), rows),
        );
        let out = gather_rows(&src, &[rows, 2], &ids, GatherPolicy::NegativeFill(-2.0)).unwrap();
        assert_eq!(out[mid * 2..mid * 2 + 2], [-2.0, -2.0]);
        assert_eq!(out[last * 2..last * 2 + 2], [-2.0, -2.0]);
        if mid > 0 {
            assert_eq!(out[0..2], [6.0, 7.0]);
        }
    }
}

#[test]
fn index_out_of_bounds_first_middle_last_i32_and_i64() {
    out_of_bounds_at_each_position::<i32>();
    out_of_bounds_at_each_position::<i64>();
}

#[test]
fn length_mismatches() {
    let src = [1u32, 2, 3, 4, 5, 6];
    let ids = [0i64, 2];
    assert_fails(
        &src[..5],
        &[3, 2],
        &ids,
        4,
        GatherPolicy::Checked,
        Error::LengthMismatch {
            op: Op::GatherRows,
            what: "src.len()",
            expected: 6,
            actual: 5,
        },
    );
    for dst_len in [0, 3, 5] {
        assert_fails(
            &src,
            &[3, 2],
            &ids,
            dst_len,
            GatherPolicy::Checked,
            Error::LengthMismatch {
                op: Op::GatherRows,
                what: "dst.len()",
                expected: 4,
                actual: dst_len,
            },
        );
    }
}

#[test]
fn bad_shapes() {
    let src = [0u8; 4];
    assert_fails(
        &src,
        &[1, 1, 1, 1, 1, 1, 1, 1, 4],
        &[0i32],
        4,
        GatherPolicy::Checked,
        Error::TooManyDims {
            op: Op::GatherRows,
            ndim: 9,
            max: 8,
        },
    );
    assert_fails(
        &src,
        &[usize::MAX, 2],
        &[0i32],
        4,
        GatherPolicy::Checked,
        Error::SizeOverflow {
            op: Op::GatherRows,
            what: "the shape's element count",
        },
    );
    // numel 0 but a row length so long that two rows overflow.
    let empty: [u8; 0] = [];
    assert_fails(
        &empty,
        &[0, usize::MAX / 2 + 1],
        &[-1i64, -1],
        0,
        GatherPolicy::NegativeFill(0),
        Error::SizeOverflow {
            op: Op::GatherRows,
            what: "indices.len() * row_len",
        },
    );
}

#[test]
fn allocating_form_reports_unallocatable_outputs() {
    let empty: [f32; 0] = [];
    // 2^60 bytes: no allocator hands that out.
    let err = gather_rows(
        &empty,
        &[0, 1 << 58],
        &[-1i64],
        GatherPolicy::NegativeFill(0.0),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::OutOfMemory {
            op: Op::GatherRows,
            bytes: 1 << 60
        }
    );
    assert!(err.to_string().starts_with("gather_rows: "));
    let err = gather_rows(
        &empty,
        &[0, 1 << 62],
        &[-1i64],
        GatherPolicy::NegativeFill(0.0),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::SizeOverflow {
            op: Op::GatherRows,
            what: "the output's size in bytes"
        }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any indices (in range, negative or past the end), any policy: the same result or the
    /// same first error as the sequential reference, and an untouched `dst` on error.
    #[test]
    fn prop_matches_reference(
        rows in 0usize..20,
        row_len in 0usize..6,
        ids in proptest::collection::vec(-3i64..24, 0..64),
        fill in proptest::option::of(any::<u16>()),
        seed in any::<u64>(),
        wide in any::<bool>(),
    ) {
        let src: Vec<u16> = random_vec(&mut rng(seed), rows * row_len);
        let expected = reference(&src, rows, row_len, &ids, fill);
        let mut dst = poisoned::<u16>(ids.len() * row_len);
        let got = if wide {
            gather_rows_into(&src, &[rows, row_len], &ids, &mut dst, policy(fill))
        } else {
            let ids32: Vec<i32> = idx(&ids);
            gather_rows_into(&src, &[rows, row_len], &ids32, &mut dst, policy(fill))
        };
        match expected {
            Ok(e) => {
                prop_assert_eq!(got, Ok(()));
                prop_assert_eq!(dst, e);
            }
            Err((position, index)) => {
                prop_assert_eq!(got, Err(Error::IndexOutOfBounds {
                    op: Op::GatherRows, position, index, bound: rows,
                }));
                prop_assert_eq!(dst, poisoned::<u16>(ids.len() * row_len));
            }
        }
    }
}
