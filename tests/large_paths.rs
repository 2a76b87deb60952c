//! The host paths that only large inputs take, against sequential references: gather and the
//! parallel copy and fill with streaming stores (outputs of 8 MiB and more), scatter split by
//! source (no row shared by two tasks: with and without duplicates inside a task, with
//! streaming stores on full lines) and its fallback, the prefix sum's chunked passes, and the
//! crate's aligned host memory. Each runs on thread pools of 1, 2 and 3 threads (the caller's
//! explicit choice, `ThreadPool::install`), on aligned and misaligned destinations.
mod common;

use bytemuck::Pod;
use common::{assert_bits_eq, poisoned, random_vec, rng};
use cpugpu::host::{
    gather_rows_into, pad_to_multiple_into, prefix_sum_offsets_into, scatter_rows_into,
};
use cpugpu::{GatherPolicy, HostVec, Index, ScatterPolicy};
use rand::seq::SliceRandom;
use rand::Rng;

/// Outputs of at least this many bytes take the streaming paths (the crate's threshold).
const STREAM: usize = 8 << 20;

fn pools() -> Vec<rayon::ThreadPool> {
    [1, 2, 3]
        .iter()
        .map(|&n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("pool")
        })
        .collect()
}

/// A destination of `n` elements, poisoned, starting `shift` elements into a 2 MiB-aligned
/// block (shift 0: aligned for streaming; 1: misaligned).
fn dest<T: Pod + Send + Sync>(n: usize, shift: usize) -> (HostVec<T>, std::ops::Range<usize>) {
    let mut v = HostVec::<T>::zeroed(n + shift).expect("host memory");
    v.copy_from_slice(&poisoned::<T>(n + shift));
    (v, shift..shift + n)
}

fn gather_case<T: Pod + Send + Sync, I: Index>(seed: u64, row_len: usize, fill: Option<T>) {
    let mut r = rng(seed);
    let row_bytes = row_len * std::mem::size_of::<T>();
    let out_rows = STREAM / row_bytes + 37;
    let rows = out_rows / 2 + 5;
    let src: Vec<T> = random_vec(&mut r, rows * row_len);
    let idx: Vec<i64> = (0..out_rows)
        .map(|_| {
            if fill.is_some() && r.gen_ratio(1, 7) {
                -1 - r.gen_range(0..3)
            } else {
                r.gen_range(0..rows as i64)
            }
        })
        .collect();
    let mut want = Vec::with_capacity(out_rows * row_len);
    for &i in &idx {
        match usize::try_from(i) {
            Ok(i) => want.extend_from_slice(&src[i * row_len..][..row_len]),
            Err(_) => want.extend(std::iter::repeat_n(fill.unwrap(), row_len)),
        }
    }
    let idx: Vec<I> = idx.iter().map(|&i| I::from_i64(i).unwrap()).collect();
    let policy = fill.map_or(GatherPolicy::Checked, GatherPolicy::NegativeFill);
    for pool in pools() {
        for shift in [0, 1] {
            let case = format!(
                "gather {} x {row_len} {} {} threads shift {shift}",
                std::any::type_name::<T>(),
                I::NAME,
                pool.current_num_threads()
            );
            let (mut d, range) = dest::<T>(out_rows * row_len, shift);
            pool.install(|| {
                gather_rows_into(&src, &[rows, row_len], &idx, &mut d[range.clone()], policy)
            })
            .expect(&case);
            assert_bits_eq(&d[range.clone()], &want, &case);
            assert_bits_eq(&d[..shift], &poisoned::<T>(shift), &case);
        }
    }
}

#[test]
fn gather_large_outputs_every_row_shape() {
    // Rows that are a multiple of 16 bytes stream (when dst is aligned); the others do not.
    gather_case::<f32, i64>(1, 16, None); // 64 bytes
    gather_case::<f32, i32>(2, 16, Some(-2.5));
    gather_case::<u8, i64>(3, 48, Some(7)); // 48 bytes
    gather_case::<u64, i32>(4, 10, None); // 80 bytes
    gather_case::<u16, i64>(5, 128, Some(9)); // 256 bytes
    gather_case::<u32, i64>(6, 300, None); // 1,200 bytes: the generic row size
    gather_case::<u32, i32>(7, 3, Some(1)); // 12 bytes: never streams
    gather_case::<[u8; 16], i64>(8, 1, Some([3; 16])); // 16 bytes
}

/// The sequential scatter: in index order, the last occurrence wins, negatives skipped.
fn scatter_reference<T: Pod>(src: &[T], idx: &[i64], dst: &mut [T], row_len: usize) {
    for (k, &i) in idx.iter().enumerate() {
        if let Ok(i) = usize::try_from(i) {
            dst[i * row_len..][..row_len].copy_from_slice(&src[k * row_len..][..row_len]);
        }
    }
}

