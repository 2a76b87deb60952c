//! Adversarial inputs: a seeded, generated matrix of bad arguments and bad data for every
//! operation, element width (1, 2, 4, 8 and 16 bytes) and index / offset type (`i32`, `i64`).
//!
//! Every case is run through the API batching code calls (`Device`, on each backend of
//! [`backends`]) and through the host slice functions (`cpugpu::host`), and must
//!
//! * fail with the typed error an independent sequential oracle predicts (exact equality, so
//!   the position, value and limit are the first bad ones: with several bad positions the
//!   first is named, also when the scan runs in parallel chunks);
//! * name the operation: `Error::op()` is the operation and the message starts with its name
//!   (and quotes the position);
//! * write nothing: every destination is poisoned (or random) before the call and read back
//!   after it.
//!
//! On an asynchronous backend errors the kernels find in the data come back from
//! `Device::synchronize`, argument errors from the call itself; [`settled`] takes both, and the
//! destination is read back after it, so the same assertions hold on every backend.
//!
//! Bad values are drawn from the boundaries (`i32::MIN`/`MAX`, `i64::MIN`/`MAX`, the bound,
//! the bound + 1, -1) and at random; good values include the boundaries that must be accepted
//! (0, bound - 1). Bad positions are the first, the middle, the last, or several at random. A
//! few cases per type are large enough for the parallel host paths (above `PAR_MIN_BYTES`).
//! Each generator has its own fixed seed, and every assertion message names the case.

mod common;

use bytemuck::Pod;
use common::{poisoned, random_vec, rng};
use cpugpu::ops::PAR_MIN_BYTES;
use cpugpu::{
    host, BackendKind, Device, DeviceBuffer, DeviceView, DeviceViewMut, Element, Error,
    GatherPolicy, Index, Offset, Op, ScatterPolicy, Shape,
};
use half::f16;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// The backends to run every case on: the host backend, plus [`Device::auto`] when it is not
/// the host (a GPU with `--features cuda`).
fn backends() -> Vec<Device> {
    let mut all = vec![Device::host()];
    let auto = Device::auto();
    if auto.kind() != BackendKind::Host {
        all.push(auto);
    }
    all
}

/// `r` once `dev`'s work has finished: an error returned by the call itself, else the first
/// error the device found in the data (reported by `synchronize`), else the value.
fn settled<T>(dev: &Device, r: cpugpu::Result<T>) -> cpugpu::Result<T> {
    let v = r?;
    dev.synchronize()?;
    Ok(v)
}

/// The position an error names, for the variants that name one.
fn position_of(e: &Error) -> Option<usize> {
    match e {
        Error::IndexOutOfBounds { position, .. }
        | Error::NegativeLength { position, .. }
        | Error::OffsetOverflow { position, .. }
        | Error::OffsetsNotMonotonic { position, .. }
        | Error::OffsetOutOfRange { position, .. }
        | Error::BlockOutOfRange { position, .. }
        | Error::NegativeBlock { position, .. }
        | Error::WindowOutOfRange { position, .. }
        | Error::ValueOverflow { position, .. } => Some(*position),
        _ => None,
    }
}

thread_local! {
    /// Failing calls checked by [`assert_error`] on this test's thread.
    static CHECKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Reports how many failing calls this test checked, and fails when the generator produced
/// fewer than `at_least` (a generator that skips its cases must not pass quietly).
fn report(test: &str, at_least: usize) {
    let n = CHECKED.with(|c| c.get());
    eprintln!("{test}: {n} failing calls checked");
    assert!(n >= at_least, "{test}: only {n} failing calls checked");
}

/// `got` is exactly `want`, and its message names the operation (and the position).
#[track_caller]
fn assert_error<R>(case: &str, got: cpugpu::Result<R>, want: &Error) {
    CHECKED.with(|c| c.set(c.get() + 1));
    let err = match got {
        Ok(_) => panic!("{case}: succeeded, expected {want:?}"),
        Err(e) => e,
    };
    assert_eq!(&err, want, "{case}");
    assert_eq!(err.op(), want.op(), "{case}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: ", want.op().name())),
        "{case}: the message does not name the operation: {msg}"
    );
    if let Some(p) = position_of(want) {
        assert!(
            msg.contains(&format!("[{p}]")),
            "{case}: the message does not name position {p}: {msg}"
        );
    }
}

/// Bitwise equality of a destination with what it held before a failing call.
#[track_caller]
fn assert_untouched<T: Pod>(case: &str, what: &str, now: &[T], before: &[T]) {
    assert_eq!(now.len(), before.len(), "{case}: {what} changed length");
    let (a, b): (&[u8], &[u8]) = (bytemuck::cast_slice(now), bytemuck::cast_slice(before));
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{case}: {what} was written (byte {i}) by a call that failed");
    }
}

/// A view's contents, read back to the host (after [`settled`]).
fn read<T: Element>(v: DeviceView<'_, T>) -> Vec<T> {
    let mut out = vec![T::zeroed(); v.len()];
    v.copy_to_host(&mut out).unwrap();
    out
}

fn up<T: Element>(dev: &Device, data: &[T], shape: &[usize]) -> DeviceBuffer<T> {
    dev.upload(data, shape).unwrap()
}

/// `I::MIN` as `i64`.
fn min_of<I: Index>() -> i64 {
    if I::MAX == i64::from(i32::MAX) {
        i64::from(i32::MIN)
    } else {
        i64::MIN
    }
}

fn to_idx<I: Index>(v: &[i64]) -> Vec<I> {
    v.iter()
        .map(|&x| I::from_i64(x).expect("generated values fit the type"))
        .collect()
}

/// Where the bad values go.
#[derive(Clone, Copy, Debug)]
enum Where {
    First,
    Middle,
    Last,
    /// Two to four positions at random; the first of them must be named.
    Several,
}

const WHERE: [Where; 4] = [Where::First, Where::Middle, Where::Last, Where::Several];

/// Sorted, distinct positions in `0..n` (n > 0).
fn positions(rng: &mut SmallRng, n: usize, w: Where) -> Vec<usize> {
    let mut p = match w {
        Where::First => vec![0],
        Where::Middle => vec![n / 2],
        Where::Last => vec![n - 1],
        Where::Several => {
            let k = rng.gen_range(2..=4).min(n);
            rand::seq::index::sample(rng, n, k).into_vec()
        }
    };
    p.sort_unstable();
    p
}

/// Index counts: small, odd, and one above the parallel threshold for `I`.
fn index_counts<I>() -> [usize; 7] {
    [
        1,
        2,
        3,
        17,
        64,
        257,
        2 * PAR_MIN_BYTES / std::mem::size_of::<I>() + 3,
    ]
}

/// Runs `$body::<T, I>(seed)` for one element type of each width (1, 2, 4, 8 and 16 bytes,
/// 16 both 16-aligned and 4-aligned) and both index types, each with its own seed.
macro_rules! for_widths_and_index_types {
    ($body:ident, $seed:expr) => {{
        let s: u64 = $seed;
        $body::<u8, i32>(s + 1);
        $body::<u8, i64>(s + 2);
        $body::<f16, i32>(s + 3);
        $body::<f16, i64>(s + 4);
        $body::<f32, i32>(s + 5);
        $body::<f32, i64>(s + 6);
        $body::<f64, i32>(s + 7);
        $body::<f64, i64>(s + 8);
        $body::<u128, i32>(s + 9);
        $body::<u128, i64>(s + 10);
        $body::<[u32; 4], i32>(s + 11);
        $body::<[u32; 4], i64>(s + 12);
    }};
}

