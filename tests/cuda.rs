//! The operations, buffers and pool on a CUDA device, compared with the host reference.
//!
//! Every operation here is data movement, so results are compared exactly (bit for bit, floats
//! included); no tolerance is needed or used. Outputs are poisoned before each run, inputs are
//! seeded random bytes, sizes cross the kernels' boundaries (a warp, a block, a scan tile).
//!
//! With `--features emulator` (the README's test command) every body runs on the emulated GPU:
//! the crate's real CUDA code path, against an emulated driver, on CPU threads; a missing device
//! is then a failure. With `--features cuda` and no device every GPU test prints why and passes
//! (CI's no-device path); `CPUGPU_REQUIRE_GPU=1` turns that into a failure on a GPU machine.
//! `no_device_path_*` runs everywhere.
#![cfg(any(feature = "cuda", feature = "emulator"))]

mod common;

use common::*;
use cpugpu::{
    host, BackendKind, CpuGpuBuffer, Device, DeviceBuffer, DeviceView, DeviceViewMut, Element,
    Error, GatherPolicy, Index, MemoryPlacement, Offset, Op, PinnedMemoryManager, ScatterPolicy,
    UvaBufferPool,
};

/// The CUDA device, or `None` (after printing why) when there is none and none is required.
fn gpu() -> Option<Device> {
    let dev = Device::auto();
    if dev.kind() == BackendKind::Cuda {
        return Some(dev);
    }
    let reason = dev.fallback_reason().unwrap_or("unknown");
    if cfg!(feature = "emulator") {
        panic!("the emulated GPU is always there, yet Device::auto() fell back: {reason}");
    }
    if std::env::var("CPUGPU_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("CPUGPU_REQUIRE_GPU=1 but no CUDA device: {reason}");
    }
    eprintln!("skipping: no CUDA device ({reason})");
    None
}

#[test]
fn no_device_path_falls_back_to_host_with_a_reason() {
    let dev = Device::auto();
    match dev.kind() {
        BackendKind::Cuda => {
            let (ordinal, name, cc) = dev.cuda_info().unwrap();
            eprintln!("CUDA device {ordinal}: {name}, sm_{}{}", cc.0, cc.1);
            assert!(dev.fallback_reason().is_none());
        }
        BackendKind::Host => {
            let reason = dev
                .fallback_reason()
                .expect("auto() must say why it fell back");
            eprintln!("fallback reason: {reason}");
            assert!(
                reason.contains("CUDA") || reason.contains("driver"),
                "{reason}"
            );
            // Asking for a GPU explicitly is an error, not a panic, and names the call.
            let err = Device::cuda(0).unwrap_err();
            assert!(
                matches!(err, Error::Driver { op: Op::Device, .. }),
                "{err:?}"
            );
            // The host backend still works in a cuda build.
            let d = dev.upload(&[1u32, 2, 3], &[3]).unwrap();
            assert_eq!(d.to_vec().unwrap(), [1, 2, 3]);
        }
        _ => unreachable!(),
    }
    if std::env::var("CPUGPU_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        assert_eq!(dev.kind(), BackendKind::Cuda, "CPUGPU_REQUIRE_GPU=1");
    }
}

/// Uploads `data` poisoned-free; returns the device buffer.
fn up<T: Element>(dev: &Device, data: &[T], shape: &[usize]) -> DeviceBuffer<T> {
    dev.upload(data, shape).unwrap()
}

/// A device buffer filled with the poison pattern.
fn poisoned_dev<T: Element>(dev: &Device, shape: &[usize]) -> DeviceBuffer<T> {
    let n = shape.iter().product();
    up(dev, &poisoned::<T>(n), shape)
}

const ROW_LENS: &[usize] = &[1, 3, 4, 16, 33];

