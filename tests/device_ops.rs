//! The six operations through `Device` (the API batching code calls), compared with the host
//! reference functions, plus the shape checks that only the device layer makes.
//!
//! Every test body runs on every backend this build and machine offer (see [`backends`]): the
//! host backend always, and the CUDA device when the crate is built with `--features cuda` and
//! a GPU answers. Inputs are uploaded with `Device::upload` and outputs read back with `to_vec`
//! or `copy_to_host`, so the same body runs on both. On CUDA the errors the kernels find in the
//! data come back from the next `synchronize`, so results are compared once [`settled`]:
//! identical on both backends. Argument errors (shapes, lengths, axes) are checked on the call
//! itself, which must return them at once on every backend.

mod common;

use common::*;
use cpugpu::{
    host, BackendKind, Device, DeviceView, DeviceViewMut, Element, Error, GatherPolicy, Op,
    ScatterPolicy, Shape,
};

/// The backends to run every test on: the host backend, plus [`Device::auto`] when it is a GPU
/// (with `--features emulator`, the README's test command, always: the emulated GPU). A missing
/// GPU is a failure in an emulator build, and in a `cuda` build with `CPUGPU_REQUIRE_GPU=1`.
fn backends() -> Vec<Device> {
    let mut all = vec![Device::host()];
    let auto = Device::auto();
    if auto.kind() != BackendKind::Host {
        all.push(auto);
    } else if cfg!(feature = "emulator") {
        panic!(
            "the emulated GPU is always there, yet Device::auto() fell back: {}",
            auto.fallback_reason().unwrap_or("unknown")
        );
    } else if cfg!(feature = "cuda") && std::env::var("CPUGPU_REQUIRE_GPU").is_ok_and(|v| v == "1")
    {
        panic!(
            "CPUGPU_REQUIRE_GPU=1 but no CUDA device: {}",
            auto.fallback_reason().unwrap_or("unknown")
        );
    }
    all
}

/// `r` once `dev`'s work has finished: an error returned by the call itself, else the first
/// error the kernels found in the data (on CUDA, reported by `synchronize`), else the value.
fn settled<T>(dev: &Device, r: cpugpu::Result<T>) -> cpugpu::Result<T> {
    let v = r?;
    dev.synchronize()?;
    Ok(v)
}

/// How a test hands its inputs to `dev`'s operations.
#[derive(Clone, Copy, Debug)]
enum Inputs {
    /// Buffers made by `Device::upload`: every backend.
    Uploaded,
    /// Host slices as views (`DeviceView::host*`), as host batching code passes them: the host
    /// backend only, since a CUDA operation given host memory is `Error::WrongDevice`.
    HostSlices,
}

/// The input kinds to run on `dev`: uploaded buffers everywhere, host slices on the host.
fn input_kinds(dev: &Device) -> Vec<Inputs> {
    match dev.kind() {
        BackendKind::Host => vec![Inputs::Uploaded, Inputs::HostSlices],
        _ => vec![Inputs::Uploaded],
    }
}

/// A view's contents, checking that it is `dev`'s memory: a host slice on the host backend,
/// device memory (no host slice) read back with `copy_to_host` elsewhere.
#[track_caller]
fn read<T: Element>(dev: &Device, v: DeviceView<'_, T>) -> Vec<T> {
    assert_eq!(v.backend(), dev.kind(), "a view of {}'s memory", dev.kind());
    if dev.kind() == BackendKind::Host {
        return v
            .as_host_slice()
            .expect("a host-backend view is a host slice")
            .to_vec();
    }
    assert!(v.as_host_slice().is_none(), "{}: no host slice", dev.kind());
    let mut out = poisoned::<T>(v.len());
    v.copy_to_host(&mut out).unwrap();
    out
}

/// Where a view's memory starts (a host address on the host backend, a device address on
/// CUDA): equal addresses tell a borrow from a copy.
fn start_address<T: Element>(v: DeviceView<'_, T>) -> u64 {
    if let Some(s) = v.as_host_slice() {
        return s.as_ptr() as u64;
    }
    #[cfg(any(feature = "cuda", feature = "emulator"))]
    if let Some(p) = v.cuda_ptr() {
        return p;
    }
    panic!("a {} view with no address", v.backend())
}