fn name<T>() -> &'static str {
    std::any::type_name::<T>()
}

// ---------------------------------------------------------------------------------------------
// Indices (gather, scatter)
// ---------------------------------------------------------------------------------------------

/// Index values outside `0..bound` that fit `I` (negatives only when they are not allowed).
fn bad_index_values<I: Index>(rng: &mut SmallRng, bound: usize, allow_negative: bool) -> Vec<i64> {
    let b = bound as i64;
    let mut v = vec![b, I::MAX, rng.gen_range(b..=I::MAX)];
    if b < I::MAX {
        v.push(b + 1);
    }
    if !allow_negative {
        v.extend([-1, min_of::<I>(), rng.gen_range(min_of::<I>()..0)]);
    }
    v
}

/// Index values that must be accepted: 0 and bound - 1 among them (negatives when allowed).
fn good_index_values(rng: &mut SmallRng, bound: usize, allow_negative: bool, min: i64) -> Vec<i64> {
    let mut v = Vec::new();
    if bound > 0 {
        let b = bound as i64;
        v.extend([0, b - 1, rng.gen_range(0..b)]);
    }
    if allow_negative {
        v.extend([-1, min]);
    }
    v
}

/// `n` indices with bad values at `at` (all bad when no value is good), and the first bad
/// position with its value.
fn index_case<I: Index>(
    rng: &mut SmallRng,
    n: usize,
    bound: usize,
    allow_negative: bool,
    at: &[usize],
) -> (Vec<i64>, usize, i64) {
    let bad = bad_index_values::<I>(rng, bound, allow_negative);
    let good = good_index_values(rng, bound, allow_negative, min_of::<I>());
    let mut idx: Vec<i64> = (0..n)
        .map(|_| *good.choose(rng).unwrap_or(&bad[0]))
        .collect();
    for &p in at {
        idx[p] = *bad.choose(rng).unwrap();
    }
    // The oracle: the obvious sequential scan.
    let first = idx
        .iter()
        .position(|&v| {
            if v < 0 {
                !allow_negative
            } else {
                v as u64 >= bound as u64
            }
        })
        .expect("a bad index was planted");
    (idx.clone(), first, idx[first])
}

fn gather_matrix<T: Element, I: Index>(seed: u64) {
    let mut rng = rng(seed);
    let devs = backends();
    for (k, &n) in index_counts::<I>().iter().enumerate() {
        let large = k == index_counts::<I>().len() - 1;
        for (w, &at) in WHERE.iter().enumerate() {
            // One large case per type pair (a different placement each time).
            if large && w != (seed as usize) % WHERE.len() {
                continue;
            }
            let rows = if rng.gen_bool(0.1) {
                0
            } else {
                rng.gen_range(1..40)
            };
            let row_len = if large { 1 } else { rng.gen_range(1..4) };
            let fill: T = random_vec(&mut rng, 1)[0];
            let policy = if rng.gen_bool(0.5) {
                GatherPolicy::Checked
            } else {
                GatherPolicy::NegativeFill(fill)
            };
            let allow = matches!(policy, GatherPolicy::NegativeFill(_));
            let pos = positions(&mut rng, n, at);
            let (idx, position, index) = index_case::<I>(&mut rng, n, rows, allow, &pos);
            let case = format!(
                "gather {}/{} seed {seed} n={n} rows={rows} {at:?} {pos:?} {}",
                name::<T>(),
                I::NAME,
                if allow { "NegativeFill" } else { "Checked" }
            );
            let want = Error::IndexOutOfBounds {
                op: Op::GatherRows,
                position,
                index,
                bound: rows,
            };
            let src: Vec<T> = random_vec(&mut rng, rows * row_len);
            let ids: Vec<I> = to_idx(&idx);
            let shape = [rows, row_len];
            let before = poisoned::<T>(n * row_len);

            let mut dst = before.clone();
            let r = host::gather_rows_into(&src, &shape, &ids, &mut dst, policy);
            assert_error(&format!("{case} host::gather_rows_into"), r, &want);
            assert_untouched(&case, "dst", &dst, &before);
            let r = host::gather_rows(&src, &shape, &ids, policy);
            assert_error(&format!("{case} host::gather_rows"), r, &want);

            for dev in &devs {
                let c = format!("{case} on {}", dev.kind());
                let (s, i) = (up(dev, &src, &shape), up(dev, &ids, &[n]));
                let mut d = up(dev, &before, &[n, row_len]);
                let r = dev.gather_rows_into(s.view(), i.view(), d.view_mut(), policy);
                assert_error(&format!("{c} gather_rows_into"), settled(dev, r), &want);
                assert_untouched(&c, "dst", &read(d.view()), &before);
                let r = dev.gather_rows(s.view(), i.view(), policy);
                assert_error(&format!("{c} gather_rows"), settled(dev, r), &want);
            }
        }
    }
}

fn scatter_matrix<T: Element, I: Index>(seed: u64) {
    let mut rng = rng(seed);
    let devs = backends();
    for (k, &n) in index_counts::<I>().iter().enumerate() {
        let large = k == index_counts::<I>().len() - 1;
        for (w, &at) in WHERE.iter().enumerate() {
            if large && w != (seed as usize) % WHERE.len() {
                continue;
            }
            let rows = if rng.gen_bool(0.1) {
                0
            } else {
                rng.gen_range(1..40)
            };
            let row_len = if large { 1 } else { rng.gen_range(1..4) };
            let policy = if rng.gen_bool(0.5) {
                ScatterPolicy::Checked
            } else {
                ScatterPolicy::NegativeSkip
            };
            let allow = policy == ScatterPolicy::NegativeSkip;
            let pos = positions(&mut rng, n, at);
            let (idx, position, index) = index_case::<I>(&mut rng, n, rows, allow, &pos);
            let case = format!(
                "scatter {}/{} seed {seed} n={n} rows={rows} {at:?} {pos:?} {policy:?}",
                name::<T>(),
                I::NAME,
            );
            let want = Error::IndexOutOfBounds {
                op: Op::ScatterRows,
                position,
                index,
                bound: rows,
            };
            let src: Vec<T> = random_vec(&mut rng, n * row_len);
            let ids: Vec<I> = to_idx(&idx);
            let shape = [rows, row_len];
            let before: Vec<T> = random_vec(&mut rng, rows * row_len);

            let mut dst = before.clone();
            let r = host::scatter_rows_into(&src, &ids, &mut dst, &shape, policy);
            assert_error(&format!("{case} host::scatter_rows_into"), r, &want);
            assert_untouched(&case, "dst", &dst, &before);

            for dev in &devs {
                let c = format!("{case} on {}", dev.kind());
                let (s, i) = (up(dev, &src, &[n, row_len]), up(dev, &ids, &[n]));
                let mut d = up(dev, &before, &shape);
                let r = dev.scatter_rows_into(s.view(), i.view(), d.view_mut(), policy);
                assert_error(&format!("{c} scatter_rows_into"), settled(dev, r), &want);
                assert_untouched(&c, "dst", &read(d.view()), &before);
            }
        }
    }
}