/// `full` on a GPU, `emulated` on the emulated GPU: sizes that only load a real device (the
/// 40,000 rows that cross the host reference's parallel threshold, the 256 MiB inputs) are
/// smaller there, still crossing every kernel boundary (a warp, a block, several blocks, a
/// scan tile, many tiles), so the suite also runs under the sanitizers in CI's time.
fn scaled(full: usize, emulated: usize) -> usize {
    if cfg!(feature = "emulator") {
        emulated
    } else {
        full
    }
}

/// The boundary sizes of `common::SIZES`, the largest scaled.
fn gpu_sizes() -> Vec<usize> {
    SIZES
        .iter()
        .map(|&n| if n == 40_000 { scaled(n, 4_099) } else { n })
        .collect()
}

fn gather_case_idx<T: Element, I: Index + Element + TryFrom<i64>>(dev: &Device, seed: u64) {
    let mut rng = rng(seed);
    for rows in gpu_sizes() {
        for &row_len in ROW_LENS {
            let src: Vec<T> = random_vec(&mut rng, rows * row_len);
            let n = rows + 7;
            let mut idx: Vec<i64> = if rows == 0 {
                vec![-1; n]
            } else {
                random_indices(&mut rng, n, rows)
            };
            for k in (0..n).step_by(5) {
                idx[k] = -1; // padding slots: filled under NegativeFill
            }
            let idx: Vec<I> = idx.iter().map(|&v| I::try_from(v).ok().unwrap()).collect();
            let fill: T = random_elem(&mut rng);
            let policy = GatherPolicy::NegativeFill(fill);
            let want = host::gather_rows(&src, &[rows, row_len], &idx, policy).unwrap();
            let s = up(dev, &src, &[rows, row_len]);
            let i = up(dev, &idx, &[n]);
            let mut out = poisoned_dev::<T>(dev, &[n, row_len]);
            dev.gather_rows_into(s.view(), i.view(), out.view_mut(), policy)
                .unwrap();
            dev.synchronize().unwrap();
            let case = format!(
                "gather {} rows={rows} row_len={row_len} idx={}",
                std::any::type_name::<T>(),
                std::any::type_name::<I>()
            );
            assert_bits_eq(&out.to_vec().unwrap(), &want, &case);
            // Unaligned source and destination: start one row in.
            if rows > 1 {
                let want = host::gather_rows(
                    &src[row_len..],
                    &[rows - 1, row_len],
                    &idx[1..]
                        .iter()
                        .map(|v| {
                            let v = v.to_i64();
                            I::try_from(if v >= (rows - 1) as i64 { 0 } else { v })
                                .ok()
                                .unwrap()
                        })
                        .collect::<Vec<I>>(),
                    policy,
                )
                .unwrap();
                let idx2: Vec<I> = idx[1..]
                    .iter()
                    .map(|v| {
                        let v = v.to_i64();
                        I::try_from(if v >= (rows - 1) as i64 { 0 } else { v })
                            .ok()
                            .unwrap()
                    })
                    .collect();
                let i2 = up(dev, &idx2, &[n - 1]);
                let mut out = poisoned_dev::<T>(dev, &[n, row_len]);
                let dst = out.view_mut().into_rows(1..n).unwrap();
                dev.gather_rows_into(s.view().rows(1..rows).unwrap(), i2.view(), dst, policy)
                    .unwrap();
                let got = out.to_vec().unwrap();
                assert_bits_eq(&got[row_len..], &want, &format!("{case} (offset by a row)"));
                assert_bits_eq(
                    &got[..row_len],
                    &poisoned::<T>(row_len),
                    &format!("{case} (row before untouched)"),
                );
            }
        }
    }
}

fn gather_case<T: Element>() {
    if let Some(dev) = gpu() {
        gather_case_idx::<T, i32>(&dev, 21);
        gather_case_idx::<T, i64>(&dev, 22);
    }
}

#[test]
fn gather_matches_host_for_every_width_index_type_and_size() {
    for_each_width!(gather_case);
}