/// How the scatter's indices are laid out.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// A permutation of all rows: no duplicates (the split-by-source path).
    Permutation,
    /// A permutation with some rows repeated close together (inside one task's share).
    LocalDuplicates,
    /// The first and the last index name the same row (two tasks share it: the fallback).
    FarDuplicate,
    /// A permutation with some indices negative (skipped).
    Negatives,
    /// Few indices into many rows (the bitmaps would cost too much: the fallback).
    Sparse,
}

fn scatter_case<T: Pod + Send + Sync, I: Index>(seed: u64, row_len: usize, pattern: Pattern) {
    let mut r = rng(seed);
    let row_bytes = row_len * std::mem::size_of::<T>();
    let rows = STREAM / row_bytes + 11;
    let mut idx: Vec<i64> = (0..rows as i64).collect();
    idx.shuffle(&mut r);
    match pattern {
        Pattern::Permutation => {}
        Pattern::LocalDuplicates => {
            for k in (8..idx.len()).step_by(997) {
                idx[k] = idx[k - 3];
            }
        }
        Pattern::FarDuplicate => {
            // A row named at the end of one task's share and again at the start of the next
            // (for 2 and 3 tasks): run in parallel, the earlier occurrence would be written
            // last.
            let n = idx.len();
            for cut in [n.div_ceil(2), n.div_ceil(3), 2 * n.div_ceil(3)] {
                idx[cut] = idx[cut - 1];
            }
        }
        Pattern::Negatives => {
            for k in (0..idx.len()).step_by(13) {
                idx[k] = -1;
            }
        }
        Pattern::Sparse => idx.truncate(1000),
    }
    let src: Vec<T> = random_vec(&mut r, idx.len() * row_len);
    let base: Vec<T> = random_vec(&mut r, rows * row_len);
    let mut want = base.clone();
    scatter_reference(&src, &idx, &mut want, row_len);
    let policy = if matches!(pattern, Pattern::Negatives) {
        ScatterPolicy::NegativeSkip
    } else {
        ScatterPolicy::Checked
    };
    let idx: Vec<I> = idx.iter().map(|&i| I::from_i64(i).unwrap()).collect();
    for pool in pools() {
        for shift in [0, 1] {
            let case = format!(
                "scatter {} x {row_len} {} {pattern:?} {} threads shift {shift}",
                std::any::type_name::<T>(),
                I::NAME,
                pool.current_num_threads()
            );
            let (mut d, range) = dest::<T>(rows * row_len, shift);
            d[range.clone()].copy_from_slice(&base);
            pool.install(|| {
                scatter_rows_into(&src, &idx, &mut d[range.clone()], &[rows, row_len], policy)
            })
            .expect(&case);
            assert_bits_eq(&d[range.clone()], &want, &case);
            assert_bits_eq(&d[..shift], &poisoned::<T>(shift), &case);
        }
    }
}

#[test]
fn scatter_large_by_source_and_fallback() {
    for (k, p) in [
        Pattern::Permutation,
        Pattern::LocalDuplicates,
        Pattern::FarDuplicate,
        Pattern::Negatives,
        Pattern::Sparse,
    ]
    .into_iter()
    .enumerate()
    {
        let s = 10 * k as u64;
        scatter_case::<f32, i64>(s + 1, 16, p); // 64-byte rows: full lines stream
        scatter_case::<u8, i32>(s + 2, 128, p); // 128-byte rows
        scatter_case::<u64, i64>(s + 3, 3, p); // 24-byte rows: never stream
    }
}

#[test]
fn pad_large_streams_copy_and_fill() {
    fn case<T: Pod + Send + Sync + PartialEq + std::fmt::Debug>(seed: u64, cols: usize, fill: T) {
        let mut r = rng(seed);
        let rows = STREAM / (cols * std::mem::size_of::<T>()) + 3;
        // Padding to twice the rows: the fill, too, is past the streaming threshold.
        let multiple = 2 * rows;
        let padded = multiple;
        let src: Vec<T> = random_vec(&mut r, rows * cols);
        let mut want = src.clone();
        want.extend(std::iter::repeat_n(fill, (padded - rows) * cols));
        for pool in pools() {
            for shift in [0, 1, 3] {
                let case = format!(
                    "pad {} x {cols} {} threads shift {shift}",
                    std::any::type_name::<T>(),
                    pool.current_num_threads()
                );
                let (mut d, range) = dest::<T>(padded * cols, shift);
                pool.install(|| {
                    pad_to_multiple_into(
                        &src,
                        &[rows, cols],
                        0,
                        multiple,
                        fill,
                        &mut d[range.clone()],
                    )
                })
                .expect(&case);
                assert_bits_eq(&d[range.clone()], &want, &case);
                assert_bits_eq(&d[..shift], &poisoned::<T>(shift), &case);
            }
        }
    }
    case::<u8>(1, 7, 0x5a);
    case::<u16>(2, 3, 0x1234);
    case::<f32>(3, 16, -1.5);
    case::<u64>(4, 5, 0x0102_0304_0506_0708);
    case::<[u32; 4]>(5, 1, [1, 2, 3, 4]);

    // A 16-byte element that is only 4-byte aligned, starting 4 bytes past a 16-byte boundary:
    // the streaming fill's pattern must stay in phase with the elements (it did not, once).
    let rows = STREAM / 16 + 3;
    let src: Vec<[u32; 4]> = (0..rows as u32).map(|k| [k, !k, k ^ 0x55, 7]).collect();
    let fill = [1u32, 2, 3, 4];
    let mut want = src.clone();
    want.resize(2 * rows, fill);
    for pool in pools() {
        let mut words = HostVec::<u32>::zeroed(8 * rows + 4).expect("host memory");
        let d: &mut [[u32; 4]] = bytemuck::cast_slice_mut(&mut words[1..1 + 8 * rows]);
        assert_eq!(d.as_ptr() as usize % 16, 4);
        pool.install(|| pad_to_multiple_into(&src, &[rows, 1], 0, 2 * rows, fill, d))
            .unwrap();
        let case = format!(
            "pad [u32; 4] at 4 mod 16, {} threads",
            pool.current_num_threads()
        );
        assert_bits_eq(d, &want, &case);
    }
}