#[test]
fn gather_bad_indices_every_width_and_index_type() {
    for_widths_and_index_types!(gather_matrix, 100);
    report("gather_bad_indices_every_width_and_index_type", 1200);
}

#[test]
fn scatter_bad_indices_every_width_and_index_type() {
    for_widths_and_index_types!(scatter_matrix, 200);
    report("scatter_bad_indices_every_width_and_index_type", 600);
}

/// Shapes that do not agree: typed errors at the call, nothing written.
fn gather_scatter_shapes<T: Element, I: Index>(seed: u64) {
    let mut rng = rng(seed);
    let (rows, row_len, n) = (5usize, 3usize, 4usize);
    let src: Vec<T> = random_vec(&mut rng, rows * row_len);
    let ids: Vec<I> = to_idx(&[4, 0, 2, 1]);
    let case = format!("shapes {}/{} seed {seed}", name::<T>(), I::NAME);
    for extra in [1usize, 2] {
        // A destination one or two rows too long (host slices: a length mismatch).
        let before = poisoned::<T>((n + extra) * row_len);
        let mut dst = before.clone();
        let r = host::gather_rows_into(&src, &[rows, row_len], &ids, &mut dst, Default::default());
        let want = Error::LengthMismatch {
            op: Op::GatherRows,
            what: "dst.len()",
            expected: n * row_len,
            actual: (n + extra) * row_len,
        };
        assert_error(&case, r, &want);
        assert_untouched(&case, "dst", &dst, &before);
        // Scatter from a source one or two rows too long.
        let long: Vec<T> = random_vec(&mut rng, (n + extra) * row_len);
        let before: Vec<T> = random_vec(&mut rng, rows * row_len);
        let mut dst = before.clone();
        let r =
            host::scatter_rows_into(&long, &ids, &mut dst, &[rows, row_len], Default::default());
        let want = Error::LengthMismatch {
            op: Op::ScatterRows,
            what: "src.len()",
            expected: n * row_len,
            actual: (n + extra) * row_len,
        };
        assert_error(&case, r, &want);
        assert_untouched(&case, "dst", &dst, &before);

        for dev in backends() {
            let c = format!("{case} on {}", dev.kind());
            let (s, i) = (up(&dev, &src, &[rows, row_len]), up(&dev, &ids, &[n]));
            let before = poisoned::<T>((n + extra) * row_len);
            let mut d = up(&dev, &before, &[n + extra, row_len]);
            let r = dev.gather_rows_into(s.view(), i.view(), d.view_mut(), Default::default());
            let want = Error::ShapeMismatch {
                op: Op::GatherRows,
                what: "dst's shape",
                expected: Box::new(Shape::new(&[n, row_len]).unwrap()),
                actual: Box::new(Shape::new(&[n + extra, row_len]).unwrap()),
            };
            assert_error(&c, settled(&dev, r), &want);
            assert_untouched(&c, "dst", &read(d.view()), &before);

            let l = up(&dev, &long, &[n + extra, row_len]);
            let before: Vec<T> = random_vec(&mut rng, rows * row_len);
            let mut d = up(&dev, &before, &[rows, row_len]);
            let r = dev.scatter_rows_into(l.view(), i.view(), d.view_mut(), Default::default());
            let want = Error::ShapeMismatch {
                op: Op::ScatterRows,
                what: "src's shape",
                expected: Box::new(Shape::new(&[n, row_len]).unwrap()),
                actual: Box::new(Shape::new(&[n + extra, row_len]).unwrap()),
            };
            assert_error(&c, settled(&dev, r), &want);
            assert_untouched(&c, "dst", &read(d.view()), &before);
        }
    }
}

#[test]
fn gather_and_scatter_shape_errors_every_width_and_index_type() {
    for_widths_and_index_types!(gather_scatter_shapes, 300);
    report(
        "gather_and_scatter_shape_errors_every_width_and_index_type",
        96,
    );
}

// ---------------------------------------------------------------------------------------------
// Prefix-sum offsets
// ---------------------------------------------------------------------------------------------

/// What goes wrong at a planted position.
#[derive(Clone, Copy, Debug)]
enum LengthFault {
    Negative,
    Overflow,
}

/// The oracle: a left-to-right loop in `i128`.
fn offsets_oracle(lengths: &[i64], limit: i64) -> Option<Error> {
    let op = Op::PrefixSumOffsets;
    let mut acc: i128 = 0;
    for (position, &v) in lengths.iter().enumerate() {
        if v < 0 {
            return Some(Error::NegativeLength {
                op,
                position,
                value: v,
            });
        }
        acc += i128::from(v);
        if acc > i128::from(limit) {
            return Some(Error::OffsetOverflow {
                op,
                position,
                limit,
            });
        }
    }
    None
}

/// Plants an overflow at `p` (or, when one length cannot reach past the limit from the prefix,
/// at `p + 1`). False when the types cannot overflow (`i32` lengths, `i64` offsets).
fn plant_overflow<L: Index, O: Offset>(rng: &mut SmallRng, lengths: &mut [i64], p: usize) -> bool {
    let prefix: i128 = lengths[..p].iter().map(|&v| i128::from(v.max(0))).sum();
    let need = i128::from(O::MAX) - prefix + 1;
    if need <= i128::from(L::MAX) {
        let need = i64::try_from(need.max(0)).unwrap();
        lengths[p] = rng.gen_range(need..=L::MAX);
        true
    } else if i128::from(L::MAX) + prefix == i128::from(O::MAX) && p + 1 < lengths.len() {
        // Same-width types from a zero prefix: MAX reaches the limit exactly, the next positive
        // length passes it.
        lengths[p] = L::MAX;
        lengths[p + 1] = rng.gen_range(1..=L::MAX);
        true
    } else {
        false
    }
}