fn scatter_case_idx<T: Element, I: Index + Element + TryFrom<i64>>(dev: &Device, seed: u64) {
    let mut rng = rng(seed);
    for rows in gpu_sizes().into_iter().filter(|&r| r > 0) {
        for &row_len in ROW_LENS {
            let n = rows + 9; // more source rows than destination rows: duplicates
            let src: Vec<T> = random_vec(&mut rng, n * row_len);
            let mut idx = random_indices(&mut rng, n, rows);
            for k in (0..n).step_by(7) {
                idx[k] = -1;
            }
            let idx: Vec<I> = idx.iter().map(|&v| I::try_from(v).ok().unwrap()).collect();
            let init: Vec<T> = random_vec(&mut rng, rows * row_len);
            let mut want = init.clone();
            host::scatter_rows_into(
                &src,
                &idx,
                &mut want,
                &[rows, row_len],
                ScatterPolicy::NegativeSkip,
            )
            .unwrap();
            let s = up(dev, &src, &[n, row_len]);
            let i = up(dev, &idx, &[n]);
            let mut out = up(dev, &init, &[rows, row_len]);
            dev.scatter_rows_into(
                s.view(),
                i.view(),
                out.view_mut(),
                ScatterPolicy::NegativeSkip,
            )
            .unwrap();
            dev.synchronize().unwrap();
            let case = format!(
                "scatter {} rows={rows} row_len={row_len} idx={}",
                std::any::type_name::<T>(),
                std::any::type_name::<I>()
            );
            assert_bits_eq(&out.to_vec().unwrap(), &want, &case);
        }
    }
}

fn scatter_case<T: Element>() {
    if let Some(dev) = gpu() {
        scatter_case_idx::<T, i32>(&dev, 31);
        scatter_case_idx::<T, i64>(&dev, 32);
    }
}

#[test]
fn scatter_matches_host_last_wins_for_every_width_index_type_and_size() {
    for_each_width!(scatter_case);
}

fn pad_case<T: Element>() {
    let Some(dev) = gpu() else { return };
    let mut rng = rng(41);
    let shapes: Vec<Vec<usize>> = vec![
        vec![0, 3],
        vec![1, 1],
        vec![33, 5],
        vec![257, 3],
        vec![scaled(40_000, 4_099), 2],
        vec![3, 7, 5],
    ];
    for shape in &shapes {
        let shape = shape.as_slice();
        for axis in 0..shape.len() {
            for multiple in [1usize, 2, 8, 64] {
                let n: usize = shape.iter().product();
                let src: Vec<T> = random_vec(&mut rng, n);
                let fill: T = random_elem(&mut rng);
                let want = host::pad_to_multiple(&src, shape, axis, multiple, fill).unwrap();
                let s = up(&dev, &src, shape);
                let got = dev.pad_to_multiple(s.view(), axis, multiple, fill).unwrap();
                assert_eq!(got.shape(), want.shape);
                let case = format!(
                    "pad {} {shape:?} axis={axis} multiple={multiple}",
                    std::any::type_name::<T>()
                );
                let mut host_out = poisoned::<T>(got.view().len());
                got.view().copy_to_host(&mut host_out).unwrap();
                assert_bits_eq(&host_out, &want.data, &case);
            }
        }
    }
}

#[test]
fn pad_matches_host_for_every_width_axis_and_multiple() {
    for_each_width!(pad_case);
}

