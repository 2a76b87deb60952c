//! `host::split` / `host::split_into` / `Segments` against a sequential reference, and the
//! flatten -> split round trip.
mod common;

use bytemuck::Pod;
use common::{assert_bits_eq, random_vec, rng, SIZES};
use cpugpu::host::{flatten, split, split_into};
use cpugpu::{Element, Error, Offset, Op};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::Rng;

/// What the reference says about one position.
#[derive(Debug, PartialEq)]
enum Bad {
    Empty,
    OutOfRange {
        position: usize,
        value: i64,
    },
    NotMonotonic {
        position: usize,
        previous: i64,
        value: i64,
    },
}

/// The obvious sequential split: check every offset in order (range first, then order), then
/// slice.
fn reference<'a, T>(data: &'a [T], offsets: &[i64]) -> Result<Vec<&'a [T]>, Bad> {
    if offsets.is_empty() {
        return Err(Bad::Empty);
    }
    for (p, &v) in offsets.iter().enumerate() {
        if v < 0 || v > data.len() as i64 {
            return Err(Bad::OutOfRange {
                position: p,
                value: v,
            });
        }
        if p > 0 && v < offsets[p - 1] {
            return Err(Bad::NotMonotonic {
                position: p,
                previous: offsets[p - 1],
                value: v,
            });
        }
    }
    let mut out = Vec::new();
    for p in 1..offsets.len() {
        out.push(&data[offsets[p - 1] as usize..offsets[p] as usize]);
    }
    Ok(out)
}

fn expected_error(bad: Bad, len: usize) -> Error {
    match bad {
        Bad::Empty => Error::LengthMismatch {
            op: Op::Split,
            what: "offsets.len()",
            expected: 1,
            actual: 0,
        },
        Bad::OutOfRange { position, value } => Error::OffsetOutOfRange {
            op: Op::Split,
            position,
            value,
            len,
        },
        Bad::NotMonotonic {
            position,
            previous,
            value,
        } => Error::OffsetsNotMonotonic {
            op: Op::Split,
            position,
            previous,
            value,
        },
    }
}

fn to_o<O: Offset>(v: &[i64]) -> Vec<O> {
    v.iter().map(|&x| O::from_i64(x).unwrap()).collect()
}

/// Asserts two lists of views are the same views: same start address and length (zero-copy),
/// hence the same bits.
#[track_caller]
fn assert_same_views<T: Pod>(actual: &[&[T]], expected: &[&[T]], case: &str) {
    assert_eq!(actual.len(), expected.len(), "count differs: {case}");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(a.len(), e.len(), "segment {i} length: {case}");
        assert_eq!(a.as_ptr(), e.as_ptr(), "segment {i} is not a view: {case}");
        assert_bits_eq(a, e, case);
    }
}

/// Every entry point and every `Segments` accessor against the reference, for one offsets list
/// (given as i64 and converted to `O`).
fn check<T: Element, O: Offset>(data: &[T], offsets: &[i64], case: &str) {
    let case = format!("{case} T={} O={}", std::any::type_name::<T>(), O::NAME);
    let offs: Vec<O> = to_o(offsets);
    // A "poisoned" output: stale views that must be replaced (Ok) or left as they are (Err).
    let junk: Vec<&[T]> = vec![data, &data[..0], data];
    let mut out = junk.clone();
    match reference(data, offsets) {
        Ok(want) => {
            split_into(data, &offs, &mut out).unwrap();
            assert_same_views(&out, &want, &case);

            let segs = split(data, &offs).unwrap();
            assert_eq!(segs.len(), want.len(), "{case}");
            assert_eq!(segs.is_empty(), want.is_empty(), "{case}");
            assert_eq!(segs.offsets().as_ptr(), offs.as_ptr(), "{case}");
            assert_eq!(segs.data().as_ptr(), data.as_ptr(), "{case}");
            assert_eq!(segs.data().len(), data.len(), "{case}");
            let by_get: Vec<&[T]> = (0..segs.len()).map(|i| segs.get(i).unwrap()).collect();
            assert_same_views(&by_get, &want, &case);
            assert!(segs.get(segs.len()).is_none(), "{case}");
            assert!(segs.get(usize::MAX).is_none(), "{case}");
            let it = segs.iter();
            assert_eq!(it.len(), want.len(), "{case}");
            let by_iter: Vec<&[T]> = it.collect();
            assert_same_views(&by_iter, &want, &case);
            let mut by_rev: Vec<&[T]> = segs.iter().rev().collect();
            by_rev.reverse();
            assert_same_views(&by_rev, &want, &case);
            let by_into: Vec<&[T]> = segs.into_iter().collect();
            assert_same_views(&by_into, &want, &case);
        }
        Err(bad) => {
            let expected = expected_error(bad, data.len());
            let err = split_into(data, &offs, &mut out).unwrap_err();
            assert_eq!(err, expected, "{case}");
            assert!(err.to_string().starts_with("split: "), "{err}: {case}");
            assert_same_views(&out, &junk, &format!("out untouched: {case}"));
            assert_eq!(split(data, &offs).unwrap_err(), expected, "{case}");
        }
    }
}

