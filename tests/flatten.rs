//! `host::flatten_into` / `host::flatten` against a sequential reference.
mod common;

use bytemuck::Pod;
use common::{assert_bits_eq, poisoned, random_vec, rng, SIZES};
use cpugpu::host::{flatten, flatten_into};
use cpugpu::ops::PAR_MIN_BYTES;
use cpugpu::{Element, Error, Offset, Op};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::Rng;

/// The obvious sequential flatten: offsets as a running sum, the buffer by pushing every element.
/// `Err(position)` when a running offset exceeds `limit`.
fn reference<T: Pod>(arrays: &[Vec<T>], limit: i64) -> Result<(Vec<T>, Vec<i64>), usize> {
    let mut offsets = vec![0i64];
    let mut total = 0i64;
    for (p, a) in arrays.iter().enumerate() {
        total += a.len() as i64;
        if total > limit {
            return Err(p);
        }
        offsets.push(total);
    }
    let mut buf = Vec::new();
    for a in arrays {
        for &x in a {
            buf.push(x);
        }
    }
    Ok((buf, offsets))
}

fn to_i64<O: Offset>(v: &[O]) -> Vec<i64> {
    v.iter().map(|o| o.to_i64()).collect()
}

/// Random arrays with the given lengths.
fn arrays_of<T: Pod>(r: &mut SmallRng, lens: &[usize]) -> Vec<Vec<T>> {
    lens.iter().map(|&n| random_vec(r, n)).collect()
}

/// Both forms, on poisoned outputs, against the reference; also through `&[T]` and `Box<[T]>`
/// arrays.
fn check<T: Element, O: Offset>(arrays: &[Vec<T>], case: &str) {
    let case = format!("{case} T={} O={}", std::any::type_name::<T>(), O::NAME);
    let (want, want_offsets) = reference(arrays, O::MAX).unwrap();

    let mut dst = poisoned::<T>(want.len());
    let mut offsets = poisoned::<O>(arrays.len() + 1);
    flatten_into(arrays, &mut dst, &mut offsets).unwrap();
    assert_bits_eq(&dst, &want, &case);
    assert_eq!(to_i64(&offsets), want_offsets, "{case}");

    let (buf, offs) = flatten::<T, O, _>(arrays).unwrap();
    assert_bits_eq(&buf, &want, &case);
    assert_eq!(to_i64(&offs), want_offsets, "{case}");

    let slices: Vec<&[T]> = arrays.iter().map(Vec::as_slice).collect();
    let (buf, offs) = flatten::<T, O, _>(&slices).unwrap();
    assert_bits_eq(&buf, &want, &case);
    assert_eq!(to_i64(&offs), want_offsets, "{case}");

    let boxed: Vec<Box<[T]>> = arrays
        .iter()
        .map(|a| a.clone().into_boxed_slice())
        .collect();
    let mut dst = poisoned::<T>(want.len());
    let mut offsets = poisoned::<O>(arrays.len() + 1);
    flatten_into(&boxed, &mut dst, &mut offsets).unwrap();
    assert_bits_eq(&dst, &want, &case);
    assert_eq!(to_i64(&offsets), want_offsets, "{case}");
}

/// Every boundary size as the number of arrays (random lengths 0..=8) and as the length of one
/// array among two empty ones.
fn sizes_for<T: Element>() {
    for (k, &n) in SIZES.iter().enumerate() {
        let mut r = rng(100 + k as u64);
        let lens: Vec<usize> = (0..n).map(|_| r.gen_range(0..=8)).collect();
        let arrays = arrays_of::<T>(&mut r, &lens);
        check::<T, i32>(&arrays, &format!("{n} arrays"));
        check::<T, i64>(&arrays, &format!("{n} arrays"));

        let arrays = arrays_of::<T>(&mut r, &[0, n, 0]);
        check::<T, i32>(&arrays, &format!("one array of {n}"));
        check::<T, i64>(&arrays, &format!("one array of {n}"));
    }
}

#[test]
fn boundary_sizes_every_width() {
    for_each_width!(sizes_for);
}

/// Above the parallel threshold for every width: 40,000 arrays of 0..=40 elements (about 800,000
/// elements, at least 800 KB), and for the wider types a smaller batch below it.
fn large_for<T: Element>() {
    let mut r = rng(7);
    let lens: Vec<usize> = (0..40_000).map(|_| r.gen_range(0..=40)).collect();
    let arrays = arrays_of::<T>(&mut r, &lens);
    let total: usize = lens.iter().sum();
    assert!(total * std::mem::size_of::<T>() > PAR_MIN_BYTES);
    check::<T, i32>(&arrays, "40000 arrays of 0..=40");
    check::<T, i64>(&arrays, "40000 arrays of 0..=40");

    let small_total = PAR_MIN_BYTES / std::mem::size_of::<T>() - 1;
    let arrays = arrays_of::<T>(&mut r, &[small_total / 2, 0, small_total - small_total / 2]);
    check::<T, i32>(&arrays, "just below the threshold");
}