fn offsets_case<L: Index + Element + TryFrom<i64>, O: Offset + Element>(dev: &Device, seed: u64) {
    use rand::Rng;
    let mut rng = rng(seed);
    for n in [
        0usize,
        1,
        31,
        255,
        256,
        4095,
        4096,
        4097,
        70_001,
        scaled(1 << 20, 1 << 18),
    ] {
        let lengths: Vec<L> = (0..n)
            .map(|_| L::try_from(rng.gen_range(0..9i64)).ok().unwrap())
            .collect();
        let want: Vec<O> = host::prefix_sum_offsets(&lengths).unwrap();
        let l = up(dev, &lengths, &[n]);
        let mut out = poisoned_dev::<O>(dev, &[n + 1]);
        dev.prefix_sum_offsets_into(l.view(), out.view_mut())
            .unwrap();
        dev.synchronize().unwrap();
        assert_bits_eq(&out.to_vec().unwrap(), &want, &format!("offsets n={n}"));
    }
}

#[test]
fn offsets_match_host_single_and_multi_tile_every_type() {
    let Some(dev) = gpu() else { return };
    offsets_case::<i32, i32>(&dev, 51);
    offsets_case::<i32, i64>(&dev, 52);
    offsets_case::<i64, i32>(&dev, 53);
    offsets_case::<i64, i64>(&dev, 54);
}

#[test]
fn offsets_errors_come_back_at_synchronize_and_leave_output_unwritten() {
    let Some(dev) = gpu() else { return };
    for n in [10usize, 5000, 100_000] {
        // A negative length at position n - 3.
        let mut lengths = vec![1i32; n];
        lengths[n - 3] = -4;
        let l = up(&dev, &lengths, &[n]);
        let mut out = poisoned_dev::<i64>(&dev, &[n + 1]);
        dev.prefix_sum_offsets_into(l.view(), out.view_mut())
            .unwrap();
        let err = dev.synchronize().unwrap_err();
        assert!(
            matches!(err, Error::NegativeLength { op: Op::PrefixSumOffsets, position, value: -4 } if position == n - 3),
            "n={n}: {err:?}"
        );
        assert_bits_eq(&out.to_vec().unwrap(), &poisoned::<i64>(n + 1), "unwritten");
        // Overflow of i32 offsets at a known position.
        let mut lengths = vec![1i64; n];
        lengths[n / 2] = i64::from(i32::MAX);
        let l = up(&dev, &lengths, &[n]);
        let mut out = poisoned_dev::<i32>(&dev, &[n + 1]);
        dev.prefix_sum_offsets_into(l.view(), out.view_mut())
            .unwrap();
        let err = dev.synchronize().unwrap_err();
        let want = host::prefix_sum_offsets::<i64, i32>(&lengths).unwrap_err();
        assert_eq!(err, want, "n={n}");
    }
}

fn flatten_case<T: Element>() {
    use rand::Rng;
    let Some(dev) = gpu() else { return };
    let mut rng = rng(61);
    for segments in [0usize, 1, 2, 33, 1024] {
        // Skewed sizes: mostly tiny, a few large, some empty.
        let lens: Vec<usize> = (0..segments)
            .map(|k| match k % 11 {
                0 => 0,
                1 => rng.gen_range(1000..5000),
                _ => rng.gen_range(1..40),
            })
            .collect();
        let parts: Vec<Vec<T>> = lens.iter().map(|&l| random_vec(&mut rng, l + 1)).collect();
        // Each segment starts one element into its buffer: unaligned for wide access.
        let bufs: Vec<DeviceBuffer<T>> = parts.iter().map(|p| up(&dev, p, &[p.len()])).collect();
        let views: Vec<DeviceView<'_, T>> = bufs
            .iter()
            .map(|b| b.view().rows(1..b.len()).unwrap())
            .collect();
        let host_parts: Vec<&[T]> = parts.iter().map(|p| &p[1..]).collect();
        let (want, want_offs) = host::flatten::<T, i64, _>(&host_parts).unwrap();
        let (got, offs) = dev.flatten::<T, i64>(&views).unwrap();
        let case = format!("flatten {} segments={segments}", std::any::type_name::<T>());
        assert_bits_eq(&got.to_vec().unwrap(), &want, &case);
        assert_eq!(offs.to_vec().unwrap(), want_offs, "{case}");
        // Split back: zero-copy views and the batched copy.
        let parts_back = dev.split(got.view(), &want_offs).unwrap();
        assert_eq!(parts_back.len(), segments);
        let mut outs: Vec<DeviceBuffer<T>> = lens
            .iter()
            .map(|&l| poisoned_dev::<T>(&dev, &[l]))
            .collect();
        let mut out_views: Vec<DeviceViewMut<'_, T>> =
            outs.iter_mut().map(|o| o.view_mut()).collect();
        dev.split_copy_into(got.view(), &want_offs, &mut out_views)
            .unwrap();
        drop(out_views);
        for (k, (o, v)) in outs.iter().zip(&parts_back).enumerate() {
            let mut hv = poisoned::<T>(v.len());
            v.copy_to_host(&mut hv).unwrap();
            assert_bits_eq(&hv, host_parts[k], &format!("{case} split view {k}"));
            assert_bits_eq(
                &o.to_vec().unwrap(),
                host_parts[k],
                &format!("{case} split copy {k}"),
            );
        }
    }
}