/// Random non-decreasing offsets of `n` segments of 0..=max_len elements, starting at `start`.
fn random_offsets(r: &mut SmallRng, n: usize, max_len: i64, start: i64) -> Vec<i64> {
    let mut v = vec![start];
    for _ in 0..n {
        let last = *v.last().unwrap();
        v.push(last + r.gen_range(0..=max_len));
    }
    v
}

/// The boundary sizes as segment counts, with the offsets starting at 0 or above it, and
/// ending at the buffer's end or before it.
fn sizes_for<T: Element>() {
    for (k, &n) in SIZES.iter().enumerate() {
        let mut r = rng(200 + k as u64);
        for start in [0, 3] {
            let offsets = random_offsets(&mut r, n, 8, start);
            let end = *offsets.last().unwrap() as usize;
            for tail in [0, 5] {
                let data: Vec<T> = random_vec(&mut r, end + tail);
                let case = format!("{n} segments start={start} tail={tail}");
                check::<T, i32>(&data, &offsets, &case);
                check::<T, i64>(&data, &offsets, &case);
            }
        }
        // One segment of n elements.
        let data: Vec<T> = random_vec(&mut r, n);
        check::<T, i32>(&data, &[0, n as i64], &format!("one segment of {n}"));
        check::<T, i64>(&data, &[0, n as i64], &format!("one segment of {n}"));
    }
}

#[test]
fn boundary_sizes_every_width() {
    for_each_width!(sizes_for);
}

/// flatten -> split gives back the inputs (both offset types), including skewed sizes.
fn round_trip_for<T: Element>() {
    let mut r = rng(31);
    let mut cases: Vec<Vec<usize>> = SIZES
        .iter()
        .map(|&n| (0..n).map(|_| r.gen_range(0..=6)).collect())
        .collect();
    let mut skewed: Vec<usize> = (0..2_000).map(|_| r.gen_range(0..=2)).collect();
    skewed.insert(1_000, 300_000);
    cases.push(skewed);
    cases.push(vec![0; 1_000]);
    for lens in cases {
        let arrays: Vec<Vec<T>> = lens.iter().map(|&n| random_vec(&mut r, n)).collect();
        let case = format!("{} arrays T={}", lens.len(), std::any::type_name::<T>());

        let (buf, offs) = flatten::<T, i32, _>(&arrays).unwrap();
        let segs = split(&buf, &offs).unwrap();
        assert_eq!(segs.len(), arrays.len(), "{case}");
        for (s, a) in segs.iter().zip(&arrays) {
            assert_bits_eq(s, a, &case);
        }

        let (buf, offs) = flatten::<T, i64, _>(&arrays).unwrap();
        let mut views = Vec::new();
        split_into(&buf, &offs, &mut views).unwrap();
        assert_eq!(views.len(), arrays.len(), "{case}");
        for (s, a) in views.iter().zip(&arrays) {
            assert_bits_eq(s, a, &case);
        }
    }
}

#[test]
fn flatten_split_round_trip_every_width() {
    for_each_width!(round_trip_for);
}

#[test]
fn every_error_variant() {
    let data = [1u8, 2, 3, 4];
    let cases: &[(&[i64], Bad)] = &[
        (&[], Bad::Empty),
        (
            &[-1, 2],
            Bad::OutOfRange {
                position: 0,
                value: -1,
            },
        ),
        (
            &[0, 5],
            Bad::OutOfRange {
                position: 1,
                value: 5,
            },
        ),
        (
            &[0, 2, 5, 4],
            Bad::OutOfRange {
                position: 2,
                value: 5,
            },
        ),
        (
            &[0, 3, 2, 4],
            Bad::NotMonotonic {
                position: 2,
                previous: 3,
                value: 2,
            },
        ),
        // Negative and smaller than its predecessor: out of range is reported.
        (
            &[2, -3],
            Bad::OutOfRange {
                position: 1,
                value: -3,
            },
        ),
        // Two bad offsets: the first position wins.
        (
            &[0, 3, 1, 9],
            Bad::NotMonotonic {
                position: 2,
                previous: 3,
                value: 1,
            },
        ),
        (
            &[0, 9, 1],
            Bad::OutOfRange {
                position: 1,
                value: 9,
            },
        ),
        (
            &[i64::MIN, i64::MAX],
            Bad::OutOfRange {
                position: 0,
                value: i64::MIN,
            },
        ),
    ];
    for (offsets, bad) in cases {
        assert_eq!(&reference(&data, offsets).unwrap_err(), bad);
        if offsets.iter().all(|&o| i32::try_from(o).is_ok()) {
            check::<u8, i32>(&data, offsets, &format!("{offsets:?}"));
        }
        check::<u8, i64>(&data, offsets, &format!("{offsets:?}"));
    }
    // The messages name the op and the values.
    let err = split(&data, &[0i32, 3, 2]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "split: offsets[2] = 2 is smaller than the offset before it, 3"
    );
    let err = split(&data, &[0i64, 7]).unwrap_err();
    assert!(
        err.to_string().starts_with("split: offsets[1] = 7"),
        "{err}"
    );
    let err = split::<u8, i32>(&data, &[]).unwrap_err();
    assert!(err.to_string().starts_with("split: offsets.len()"), "{err}");
}

