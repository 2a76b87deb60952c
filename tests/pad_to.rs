//! Pad to a length and to a bucket against an independent oracle, on every backend: every
//! element width, several axes, the borrowed no-copy case, CUDA-graph sizes, and every error.

mod common;

use common::prep::*;
use common::{poisoned, random_vec, rng};
use cpugpu::{bucket_for, cuda_graph_sizes, host, Element, Error, Op};

/// np.pad of `src` (shape `dims`) along `axis` to `len` with `fill`.
fn oracle<T: Element>(src: &[T], dims: &[usize], axis: usize, len: usize, fill: T) -> Vec<T> {
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        let block = &src[o * dims[axis] * inner..][..dims[axis] * inner];
        out.extend_from_slice(block);
        out.extend(std::iter::repeat_n(fill, (len - dims[axis]) * inner));
    }
    out
}

fn width_case<T: Element>(seed: u64) {
    let mut rng = rng(seed);
    let fill: T = common::random_elem(&mut rng);
    for dev in backends() {
        for (dims, axis) in [
            (vec![0usize], 0usize),
            (vec![1], 0),
            (vec![5], 0),
            (vec![7, 3], 0),
            (vec![7, 3], 1),
            (vec![2, 3, 5], 1),
            (vec![300, 9], 0),
        ] {
            let n: usize = dims.iter().product();
            let src: Vec<T> = random_vec(&mut rng, n);
            let x = up(&dev, &src, &dims);
            let buckets = cuda_graph_sizes(512);
            for len in [dims[axis], dims[axis] + 1, dims[axis] + 9] {
                let case = format!(
                    "{}: {} {dims:?} axis {axis} -> {len}",
                    dev.kind(),
                    std::any::type_name::<T>()
                );
                let want = oracle(&src, &dims, axis, len, fill);
                let p = settled(&dev, dev.pad_to_length(x.view(), axis, len, fill)).unwrap();
                assert_eq!(p.is_unchanged(), len == dims[axis], "{case}");
                let mut got = poisoned::<T>(want.len());
                p.view().copy_to_host(&mut got).unwrap();
                common::assert_bits_eq(&got, &want, &case);
                let mut pd = dims.clone();
                pd[axis] = len;
                let mut dst = up(&dev, &poisoned::<T>(want.len()), &pd);
                settled(
                    &dev,
                    dev.pad_to_length_into(x.view(), axis, len, fill, dst.view_mut()),
                )
                .unwrap();
                common::assert_bits_eq(&read(&dst), &want, &case);
                let h = host::pad_to_length(&src, &dims, axis, len, fill).unwrap();
                common::assert_bits_eq(&h.data, &want, &case);
            }
            // Buckets: the smallest capture size that holds the axis.
            if dims[axis] <= 512 {
                let b = bucket_for(dims[axis], &buckets).unwrap();
                let want = oracle(&src, &dims, axis, b, fill);
                let p = settled(&dev, dev.pad_to_bucket(x.view(), axis, &buckets, fill)).unwrap();
                let mut got = poisoned::<T>(want.len());
                p.view().copy_to_host(&mut got).unwrap();
                common::assert_bits_eq(&got, &want, "bucket");
                let mut hd = poisoned::<T>(want.len());
                host::pad_to_bucket_into(&src, &dims, axis, &buckets, fill, &mut hd).unwrap();
                common::assert_bits_eq(&hd, &want, "host bucket");
            }
        }
    }
}

#[test]
fn pad_to_length_and_bucket_match_the_oracle() {
    width_case::<u8>(1);
    width_case::<half::f16>(2);
    width_case::<i32>(3);
    width_case::<f64>(4);
    width_case::<[u32; 4]>(5);
}

#[test]
fn buckets_are_vllm_capture_sizes() {
    let s = cuda_graph_sizes(512);
    assert_eq!(&s[..5], &[1, 2, 4, 8, 16]);
    assert_eq!(s[s.len() - 1], 512);
    assert!(s[3..].iter().all(|x| x % 8 == 0));
    for (n, b) in [
        (0, 1),
        (1, 1),
        (2, 2),
        (3, 4),
        (5, 8),
        (8, 8),
        (9, 16),
        (500, 504),
        (512, 512),
    ] {
        assert_eq!(bucket_for(n, &s).unwrap(), b, "{n}");
    }
}

#[test]
fn pad_to_errors() {
    let s = cuda_graph_sizes(512);
    assert_eq!(
        bucket_for(513, &s).unwrap_err(),
        Error::AboveLargestBucket {
            op: Op::PadToBucket,
            value: 513,
            largest: 512
        }
    );
    assert!(matches!(
        bucket_for(1, &[]).unwrap_err(),
        Error::InvalidArgument {
            op: Op::PadToBucket,
            ..
        }
    ));
    assert!(matches!(
        bucket_for(1, &[4, 4]).unwrap_err(),
        Error::InvalidArgument {
            op: Op::PadToBucket,
            ..
        }
    ));
    for dev in backends() {
        let x = up(&dev, &[1i32; 600], &[600]);
        let e = dev.pad_to_bucket(x.view(), 0, &s, 0).unwrap_err();
        assert_eq!(
            e,
            Error::AboveLargestBucket {
                op: Op::PadToBucket,
                value: 600,
                largest: 512
            }
        );
        assert_names(&e, Op::PadToBucket, None);
        let e = dev.pad_to_length(x.view(), 0, 599, 0).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidArgument {
                    op: Op::PadToLength,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = dev.pad_to_length(x.view(), 1, 700, 0).unwrap_err();
        assert_eq!(
            e,
            Error::AxisOutOfRange {
                op: Op::PadToLength,
                axis: 1,
                ndim: 1
            }
        );
        let mut wrong = dev.alloc::<i32>(&[601]).unwrap();
        let e = dev
            .pad_to_length_into(x.view(), 0, 602, 0, wrong.view_mut())
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::ShapeMismatch {
                    op: Op::PadToLength,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(read(&wrong).iter().all(|&v| v == 0), "untouched");
        dev.synchronize().unwrap();
    }
}