#[test]
fn above_parallel_threshold_every_width() {
    for_each_width!(large_for);
}

/// Skewed sizes: one huge array (several parallel chunks) among many tiny and empty ones, array
/// boundaries exactly on chunk boundaries, and empty arrays sitting on chunk boundaries.
fn skewed_for<T: Element>() {
    let w = std::mem::size_of::<T>();
    let chunk = 256 * 1024 / w; // elements per parallel task
    let mut r = rng(11);

    // One huge array in the middle of 5,000 tiny/empty ones.
    let mut lens: Vec<usize> = (0..5_000).map(|_| r.gen_range(0..=3)).collect();
    lens.insert(2_500, 3 * chunk + 17);
    let arrays = arrays_of::<T>(&mut r, &lens);
    check::<T, i32>(&arrays, "huge among tiny");
    check::<T, i64>(&arrays, "huge among tiny");

    // Huge first and last, thousands of empty arrays between.
    let mut lens = vec![2 * chunk + 1];
    lens.extend(std::iter::repeat_n(0, 3_000));
    lens.push(chunk - 1);
    let arrays = arrays_of::<T>(&mut r, &lens);
    check::<T, i64>(&arrays, "huge, empties, huge");

    // Boundaries exactly on chunk boundaries, with empties on them.
    let lens = [chunk, 0, 0, chunk, 0, 1, chunk - 1, 0, chunk + 5, 0];
    let arrays = arrays_of::<T>(&mut r, &lens);
    check::<T, i32>(&arrays, "aligned boundaries");
    check::<T, i64>(&arrays, "aligned boundaries");

    // Many empty arrays only.
    let arrays = arrays_of::<T>(&mut r, &[0; 10_000]);
    check::<T, i32>(&arrays, "all empty");
}

#[test]
fn skewed_sizes_every_width() {
    for_each_width!(skewed_for);
}

#[test]
fn empty_list_gives_zero_offset() {
    let none: [Vec<f32>; 0] = [];
    let (buf, offs) = flatten::<f32, i32, _>(&none).unwrap();
    assert!(buf.is_empty());
    assert_eq!(offs, [0]);
    let mut offsets = [7i64];
    flatten_into(&none, &mut [], &mut offsets).unwrap();
    assert_eq!(offsets, [0]);
}

#[test]
fn length_mismatches_leave_outputs_untouched() {
    let arrays = vec![vec![1u16, 2, 3], vec![], vec![4]];
    for (dst_len, off_len, what, expected, actual) in [
        (4, 3, "offsets.len()", 4, 3),
        (4, 5, "offsets.len()", 4, 5),
        (3, 4, "dst.len()", 4, 3),
        (5, 4, "dst.len()", 4, 5),
        (0, 0, "offsets.len()", 4, 0),
    ] {
        let mut dst = poisoned::<u16>(dst_len);
        let mut offsets = poisoned::<i32>(off_len);
        let err = flatten_into(&arrays, &mut dst, &mut offsets).unwrap_err();
        assert_eq!(
            err,
            Error::LengthMismatch {
                op: Op::Flatten,
                what,
                expected,
                actual
            }
        );
        assert!(err.to_string().starts_with("flatten: "), "{err}");
        assert_bits_eq(&dst, &poisoned::<u16>(dst_len), "dst untouched");
        assert_bits_eq(&offsets, &poisoned::<i32>(off_len), "offsets untouched");
    }
}