fn gather_case<T: Element>() {
    for dev in backends() {
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
            let case = format!(
                "{}: gather {} rows={rows}",
                dev.kind(),
                std::any::type_name::<T>()
            );
            let src_dev = dev.upload(&src, &[rows, row_len]).unwrap();
            let idx_dev = dev.upload(&idx, &[idx.len()]).unwrap();
            let got = settled(
                &dev,
                dev.gather_rows(src_dev.view(), idx_dev.view(), GatherPolicy::Checked),
            )
            .unwrap();
            let want =
                host::gather_rows(&src, &[rows, row_len], &idx, GatherPolicy::Checked).unwrap();
            assert_eq!(got.shape().dims(), &[idx.len(), row_len], "{case}");
            assert_bits_eq(&got.to_vec().unwrap(), &want, &case);
        }
    }
}

#[test]
fn gather_matches_host_reference() {
    for_each_width!(gather_case);
}

fn scatter_case<T: Element>() {
    for dev in backends() {
        for inputs in input_kinds(&dev) {
            let mut rng = rng(12);
            for &rows in SIZES.iter().filter(|&&r| r > 0) {
                let row_len = 2;
                let n = rows + 3; // more source rows than destination rows: duplicates guaranteed
                let src: Vec<T> = random_vec(&mut rng, n * row_len);
                let idx = random_indices(&mut rng, n, rows);
                let init: Vec<T> = random_vec(&mut rng, rows * row_len);
                let case = format!(
                    "{}: scatter {} rows={rows} ({inputs:?})",
                    dev.kind(),
                    std::any::type_name::<T>()
                );
                let mut got = dev.upload(&init, &[rows, row_len]).unwrap();
                let (src_dev, idx_dev);
                let (src_view, idx_view) = match inputs {
                    Inputs::HostSlices => (
                        DeviceView::host(&src, &[n, row_len]).unwrap(),
                        DeviceView::host_vector(&idx),
                    ),
                    Inputs::Uploaded => {
                        src_dev = dev.upload(&src, &[n, row_len]).unwrap();
                        idx_dev = dev.upload(&idx, &[n]).unwrap();
                        (src_dev.view(), idx_dev.view())
                    }
                };
                settled(
                    &dev,
                    dev.scatter_rows_into(
                        src_view,
                        idx_view,
                        got.view_mut(),
                        ScatterPolicy::Checked,
                    ),
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
                assert_bits_eq(&got.to_vec().unwrap(), &want, &case);
            }
        }
    }
}

#[test]
fn scatter_matches_host_reference() {
    for_each_width!(scatter_case);
}

#[test]
fn gather_and_scatter_check_shapes() {
    for dev in backends() {
        let kind = dev.kind();
        let src = dev.alloc::<f32>(&[4, 3]).unwrap();
        let idx = dev.upload(&[0i64, 1], &[2]).unwrap();
        let mut wrong = dev.alloc::<f32>(&[2, 4]).unwrap();
        // Argument errors: returned by the call itself on every backend.
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
            },
            "{kind}"
        );
        assert!(err.to_string().starts_with("gather_rows:"), "{kind}: {err}");

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
            "{kind}: {err:?}"
        );
        dev.synchronize().unwrap();
    }
}

#[test]
fn gather_error_leaves_destination_untouched() {
    for dev in backends() {
        let kind = dev.kind();
        let src = dev.upload(&[1u32, 2, 3], &[3, 1]).unwrap();
        let idx = dev.upload(&[0i32, 2, 3, -1], &[4]).unwrap();
        let mut dst = dev.upload(&poisoned::<u32>(4), &[4, 1]).unwrap();
        let err = settled(
            &dev,
            dev.gather_rows_into(
                src.view(),
                idx.view(),
                dst.view_mut(),
                GatherPolicy::Checked,
            ),
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::IndexOutOfBounds {
                op: Op::GatherRows,
                position: 2,
                index: 3,
                bound: 3
            },
            "{kind}"
        );
        assert_bits_eq(
            &dst.to_vec().unwrap(),
            &poisoned::<u32>(4),
            &format!("{kind}: untouched"),
        );
    }
}

