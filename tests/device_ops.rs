//! The six operations through `Device` (the API batching code calls), compared with the host
//! reference functions, plus the shape checks that only the device layer makes.

mod common;

use common::*;
use cpugpu::{
    host, Device, DeviceView, DeviceViewMut, Error, GatherPolicy, Op, ScatterPolicy, Shape,
};

fn dev() -> Device {
    Device::host()
}

fn gather_case<T: cpugpu::Element>() {
    let dev = dev();
    let mut rng = rng(11);
    for &rows in SIZES {
        let row_len = 3;
        let src: Vec<T> = random_vec(&mut rng, rows * row_len);
        let idx: Vec<i32> = if rows == 0 {
            Vec::new()
        } else {
            random_indices(&mut rng, rows + 5, rows)
                .into_iter()
                .map(|v| v as i32)
                .collect()
        };
        let src_dev = dev.upload(&src, &[rows, row_len]).unwrap();
        let idx_dev = dev.upload(&idx, &[idx.len()]).unwrap();
        let got = dev
            .gather_rows(src_dev.view(), idx_dev.view(), GatherPolicy::Checked)
            .unwrap();
        let want = host::gather_rows(&src, &[rows, row_len], &idx, GatherPolicy::Checked).unwrap();
        assert_eq!(got.shape().dims(), &[idx.len(), row_len]);
        assert_bits_eq(
            &got.to_vec().unwrap(),
            &want,
            &format!("gather rows={rows}"),
        );
    }
}

#[test]
fn gather_matches_host_reference() {
    for_each_width!(gather_case);
}

fn scatter_case<T: cpugpu::Element>() {
    let dev = dev();
    let mut rng = rng(12);
    for &rows in SIZES.iter().filter(|&&r| r > 0) {
        let row_len = 2;
        let n = rows + 3; // more source rows than destination rows: duplicates guaranteed
        let src: Vec<T> = random_vec(&mut rng, n * row_len);
        let idx = random_indices(&mut rng, n, rows);
        let init: Vec<T> = random_vec(&mut rng, rows * row_len);
        let mut got = dev.upload(&init, &[rows, row_len]).unwrap();
        dev.scatter_rows_into(
            DeviceView::host(&src, &[n, row_len]).unwrap(),
            DeviceView::host_vector(&idx),
            got.view_mut(),
            ScatterPolicy::Checked,
        )
        .unwrap();
        let mut want = init.clone();
        host::scatter_rows_into(
            &src,
            &idx,
            &mut want,
            &[rows, row_len],
            ScatterPolicy::Checked,
        )
        .unwrap();
        assert_bits_eq(
            &got.to_vec().unwrap(),
            &want,
            &format!("scatter rows={rows}"),
        );
    }
}

#[test]
fn scatter_matches_host_reference() {
    for_each_width!(scatter_case);
}

