//! `host::pad_to_multiple` against a sequential reference: every element width, every axis of
//! 1-, 2- and 3-d shapes, boundary sizes, both the sequential and the parallel path, poisoned
//! outputs, and every error.

mod common;

use std::borrow::Cow;

use common::*;
use cpugpu::host::{pad_to_multiple, pad_to_multiple_into};
use cpugpu::{Element, Error, Op, Shape};
use proptest::prelude::*;

/// The obvious reference: walk every output index.
fn reference<T: Copy>(
    src: &[T],
    dims: &[usize],
    axis: usize,
    multiple: usize,
    fill: T,
) -> (Vec<T>, Vec<usize>) {
    let mut out_dims = dims.to_vec();
    out_dims[axis] = dims[axis].div_ceil(multiple) * multiple;
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for a in 0..out_dims[axis] {
            for i in 0..inner {
                out.push(if a < dims[axis] {
                    src[(o * dims[axis] + a) * inner + i]
                } else {
                    fill
                });
            }
        }
    }
    (out, out_dims)
}

fn check_case<T: Element>(dims: &[usize], axis: usize, multiple: usize, seed: u64) {
    let mut rng = rng(seed);
    let n: usize = dims.iter().product();
    let src: Vec<T> = random_vec(&mut rng, n);
    let fill: T = random_elem(&mut rng);
    let (want, want_dims) = reference(&src, dims, axis, multiple, fill);
    let case = format!(
        "dims={dims:?} axis={axis} multiple={multiple} T={}",
        std::any::type_name::<T>()
    );

    let got = pad_to_multiple(&src, dims, axis, multiple, fill).unwrap();
    assert_eq!(got.shape.dims(), &want_dims[..], "{case}");
    assert_bits_eq(&got.data, &want, &case);
    assert_eq!(
        matches!(got.data, Cow::Borrowed(_)),
        want_dims == dims,
        "borrowed exactly when no padding was needed: {case}"
    );
    if let Cow::Borrowed(b) = got.data {
        assert_eq!(b.as_ptr(), src.as_ptr(), "no copy: {case}");
    }

    let mut dst: Vec<T> = poisoned(want.len());
    let shape = pad_to_multiple_into(&src, dims, axis, multiple, fill, &mut dst).unwrap();
    assert_eq!(shape.dims(), &want_dims[..], "{case}");
    assert_bits_eq(&dst, &want, &format!("into: {case}"));
}

fn every_axis<T: Element>() {
    let mut seed = 0;
    for &n in SIZES {
        for multiple in [1, 2, 8, 64] {
            seed += 1;
            check_case::<T>(&[n], 0, multiple, seed);
            check_case::<T>(&[n, 3], 0, multiple, seed);
            check_case::<T>(&[3, n], 1, multiple, seed);
            if n <= 257 {
                check_case::<T>(&[2, n, 5], 1, multiple, seed);
                check_case::<T>(&[n, 2, 3], 2, multiple, seed);
                check_case::<T>(&[4, 3, n], 0, multiple, seed);
            }
        }
    }
}

#[test]
fn matches_reference_every_width_and_axis() {
    for_each_width!(every_axis);
}

#[test]
fn parallel_paths_match_reference() {
    // Above PAR_MIN_BYTES (512 KiB): one big block (axis 0) and many blocks (axis 1).
    check_case::<f32>(&[70_001, 3], 0, 64, 1);
    check_case::<f32>(&[50_000, 3], 1, 4, 2);
    check_case::<u8>(&[3, 300_001], 1, 16, 3);
    check_case::<u128>(&[33_333, 2], 0, 32, 4);
    check_case::<f64>(&[100_000, 1, 3], 1, 2, 5);
}

#[test]
fn zero_sized_dims() {
    check_case::<u32>(&[0, 5], 0, 4, 1); // already a multiple (0)
    check_case::<u32>(&[3, 0], 0, 4, 2); // no elements at all
    check_case::<u32>(&[2, 0, 3], 1, 4, 3);
    check_case::<u32>(&[2, 3, 0], 1, 4, 4);
}

#[test]
fn errors_leave_dst_untouched() {
    let src = [1u16, 2, 3, 4, 5, 6];
    let mut dst = poisoned::<u16>(8);
    let untouched = poisoned::<u16>(8);

    let err = pad_to_multiple_into(&src, &[2, 3], 2, 4, 0, &mut dst).unwrap_err();
    assert_eq!(
        err,
        Error::AxisOutOfRange {
            op: Op::PadToMultiple,
            axis: 2,
            ndim: 2
        }
    );
    assert!(err.to_string().starts_with("pad_to_multiple:"), "{err}");

    let err = pad_to_multiple_into(&src[..1], &[], 0, 4, 0, &mut dst).unwrap_err();
    assert_eq!(
        err,
        Error::AxisOutOfRange {
            op: Op::PadToMultiple,
            axis: 0,
            ndim: 0
        }
    );

    let err = pad_to_multiple_into(&src, &[2, 3], 1, 0, 0, &mut dst).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                op: Op::PadToMultiple,
                name: "multiple",
                value: 0,
                ..
            }
        ),
        "{err:?}"
    );

    let err = pad_to_multiple_into(&src, &[2, 4], 1, 4, 0, &mut dst).unwrap_err();
    assert_eq!(
        err,
        Error::LengthMismatch {
            op: Op::PadToMultiple,
            what: "src.len()",
            expected: 8,
            actual: 6
        }
    );

    let err = pad_to_multiple_into(&src, &[2, 3], 1, 4, 0, &mut dst[..7]).unwrap_err();
    assert_eq!(
        err,
        Error::LengthMismatch {
            op: Op::PadToMultiple,
            what: "dst.len()",
            expected: 8,
            actual: 7
        }
    );

    let err = pad_to_multiple(&src, &[1; 9], 0, 4, 0).unwrap_err();
    assert_eq!(
        err,
        Error::TooManyDims {
            op: Op::PadToMultiple,
            ndim: 9,
            max: Shape::MAX_DIMS
        }
    );

    let empty: [u16; 0] = [];
    let err = pad_to_multiple(&empty, &[0, usize::MAX - 2], 1, 8, 0).unwrap_err();
    assert_eq!(
        err,
        Error::SizeOverflow {
            op: Op::PadToMultiple,
            what: "the padded axis"
        }
    );
    // A zero-sized array pads to zero elements...
    let p = pad_to_multiple(&empty, &[1 << 20, 0, 3], 1, 8, 0).unwrap();
    assert_eq!(p.shape.dims(), &[1 << 20, 0, 3]);
    // ...but extents whose product cannot be computed are refused, whatever their order
    // (the blocks around the axis would overflow).
    for dims in [
        [usize::MAX / 2, 0, 3, 1],
        [1, 0, 1 << 40, 1 << 40],
        [0, 1 << 40, 1 << 40, 1],
    ] {
        let err = pad_to_multiple(&empty, &dims, 2, 3, 0).unwrap_err();
        assert_eq!(
            err,
            Error::SizeOverflow {
                op: Op::PadToMultiple,
                what: "the product of the shape's non-zero extents"
            },
            "{dims:?}"
        );
    }

    assert_bits_eq(&dst, &untouched, "dst untouched by every error");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn prop_matches_reference(
        dims in proptest::collection::vec(0usize..7, 1..4),
        axis_pick in 0usize..4,
        multiple in 1usize..9,
        seed in any::<u64>(),
    ) {
        let axis = axis_pick % dims.len();
        check_case::<u32>(&dims, axis, multiple, seed);
        check_case::<u8>(&dims, axis, multiple, seed);
    }
}