/// A total past `i32::MAX` with i32 offsets: three views of one 1 GiB zeroed allocation (never
/// touched, so not resident). The running offset first exceeds `i32::MAX` after array 1.
#[test]
fn i32_offset_overflow_names_the_array() {
    let big = vec![0u8; 1 << 30];
    let arrays: Vec<&[u8]> = vec![&big[..10], &big[..], &big[..], &big[..]];
    let expected = Error::OffsetOverflow {
        op: Op::Flatten,
        position: 2,
        limit: i64::from(i32::MAX),
    };

    let mut dst = poisoned::<u8>(16);
    let mut offsets = poisoned::<i32>(5);
    let err = flatten_into(&arrays, &mut dst, &mut offsets).unwrap_err();
    assert_eq!(err, expected);
    assert!(err.to_string().starts_with("flatten: "), "{err}");
    assert_bits_eq(&dst, &poisoned::<u8>(16), "dst untouched");
    assert_bits_eq(&offsets, &poisoned::<i32>(5), "offsets untouched");

    assert_eq!(flatten::<u8, i32, _>(&arrays).unwrap_err(), expected);

    // Exactly at the limit is fine: 10 + 2^30 + (2^30 - 11) = i32::MAX.
    let arrays: Vec<&[u8]> = vec![&big[..10], &big[..], &big[11..]];
    let mut offsets = [0i32; 4];
    let total = (1usize << 31) - 1;
    let err = flatten_into(&arrays, &mut [0u8; 3], &mut offsets).unwrap_err();
    assert_eq!(
        err,
        Error::LengthMismatch {
            op: Op::Flatten,
            what: "dst.len()",
            expected: total,
            actual: 3
        }
    );
}

/// A zero-sized array type, so that a list of `usize::MAX` arrays takes no memory.
#[derive(Clone, Copy)]
struct NoElements;

impl AsRef<[u32]> for NoElements {
    fn as_ref(&self) -> &[u32] {
        &[]
    }
}

#[test]
fn offsets_count_overflow_is_a_size_overflow() {
    let arrays = [NoElements; usize::MAX];
    let expected = Error::SizeOverflow {
        op: Op::Flatten,
        what: "arrays.len() + 1",
    };
    assert_eq!(flatten::<u32, i64, _>(&arrays).unwrap_err(), expected);
    let mut offsets = [5i64; 2];
    let err = flatten_into(&arrays, &mut [], &mut offsets).unwrap_err();
    assert_eq!(err, expected);
    assert!(err.to_string().starts_with("flatten: "), "{err}");
    assert_eq!(offsets, [5; 2]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn matches_reference(
        lens in proptest::collection::vec(0usize..64, 0..64),
        seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let arrays = arrays_of::<u32>(&mut r, &lens);
        check::<u32, i32>(&arrays, "proptest");
        let arrays = arrays_of::<u8>(&mut r, &lens);
        check::<u8, i64>(&arrays, "proptest");
    }

    /// Large skewed lists (parallel path): a few arrays of up to 300,000 f32 among small ones.
    #[test]
    fn matches_reference_parallel(
        lens in proptest::collection::vec(
            prop_oneof![8 => 0usize..16, 1 => 0usize..300_000],
            1..40,
        ),
        seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let arrays = arrays_of::<f32>(&mut r, &lens);
        check::<f32, i64>(&arrays, "proptest parallel");
    }
}

/// An array whose `as_ref` answers with all of its data the first time and nothing after: a
/// flatten that asked twice would see a length other than the one it validated.
struct Shrinking {
    data: Vec<u32>,
    calls: std::sync::atomic::AtomicUsize,
}

impl AsRef<[u32]> for Shrinking {
    fn as_ref(&self) -> &[u32] {
        use std::sync::atomic::Ordering;
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            &self.data
        } else {
            &[]
        }
    }
}

#[test]
fn each_array_is_asked_for_its_slice_once() {
    // Small (one thread) and past the parallel threshold, both forms: the result is the data of
    // the first answers, with no panic and no short copy.
    for n in [3usize, PAR_MIN_BYTES / 4 + 3] {
        let make = || -> Vec<Shrinking> {
            [n, 5, n / 2]
                .iter()
                .enumerate()
                .map(|(k, &len)| Shrinking {
                    data: (0..len as u32).map(|v| v ^ (k as u32) << 24).collect(),
                    calls: Default::default(),
                })
                .collect()
        };
        let want: Vec<u32> = make().iter().flat_map(|a| a.data.clone()).collect();
        let want_offsets = [0i64, n as i64, n as i64 + 5, (n + 5 + n / 2) as i64];
        let arrays = make();
        let (got, offsets) = flatten::<u32, i64, _>(&arrays).unwrap();
        assert_eq!(got, want, "flatten n={n}");
        assert_eq!(offsets, want_offsets, "flatten n={n}");
        let arrays = make();
        let mut dst = poisoned::<u32>(want.len());
        let mut offsets = [0i64; 4];
        flatten_into(&arrays, &mut dst, &mut offsets).unwrap();
        assert_eq!(dst, want, "flatten_into n={n}");
        assert_eq!(offsets, want_offsets, "flatten_into n={n}");
        assert!(arrays
            .iter()
            .all(|a| a.calls.load(std::sync::atomic::Ordering::SeqCst) == 1));
    }
}