#[test]
fn offsets_large_every_type_and_chunk_edge() {
    fn case<L: Index, O: Index>(seed: u64, n: usize) {
        let mut r = rng(seed);
        let lengths: Vec<L> = (0..n)
            .map(|_| L::from_i64(r.gen_range(0..300)).unwrap())
            .collect();
        let mut want = vec![O::default(); n + 1];
        let mut acc = 0i64;
        for (k, l) in lengths.iter().enumerate() {
            acc += l.to_i64();
            want[k + 1] = O::from_i64(acc).unwrap();
        }
        for pool in pools() {
            let case = format!(
                "offsets {}->{} n={n} {} threads",
                L::NAME,
                O::NAME,
                pool.current_num_threads()
            );
            let mut out = poisoned::<O>(n + 1);
            pool.install(|| prefix_sum_offsets_into(&lengths, &mut out))
                .expect(&case);
            assert_bits_eq(&out, &want, &case);
            // The output one element off its allocation's alignment: the streaming writer's
            // ordinary head before the first 64-byte line moves.
            let mut out = poisoned::<O>(n + 2);
            pool.install(|| prefix_sum_offsets_into(&lengths, &mut out[1..]))
                .expect(&case);
            assert_bits_eq(&out[1..], &want, &case);
            assert_bits_eq(&out[..1], &poisoned::<O>(1), &case);
        }
    }
    // 65,536 i32 or 32,768 i64 lengths fill one chunk: around it, and far past it; 2,100,003
    // offsets are 8.4 MB of i32 and 16.8 MB of i64, past the 8 MiB from which the offsets are
    // written with streaming stores.
    for (k, n) in [
        32_767usize,
        32_768,
        32_769,
        65_535,
        65_536,
        65_537,
        1_000_003,
        2_100_003,
    ]
    .into_iter()
    .enumerate()
    {
        let s = 100 + 4 * k as u64;
        case::<i32, i32>(s, n);
        case::<i32, i64>(s + 1, n);
        case::<i64, i32>(s + 2, n);
        case::<i64, i64>(s + 3, n);
    }
}

#[test]
fn offsets_large_sums_are_exact_near_the_limits() {
    // Lengths whose 32-bit halves both carry: the summaries add the halves separately.
    let n = 100_000;
    let big = (i64::MAX / n as i64) - 7;
    let lengths = vec![big; n];
    let mut out = vec![0i64; n + 1];
    prefix_sum_offsets_into(&lengths, &mut out).unwrap();
    assert_eq!(out[n], big * n as i64);
    assert_eq!(out[n / 2], big * (n / 2) as i64);
    // One more pushes the total past i64::MAX: reported at the position a loop would hit.
    let mut lengths = lengths;
    lengths[n - 1] = i64::MAX / 2;
    let mut out = poisoned::<i64>(n + 1);
    let err = prefix_sum_offsets_into(&lengths, &mut out).unwrap_err();
    assert_eq!(
        err,
        cpugpu::Error::OffsetOverflow {
            op: cpugpu::Op::PrefixSumOffsets,
            position: n - 1,
            limit: i64::MAX
        }
    );
    assert_bits_eq(&out, &poisoned::<i64>(n + 1), "untouched on overflow");
}

#[test]
fn host_vec_is_aligned_zeroed_and_huge_from_4_mib() {
    for (len, align) in [
        (1usize, 64usize),
        (1000, 64),
        ((4 << 20) / 8, 2 << 20),
        (5 << 20, 2 << 20),
    ] {
        let v = HostVec::<u64>::zeroed(len).unwrap();
        assert_eq!(v.len(), len);
        assert_eq!(v.as_ptr() as usize % align, 0, "len {len}");
        assert!(v.iter().all(|&x| x == 0), "len {len}");
    }
    assert!(HostVec::<u8>::zeroed(0).unwrap().is_empty());
}
