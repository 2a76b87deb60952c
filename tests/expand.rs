//! Segment expansion against an independent oracle (np.repeat plus a per-segment arange), on
//! every backend, for both index types in every position, both segment forms, boundary sizes
//! and every error.

mod common;

use common::prep::*;
use common::{poisoned, rng};
use cpugpu::{host, Device, Error, Index, Op, SegmentBounds};
use rand::rngs::SmallRng;
use rand::Rng;

/// np.repeat(arange(n), counts) and starts[seg] + arange within each segment.
fn oracle(counts: &[i64], starts: Option<&[i64]>) -> (Vec<i64>, Vec<i64>) {
    let (mut seg, mut pos) = (Vec::new(), Vec::new());
    for (s, &c) in counts.iter().enumerate() {
        for k in 0..c {
            seg.push(s as i64);
            pos.push(starts.map_or(0, |st| st[s]) + k);
        }
    }
    (seg, pos)
}

fn cast<I: Index>(v: &[i64]) -> Vec<I> {
    v.iter().map(|&x| I::from_i64(x).unwrap()).collect()
}

fn random_counts(rng: &mut SmallRng, n: usize, max: i64) -> Vec<i64> {
    (0..n)
        .map(|_| {
            if rng.gen_bool(0.2) {
                0
            } else {
                rng.gen_range(1..=max)
            }
        })
        .collect()
}

/// Runs one case through `dev` and through the host reference, both forms, compared with the
/// oracle; outputs are poisoned first.
fn check_case<L: Index, S: Index, P: Index>(dev: &Device, counts: &[i64], starts: Option<&[i64]>) {
    let (want_seg, want_pos) = oracle(counts, starts);
    let total = want_seg.len();
    let mut offs = vec![0i64];
    for &c in counts {
        offs.push(offs[offs.len() - 1] + c);
    }
    let case = format!(
        "{}: n={} total={total} {}/{}/{} starts={}",
        dev.kind(),
        counts.len(),
        L::NAME,
        S::NAME,
        P::NAME,
        starts.is_some()
    );
    for offsets_form in [false, true] {
        let bounds_host: Vec<L> = cast(if offsets_form { &offs } else { counts });
        let starts_host: Option<Vec<P>> = starts.map(cast);
        let b = up(dev, &bounds_host, &[bounds_host.len()]);
        let st = starts_host.as_ref().map(|s| up(dev, s, &[s.len()]));
        let mut seg = up(dev, &poisoned::<S>(total), &[total]);
        let mut pos = up(dev, &poisoned::<P>(total), &[total]);
        let bounds = if offsets_form {
            SegmentBounds::Offsets(b.view())
        } else {
            SegmentBounds::Counts(b.view())
        };
        launches();
        settled(
            dev,
            dev.expand_segments_into(
                bounds,
                st.as_ref().map(|s| s.view()),
                seg.view_mut(),
                pos.view_mut(),
            ),
        )
        .unwrap_or_else(|e| panic!("{case} offsets={offsets_form}: {e}"));
        if dev.kind() != cpugpu::BackendKind::Host && cfg!(feature = "emulator") {
            assert_eq!(
                launches(),
                ["expand_scan", "expand_write", "expand_capture"],
                "{case}: three launches"
            );
        }
        assert_eq!(
            cast::<S>(&want_seg),
            read(&seg),
            "{case} offsets={offsets_form}: ids"
        );
        assert_eq!(
            cast::<P>(&want_pos),
            read(&pos),
            "{case} offsets={offsets_form}: positions"
        );
        // The host reference on plain slices, and its allocating form.
        let hb = if offsets_form {
            SegmentBounds::Offsets(&bounds_host[..])
        } else {
            SegmentBounds::Counts(&bounds_host[..])
        };
        let (s2, p2): (Vec<S>, Vec<P>) = host::expand_segments(hb, starts_host.as_deref()).unwrap();
        assert_eq!(s2, cast::<S>(&want_seg), "{case}: host alloc");
        assert_eq!(p2, cast::<P>(&want_pos), "{case}: host alloc");
    }
}

