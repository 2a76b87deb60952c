//! `host::prefix_sum_offsets` against a sequential reference: both length and offset types,
//! boundary sizes, the parallel path, overflow at the exact boundary, negative lengths, and the
//! order in which errors are reported.

mod common;

use common::*;
use cpugpu::host::{prefix_sum_offsets, prefix_sum_offsets_into};
use cpugpu::{Error, Index, Offset, Op};
use proptest::prelude::*;
use rand::Rng;

/// The obvious reference: a left-to-right loop with checked arithmetic.
fn reference<L: Index, O: Offset>(lengths: &[L]) -> Result<Vec<O>, Error> {
    let mut out = vec![O::default()];
    let mut acc = 0i64;
    for (position, &l) in lengths.iter().enumerate() {
        let v = l.to_i64();
        if v < 0 {
            return Err(Error::NegativeLength {
                op: Op::PrefixSumOffsets,
                position,
                value: v,
            });
        }
        acc = acc
            .checked_add(v)
            .filter(|&a| a <= O::MAX)
            .ok_or(Error::OffsetOverflow {
                op: Op::PrefixSumOffsets,
                position,
                limit: O::MAX,
            })?;
        out.push(O::from_i64(acc).unwrap());
    }
    Ok(out)
}

fn check<L: Index, O: Offset + PartialEq>(lengths: &[L], case: &str) {
    let want = reference::<L, O>(lengths);
    let got = prefix_sum_offsets::<L, O>(lengths);
    assert_eq!(got, want, "{case}");
    let poison = O::from_i64(-7).unwrap();
    let mut out = vec![poison; lengths.len() + 1];
    let got_into = prefix_sum_offsets_into(lengths, &mut out);
    match want {
        Ok(w) => {
            assert_eq!(got_into, Ok(()), "{case}");
            assert_eq!(out, w, "into: {case}");
        }
        Err(e) => {
            assert_eq!(got_into, Err(e), "{case}");
            assert!(
                out.iter().all(|&o| o == poison),
                "untouched on error: {case}"
            );
        }
    }
}

fn random_lengths<L: Index>(seed: u64, n: usize, max: i64) -> Vec<L> {
    let mut rng = rng(seed);
    (0..n)
        .map(|_| L::from_i64(rng.gen_range(0..=max)).unwrap())
        .collect()
}

fn all_types(lengths: &[i64], case: &str) {
    let l32: Option<Vec<i32>> = lengths.iter().map(|&l| i32::from_i64(l)).collect();
    check::<i64, i64>(lengths, case);
    check::<i64, i32>(lengths, case);
    if let Some(l32) = l32 {
        check::<i32, i64>(&l32, case);
        check::<i32, i32>(&l32, case);
    }
}

#[test]
fn boundary_sizes_both_types() {
    for &n in SIZES {
        all_types(&random_lengths::<i64>(n as u64, n, 600), &format!("n={n}"));
    }
}

#[test]
fn parallel_path_matches_reference() {
    // 200,000 i64 lengths = 1.6 MB, above PAR_MIN_BYTES: several chunks.
    let lengths = random_lengths::<i64>(1, 200_000, 10_000);
    all_types(&lengths, "parallel");
    let l32 = random_lengths::<i32>(2, 300_001, 7);
    check::<i32, i32>(&l32, "parallel i32");
}

#[test]
fn empty_gives_a_single_zero() {
    assert_eq!(prefix_sum_offsets::<i32, i32>(&[]).unwrap(), [0]);
    assert_eq!(prefix_sum_offsets::<i64, i64>(&[]).unwrap(), [0]);
}