#[test]
fn flatten_and_split_match_host_skewed_unaligned_every_width() {
    for_each_width!(flatten_case);
}

#[test]
fn bounds_errors_are_reported_at_synchronize_and_the_context_stays_usable() {
    let Some(dev) = gpu() else { return };
    let table: Vec<f32> = (0..40).map(|v| v as f32).collect();
    let t = up(&dev, &table, &[10, 4]);
    let bad = up(&dev, &[1i64, 9, 10, 3, 12], &[5]);
    let mut out = poisoned_dev::<f32>(&dev, &[5, 4]);
    dev.gather_rows_into(t.view(), bad.view(), out.view_mut(), GatherPolicy::Checked)
        .unwrap();
    let err = dev.synchronize().unwrap_err();
    assert_eq!(
        err,
        Error::IndexOutOfBounds {
            op: Op::GatherRows,
            position: 2,
            index: 10,
            bound: 10
        }
    );
    assert_bits_eq(
        &out.to_vec().unwrap(),
        &poisoned::<f32>(20),
        "gather: dst untouched",
    );
    // Negative index under Checked, i32 indices (sign-extended in the error).
    let bad32 = up(&dev, &[0i32, -7], &[2]);
    let mut out2 = poisoned_dev::<f32>(&dev, &[2, 4]);
    dev.gather_rows_into(
        t.view(),
        bad32.view(),
        out2.view_mut(),
        GatherPolicy::Checked,
    )
    .unwrap();
    assert_eq!(
        dev.synchronize().unwrap_err(),
        Error::IndexOutOfBounds {
            op: Op::GatherRows,
            position: 1,
            index: -7,
            bound: 10
        }
    );
    // Scatter: first bad position wins, dst untouched.
    let rows = up(&dev, &[1u32, 2, 3], &[3, 1]);
    let slots = up(&dev, &[0i32, 5, 7], &[3]);
    let mut cache = up(&dev, &[9u32; 4], &[4, 1]);
    dev.scatter_rows_into(
        rows.view(),
        slots.view(),
        cache.view_mut(),
        ScatterPolicy::Checked,
    )
    .unwrap();
    assert_eq!(
        dev.synchronize().unwrap_err(),
        Error::IndexOutOfBounds {
            op: Op::ScatterRows,
            position: 1,
            index: 5,
            bound: 4
        }
    );
    assert_eq!(cache.to_vec().unwrap(), [9; 4]);
    // The context is still usable: good work after the errors gives right answers.
    let good = up(&dev, &[9i64, 0], &[2]);
    let g = dev
        .gather_rows(t.view(), good.view(), GatherPolicy::Checked)
        .unwrap();
    dev.synchronize().unwrap();
    assert_eq!(
        g.to_vec().unwrap(),
        [36.0, 37.0, 38.0, 39.0, 0.0, 1.0, 2.0, 3.0]
    );
    // Many errors before one synchronize: the earliest is reported.
    for _ in 0..300 {
        dev.gather_rows_into(t.view(), bad.view(), out.view_mut(), GatherPolicy::Checked)
            .unwrap();
    }
    assert!(matches!(
        dev.synchronize().unwrap_err(),
        Error::IndexOutOfBounds { position: 2, .. }
    ));
    dev.synchronize().unwrap();
}