fn types_case<L: Index, S: Index, P: Index>(seed: u64) {
    for dev in backends() {
        let mut rng = rng(seed);
        // 0 segments, 1 token, <= 8 tokens, small, and one past the parallel threshold.
        let cases: Vec<(usize, i64)> = vec![(0, 1), (1, 1), (3, 2), (8, 1), (33, 9), (700, 40)];
        for (n, max) in cases {
            let counts = random_counts(&mut rng, n, max);
            let starts: Vec<i64> = (0..n).map(|_| rng.gen_range(-5..4000)).collect();
            check_case::<L, S, P>(&dev, &counts, None);
            check_case::<L, S, P>(&dev, &counts, Some(&starts));
        }
    }
}

#[test]
fn expand_matches_the_oracle_for_every_index_type() {
    types_case::<i32, i32, i64>(1);
    types_case::<i64, i32, i64>(2);
    types_case::<i32, i64, i32>(3);
    types_case::<i64, i64, i64>(4);
    types_case::<i32, i32, i32>(5);
}

#[test]
fn expand_large_takes_the_parallel_host_path() {
    // 30,000 segments of up to 60: ~900k elements, 12 bytes each: past PAR_MIN_BYTES.
    let mut rng = rng(9);
    let counts = random_counts(&mut rng, 30_000, 60);
    let starts: Vec<i64> = (0..counts.len())
        .map(|_| rng.gen_range(0..100_000))
        .collect();
    for dev in backends() {
        check_case::<i32, i32, i64>(&dev, &counts, Some(&starts));
    }
}

#[test]
fn a_request_at_max_model_length() {
    // One prefill filling a 4,096-token model from position 0, beside decodes at the limit.
    for dev in backends() {
        check_case::<i32, i32, i64>(&dev, &[4096, 1, 1], Some(&[0, 4095, 17]));
    }
}

/// Runs a failing case on every backend: the exact error, named, and nothing written.
fn expect_error<L: Index, P: Index>(
    bounds: SegmentBounds<&[L]>,
    starts: Option<&[P]>,
    total: usize,
    want: Error,
) {
    for dev in backends() {
        let b = up(&dev, bounds.inner(), &[bounds.inner().len()]);
        let st = starts.map(|s| up(&dev, s, &[s.len()]));
        let mut seg = up(&dev, &poisoned::<i32>(total), &[total]);
        let mut pos = up(&dev, &poisoned::<P>(total), &[total]);
        let db = if bounds.is_offsets() {
            SegmentBounds::Offsets(b.view())
        } else {
            SegmentBounds::Counts(b.view())
        };
        let got = settled(
            &dev,
            dev.expand_segments_into(
                db,
                st.as_ref().map(|s| s.view()),
                seg.view_mut(),
                pos.view_mut(),
            ),
        );
        let case = format!("{}: {want:?}", dev.kind());
        assert_eq!(got.as_ref().unwrap_err(), &want, "{case}");
        assert_names(&want, Op::ExpandSegments, None);
        assert_eq!(read(&seg), poisoned::<i32>(total), "{case}: ids untouched");
        assert_eq!(
            read(&pos),
            poisoned::<P>(total),
            "{case}: positions untouched"
        );
        // The device is usable (and clean) afterwards.
        dev.synchronize().unwrap();
        // The host reference agrees.
        let (mut hs, mut hp) = (poisoned::<i32>(total), poisoned::<P>(total));
        assert_eq!(
            host::expand_segments_into(bounds, starts, &mut hs, &mut hp).unwrap_err(),
            want
        );
        assert_eq!(hs, poisoned::<i32>(total));
    }
}