#[test]
fn pad_borrows_when_already_a_multiple_and_checks_dst() {
    for dev in backends() {
        let kind = dev.kind();
        let x = dev.upload(&[1i64, 2, 3, 4, 5, 6, 7, 8], &[2, 4]).unwrap();
        // Already a multiple: the input itself comes back, on every backend.
        let same = settled(&dev, dev.pad_to_multiple(x.view(), 1, 2, 0)).unwrap();
        assert!(same.is_unchanged(), "{kind}");
        assert_eq!(same.view().backend(), kind);
        assert_eq!(
            start_address(same.view()),
            start_address(x.view()),
            "{kind}: borrowed, not copied"
        );
        assert_eq!(read(&dev, same.view()), [1, 2, 3, 4, 5, 6, 7, 8], "{kind}");

        let padded = settled(&dev, dev.pad_to_multiple(x.view(), 0, 3, -7)).unwrap();
        assert!(!padded.is_unchanged(), "{kind}");
        assert_eq!(padded.shape().dims(), &[3, 4], "{kind}");
        assert_eq!(
            read(&dev, padded.view()),
            [1, 2, 3, 4, 5, 6, 7, 8, -7, -7, -7, -7],
            "{kind}"
        );

        let mut dst = dev.alloc::<i64>(&[2, 6]).unwrap();
        settled(
            &dev,
            dev.pad_to_multiple_into(x.view(), 1, 3, 9, dst.view_mut()),
        )
        .unwrap();
        assert_eq!(
            dst.to_vec().unwrap(),
            [1, 2, 3, 4, 9, 9, 5, 6, 7, 8, 9, 9],
            "{kind}"
        );

        // Argument errors: returned by the call itself on every backend.
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
            "{kind}: {err:?}"
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
            },
            "{kind}"
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
            "{kind}: {err:?}"
        );
        dev.synchronize().unwrap();
    }
}

#[test]
fn offsets_flatten_split_round_trip() {
    for dev in backends() {
        for inputs in input_kinds(&dev) {
            let mut rng = rng(13);
            for &n in SIZES {
                let arrays: Vec<Vec<f32>> = (0..n)
                    .map(|i| random_vec(&mut rng, (i * 7919) % 13))
                    .collect();
                let lens: Vec<i64> = arrays.iter().map(|a| a.len() as i64).collect();
                let case = format!("{}: n={n} ({inputs:?})", dev.kind());
                let (lens_dev, arrays_dev);
                let (lens_view, parts): (DeviceView<'_, i64>, Vec<DeviceView<'_, f32>>) =
                    match inputs {
                        Inputs::HostSlices => (
                            DeviceView::host_vector(&lens),
                            arrays.iter().map(|a| DeviceView::host_vector(a)).collect(),
                        ),
                        Inputs::Uploaded => {
                            lens_dev = dev.upload(&lens, &[n]).unwrap();
                            arrays_dev = arrays
                                .iter()
                                .map(|a| dev.upload(a, &[a.len()]).unwrap())
                                .collect::<Vec<_>>();
                            (
                                lens_dev.view(),
                                arrays_dev.iter().map(|b| b.view()).collect(),
                            )
                        }
                    };
                let offsets = settled(&dev, dev.prefix_sum_offsets::<i64, i64>(lens_view)).unwrap();
                let (flat, flat_offsets) = settled(&dev, dev.flatten::<f32, i64>(&parts)).unwrap();
                let offs = flat_offsets.to_vec().unwrap();
                assert_eq!(offs, offsets.to_vec().unwrap(), "{case}");
                let views = dev.split(flat.view(), &offs).unwrap();
                assert_eq!(views.len(), n, "{case}");
                for (v, a) in views.iter().zip(&arrays) {
                    assert_bits_eq(&read(&dev, *v), a, &case);
                }
            }
        }
    }
}