#[test]
fn host_memory_given_to_a_gpu_operation_is_a_typed_error() {
    let Some(dev) = gpu() else { return };
    let src = [1u32, 2, 3];
    let idx = up(&dev, &[0i32], &[1]);
    let mut out = dev.alloc::<u32>(&[1]).unwrap();
    let err = dev
        .gather_rows_into(
            DeviceView::host_vector(&src),
            idx.view(),
            out.view_mut(),
            GatherPolicy::Checked,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongDevice {
                op: Op::GatherRows,
                ..
            }
        ),
        "{err:?}"
    );
    // And device memory given to the host backend.
    let host = Device::host();
    let t = up(&dev, &src, &[3]);
    let mut o = [0u32; 1];
    let err = host
        .gather_rows_into(
            t.view(),
            DeviceView::host_vector(&[0i32]),
            DeviceViewMut::host_vector(&mut o),
            GatherPolicy::Checked,
        )
        .unwrap_err();
    assert!(matches!(err, Error::WrongDevice { .. }), "{err:?}");
}

fn fill_case<T: Element>() {
    let Some(dev) = gpu() else { return };
    let mut rng = rng(71);
    for n in [0usize, 1, 3, 1000, 65_537] {
        let v: T = random_elem(&mut rng);
        let mut b = poisoned_dev::<T>(&dev, &[n + 1]);
        b.view_mut().into_rows(1..n + 1).unwrap().fill(v);
        dev.synchronize().unwrap();
        let got = b.to_vec().unwrap();
        assert_bits_eq(
            &got[..1],
            &poisoned::<T>(1),
            "fill: element before untouched",
        );
        assert_bits_eq(
            &got[1..],
            &vec![v; n],
            &format!("fill {} n={n}", std::any::type_name::<T>()),
        );
    }
}

#[test]
fn fill_every_width_unaligned() {
    for_each_width!(fill_case);
}

#[test]
fn paired_buffers_pinned_pageable_and_uva_on_the_gpu() {
    let Some(dev) = gpu() else { return };
    let mgr = PinnedMemoryManager::new(&dev, 64 << 20);
    for placement in [
        MemoryPlacement::Pinned,
        MemoryPlacement::Host,
        MemoryPlacement::Uva,
    ] {
        let mut b =
            CpuGpuBuffer::<i64>::with_manager(&mgr, "positions", &[4096], placement).unwrap();
        for step in 0..20i64 {
            let n = 100 + step as usize * 50;
            for (k, v) in b.host_mut()[..n].iter_mut().enumerate() {
                *v = step * 10_000 + k as i64;
            }
            b.copy_to_device_rows(n).unwrap();
            // A kernel reads the device side (or, for UVA, the mapped host side directly).
            let idx: Vec<i32> = (0..n as i32).rev().collect();
            let idx = up(&dev, &idx, &[n]);
            let src = b.device_view().reshape(&[4096, 1]).unwrap();
            let g = dev
                .gather_rows(src, idx.view(), GatherPolicy::Checked)
                .unwrap();
            let got = g.to_vec().unwrap();
            let want: Vec<i64> = (0..n).rev().map(|k| step * 10_000 + k as i64).collect();
            assert_eq!(got, want, "{placement} step {step}");
        }
        // Download through the pair.
        b.device_view_mut().fill(7);
        b.copy_to_host().unwrap();
        assert!(b.host().iter().all(|&v| v == 7), "{placement}");
    }
    // On a CUDA device the manager's memory really is page-locked (cuMemHostAlloc).
    assert!(mgr.allocate::<u8>(4096).unwrap().is_page_locked());
    assert!(!cpugpu::PinnedBuffer::<u8>::new(16)
        .unwrap()
        .is_page_locked());
}