#[test]
fn expand_reports_every_error() {
    let op = Op::ExpandSegments;
    // A negative count, the first of two.
    expect_error::<i32, i64>(
        SegmentBounds::Counts(&[2, -1, 3, -4]),
        None,
        4,
        Error::NegativeLength {
            op,
            position: 1,
            value: -1,
        },
    );
    // i64 counts: the value round-trips through the capture.
    expect_error::<i64, i64>(
        SegmentBounds::Counts(&[1, i64::MIN]),
        None,
        1,
        Error::NegativeLength {
            op,
            position: 1,
            value: i64::MIN,
        },
    );
    // Totals that do not match the output, both ways.
    expect_error::<i32, i64>(
        SegmentBounds::Counts(&[2, 3]),
        None,
        4,
        Error::LengthMismatch {
            op,
            what: "the segments' total",
            expected: 4,
            actual: 5,
        },
    );
    expect_error::<i32, i64>(
        SegmentBounds::Counts(&[]),
        None,
        3,
        Error::LengthMismatch {
            op,
            what: "the segments' total",
            expected: 3,
            actual: 0,
        },
    );
    expect_error::<i32, i64>(
        SegmentBounds::Offsets(&[2, 4, 9]),
        None,
        6,
        Error::LengthMismatch {
            op,
            what: "the segments' total",
            expected: 6,
            actual: 7,
        },
    );
    // Offsets: negative start, decreasing.
    expect_error::<i64, i64>(
        SegmentBounds::Offsets(&[-1, 2, 3]),
        None,
        4,
        Error::OffsetOutOfRange {
            op,
            position: 0,
            value: -1,
            len: 4,
        },
    );
    expect_error::<i32, i64>(
        SegmentBounds::Offsets(&[0, 3, 2, 5]),
        None,
        5,
        Error::OffsetsNotMonotonic {
            op,
            position: 2,
            previous: 3,
            value: 2,
        },
    );
    // A position past the i32 maximum (counts and offsets name the segment).
    expect_error::<i32, i32>(
        SegmentBounds::Counts(&[1, 3]),
        Some(&[0, i32::MAX - 1]),
        4,
        Error::ValueOverflow {
            op,
            position: 1,
            limit: i64::from(i32::MAX),
        },
    );
    expect_error::<i64, i32>(
        SegmentBounds::Offsets(&[0, 1, 4]),
        Some(&[0, i32::MAX - 1]),
        4,
        Error::ValueOverflow {
            op,
            position: 1,
            limit: i64::from(i32::MAX),
        },
    );
}

#[test]
fn expand_argument_errors_come_back_at_once() {
    for dev in backends() {
        let counts = up(&dev, &[1i32, 2], &[2]);
        let starts = up(&dev, &[0i64], &[1]);
        let mut seg = dev.alloc::<i32>(&[3]).unwrap();
        let mut pos = dev.alloc::<i64>(&[3]).unwrap();
        let e = dev
            .expand_segments_into(
                SegmentBounds::Counts(counts.view()),
                Some(starts.view()),
                seg.view_mut(),
                pos.view_mut(),
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::LengthMismatch {
                    what: "starts.len()",
                    ..
                }
            ),
            "{e:?}"
        );
        let mut short = dev.alloc::<i64>(&[2]).unwrap();
        let e = dev
            .expand_segments_into::<i32, i32, i64>(
                SegmentBounds::Counts(counts.view()),
                None,
                seg.view_mut(),
                short.view_mut(),
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::LengthMismatch {
                    what: "positions.len()",
                    ..
                }
            ),
            "{e:?}"
        );
        let empty = dev.alloc::<i32>(&[0]).unwrap();
        let e = dev
            .expand_segments_into::<i32, i32, i64>(
                SegmentBounds::Offsets(empty.view()),
                None,
                seg.view_mut(),
                pos.view_mut(),
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::LengthMismatch {
                    expected: 1,
                    actual: 0,
                    ..
                }
            ),
            "{e:?}"
        );
        dev.synchronize().unwrap();
    }
}