#[test]
fn gather_and_scatter_check_shapes() {
    let dev = dev();
    let src = dev.alloc::<f32>(&[4, 3]).unwrap();
    let idx = dev.upload(&[0i64, 1], &[2]).unwrap();
    let mut wrong = dev.alloc::<f32>(&[2, 4]).unwrap();
    let err = dev
        .gather_rows_into(
            src.view(),
            idx.view(),
            wrong.view_mut(),
            GatherPolicy::Checked,
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::ShapeMismatch {
            op: Op::GatherRows,
            what: "dst's shape",
            expected: Box::new(Shape::new(&[2, 3]).unwrap()),
            actual: Box::new(Shape::new(&[2, 4]).unwrap()),
        }
    );
    assert!(err.to_string().starts_with("gather_rows:"), "{err}");

    let mut dst = dev.alloc::<f32>(&[4, 3]).unwrap();
    let rows = dev.alloc::<f32>(&[3, 3]).unwrap();
    let err = dev
        .scatter_rows_into(
            rows.view(),
            idx.view(),
            dst.view_mut(),
            ScatterPolicy::Checked,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: Op::ScatterRows,
                what: "src's shape",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn gather_error_leaves_destination_untouched() {
    let dev = dev();
    let src = dev.upload(&[1u32, 2, 3], &[3, 1]).unwrap();
    let idx = dev.upload(&[0i32, 2, 3, -1], &[4]).unwrap();
    let mut dst = dev.upload(&poisoned::<u32>(4), &[4, 1]).unwrap();
    let err = dev
        .gather_rows_into(
            src.view(),
            idx.view(),
            dst.view_mut(),
            GatherPolicy::Checked,
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::IndexOutOfBounds {
            op: Op::GatherRows,
            position: 2,
            index: 3,
            bound: 3
        }
    );
    assert_bits_eq(&dst.to_vec().unwrap(), &poisoned::<u32>(4), "untouched");
}

#[test]
fn pad_borrows_when_already_a_multiple_and_checks_dst() {
    let dev = dev();
    let x = dev.upload(&[1i64, 2, 3, 4, 5, 6, 7, 8], &[2, 4]).unwrap();
    let same = dev.pad_to_multiple(x.view(), 1, 2, 0).unwrap();
    assert!(same.is_unchanged());
    assert_eq!(
        same.view().as_host_slice().unwrap().as_ptr(),
        x.view().as_host_slice().unwrap().as_ptr()
    );

    let padded = dev.pad_to_multiple(x.view(), 0, 3, -7).unwrap();
    assert!(!padded.is_unchanged());
    assert_eq!(padded.shape().dims(), &[3, 4]);
    assert_eq!(
        padded.view().as_host_slice().unwrap(),
        &[1, 2, 3, 4, 5, 6, 7, 8, -7, -7, -7, -7]
    );

    let mut dst = dev.alloc::<i64>(&[2, 6]).unwrap();
    dev.pad_to_multiple_into(x.view(), 1, 3, 9, dst.view_mut())
        .unwrap();
    assert_eq!(dst.to_vec().unwrap(), [1, 2, 3, 4, 9, 9, 5, 6, 7, 8, 9, 9]);

    let mut wrong = dev.alloc::<i64>(&[12]).unwrap();
    let err = dev
        .pad_to_multiple_into(x.view(), 1, 3, 9, wrong.view_mut())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShapeMismatch {
                op: Op::PadToMultiple,
                ..
            }
        ),
        "{err:?}"
    );
    let err = dev
        .pad_to_multiple_into(x.view(), 2, 3, 9, wrong.view_mut())
        .unwrap_err();
    assert_eq!(
        err,
        Error::AxisOutOfRange {
            op: Op::PadToMultiple,
            axis: 2,
            ndim: 2
        }
    );
    let err = dev.pad_to_multiple(x.view(), 0, 0, 9).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                op: Op::PadToMultiple,
                name: "multiple",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn offsets_flatten_split_round_trip() {
    let dev = dev();
    let mut rng = rng(13);
    for &n in SIZES {
        let arrays: Vec<Vec<f32>> = (0..n)
            .map(|i| random_vec(&mut rng, (i * 7919) % 13))
            .collect();
        let lens: Vec<i64> = arrays.iter().map(|a| a.len() as i64).collect();
        let offsets = dev
            .prefix_sum_offsets::<i64, i64>(DeviceView::host_vector(&lens))
            .unwrap();
        let parts: Vec<_> = arrays.iter().map(|a| DeviceView::host_vector(a)).collect();
        let (flat, flat_offsets) = dev.flatten::<f32, i64>(&parts).unwrap();
        let offs = flat_offsets.to_vec().unwrap();
        assert_eq!(offs, offsets.to_vec().unwrap(), "n={n}");
        let views = dev.split(flat.view(), &offs).unwrap();
        assert_eq!(views.len(), n);
        for (v, a) in views.iter().zip(&arrays) {
            assert_bits_eq(v.as_host_slice().unwrap(), a, &format!("n={n}"));
        }
    }
}

#[test]
fn offsets_into_checks_length_and_reports_errors() {
    let dev = dev();
    let lens = [1i32, -2, 3];
    let mut out = [7i32; 3];
    let err = dev
        .prefix_sum_offsets_into(
            DeviceView::host_vector(&lens),
            DeviceViewMut::host_vector(&mut out),
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::LengthMismatch {
            op: Op::PrefixSumOffsets,
            what: "offsets.len()",
            expected: 4,
            actual: 3
        }
    );
    let mut out = [7i32; 4];
    let err = dev
        .prefix_sum_offsets_into(
            DeviceView::host_vector(&lens),
            DeviceViewMut::host_vector(&mut out),
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::NegativeLength {
            op: Op::PrefixSumOffsets,
            position: 1,
            value: -2
        }
    );
    assert_eq!(out, [7; 4], "nothing written on error");
}

#[test]
fn flatten_empty_list_and_split_errors() {
    let dev = dev();
    let (flat, offs) = dev.flatten::<u8, i32>(&[]).unwrap();
    assert!(flat.is_empty());
    assert_eq!(offs.to_vec().unwrap(), [0]);

    let data = dev.upload(&[1u8, 2, 3], &[3]).unwrap();
    let mut out = vec![data.view()];
    let err = dev
        .split_into(data.view(), &[0i32, 2, 1], &mut out)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::OffsetsNotMonotonic {
                op: Op::Split,
                position: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(out.len(), 1, "out is untouched on error");
    let err = dev.split(data.view(), &[0i64, 4]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OffsetOutOfRange {
                op: Op::Split,
                position: 1,
                value: 4,
                len: 3
            }
        ),
        "{err:?}"
    );
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Device>();
    send_sync::<cpugpu::DeviceBuffer<f32>>();
    send_sync::<cpugpu::CpuGpuBuffer<half::bf16>>();
    send_sync::<cpugpu::UvaBufferPool>();
    send_sync::<cpugpu::PinnedMemoryManager>();
    send_sync::<cpugpu::PinnedBuffer<u64>>();
    send_sync::<Error>();
    send::<cpugpu::PoolBuffer<i32>>();
}

#[test]
fn a_row_length_that_overflows_is_an_error_even_with_a_zero_extent() {
    let big = 1usize << 40;
    let err = Shape::new(&[0, big, big]).unwrap_err();
    assert_eq!(
        err,
        Error::SizeOverflow {
            op: Op::Allocate,
            what: "the product of the shape's non-zero extents"
        }
    );
    let err =
        host::gather_rows::<u8, i32>(&[], &[0, big, big], &[], GatherPolicy::Checked).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeOverflow {
                op: Op::GatherRows,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn edge_inputs_that_used_to_panic_are_handled() {
    // An empty gather of rows too wide for their byte size to be computed.
    let mut out: [u64; 0] = [];
    host::gather_rows_into::<u64, i64>(&[], &[0, 1 << 62], &[], &mut out, GatherPolicy::Checked)
        .unwrap();
    // Zero-sized elements keep their length in pinned memory.
    let p = cpugpu::PinnedBuffer::<()>::new(5).unwrap();
    assert_eq!(p.len(), 5);
    let mut b =
        cpugpu::CpuGpuBuffer::<()>::new(&dev(), "zst", &[5], cpugpu::MemoryPlacement::Pinned)
            .unwrap();
    b.copy_to_device().unwrap();
    // A pool depth no memory can hold is an error, not an abort.
    let pool = cpugpu::UvaBufferPool::new(&dev(), usize::MAX);
    let err = pool.allocate::<u8>("x", &[4]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfMemory {
                op: Op::PoolAllocate,
                ..
            }
        ),
        "{err:?}"
    );
    // Display of a hand-built error at position 0 does not underflow.
    let e = Error::OffsetsNotMonotonic {
        op: Op::Split,
        position: 0,
        previous: 3,
        value: 1,
    };
    assert!(e.to_string().starts_with("split: offsets[0] = 1"), "{e}");
}