#[test]
fn pool_slots_are_reused_only_after_the_gpu_work_reading_them() {
    let Some(dev) = gpu() else { return };
    let pool = UvaBufferPool::new(&dev, 2);
    // Large enough that each step's gather (reading the slot over the bus) is still running when
    // the host comes back to write the same slot two steps later, unless the pool waits.
    let n = scaled(1 << 20, 1 << 14);
    let table: Vec<u32> = (0..n as u32).collect();
    let t = up(&dev, &table, &[n, 1]);
    let mut outs = Vec::new();
    for step in 0..16u32 {
        // The host writes a slot while the previous steps' gathers may still be reading the
        // other slot (or, without gating, this one).
        let mut ids = if step < 2 {
            pool.allocate_uva::<i32>("ids", &[n]).unwrap()
        } else {
            pool.get::<i32>("ids").unwrap()
        };
        for (k, v) in ids.host_mut().iter_mut().enumerate() {
            *v = ((k as u32 * 7 + step) % n as u32) as i32;
        }
        let mut out = dev.alloc::<u32>(&[n, 1]).unwrap();
        dev.gather_rows_into(
            t.view(),
            ids.device_view(),
            out.view_mut(),
            GatherPolicy::Checked,
        )
        .unwrap();
        drop(ids);
        outs.push((step, out));
    }
    dev.synchronize().unwrap();
    for (step, out) in outs {
        let want: Vec<u32> = (0..n as u32).map(|k| (k * 7 + step) % n as u32).collect();
        assert_eq!(out.to_vec().unwrap(), want, "step {step}");
    }
}

#[test]
fn streams_events_and_foreign_pointers_interoperate() {
    let Some(dev) = gpu() else { return };
    // A second handle on a new stream, ordered after the first with an event.
    let other = dev.new_stream().unwrap();
    let data: Vec<u64> = (0..100_000).collect();
    let a = up(&dev, &data, &[100_000]);
    let mut b = other.alloc::<u64>(&[100_000]).unwrap();
    other.synchronize().unwrap();
    let start = dev.record_event(true).unwrap();
    let idx: Vec<i64> = (0..100_000).rev().collect();
    let i = up(&dev, &idx, &[100_000]);
    let r = dev
        .gather_rows(
            a.view().reshape(&[100_000, 1]).unwrap(),
            i.view(),
            GatherPolicy::Checked,
        )
        .unwrap();
    let done = dev.record_event(true).unwrap();
    done.make_wait(other.stream().unwrap()).unwrap();
    r.view()
        .copy_to(&mut b.view_mut().into_reshape(&[100_000, 1]).unwrap())
        .unwrap();
    other.synchronize().unwrap();
    assert!(done.query().unwrap());
    // A 100,000-row gather takes some GPU time between the two events.
    assert!(done.elapsed_ms(&start).unwrap() > 0.0);
    let got = b.to_vec().unwrap();
    assert_eq!(got[0], 99_999);
    assert_eq!(got[99_999], 0);
    // A raw stream and raw device pointers from "another library" (here: our own handles).
    let raw = dev.stream().unwrap().as_raw();
    // SAFETY: raw is dev's live stream, and dev outlives the wrapper.
    let borrowed = unsafe { cpugpu::cuda::Stream::from_raw(&dev, raw) }.unwrap();
    let on_borrowed = dev.with_stream(&borrowed).unwrap();
    let ptr = a.view().cuda_ptr().unwrap();
    // SAFETY: ptr is a's device memory (100,000 u64), alive for this scope and only read.
    let foreign =
        unsafe { DeviceView::<u64>::from_raw_cuda(&on_borrowed, ptr, &[1000, 100]) }.unwrap();
    let sel = up(&on_borrowed, &[999i32, 0], &[2]);
    let rows = on_borrowed
        .gather_rows(foreign, sel.view(), GatherPolicy::Checked)
        .unwrap();
    on_borrowed.synchronize().unwrap();
    let got = rows.to_vec().unwrap();
    assert_eq!(&got[..3], &[99_900, 99_901, 99_902]);
    assert_eq!(&got[100..103], &[0, 1, 2]);
    drop(on_borrowed);
    drop(borrowed);
    // The borrowed stream was not destroyed: dev's own work on it still runs and gives results.
    let sel2 = up(&dev, &[999i32], &[1]);
    let again = dev
        .gather_rows(
            a.view().reshape(&[1000, 100]).unwrap(),
            sel2.view(),
            GatherPolicy::Checked,
        )
        .unwrap();
    dev.synchronize().unwrap();
    assert_eq!(&again.to_vec().unwrap()[..2], &[99_900, 99_901]);
}