fn offsets_matrix<L: Index, O: Offset>(seed: u64) {
    let mut rng = rng(seed);
    let devs = backends();
    let counts = [
        1,
        2,
        3,
        17,
        257,
        2 * PAR_MIN_BYTES / std::mem::size_of::<L>() + 5,
    ];
    for (k, &n) in counts.iter().enumerate() {
        let large = k == counts.len() - 1;
        for (w, &at) in WHERE.iter().enumerate() {
            if large && w % 2 == 1 {
                continue;
            }
            for fault in [LengthFault::Negative, LengthFault::Overflow] {
                let mut lengths: Vec<i64> = (0..n).map(|_| rng.gen_range(0..=6)).collect();
                let pos = positions(&mut rng, n, at);
                let mut planted = false;
                for &p in &pos {
                    // Several positions mix the two faults.
                    let f = if pos.len() > 1 && rng.gen_bool(0.5) {
                        LengthFault::Negative
                    } else {
                        fault
                    };
                    planted |= match f {
                        LengthFault::Negative => {
                            lengths[p] = *[-1, min_of::<L>(), rng.gen_range(min_of::<L>()..0)]
                                .choose(&mut rng)
                                .unwrap();
                            true
                        }
                        LengthFault::Overflow => plant_overflow::<L, O>(&mut rng, &mut lengths, p),
                    };
                }
                let Some(want) = offsets_oracle(&lengths, O::MAX) else {
                    assert!(!planted, "a planted fault was not found by the oracle");
                    continue; // this type pair cannot overflow (i32 lengths, i64 offsets)
                };
                let case = format!(
                    "offsets {}->{} seed {seed} n={n} {at:?} {pos:?} {fault:?}",
                    L::NAME,
                    O::NAME
                );
                let lens: Vec<L> = to_idx(&lengths);
                let before = poisoned::<O>(n + 1);

                let mut out = before.clone();
                let r = host::prefix_sum_offsets_into(&lens, &mut out);
                assert_error(&format!("{case} host::prefix_sum_offsets_into"), r, &want);
                assert_untouched(&case, "offsets", &out, &before);
                let r = host::prefix_sum_offsets::<L, O>(&lens);
                assert_error(&format!("{case} host::prefix_sum_offsets"), r, &want);

                for dev in &devs {
                    let c = format!("{case} on {}", dev.kind());
                    let l = up(dev, &lens, &[n]);
                    let mut o = up(dev, &before, &[n + 1]);
                    let r = dev.prefix_sum_offsets_into(l.view(), o.view_mut());
                    assert_error(
                        &format!("{c} prefix_sum_offsets_into"),
                        settled(dev, r),
                        &want,
                    );
                    assert_untouched(&c, "offsets", &read(o.view()), &before);
                    let r = dev.prefix_sum_offsets::<L, O>(l.view());
                    assert_error(&format!("{c} prefix_sum_offsets"), settled(dev, r), &want);
                }
            }
        }
        // An output of the wrong length, with good lengths.
        let lens: Vec<L> = (0..n)
            .map(|_| L::from_i64(rng.gen_range(0..=6)).unwrap())
            .collect();
        for m in [n, n + 2] {
            let case = format!("offsets {}->{} seed {seed} n={n} out={m}", L::NAME, O::NAME);
            let want = Error::LengthMismatch {
                op: Op::PrefixSumOffsets,
                what: "offsets.len()",
                expected: n + 1,
                actual: m,
            };
            let before = poisoned::<O>(m);
            let mut out = before.clone();
            assert_error(&case, host::prefix_sum_offsets_into(&lens, &mut out), &want);
            assert_untouched(&case, "offsets", &out, &before);
            for dev in &devs {
                let c = format!("{case} on {}", dev.kind());
                let l = up(dev, &lens, &[n]);
                let mut o = up(dev, &before, &[m]);
                let r = dev.prefix_sum_offsets_into(l.view(), o.view_mut());
                assert_error(&c, settled(dev, r), &want);
                assert_untouched(&c, "offsets", &read(o.view()), &before);
            }
        }
    }
}

#[test]
fn offsets_bad_lengths_every_length_and_offset_type() {
    offsets_matrix::<i32, i32>(401);
    offsets_matrix::<i32, i64>(402);
    offsets_matrix::<i64, i32>(403);
    offsets_matrix::<i64, i64>(404);
    report("offsets_bad_lengths_every_length_and_offset_type", 692);
}

// ---------------------------------------------------------------------------------------------
// Split
// ---------------------------------------------------------------------------------------------

/// The oracle: offsets checked left to right, out of range before non-monotonic.
fn split_oracle(offsets: &[i64], len: usize) -> Option<Error> {
    let op = Op::Split;
    let mut previous: Option<i64> = None;
    for (position, &value) in offsets.iter().enumerate() {
        if value < 0 || value as u64 > len as u64 {
            return Some(Error::OffsetOutOfRange {
                op,
                position,
                value,
                len,
            });
        }
        if let Some(previous) = previous.filter(|&p| value < p) {
            return Some(Error::OffsetsNotMonotonic {
                op,
                position,
                previous,
                value,
            });
        }
        previous = Some(value);
    }
    None
}

/// Non-decreasing offsets in `0..=len` with bad ones planted at `at`.
fn split_case<O: Offset>(rng: &mut SmallRng, k: usize, len: usize, at: &[usize]) -> Vec<i64> {
    let mut offs: Vec<i64> = (0..k).map(|_| rng.gen_range(0..=len as i64)).collect();
    offs.sort_unstable();
    for &p in at {
        let prev = if p > 0 { offs[p - 1] } else { 0 };
        let l = len as i64;
        let mut choices = vec![
            -1,
            min_of::<O>(),
            O::MAX,
            rng.gen_range(min_of::<O>()..0),
            rng.gen_range(l + 1..=O::MAX),
        ];
        if l < O::MAX {
            choices.push(l + 1);
        }
        if prev > 0 {
            choices.push(rng.gen_range(0..prev)); // smaller than its predecessor
            choices.push(prev - 1);
        }
        offs[p] = *choices.choose(rng).unwrap();
    }
    offs
}