#[test]
fn offsets_into_checks_length_and_reports_errors() {
    for dev in backends() {
        for inputs in input_kinds(&dev) {
            let case = format!("{} ({inputs:?})", dev.kind());
            let lens = [1i32, -2, 3];
            // Prefix sums of `lens` into `out_len` offsets, all 7 before the call: the settled
            // result and the offsets afterwards.
            let attempt = |out_len: usize| -> (cpugpu::Result<()>, Vec<i32>) {
                match inputs {
                    Inputs::HostSlices => {
                        let mut out = vec![7i32; out_len];
                        let r = dev.prefix_sum_offsets_into(
                            DeviceView::host_vector(&lens),
                            DeviceViewMut::host_vector(&mut out),
                        );
                        (settled(&dev, r), out)
                    }
                    Inputs::Uploaded => {
                        let l = dev.upload(&lens, &[lens.len()]).unwrap();
                        let mut out = dev.upload(&vec![7i32; out_len], &[out_len]).unwrap();
                        let r = dev.prefix_sum_offsets_into(l.view(), out.view_mut());
                        (settled(&dev, r), out.to_vec().unwrap())
                    }
                }
            };
            let (r, out) = attempt(3);
            assert_eq!(
                r.unwrap_err(),
                Error::LengthMismatch {
                    op: Op::PrefixSumOffsets,
                    what: "offsets.len()",
                    expected: 4,
                    actual: 3
                },
                "{case}"
            );
            assert_eq!(out, [7; 3], "{case}: nothing written on error");
            let (r, out) = attempt(4);
            assert_eq!(
                r.unwrap_err(),
                Error::NegativeLength {
                    op: Op::PrefixSumOffsets,
                    position: 1,
                    value: -2
                },
                "{case}"
            );
            assert_eq!(out, [7; 4], "{case}: nothing written on error");
        }
    }
}

#[test]
fn flatten_empty_list_and_split_errors() {
    for dev in backends() {
        let kind = dev.kind();
        let (flat, offs) = settled(&dev, dev.flatten::<u8, i32>(&[])).unwrap();
        assert!(flat.is_empty(), "{kind}");
        assert_eq!(offs.to_vec().unwrap(), [0], "{kind}");

        let data = dev.upload(&[1u8, 2, 3], &[3]).unwrap();
        let mut out = vec![data.view()];
        // Split validates its host-side offsets: errors come back from the call on every backend.
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
            "{kind}: {err:?}"
        );
        assert_eq!(out.len(), 1, "{kind}: out is untouched on error");
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
            "{kind}: {err:?}"
        );
        dev.synchronize().unwrap();
    }
}

/// Compile-time properties of the handle types: no backend involved.
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
    // The shape and the host reference: no backend involved.
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
    // The same shape given to each backend.
    for dev in backends() {
        let kind = dev.kind();
        let err = dev.alloc::<u8>(&[0, big, big]).unwrap_err();
        assert_eq!(
            err,
            Error::SizeOverflow {
                op: Op::Allocate,
                what: "the product of the shape's non-zero extents"
            },
            "{kind}"
        );
        let err = dev.upload::<u8>(&[], &[0, big, big]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SizeOverflow {
                    op: Op::CopyToDevice,
                    ..
                }
            ),
            "{kind}: {err:?}"
        );
    }
}

#[test]
fn edge_inputs_that_used_to_panic_are_handled() {
    // An empty gather of rows too wide for their byte size to be computed (host reference).
    let mut out: [u64; 0] = [];
    host::gather_rows_into::<u64, i64>(&[], &[0, 1 << 62], &[], &mut out, GatherPolicy::Checked)
        .unwrap();
    // (Zero-sized elements no longer build: see the compile_fail doctests in src/element.rs.)
    for dev in backends() {
        let kind = dev.kind();
        // A pool depth no memory can hold is an error, not an abort.
        let pool = cpugpu::UvaBufferPool::new(&dev, usize::MAX);
        let err = pool.allocate::<u8>("x", &[4]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfMemory {
                    op: Op::PoolAllocate,
                    ..
                }
            ),
            "{kind}: {err:?}"
        );
    }
    // Display of a hand-built error at position 0 does not underflow.
    let e = Error::OffsetsNotMonotonic {
        op: Op::Split,
        position: 0,
        previous: 3,
        value: 1,
    };
    assert!(e.to_string().starts_with("split: offsets[0] = 1"), "{e}");
}