#[test]
fn every_default_handle_shares_one_stream_and_other_streams_are_ordered_by_events() {
    let Some(dev) = gpu() else { return };
    let again = Device::cuda(0).unwrap();
    assert_eq!(
        dev.stream().unwrap().as_raw(),
        again.stream().unwrap().as_raw(),
        "Device::auto() and Device::cuda(0) share the default stream"
    );
    // Memory made and filled on another stream, used here with no explicit synchronisation:
    // the operation waits for the other stream's earlier work (the fill), and the other
    // stream's later work (the free when `table` drops) waits for the operation.
    let other = dev.new_stream().unwrap();
    assert_ne!(
        other.stream().unwrap().as_raw(),
        dev.stream().unwrap().as_raw()
    );
    for round in 0..20u32 {
        let rows = 1 << 18;
        let mut table = other.alloc::<u32>(&[rows, 4]).unwrap();
        table.fill(round + 1);
        let idx = up(&dev, &[(rows - 1) as i64, 0, 7], &[3]);
        let got = dev
            .gather_rows(table.view(), idx.view(), GatherPolicy::Checked)
            .unwrap();
        drop(table); // freed on `other`, ordered after the gather
        assert_eq!(got.to_vec().unwrap(), vec![round + 1; 12], "round {round}");
    }
    other.synchronize().unwrap();
    dev.synchronize().unwrap();
}

#[test]
fn large_inputs_match_host() {
    let Some(dev) = gpu() else { return };
    let mut r = rng(81);
    // 16 Mi rows of 16 bytes (256 MiB) gathered by 4 Mi i64 indices (1 Mi rows and 256 Ki
    // indices on the emulated GPU).
    let rows = scaled(1 << 24, 1 << 20);
    let src: Vec<u128> = random_vec(&mut r, rows);
    let idx = random_indices(&mut r, scaled(1 << 22, 1 << 18), rows);
    let want = host::gather_rows(&src, &[rows], &idx, GatherPolicy::Checked).unwrap();
    let s = up(&dev, &src, &[rows]);
    let i = up(&dev, &idx, &[idx.len()]);
    let got = dev
        .gather_rows(s.view(), i.view(), GatherPolicy::Checked)
        .unwrap();
    assert_bits_eq(&got.to_vec().unwrap(), &want, "large gather");
    // 2^26 i32 lengths (2^21, 512 tiles, on the emulated GPU).
    let lengths: Vec<i32> = (0..scaled(1 << 26, 1 << 21) as i32)
        .map(|k| k % 5)
        .collect();
    let want: Vec<i64> = host::prefix_sum_offsets(&lengths).unwrap();
    let l = up(&dev, &lengths, &[lengths.len()]);
    let got = dev.prefix_sum_offsets::<i32, i64>(l.view()).unwrap();
    assert_eq!(got.to_vec().unwrap(), want);
}