/// Enough offsets that validation runs on the thread pool (512 KiB of i64 offsets), with a bad
/// offset placed around the boundaries of the validation chunks (32,768 i64 offsets each).
#[test]
fn parallel_validation_finds_the_first_bad_offset() {
    let mut r = rng(5);
    let n = 200_000;
    let offsets = random_offsets(&mut r, n, 3, 0);
    let end = *offsets.last().unwrap();
    let data: Vec<u16> = random_vec(&mut r, end as usize);
    check::<u16, i64>(&data, &offsets, "valid");
    check::<u16, i32>(&data, &offsets, "valid");
    let chunk = 256 * 1024 / 8;
    for at in [1, chunk - 1, chunk, chunk + 1, 3 * chunk, n - 1, n] {
        // A decrease at `at`.
        let mut bad = offsets.clone();
        bad[at] = bad[at - 1] - 1;
        check::<u16, i64>(&data, &bad, &format!("decrease at {at}"));
        // And, later, an out-of-range offset: the decrease is still the one reported.
        if at + 10 < n {
            bad[at + 10] = end + 1;
            check::<u16, i64>(&data, &bad, &format!("decrease at {at}, range later"));
        }
        // Past the end at `at`.
        let mut bad = offsets.clone();
        bad[at] = end + 1;
        check::<u16, i64>(&data, &bad, &format!("past the end at {at}"));
    }
}

#[test]
fn split_into_reuses_capacity() {
    let data = [1i32, 2, 3, 4, 5];
    let mut out: Vec<&[i32]> = Vec::with_capacity(16);
    out.push(&data[..1]);
    let (ptr, cap) = (out.as_ptr(), out.capacity());
    split_into(&data, &[0i32, 1, 1, 5], &mut out).unwrap();
    assert_eq!(out, [&data[..1], &[][..], &data[1..]]);
    assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap));
    // A single offset: no segments, and `out` is cleared.
    split_into(&data, &[2i64], &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn segments_iterator_both_ends() {
    let data: Vec<u32> = (0..10).collect();
    let offsets = [1i64, 3, 3, 6, 10];
    let segs = split(&data, &offsets).unwrap();
    let mut it = segs.iter();
    assert_eq!(it.len(), 4);
    assert_eq!(it.next_back(), Some(&data[6..10]));
    assert_eq!(it.next(), Some(&data[1..3]));
    assert_eq!(it.len(), 2);
    let rest = it.clone();
    assert_eq!(it.next_back(), Some(&data[3..6]));
    assert_eq!(it.next(), Some(&data[3..3]));
    assert_eq!((it.len(), it.next(), it.next_back()), (0, None, None));
    assert_eq!(it.next(), None, "fused");
    assert_eq!(rest.collect::<Vec<_>>(), [&data[3..3], &data[3..6]]);

    let mut it = segs.iter();
    assert_eq!(it.nth(2), Some(&data[3..6]));
    assert_eq!(it.len(), 1);
    assert_eq!(it.nth(5), None);
    assert_eq!(it.len(), 0);
    assert_eq!(segs.iter().nth(usize::MAX), None);
    assert_eq!(segs.iter().next_back(), Some(&data[6..10]));
    assert_eq!((&segs).into_iter().count(), 4);
    let copy = segs; // `Segments` is `Copy`
    assert_eq!(copy.get(0), segs.get(0));
    assert!(format!("{segs:?}").contains("Segments"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary small offsets (often invalid) against the reference.
    #[test]
    fn matches_reference(
        offsets in proptest::collection::vec(-3i64..40, 0..24),
        len in 0usize..40,
        seed in any::<u64>(),
    ) {
        let data: Vec<f32> = random_vec(&mut rng(seed), len);
        check::<f32, i32>(&data, &offsets, "proptest");
        check::<f32, i64>(&data, &offsets, "proptest");
    }

    /// flatten then split gives back the arrays.
    #[test]
    fn round_trip(
        lens in proptest::collection::vec(0usize..32, 0..48),
        seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let arrays: Vec<Vec<u16>> = lens.iter().map(|&n| random_vec(&mut r, n)).collect();
        let (buf, offs) = flatten::<u16, i32, _>(&arrays).unwrap();
        let segs = split(&buf, &offs).unwrap();
        prop_assert_eq!(segs.len(), arrays.len());
        for (s, a) in segs.iter().zip(&arrays) {
            prop_assert_eq!(s, &a[..]);
        }
    }
}