#[test]
fn overflow_at_the_exact_i32_boundary() {
    let op = Op::PrefixSumOffsets;
    let limit = i32::MAX as i64;
    // Sum exactly i32::MAX: fine.
    let ok = [i32::MAX - 10, 4, 6];
    assert_eq!(
        prefix_sum_offsets::<i32, i32>(&ok).unwrap(),
        [0, i32::MAX - 10, i32::MAX - 6, i32::MAX]
    );
    // One more: the last length overflows.
    let over = [i32::MAX - 10, 4, 7];
    assert_eq!(
        prefix_sum_offsets::<i32, i32>(&over).unwrap_err(),
        Error::OffsetOverflow {
            op,
            position: 2,
            limit
        }
    );
    // i64 offsets take it.
    assert_eq!(
        *prefix_sum_offsets::<i32, i64>(&over)
            .unwrap()
            .last()
            .unwrap(),
        limit + 1
    );
    // i64 overflow.
    let big = [i64::MAX, 1];
    assert_eq!(
        prefix_sum_offsets::<i64, i64>(&big).unwrap_err(),
        Error::OffsetOverflow {
            op,
            position: 1,
            limit: i64::MAX
        }
    );
    let err = prefix_sum_offsets::<i64, i32>(&[limit + 1]).unwrap_err();
    assert_eq!(
        err,
        Error::OffsetOverflow {
            op,
            position: 0,
            limit
        }
    );
    assert!(err.to_string().starts_with("prefix_sum_offsets:"), "{err}");
}

#[test]
fn negative_lengths_first_middle_last() {
    for n in [1usize, 33, 200_000] {
        for pos in [0, n / 2, n - 1] {
            let mut lengths = random_lengths::<i64>(pos as u64, n, 5);
            lengths[pos] = -3;
            all_types(&lengths, &format!("negative at {pos} of {n}"));
            assert_eq!(
                prefix_sum_offsets::<i64, i64>(&lengths).unwrap_err(),
                Error::NegativeLength {
                    op: Op::PrefixSumOffsets,
                    position: pos,
                    value: -3
                }
            );
        }
    }
}

#[test]
fn the_first_error_in_order_wins() {
    // Parallel-sized inputs, so that the two errors sit in different chunks.
    let n = 300_000;
    let mut lengths = vec![1i64; n];
    // An overflow of i32 offsets at 150,000, a negative length later: overflow first.
    lengths[150_000] = i32::MAX as i64;
    lengths[250_000] = -1;
    assert!(matches!(
        prefix_sum_offsets::<i64, i32>(&lengths).unwrap_err(),
        Error::OffsetOverflow {
            position: 150_000,
            ..
        }
    ));
    // With i64 offsets there is no overflow: the negative length is the first error.
    assert!(matches!(
        prefix_sum_offsets::<i64, i64>(&lengths).unwrap_err(),
        Error::NegativeLength {
            position: 250_000,
            ..
        }
    ));
    // A negative length before the overflow: negative first.
    lengths[100] = -5;
    assert!(matches!(
        prefix_sum_offsets::<i64, i32>(&lengths).unwrap_err(),
        Error::NegativeLength {
            position: 100,
            value: -5,
            ..
        }
    ));
    all_types(&lengths, "mixed errors");
    // A chunk whose own sum overflows i64 after a long valid prefix.
    let mut huge = vec![0i64; n];
    huge[200_000] = i64::MAX;
    huge[200_001] = i64::MAX;
    assert!(matches!(
        prefix_sum_offsets::<i64, i64>(&huge).unwrap_err(),
        Error::OffsetOverflow {
            position: 200_001,
            ..
        }
    ));
}

#[test]
fn wrong_output_length() {
    let mut out = [0i64; 3];
    assert_eq!(
        prefix_sum_offsets_into(&[1i32, 2, 3], &mut out).unwrap_err(),
        Error::LengthMismatch {
            op: Op::PrefixSumOffsets,
            what: "offsets.len()",
            expected: 4,
            actual: 3
        }
    );
    assert_eq!(out, [0; 3]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn prop_matches_reference(lengths in proptest::collection::vec(-2i64..1_000_000_000, 0..40)) {
        all_types(&lengths, "proptest");
    }
}