/// The zero-copy views `out` held before a failing `split_into`: same count, same lengths and
/// addresses.
fn view_marks<T: Element>(out: &[DeviceView<'_, T>]) -> Vec<(usize, usize)> {
    out.iter()
        .map(|v| {
            (
                v.len(),
                v.as_host_slice().map_or(0, |s| s.as_ptr() as usize),
            )
        })
        .collect()
}

fn split_matrix<T: Element, O: Offset>(seed: u64) {
    let mut rng = rng(seed);
    let devs = backends();
    let counts = [
        1,
        2,
        3,
        17,
        65,
        2 * PAR_MIN_BYTES / std::mem::size_of::<O>() + 7,
    ];
    for (k, &n) in counts.iter().enumerate() {
        let large = k == counts.len() - 1;
        for (w, &at) in WHERE.iter().enumerate() {
            if large && w % 2 == 0 {
                continue;
            }
            let len = if rng.gen_bool(0.1) {
                0
            } else {
                rng.gen_range(1..50)
            };
            let pos = positions(&mut rng, n, at);
            let offs = split_case::<O>(&mut rng, n, len, &pos);
            let want = split_oracle(&offs, len).expect("a bad offset was planted");
            let case = format!(
                "split {}/{} seed {seed} offsets={n} len={len} {at:?} {pos:?}",
                name::<T>(),
                O::NAME
            );
            let data: Vec<T> = random_vec(&mut rng, len);
            let offsets: Vec<O> = to_idx(&offs);
            // Outputs for split_copy_into: offsets are validated first, so any lengths do.
            let n_outs = n.saturating_sub(1).min(8);

            let r = host::split(&data, &offsets);
            assert_error(&format!("{case} host::split"), r, &want);
            let keep = [T::zeroed(); 3];
            let mut out: Vec<&[T]> = vec![&keep[..2], &keep[1..]];
            let r = host::split_into(&data, &offsets, &mut out);
            assert_error(&format!("{case} host::split_into"), r, &want);
            let marks: Vec<(*const T, usize)> = out.iter().map(|s| (s.as_ptr(), s.len())).collect();
            assert_eq!(
                marks,
                [(keep.as_ptr(), 2), (keep[1..].as_ptr(), 2)],
                "{case}: out untouched"
            );

            for dev in &devs {
                let c = format!("{case} on {}", dev.kind());
                let d = up(dev, &data, &[len]);
                let r = dev.split(d.view(), &offsets);
                assert_error(&format!("{c} split"), settled(dev, r), &want);
                let mut out = vec![d.view(), d.view()];
                let marks = view_marks(&out);
                let r = dev.split_into(d.view(), &offsets, &mut out);
                assert_error(&format!("{c} split_into"), settled(dev, r), &want);
                assert_eq!(view_marks(&out), marks, "{c}: out untouched");

                let before = poisoned::<T>(3);
                let mut bufs: Vec<_> = (0..n_outs).map(|_| up(dev, &before, &[3])).collect();
                let mut views: Vec<DeviceViewMut<'_, T>> =
                    bufs.iter_mut().map(|b| b.view_mut()).collect();
                let r = dev.split_copy_into(d.view(), &offsets, &mut views);
                assert_error(&format!("{c} split_copy_into"), settled(dev, r), &want);
                drop(views);
                for (j, b) in bufs.iter().enumerate() {
                    assert_untouched(&c, &format!("outs[{j}]"), &read(b.view()), &before);
                }
            }
        }
    }
    // split_copy_into with good offsets and outputs that do not fit: the k + 1-th output's
    // length is refused before the first k are written.
    let len = 24usize;
    let data: Vec<T> = random_vec(&mut rng, len);
    let offs: Vec<O> = to_idx(&[0, 3, 3, 10, 24]);
    let seg = [3usize, 0, 7, 14];
    for bad in 0..seg.len() {
        let mut lens = seg.to_vec();
        lens[bad] += 1;
        let case = format!(
            "split_copy_into {}/{} outs[{bad}] too long",
            name::<T>(),
            O::NAME
        );
        let want = Error::LengthMismatch {
            op: Op::Split,
            what: "outs[i].len()",
            expected: seg[bad],
            actual: seg[bad] + 1,
        };
        for dev in &devs {
            let c = format!("{case} on {}", dev.kind());
            let d = up(dev, &data, &[len]);
            let mut bufs: Vec<_> = lens
                .iter()
                .map(|&l| up(dev, &poisoned::<T>(l), &[l]))
                .collect();
            let mut views: Vec<_> = bufs.iter_mut().map(|b| b.view_mut()).collect();
            let r = dev.split_copy_into(d.view(), &offs, &mut views);
            assert_error(&c, settled(dev, r), &want);
            drop(views);
            for (j, (b, &l)) in bufs.iter().zip(&lens).enumerate() {
                assert_untouched(
                    &c,
                    &format!("outs[{j}]"),
                    &read(b.view()),
                    &poisoned::<T>(l),
                );
            }
            // One output too few.
            let mut bufs: Vec<_> = seg[..3]
                .iter()
                .map(|&l| up(dev, &poisoned::<T>(l), &[l]))
                .collect();
            let mut views: Vec<_> = bufs.iter_mut().map(|b| b.view_mut()).collect();
            let r = dev.split_copy_into(d.view(), &offs, &mut views);
            let want = Error::LengthMismatch {
                op: Op::Split,
                what: "outs.len()",
                expected: 4,
                actual: 3,
            };
            assert_error(&c, settled(dev, r), &want);
            drop(views);
            for (j, (b, &l)) in bufs.iter().zip(&seg).enumerate() {
                assert_untouched(
                    &c,
                    &format!("outs[{j}]"),
                    &read(b.view()),
                    &poisoned::<T>(l),
                );
            }
        }
    }
    // No offsets at all.
    let want = Error::LengthMismatch {
        op: Op::Split,
        what: "offsets.len()",
        expected: 1,
        actual: 0,
    };
    assert_error(
        "split with no offsets",
        host::split::<T, O>(&data, &[]),
        &want,
    );
}

#[test]
fn split_bad_offsets_every_width_and_offset_type() {
    for_widths_and_index_types!(split_matrix, 500);
    report("split_bad_offsets_every_width_and_offset_type", 1428);
}

// ---------------------------------------------------------------------------------------------
// Flatten
// ---------------------------------------------------------------------------------------------

fn flatten_matrix<T: Element, O: Offset>(seed: u64) {
    let mut rng = rng(seed);
    let devs = backends();
    // Output lengths that do not fit, with arrays of random lengths.
    for n in [0usize, 1, 2, 9, 40] {
        let lens: Vec<usize> = (0..n).map(|_| rng.gen_range(0..20)).collect();
        let total: usize = lens.iter().sum();
        let arrays: Vec<Vec<T>> = lens.iter().map(|&l| random_vec(&mut rng, l)).collect();
        let cases = [
            // (offsets length, dst length, the error)
            (
                n,
                total,
                Error::LengthMismatch {
                    op: Op::Flatten,
                    what: "offsets.len()",
                    expected: n + 1,
                    actual: n,
                },
            ),
            (
                n + 2,
                total,
                Error::LengthMismatch {
                    op: Op::Flatten,
                    what: "offsets.len()",
                    expected: n + 1,
                    actual: n + 2,
                },
            ),
            (
                n + 1,
                total + 1,
                Error::LengthMismatch {
                    op: Op::Flatten,
                    what: "dst.len()",
                    expected: total,
                    actual: total + 1,
                },
            ),
        ];
        for (n_offs, n_dst, want) in cases {
            let case = format!(
                "flatten {}/{} seed {seed} arrays={n} offsets={n_offs} dst={n_dst}",
                name::<T>(),
                O::NAME
            );
            let (dst_before, offs_before) = (poisoned::<T>(n_dst), poisoned::<O>(n_offs));
            let (mut dst, mut offs) = (dst_before.clone(), offs_before.clone());
            let r = host::flatten_into(&arrays, &mut dst, &mut offs);
            assert_error(&format!("{case} host::flatten_into"), r, &want);
            assert_untouched(&case, "dst", &dst, &dst_before);
            assert_untouched(&case, "offsets", &offs, &offs_before);
            for dev in &devs {
                let c = format!("{case} on {}", dev.kind());
                let bufs: Vec<_> = arrays.iter().map(|a| up(dev, a, &[a.len()])).collect();
                let views: Vec<_> = bufs.iter().map(|b| b.view()).collect();
                let mut d = up(dev, &dst_before, &[n_dst]);
                let mut o = up(dev, &offs_before, &[n_offs]);
                let r = dev.flatten_into(&views, d.view_mut(), o.view_mut());
                assert_error(&c, settled(dev, r), &want);
                assert_untouched(&c, "dst", &read(d.view()), &dst_before);
                assert_untouched(&c, "offsets", &read(o.view()), &offs_before);
            }
        }
    }
    // Offsets past O::MAX: many views of one buffer (2^16 elements) add up to more than
    // i32::MAX elements without the memory. The overflow lands at the last array or in the
    // middle of the list.
    if O::MAX > i64::from(i32::MAX) {
        return; // i64 offsets cannot overflow with any memory a test can have
    }
    const BASE: usize = 1 << 16;
    let base: Vec<T> = random_vec(&mut rng, BASE);
    for extra in [0usize, 1, 1000] {
        let mut lens = Vec::new();
        let mut acc: i64 = 0;
        let position = loop {
            let l = rng.gen_range(BASE / 2..=BASE);
            lens.push(l);
            acc += l as i64;
            if acc > O::MAX {
                break lens.len() - 1;
            }
        };
        lens.extend((0..extra).map(|_| rng.gen_range(0..=BASE)));
        let n = lens.len();
        let want = Error::OffsetOverflow {
            op: Op::Flatten,
            position,
            limit: O::MAX,
        };
        let case = format!(
            "flatten {}/{} seed {seed} {n} arrays past {} elements",
            name::<T>(),
            O::NAME,
            O::MAX
        );
        let slices: Vec<&[T]> = lens.iter().map(|&l| &base[..l]).collect();
        let (dst_before, offs_before) = (poisoned::<T>(3), poisoned::<O>(n + 1));
        let (mut dst, mut offs) = (dst_before.clone(), offs_before.clone());
        let r = host::flatten_into(&slices, &mut dst, &mut offs);
        assert_error(&format!("{case} host::flatten_into"), r, &want);
        assert_untouched(&case, "dst", &dst, &dst_before);
        assert_untouched(&case, "offsets", &offs, &offs_before);
        let r = host::flatten::<T, O, _>(&slices);
        assert_error(&format!("{case} host::flatten"), r, &want);
        for dev in &devs {
            let c = format!("{case} on {}", dev.kind());
            let b = up(dev, &base, &[BASE]);
            let views: Vec<_> = lens.iter().map(|&l| b.view().rows(0..l).unwrap()).collect();
            let mut d = up(dev, &dst_before, &[3]);
            let mut o = up(dev, &offs_before, &[n + 1]);
            let r = dev.flatten_into(&views, d.view_mut(), o.view_mut());
            assert_error(&c, settled(dev, r), &want);
            assert_untouched(&c, "dst", &read(d.view()), &dst_before);
            assert_untouched(&c, "offsets", &read(o.view()), &offs_before);
            let r = dev.flatten::<T, O>(&views);
            assert_error(&format!("{c} flatten"), settled(dev, r), &want);
        }
    }
}

#[test]
fn flatten_bad_lengths_and_offset_overflow_every_width_and_offset_type() {
    for_widths_and_index_types!(flatten_matrix, 600);
    report(
        "flatten_bad_lengths_and_offset_overflow_every_width_and_offset_type",
        432,
    );
}

// ---------------------------------------------------------------------------------------------
// Pad
// ---------------------------------------------------------------------------------------------

fn pad_matrix<T: Element, I: Index>(seed: u64) {
    // Pad has no index type; the second parameter only varies the seed.
    let _ = I::NAME;
    let mut rng = rng(seed);
    let devs = backends();
    for _ in 0..6 {
        let ndim = rng.gen_range(1..=3);
        let dims: Vec<usize> = (0..ndim).map(|_| rng.gen_range(0..6)).collect();
        let numel: usize = dims.iter().product();
        let src: Vec<T> = random_vec(&mut rng, numel);
        let fill: T = random_vec(&mut rng, 1)[0];
        let axis = rng.gen_range(0..ndim);
        let multiple = rng.gen_range(2..6);
        let mut padded = dims.clone();
        padded[axis] = padded[axis].next_multiple_of(multiple);
        let padded_numel: usize = padded.iter().product();
        let case = format!("pad {} seed {seed} {dims:?} axis {axis}", name::<T>());

        let bad_axis = ndim + rng.gen_range(0..3);
        let bad: Vec<(usize, usize, Error)> = vec![
            (
                bad_axis,
                multiple,
                Error::AxisOutOfRange {
                    op: Op::PadToMultiple,
                    axis: bad_axis,
                    ndim,
                },
            ),
            (
                axis,
                0,
                Error::InvalidArgument {
                    op: Op::PadToMultiple,
                    name: "multiple",
                    value: 0,
                    reason: "must be at least 1",
                },
            ),
        ];
        for (ax, mult, want) in bad {
            let c = format!("{case} (axis {ax}, multiple {mult})");
            let before = poisoned::<T>(padded_numel);
            let mut dst = before.clone();
            let r = host::pad_to_multiple_into(&src, &dims, ax, mult, fill, &mut dst);
            assert_error(&format!("{c} host::pad_to_multiple_into"), r, &want);
            assert_untouched(&c, "dst", &dst, &before);
            let r = host::pad_to_multiple(&src, &dims, ax, mult, fill);
            assert_error(&format!("{c} host::pad_to_multiple"), r, &want);
            for dev in &devs {
                let c = format!("{c} on {}", dev.kind());
                let s = up(dev, &src, &dims);
                let mut d = up(dev, &before, &padded);
                let r = dev.pad_to_multiple_into(s.view(), ax, mult, fill, d.view_mut());
                assert_error(&c, settled(dev, r), &want);
                assert_untouched(&c, "dst", &read(d.view()), &before);
                let r = dev.pad_to_multiple(s.view(), ax, mult, fill);
                assert_error(&c, settled(dev, r), &want);
            }
        }
        // A destination of the wrong size.
        let wrong = padded_numel + 1 + rng.gen_range(0..3);
        let before = poisoned::<T>(wrong);
        let mut dst = before.clone();
        let r = host::pad_to_multiple_into(&src, &dims, axis, multiple, fill, &mut dst);
        let want = Error::LengthMismatch {
            op: Op::PadToMultiple,
            what: "dst.len()",
            expected: padded_numel,
            actual: wrong,
        };
        assert_error(&case, r, &want);
        assert_untouched(&case, "dst", &dst, &before);
        for dev in &devs {
            let c = format!("{case} on {}", dev.kind());
            let s = up(dev, &src, &dims);
            let mut d = up(dev, &before, &[wrong]);
            let r = dev.pad_to_multiple_into(s.view(), axis, multiple, fill, d.view_mut());
            let want = Error::ShapeMismatch {
                op: Op::PadToMultiple,
                what: "dst's shape",
                expected: Box::new(Shape::new(&padded).unwrap()),
                actual: Box::new(Shape::new(&[wrong]).unwrap()),
            };
            assert_error(&c, settled(dev, r), &want);
            assert_untouched(&c, "dst", &read(d.view()), &before);
        }
    }
    // An axis whose padded extent overflows usize (the array itself is empty).
    let dims = [usize::MAX - 1, 0];
    let want = Error::SizeOverflow {
        op: Op::PadToMultiple,
        what: "the padded axis",
    };
    let r = host::pad_to_multiple::<T>(&[], &dims, 0, 4, T::zeroed());
    assert_error("pad overflow host", r, &want);
    for dev in &devs {
        let s = up::<T>(dev, &[], &dims);
        let r = dev.pad_to_multiple(s.view(), 0, 4, T::zeroed());
        assert_error(
            &format!("pad overflow on {}", dev.kind()),
            settled(dev, r),
            &want,
        );
    }
}

#[test]
fn pad_bad_arguments_every_width() {
    for_widths_and_index_types!(pad_matrix, 700);
    report("pad_bad_arguments_every_width", 744);
}

// ---------------------------------------------------------------------------------------------
// Input preparation: segment expansion, slot mapping, windowed gathers, the fused step
// ---------------------------------------------------------------------------------------------

/// Segment expansion: negative counts planted at random positions (the first is named), and
/// decreasing offsets; both index types of counts, ids and positions.
fn expand_matrix<L: Index, P: Index>(seed: u64) {
    let mut rng = rng(seed);
    for &n in &[1usize, 2, 3, 17, 300] {
        for w in WHERE {
            let mut counts: Vec<i64> = (0..n).map(|_| rng.gen_range(0..4)).collect();
            let total: usize = counts.iter().map(|&c| c as usize).sum();
            let at = positions(&mut rng, n, w);
            for &p in &at {
                counts[p] = -rng.gen_range(1..=min_of::<L>().unsigned_abs().min(1 << 40) as i64);
            }
            let counts: Vec<L> = to_idx(&counts);
            let want = Error::NegativeLength {
                op: Op::ExpandSegments,
                position: at[0],
                value: counts[at[0]].to_i64(),
            };
            for dev in backends() {
                let case = format!(
                    "expand {}/{} n={n} {w:?} on {}",
                    L::NAME,
                    P::NAME,
                    dev.kind()
                );
                let c = up(&dev, &counts, &[n]);
                let mut seg = up(&dev, &poisoned::<i32>(total), &[total]);
                let mut pos = up(&dev, &poisoned::<P>(total), &[total]);
                let got = settled(
                    &dev,
                    dev.expand_segments_into::<L, i32, P>(
                        cpugpu::SegmentBounds::Counts(c.view()),
                        None,
                        seg.view_mut(),
                        pos.view_mut(),
                    ),
                );
                assert_error(&case, got, &want);
                assert_untouched(&case, "seg_ids", &read(seg.view()), &poisoned::<i32>(total));
                assert_untouched(&case, "positions", &read(pos.view()), &poisoned::<P>(total));
            }
            // Decreasing offsets at the same positions (offsets index p + 1).
            let mut offs: Vec<i64> = vec![0];
            for _ in 0..n {
                offs.push(offs[offs.len() - 1] + rng.gen_range(0..4));
            }
            let q = at[0] + 1;
            offs[q] = offs[q - 1] - 1;
            let want = Error::OffsetsNotMonotonic {
                op: Op::ExpandSegments,
                position: q,
                previous: offs[q - 1],
                value: offs[q],
            };
            let total = (offs[n] - offs[0]).max(0) as usize;
            let offs: Vec<L> = to_idx(&offs);
            for dev in backends() {
                let case = format!("expand offsets {} n={n} q={q} on {}", L::NAME, dev.kind());
                let o = up(&dev, &offs, &[n + 1]);
                let mut seg = up(&dev, &poisoned::<i32>(total), &[total]);
                let mut pos = up(&dev, &poisoned::<P>(total), &[total]);
                let got = settled(
                    &dev,
                    dev.expand_segments_into::<L, i32, P>(
                        cpugpu::SegmentBounds::Offsets(o.view()),
                        None,
                        seg.view_mut(),
                        pos.view_mut(),
                    ),
                );
                assert_error(&case, got, &want);
                assert_untouched(&case, "positions", &read(pos.view()), &poisoned::<P>(total));
            }
        }
    }
}

#[test]
fn expand_bad_counts_and_offsets_every_index_type() {
    expand_matrix::<i32, i32>(801);
    expand_matrix::<i32, i64>(802);
    expand_matrix::<i64, i32>(803);
    expand_matrix::<i64, i64>(804);
    report(
        "expand_bad_counts_and_offsets_every_index_type",
        4 * 5 * 4 * 2 * backends().len(),
    );
}

/// Slot mapping and windowed gathers: rows outside the table, positions past the valid blocks,
/// negative block numbers and windows past their rows, planted at random tokens.
fn slots_windows_matrix<I: Index>(seed: u64) {
    let mut rng = rng(seed);
    let (rows_n, cols, bs) = (6usize, 4usize, 4usize);
    let table: Vec<I> = to_idx(&(0..(rows_n * cols) as i64).collect::<Vec<_>>());
    let num_blocks: Vec<I> = to_idx(&vec![cols as i64; rows_n]);
    for &n in &[1usize, 2, 9, 64] {
        for w in WHERE {
            let mut rows: Vec<i64> = (0..n).map(|_| rng.gen_range(0..rows_n as i64)).collect();
            let mut pos: Vec<i64> = (0..n)
                .map(|_| rng.gen_range(0..(cols * bs) as i64))
                .collect();
            let at = positions(&mut rng, n, w);
            let kind = rng.gen_range(0..3);
            for &p in &at {
                match kind {
                    0 => rows[p] = [rows_n as i64, -1, I::MAX][rng.gen_range(0..3)],
                    1 => pos[p] = (cols * bs) as i64 + rng.gen_range(0..50),
                    _ => pos[p] = -1 - rng.gen_range(0..50),
                }
            }
            let p = at[0];
            let want = match kind {
                0 => Error::IndexOutOfBounds {
                    op: Op::SlotMapping,
                    position: p,
                    index: rows[p],
                    bound: rows_n,
                },
                _ => Error::BlockOutOfRange {
                    op: Op::SlotMapping,
                    position: p,
                    group: 0,
                    block: pos[p].div_euclid(bs as i64),
                    valid: cols as i64,
                },
            };
            let (ri, pi): (Vec<I>, Vec<i64>) = (to_idx(&rows), pos.clone());
            for dev in backends() {
                let case = format!(
                    "slots {} n={n} {w:?} kind {kind} on {}",
                    I::NAME,
                    dev.kind()
                );
                let t = up(&dev, &table, &[rows_n, cols]);
                let nb = up(&dev, &num_blocks, &[rows_n]);
                let g = cpugpu::KvCacheGroup {
                    block_table: t.view(),
                    num_blocks: nb.view(),
                    block_size: bs,
                };
                let r = up(&dev, &ri, &[n]);
                let ps = up(&dev, &pi, &[n]);
                let mut out = up(&dev, &poisoned::<i64>(n + 3), &[1, n + 3]);
                let got = settled(
                    &dev,
                    dev.slot_mapping_into(r.view(), ps.view(), &[g], -1i64, out.view_mut()),
                );
                assert_error(&case, got, &want);
                assert_untouched(&case, "slots", &read(out.view()), &poisoned::<i64>(n + 3));
                // The same rows as a windowed gather of one element at the position's column
                // (a window past the row where the block is out of range).
                if kind == 0 {
                    let starts: Vec<I> = to_idx(&vec![0; n]);
                    let lens: Vec<I> = to_idx(&vec![1; n]);
                    let s = up(&dev, &starts, &[n]);
                    let l = up(&dev, &lens, &[n]);
                    let mut o = up(&dev, &poisoned::<I>(n), &[n, 1]);
                    let got = settled(
                        &dev,
                        dev.gather_windows_into(
                            t.view(),
                            r.view(),
                            Some(s.view()),
                            cpugpu::WindowLayout::Rows { lens: l.view() },
                            o.view_mut(),
                        ),
                    );
                    let want = Error::IndexOutOfBounds {
                        op: Op::GatherWindows,
                        position: p,
                        index: rows[p],
                        bound: rows_n,
                    };
                    assert_error(&case, got, &want);
                    assert_untouched(&case, "windows", &read(o.view()), &poisoned::<I>(n));
                }
            }
        }
    }
}

#[test]
fn slot_mapping_and_windows_bad_rows_and_positions() {
    slots_windows_matrix::<i32>(811);
    slots_windows_matrix::<i64>(812);
    report("slot_mapping_and_windows_bad_rows_and_positions", 2 * 4 * 4);
}

/// The fused step: one request state loses its blocks (num_blocks 0) or gets a negative block
/// number; the error names the first token that needs it, and nothing is written.
#[test]
fn prepare_step_bad_block_tables() {
    let mut rng = rng(821);
    let (rows, l, bs) = (16usize, 64usize, 8usize);
    let m = l / bs;
    let tokens: Vec<i32> = (0..(rows * l) as i32).collect();
    for trial in 0..12 {
        let n = rng.gen_range(1..=8);
        let mut states: Vec<i32> = (0..rows as i32).collect();
        states.shuffle(&mut rng);
        let state_index: Vec<i32> = states[..n].to_vec();
        let sched: Vec<i32> = (0..n).map(|_| rng.gen_range(1..=12)).collect();
        let comp: Vec<i32> = sched
            .iter()
            .map(|&k| rng.gen_range(0..=(l as i32 - k)))
            .collect();
        let mut table: Vec<i32> = (0..(rows * m) as i32).collect();
        let mut nb = vec![m as i32; rows];
        let victim = rng.gen_range(0..n);
        let s = state_index[victim] as usize;
        let t0: usize = sched[..victim].iter().map(|&k| k as usize).sum();
        let b0 = comp[victim] as usize / bs;
        let want = if trial % 2 == 0 {
            nb[s] = b0 as i32; // every block the request touches is past the valid ones
            Error::BlockOutOfRange {
                op: Op::PrepareStep,
                position: t0,
                group: 0,
                block: b0 as i64,
                valid: b0 as i64,
            }
        } else {
            table[s * m + b0] = -9;
            Error::NegativeBlock {
                op: Op::PrepareStep,
                position: t0,
                group: 0,
                value: -9,
            }
        };
        // An earlier request must not fail first: the victim's state is used by it alone.
        for dev in backends() {
            let case = format!("prepare_step trial {trial} on {}", dev.kind());
            let pool = cpugpu::UvaBufferPool::new(&dev, 2);
            let tok = up(&dev, &tokens, &[rows, l]);
            let t = up(&dev, &table, &[rows, m]);
            let nbb = up(&dev, &nb, &[rows]);
            let groups = [cpugpu::KvCacheGroup {
                block_table: t.view(),
                num_blocks: nbb.view(),
                block_size: bs,
            }];
            let (mut q, mut sl, mut lg) = (
                up(&dev, &poisoned::<i32>(n + 1), &[n + 1]),
                up(&dev, &poisoned::<i32>(n), &[n]),
                up(&dev, &poisoned::<i64>(n), &[n]),
            );
            let (mut p, mut i, mut sm) = (
                up(&dev, &poisoned::<i64>(128), &[128]),
                up(&dev, &poisoned::<i32>(128), &[128]),
                up(&dev, &poisoned::<i64>(128), &[1, 128]),
            );
            let req = cpugpu::StepRequests {
                state_index: &state_index,
                num_computed: &comp,
                num_scheduled: &sched,
            };
            let state = cpugpu::StepState {
                token_ids: tok.view(),
                kv_groups: &groups,
            };
            let out = cpugpu::StepOutputs {
                query_start_loc: q.view_mut(),
                seq_lens: sl.view_mut(),
                positions: p.view_mut(),
                input_ids: i.view_mut(),
                slot_mapping: sm.view_mut(),
                logits_indices: lg.view_mut(),
            };
            let got = settled(
                &dev,
                dev.prepare_step(&pool, &req, &state, cpugpu::StepPadding::None, out),
            );
            assert_error(&case, got, &want);
            assert_untouched(
                &case,
                "query_start_loc",
                &read(q.view()),
                &poisoned::<i32>(n + 1),
            );
            assert_untouched(
                &case,
                "slot_mapping",
                &read(sm.view()),
                &poisoned::<i64>(128),
            );
            assert_untouched(&case, "input_ids", &read(i.view()), &poisoned::<i32>(128));
        }
    }
    report("prepare_step_bad_block_tables", 12);
}

// ---------------------------------------------------------------------------------------------
// Operands on another backend (needs a non-host backend: a GPU, or the emulated one)
// ---------------------------------------------------------------------------------------------

/// The host backend given another backend's memory in one operand refuses the call with
/// `WrongDevice` naming the operation and writes none of its outputs (split's `out` included,
/// and split_copy_into's outputs before the refused one).
#[test]
fn host_backend_refuses_other_memory_and_writes_nothing() {
    let others: Vec<Device> = backends()
        .into_iter()
        .filter(|d| d.kind() != BackendKind::Host)
        .collect();
    if others.is_empty() {
        eprintln!("skipped: no non-host backend in this build and machine");
        return;
    }
    let host = Device::host();
    let wrong = |op: Op, e: &Error| matches!(e, Error::WrongDevice { op: o, .. } if *o == op);
    for gpu in others {
        let data = [1u32, 2, 3, 4];
        let on_gpu = up(&gpu, &data, &[4]);

        // split_into: `out` keeps what it held.
        let keep = [7u32; 2];
        let mut out = vec![DeviceView::host_vector(&keep)];
        let err = host
            .split_into(on_gpu.view(), &[0i64, 2, 4], &mut out)
            .unwrap_err();
        assert!(wrong(Op::Split, &err), "{err:?}");
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].as_host_slice().map(|s| s.as_ptr()),
            Some(keep.as_ptr())
        );

        // split_copy_into: the second output is GPU memory, the first must not be written.
        let mut first = poisoned::<u32>(2);
        let mut second = up(&gpu, &poisoned::<u32>(2), &[2]);
        let err = host
            .split_copy_into(
                DeviceView::host_vector(&data),
                &[0i32, 2, 4],
                &mut [DeviceViewMut::host_vector(&mut first), second.view_mut()],
            )
            .unwrap_err();
        assert!(wrong(Op::Split, &err), "{err:?}");
        assert_untouched("split_copy_into", "outs[0]", &first, &poisoned::<u32>(2));

        // gather into host memory from a GPU table.
        let mut dst = poisoned::<u32>(2);
        let err = host
            .gather_rows_into(
                on_gpu.view(),
                DeviceView::host_vector(&[0i32, 1]),
                DeviceViewMut::host_vector(&mut dst),
                GatherPolicy::Checked,
            )
            .unwrap_err();
        assert!(wrong(Op::GatherRows, &err), "{err:?}");
        assert_untouched("gather_rows_into", "dst", &dst, &poisoned::<u32>(2));

        // flatten with one GPU array among host ones.
        let (mut flat, mut offs) = (poisoned::<u32>(8), poisoned::<i32>(3));
        let err = host
            .flatten_into(
                &[DeviceView::host_vector(&data), on_gpu.view()],
                DeviceViewMut::host_vector(&mut flat),
                DeviceViewMut::host_vector(&mut offs),
            )
            .unwrap_err();
        assert!(wrong(Op::Flatten, &err), "{err:?}");
        assert_untouched("flatten_into", "dst", &flat, &poisoned::<u32>(8));
        assert_untouched("flatten_into", "offsets", &offs, &poisoned::<i32>(3));
    }
}
