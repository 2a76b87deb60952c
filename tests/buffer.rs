//! Integration tests for `CpuGpuBuffer`: construction at every placement, dirty flags, whole and
//! prefix copies, sync (including conflicts), fill/reset, slicing, row access, resize, UVA
//! buffers, zero-sized buffers and pinned-budget accounting.

mod common;

use common::{assert_bits_eq, poisoned, random_elem, random_vec, rng};
use cpugpu::{
    CpuGpuBuffer, Device, Element, Error, MemoryPlacement, Op, PinnedMemoryManager, SyncOutcome,
    PINNED_ALIGN,
};
use proptest::prelude::*;

use MemoryPlacement::{Host, Pinned, Uva};

/// Placements with a separate device side.
const COPYING: [MemoryPlacement; 2] = [Host, Pinned];
/// Every placement a paired buffer accepts.
const ALL: [MemoryPlacement; 3] = [Host, Pinned, Uva];

fn dev() -> Device {
    Device::host()
}

/// The device side, downloaded through the public copy API.
fn device_vec<T: Element>(b: &CpuGpuBuffer<T>) -> Vec<T> {
    let view = b.device_view();
    let mut out = poisoned::<T>(view.len());
    view.copy_to_host(&mut out).unwrap();
    out
}

/// Overwrites the whole device side (marks it dirty).
fn set_device<T: Element>(b: &mut CpuGpuBuffer<T>, data: &[T]) {
    b.device_view_mut().copy_from_host(data).unwrap();
}

fn flags<T: Element>(b: &CpuGpuBuffer<T>) -> (bool, bool) {
    (b.is_host_dirty(), b.is_device_dirty())
}

/// The error of a call whose success type may not be `Debug`.
#[track_caller]
fn err_of<R>(r: cpugpu::Result<R>) -> Error {
    match r {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    }
}

fn zeros<T: Element>(n: usize) -> Vec<T> {
    vec![T::zeroed(); n]
}

// ---------------------------------------------------------------------------------------------
// Construction and geometry
// ---------------------------------------------------------------------------------------------

fn new_every_placement<T: Element>() {
    let w = std::mem::size_of::<T>();
    for placement in ALL {
        let case = format!("{placement} {}", std::any::type_name::<T>());
        let b = CpuGpuBuffer::<T>::new(&dev(), "buf", &[5, 3], placement).unwrap();
        assert_eq!(b.name(), "buf");
        assert_eq!(b.shape().dims(), &[5, 3], "{case}");
        assert_eq!(b.rows(), 5, "{case}");
        assert_eq!(b.row_len(), 3, "{case}");
        assert_eq!(b.len(), 15, "{case}");
        assert!(!b.is_empty(), "{case}");
        assert_eq!(b.placement(), placement, "{case}");
        assert_eq!(b.size_bytes(), 15 * w, "{case}");
        let expected_device = if placement == Uva { 0 } else { 15 * w };
        assert_eq!(b.device_bytes(), expected_device, "{case}");
        assert_eq!(b.host().len(), 15, "{case}");
        assert_eq!(b.device_view().len(), 15, "{case}");
        assert_eq!(b.device_view().shape().dims(), &[5, 3], "{case}");
        assert_bits_eq(b.host(), &zeros::<T>(15), &case);
        assert_bits_eq(&device_vec(&b), &zeros::<T>(15), &case);
        assert_eq!(flags(&b), (false, false), "{case}");
        if placement != Host {
            assert_eq!(
                b.host().as_ptr() as usize % PINNED_ALIGN,
                0,
                "pinned host side is {PINNED_ALIGN}-aligned: {case}"
            );
        }
        // Debug names the buffer and does not panic.
        assert!(format!("{b:?}").contains("buf"), "{case}");
    }
}

#[test]
fn new_at_every_placement_every_width() {
    for_each_width!(new_every_placement);
}

#[test]
fn new_geometry_of_higher_rank_and_scalar_shapes() {
    for placement in ALL {
        let b = CpuGpuBuffer::<f32>::new(&dev(), "t", &[4, 2, 3], placement).unwrap();
        assert_eq!((b.rows(), b.row_len(), b.len()), (4, 6, 24));
        assert_eq!(b.size_bytes(), 96);
        assert_eq!(b.device().kind(), cpugpu::BackendKind::Host);

        let s = CpuGpuBuffer::<u16>::new(&dev(), "scalar", &[], placement).unwrap();
        assert_eq!((s.rows(), s.row_len(), s.len()), (1, 1, 1));
        assert_eq!(s.size_bytes(), 2);
    }
}

#[test]
fn new_with_device_placement_is_unsupported_placement() {
    let err = CpuGpuBuffer::<f32>::new(&dev(), "d", &[4], MemoryPlacement::Device).unwrap_err();
    match &err {
        Error::UnsupportedPlacement { op, placement, .. } => {
            assert_eq!(*op, Op::Allocate);
            assert_eq!(*placement, MemoryPlacement::Device);
        }
        other => panic!("expected UnsupportedPlacement, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with("allocate: placement device:"),
        "{err}"
    );

    // The same through a manager, and nothing is drawn from its budget.
    let mgr = PinnedMemoryManager::new(&dev(), 1 << 20);
    let err =
        CpuGpuBuffer::<f32>::with_manager(&mgr, "d", &[4], MemoryPlacement::Device).unwrap_err();
    assert!(matches!(
        err,
        Error::UnsupportedPlacement {
            op: Op::Allocate,
            placement: MemoryPlacement::Device,
            ..
        }
    ));
    assert_eq!(mgr.allocated_bytes(), 0);
}

#[test]
fn a_whole_copy_resolves_a_sync_conflict() {
    for placement in [MemoryPlacement::Host, MemoryPlacement::Pinned] {
        let mut b = CpuGpuBuffer::<u32>::new(&dev(), "c", &[3], placement).unwrap();
        b.host_mut().fill(1);
        b.device_view_mut().fill(2);
        assert_eq!(
            b.sync().unwrap_err(),
            Error::SyncConflict {
                op: Op::Sync,
                name: "c".into()
            }
        );
        assert_eq!(b.host(), &[1; 3], "a conflict overwrites neither side");
        b.copy_to_device().unwrap(); // the caller decides: the host side wins
        assert!(!b.is_host_dirty() && !b.is_device_dirty());
        assert_eq!(b.sync().unwrap(), cpugpu::SyncOutcome::UpToDate);
        let mut d = vec![0; 3];
        b.device_view().copy_to_host(&mut d).unwrap();
        assert_eq!(d, [1; 3]);
    }
}

#[test]
fn new_with_bad_shapes_errors() {
    for placement in ALL {
        let err = CpuGpuBuffer::<u8>::new(&dev(), "x", &[1; 9], placement).unwrap_err();
        assert_eq!(
            err,
            Error::TooManyDims {
                op: Op::Allocate,
                ndim: 9,
                max: 8
            }
        );
        let err = CpuGpuBuffer::<u8>::new(&dev(), "x", &[usize::MAX, 2], placement).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SizeOverflow {
                    op: Op::Allocate,
                    ..
                }
            ),
            "{placement}: {err:?}"
        );
        assert!(err.to_string().starts_with("allocate:"), "{err}");
    }
}

#[test]
fn new_with_impossible_byte_size_errors_instead_of_aborting() {
    // The element count fits in usize but the byte size cannot be allocated.
    let len = isize::MAX as usize / 2 + 1;
    for placement in ALL {
        let err = CpuGpuBuffer::<u32>::new(&dev(), "huge", &[len], placement).unwrap_err();
        assert!(
            matches!(err, Error::OutOfMemory { .. } | Error::SizeOverflow { .. }),
            "{placement}: {err:?}"
        );
        // Bytes that fit usize but exceed isize::MAX are named for what they are.
        let err = CpuGpuBuffer::<u16>::new(&dev(), "huge", &[1 << 62], placement).unwrap_err();
        assert_eq!(
            err,
            Error::AllocationTooLarge {
                op: Op::Allocate,
                bytes: 1 << 63,
                max: isize::MAX as usize
            },
            "{placement}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Dirty flags and whole copies
// ---------------------------------------------------------------------------------------------

fn flags_and_whole_copies<T: Element>() {
    let mut r = rng(11);
    for placement in COPYING {
        let case = format!("{placement} {}", std::any::type_name::<T>());
        let mut b = CpuGpuBuffer::<T>::new(&dev(), "f", &[7, 5], placement).unwrap();

        // host_mut marks the host side dirty and nothing crosses by itself.
        let data: Vec<T> = random_vec(&mut r, 35);
        b.host_mut().copy_from_slice(&data);
        assert_eq!(flags(&b), (true, false), "{case}");
        assert_bits_eq(&device_vec(&b), &zeros::<T>(35), &case);

        // copy_to_device moves everything and clears the host flag.
        b.copy_to_device().unwrap();
        assert_eq!(flags(&b), (false, false), "{case}");
        assert_bits_eq(&device_vec(&b), &data, &case);
        assert_bits_eq(b.host(), &data, &case);

        // device_view_mut marks the device side dirty; the host side is untouched.
        let dev_data: Vec<T> = random_vec(&mut r, 35);
        set_device(&mut b, &dev_data);
        assert_eq!(flags(&b), (false, true), "{case}");
        assert_bits_eq(b.host(), &data, &case);

        // copy_to_host moves everything back and clears the device flag.
        b.copy_to_host().unwrap();
        assert_eq!(flags(&b), (false, false), "{case}");
        assert_bits_eq(b.host(), &dev_data, &case);
        assert_bits_eq(&device_vec(&b), &dev_data, &case);
    }
}

#[test]
fn dirty_flags_and_whole_copies_every_width() {
    for_each_width!(flags_and_whole_copies);
}

#[test]
fn whole_copy_clears_only_the_flag_of_its_source_side() {
    for placement in COPYING {
        let mut b = CpuGpuBuffer::<u32>::new(&dev(), "f", &[4], placement).unwrap();
        b.host_mut()[0] = 1;
        // An explicit copy_to_host overwrites the host write: the caller asked for it.
        b.copy_to_host().unwrap();
        assert_eq!(b.host(), &[0, 0, 0, 0]);
        assert!(!b.is_device_dirty());

        let mut b = CpuGpuBuffer::<u32>::new(&dev(), "f", &[4], placement).unwrap();
        b.device_view_mut().fill(9);
        b.copy_to_device().unwrap();
        assert_eq!(device_vec(&b), vec![0; 4]);
        assert!(!b.is_host_dirty());
    }
}

#[test]
fn whole_copies_above_the_parallel_threshold() {
    // 40,000 x 16 f32 = 2.56 MB, over PAR_MIN_BYTES, so the chunked rayon copy runs.
    let rows = 40_000;
    let n = rows * 16;
    assert!(n * 4 > cpugpu::ops::PAR_MIN_BYTES);
    let mut r = rng(12);
    for placement in COPYING {
        let mut b = CpuGpuBuffer::<f32>::new(&dev(), "big", &[rows, 16], placement).unwrap();
        let data: Vec<f32> = random_vec(&mut r, n);
        b.host_mut().copy_from_slice(&data);
        b.copy_to_device().unwrap();
        assert_bits_eq(&device_vec(&b), &data, "big upload");
        let back: Vec<f32> = random_vec(&mut r, n);
        set_device(&mut b, &back);
        assert_eq!(b.sync().unwrap(), SyncOutcome::CopiedToHost);
        assert_bits_eq(b.host(), &back, "big download");
    }
}

// ---------------------------------------------------------------------------------------------
// Prefix copies
// ---------------------------------------------------------------------------------------------

fn prefix_copies<T: Element>() {
    let mut r = rng(21);
    for placement in COPYING {
        for (rows, row_len) in [(0usize, 3usize), (1, 1), (2, 4), (31, 3), (33, 1), (257, 2)] {
            let len = rows * row_len;
            let mut ns = vec![0, rows / 2, rows];
            if rows > 0 {
                ns.push(1);
                ns.push(rows - 1);
            }
            for n in ns {
                let case = format!(
                    "{placement} {} rows={rows} row_len={row_len} n={n}",
                    std::any::type_name::<T>()
                );
                // Upload: poison the device side, make it the clean side, then write the host.
                let mut b =
                    CpuGpuBuffer::<T>::new(&dev(), "p", &[rows, row_len], placement).unwrap();
                let poison = poisoned::<T>(len);
                set_device(&mut b, &poison);
                b.copy_to_host().unwrap();
                let data: Vec<T> = random_vec(&mut r, len);
                b.host_mut().copy_from_slice(&data);
                assert_eq!(flags(&b), (true, false), "{case}");

                b.copy_to_device_rows(n).unwrap();
                let mut expected = poison.clone();
                expected[..n * row_len].copy_from_slice(&data[..n * row_len]);
                assert_bits_eq(&device_vec(&b), &expected, &format!("upload {case}"));
                assert_bits_eq(b.host(), &data, &format!("host untouched {case}"));
                assert_eq!(flags(&b), (true, false), "flags left alone {case}");

                // Download: device dirty, host clean.
                let mut b =
                    CpuGpuBuffer::<T>::new(&dev(), "p", &[rows, row_len], placement).unwrap();
                b.host_mut().copy_from_slice(&poison);
                b.copy_to_device().unwrap();
                let dev_data: Vec<T> = random_vec(&mut r, len);
                set_device(&mut b, &dev_data);
                assert_eq!(flags(&b), (false, true), "{case}");

                b.copy_to_host_rows(n).unwrap();
                let mut expected = poison.clone();
                expected[..n * row_len].copy_from_slice(&dev_data[..n * row_len]);
                assert_bits_eq(b.host(), &expected, &format!("download {case}"));
                assert_bits_eq(
                    &device_vec(&b),
                    &dev_data,
                    &format!("device untouched {case}"),
                );
                assert_eq!(flags(&b), (false, true), "flags left alone {case}");
            }
        }
    }
}

#[test]
fn prefix_copies_move_exactly_n_rows_every_width() {
    for_each_width!(prefix_copies);
}

#[test]
fn prefix_copy_above_the_parallel_threshold() {
    let (rows, row_len, n) = (40_000usize, 16usize, 30_001usize);
    let mut r = rng(22);
    let mut b = CpuGpuBuffer::<u32>::new(&dev(), "big", &[rows, row_len], Pinned).unwrap();
    let poison = poisoned::<u32>(rows * row_len);
    set_device(&mut b, &poison);
    b.copy_to_host().unwrap();
    let data: Vec<u32> = random_vec(&mut r, rows * row_len);
    b.host_mut().copy_from_slice(&data);
    b.copy_to_device_rows(n).unwrap();
    let mut expected = poison;
    expected[..n * row_len].copy_from_slice(&data[..n * row_len]);
    assert_bits_eq(&device_vec(&b), &expected, "big prefix");
}

#[test]
fn full_prefix_copy_still_leaves_flags_alone() {
    let mut b = CpuGpuBuffer::<i64>::new(&dev(), "p", &[3, 2], Pinned).unwrap();
    b.host_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6]);
    b.copy_to_device_rows(3).unwrap();
    assert_eq!(device_vec(&b), vec![1, 2, 3, 4, 5, 6]);
    assert!(b.is_host_dirty(), "a prefix copy never clears the flag");
    // sync then copies again (harmlessly) and clears it.
    assert_eq!(b.sync().unwrap(), SyncOutcome::CopiedToDevice);
    assert_eq!(flags(&b), (false, false));
}

#[test]
fn prefix_copy_past_the_end_is_row_range_out_of_bounds_and_changes_nothing() {
    for placement in ALL {
        let mut b = CpuGpuBuffer::<u16>::new(&dev(), "p", &[4, 2], placement).unwrap();
        b.host_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let before_flags = flags(&b);
        let before_dev = device_vec(&b);

        let err = b.copy_to_device_rows(5).unwrap_err();
        assert_eq!(
            err,
            Error::RowRangeOutOfBounds {
                op: Op::CopyToDevice,
                start: 0,
                end: 5,
                rows: 4
            },
            "{placement}"
        );
        assert!(err.to_string().starts_with("copy_to_device:"), "{err}");
        let err = b.copy_to_host_rows(usize::MAX).unwrap_err();
        assert_eq!(
            err,
            Error::RowRangeOutOfBounds {
                op: Op::CopyToHost,
                start: 0,
                end: usize::MAX,
                rows: 4
            },
            "{placement}"
        );
        assert!(err.to_string().starts_with("copy_to_host:"), "{err}");

        assert_eq!(flags(&b), before_flags, "{placement}");
        assert_eq!(device_vec(&b), before_dev, "{placement}");
        assert_eq!(b.host(), &[1, 2, 3, 4, 5, 6, 7, 8], "{placement}");
    }
}

// ---------------------------------------------------------------------------------------------
// sync
// ---------------------------------------------------------------------------------------------

fn sync_directions<T: Element>() {
    let mut r = rng(31);
    for placement in COPYING {
        let case = format!("{placement} {}", std::any::type_name::<T>());
        let mut b = CpuGpuBuffer::<T>::new(&dev(), "s", &[6, 2], placement).unwrap();
        assert_eq!(b.sync().unwrap(), SyncOutcome::UpToDate, "{case}");

        let h: Vec<T> = random_vec(&mut r, 12);
        b.host_mut().copy_from_slice(&h);
        assert_eq!(b.sync().unwrap(), SyncOutcome::CopiedToDevice, "{case}");
        assert_bits_eq(&device_vec(&b), &h, &case);
        assert_eq!(flags(&b), (false, false), "{case}");
        assert_eq!(b.sync().unwrap(), SyncOutcome::UpToDate, "{case}");

        let d: Vec<T> = random_vec(&mut r, 12);
        set_device(&mut b, &d);
        assert_eq!(b.sync().unwrap(), SyncOutcome::CopiedToHost, "{case}");
        assert_bits_eq(b.host(), &d, &case);
        assert_eq!(flags(&b), (false, false), "{case}");
        assert_eq!(b.sync().unwrap(), SyncOutcome::UpToDate, "{case}");
    }
}

#[test]
fn sync_copies_in_the_dirty_direction_every_width() {
    for_each_width!(sync_directions);
}

fn sync_conflict<T: Element>() {
    let mut r = rng(32);
    for placement in COPYING {
        let case = format!("{placement} {}", std::any::type_name::<T>());
        let mut b = CpuGpuBuffer::<T>::new(&dev(), "both", &[4, 3], placement).unwrap();
        let h: Vec<T> = random_vec(&mut r, 12);
        let d: Vec<T> = random_vec(&mut r, 12);
        b.host_mut().copy_from_slice(&h);
        set_device(&mut b, &d);
        assert_eq!(flags(&b), (true, true), "{case}");

        for _ in 0..2 {
            let err = b.sync().unwrap_err();
            assert_eq!(
                err,
                Error::SyncConflict {
                    op: Op::Sync,
                    name: "both".into()
                },
                "{case}"
            );
            let msg = err.to_string();
            assert!(
                msg.starts_with("sync:") && msg.contains("\"both\""),
                "{msg}"
            );
            // Nothing overwritten on either side, flags unchanged.
            assert_bits_eq(b.host(), &h, &case);
            assert_bits_eq(&device_vec(&b), &d, &case);
            assert_eq!(flags(&b), (true, true), "{case}");
        }

        // Resolve explicitly: the host wins; after that sync never fails and the sides agree.
        b.copy_to_device().unwrap();
        assert!(!b.is_host_dirty(), "{case}");
        b.sync().unwrap();
        assert_bits_eq(b.host(), &h, &case);
        assert_bits_eq(&device_vec(&b), &h, &case);
        assert_eq!(b.sync().unwrap(), SyncOutcome::UpToDate, "{case}");

        // Or the device wins.
        b.host_mut().copy_from_slice(&h);
        set_device(&mut b, &d);
        b.copy_to_host().unwrap();
        assert!(!b.is_device_dirty(), "{case}");
        b.sync().unwrap();
        assert_bits_eq(b.host(), &d, &case);
        assert_bits_eq(&device_vec(&b), &d, &case);
        assert_eq!(b.sync().unwrap(), SyncOutcome::UpToDate, "{case}");
    }
}

#[test]
fn sync_with_both_sides_dirty_is_a_conflict_and_overwrites_nothing() {
    for_each_width!(sync_conflict);
}

#[test]
fn mark_dirty_by_hand() {
    let mut b = CpuGpuBuffer::<u8>::new(&dev(), "m", &[3], Pinned).unwrap();
    b.mark_device_dirty();
    assert_eq!(flags(&b), (false, true));
    assert_eq!(b.sync().unwrap(), SyncOutcome::CopiedToHost);
    b.mark_host_dirty();
    assert_eq!(flags(&b), (true, false));
    b.mark_device_dirty();
    assert!(matches!(b.sync(), Err(Error::SyncConflict { .. })));
}

// ---------------------------------------------------------------------------------------------
// fill, reset
// ---------------------------------------------------------------------------------------------

fn fill_and_reset<T: Element>() {
    let mut r = rng(41);
    for placement in ALL {
        let case = format!("{placement} {}", std::any::type_name::<T>());
        let mut b = CpuGpuBuffer::<T>::new(&dev(), "f", &[9, 2], placement).unwrap();
        let h: Vec<T> = random_vec(&mut r, 18);
        b.host_mut().copy_from_slice(&h);
        b.device_view_mut().fill(random_elem(&mut r));

        let v: T = random_elem(&mut r);
        b.fill(v);
        assert_bits_eq(b.host(), &[v; 18], &case);
        assert_bits_eq(&device_vec(&b), &[v; 18], &case);
        assert_eq!(flags(&b), (false, false), "{case}");
        assert_eq!(b.sync().unwrap(), SyncOutcome::UpToDate, "{case}");

        b.host_mut()[3] = random_elem(&mut r);
        b.device_view_mut().fill(random_elem(&mut r));
        b.reset();
        assert_bits_eq(b.host(), &zeros::<T>(18), &case);
        assert_bits_eq(&device_vec(&b), &zeros::<T>(18), &case);
        assert_eq!(flags(&b), (false, false), "{case}");
    }
}

#[test]
fn fill_and_reset_set_both_sides_and_clear_flags_every_width() {
    for_each_width!(fill_and_reset);
}

// ---------------------------------------------------------------------------------------------
// slice, host_rows_mut, device_rows, device_rows_mut
// ---------------------------------------------------------------------------------------------

fn slices<T: Element>() {
    let mut r = rng(51);
    let (rows, rl) = (10usize, 3usize);
    for placement in ALL {
        let case = format!("{placement} {}", std::any::type_name::<T>());
        let mut b = CpuGpuBuffer::<T>::new(&dev(), "s", &[rows, rl], placement).unwrap();
        let data: Vec<T> = random_vec(&mut r, rows * rl);
        b.host_mut().copy_from_slice(&data);
        b.copy_to_device().unwrap();

        for (start, end) in [(0, 0), (0, 1), (2, 7), (9, 10), (0, rows), (rows, rows)] {
            let s = b.slice(start..end).unwrap();
            let want = &data[start * rl..end * rl];
            assert_bits_eq(s.host, want, &format!("host {start}..{end} {case}"));
            assert_eq!(s.device.shape().dims(), &[end - start, rl], "{case}");
            let mut d = poisoned::<T>(s.device.len());
            s.device.copy_to_host(&mut d).unwrap();
            assert_bits_eq(&d, want, &format!("device {start}..{end} {case}"));

            let dr = b.device_rows(start..end).unwrap();
            let mut d2 = poisoned::<T>(dr.len());
            dr.copy_to_host(&mut d2).unwrap();
            assert_bits_eq(&d2, want, &format!("device_rows {start}..{end} {case}"));
        }

        let (s, e) = (7usize, 3usize); // reversed
        for (start, end) in [(0, rows + 1), (rows + 1, rows + 1), (s, e), (0, usize::MAX)] {
            let want = Error::RowRangeOutOfBounds {
                op: Op::Slice,
                start,
                end,
                rows,
            };
            assert_eq!(err_of(b.slice(start..end)), want, "{case}");
            assert_eq!(err_of(b.device_rows(start..end)), want, "{case}");
        }
    }
}

#[test]
fn slice_sides_agree_and_out_of_range_errors_every_width() {
    for_each_width!(slices);
}

fn row_writes<T: Element>() {
    let mut r = rng(52);
    let (rows, rl) = (8usize, 4usize);
    for placement in COPYING {
        let case = format!("{placement} {}", std::any::type_name::<T>());
        let mut b = CpuGpuBuffer::<T>::new(&dev(), "w", &[rows, rl], placement).unwrap();
        let base: Vec<T> = random_vec(&mut r, rows * rl);
        b.host_mut().copy_from_slice(&base);
        b.copy_to_device().unwrap();

        // host_rows_mut: exactly those rows, host dirty, device untouched.
        let patch: Vec<T> = random_vec(&mut r, 3 * rl);
        let rows_mut = b.host_rows_mut(2..5).unwrap();
        assert_eq!(rows_mut.len(), 3 * rl, "{case}");
        rows_mut.copy_from_slice(&patch);
        let mut want = base.clone();
        want[2 * rl..5 * rl].copy_from_slice(&patch);
        assert_bits_eq(b.host(), &want, &case);
        assert_bits_eq(&device_vec(&b), &base, &case);
        assert_eq!(flags(&b), (true, false), "{case}");
        b.copy_to_device().unwrap();

        // device_rows_mut: exactly those rows, device dirty, host untouched.
        let dpatch: Vec<T> = random_vec(&mut r, 2 * rl);
        let mut v = b.device_rows_mut(6..8).unwrap();
        assert_eq!(v.shape().dims(), &[2, rl], "{case}");
        v.copy_from_host(&dpatch).unwrap();
        let mut dwant = want.clone();
        dwant[6 * rl..8 * rl].copy_from_slice(&dpatch);
        assert_bits_eq(&device_vec(&b), &dwant, &case);
        assert_bits_eq(b.host(), &want, &case);
        assert_eq!(flags(&b), (false, true), "{case}");
        b.copy_to_host().unwrap();

        // Out of range: typed error, no flag set, nothing written.
        let (s, e) = (5usize, 4usize);
        for (start, end) in [(0, rows + 1), (s, e), (rows + 1, rows + 2)] {
            let want_err = Error::RowRangeOutOfBounds {
                op: Op::Slice,
                start,
                end,
                rows,
            };
            assert_eq!(err_of(b.host_rows_mut(start..end)), want_err, "{case}");
            assert_eq!(err_of(b.device_rows_mut(start..end)), want_err, "{case}");
            assert_eq!(
                flags(&b),
                (false, false),
                "validated before marking: {case}"
            );
        }
        assert_bits_eq(b.host(), &dwant, &case);
        assert_bits_eq(&device_vec(&b), &dwant, &case);

        // Empty ranges are fine (and still count as a write).
        assert!(b.host_rows_mut(rows..rows).unwrap().is_empty(), "{case}");
        assert!(b.device_rows_mut(0..0).unwrap().is_empty(), "{case}");
    }
}

#[test]
fn host_rows_mut_and_device_rows_mut_write_only_their_rows_every_width() {
    for_each_width!(row_writes);
}

// ---------------------------------------------------------------------------------------------
// resize
// ---------------------------------------------------------------------------------------------

fn resize_preserves_prefix<T: Element>() {
    let mut r = rng(61);
    let rl = 3usize;
    for placement in ALL {
        let case = format!("{placement} {}", std::any::type_name::<T>());
        let mut b = CpuGpuBuffer::<T>::new(&dev(), "r", &[10, rl], placement).unwrap();
        let h: Vec<T> = random_vec(&mut r, 10 * rl);
        b.host_mut().copy_from_slice(&h);
        let d: Vec<T> = if placement == Uva {
            h.clone()
        } else {
            let d = random_vec(&mut r, 10 * rl);
            set_device(&mut b, &d);
            d
        };
        let before_flags = flags(&b);

        // Grow.
        b.resize(16).unwrap();
        assert_eq!(b.shape().dims(), &[16, rl], "{case}");
        assert_eq!(b.len(), 16 * rl, "{case}");
        assert_eq!(b.name(), "r");
        assert_eq!(b.placement(), placement);
        let mut want_h = h.clone();
        want_h.extend(zeros::<T>(6 * rl));
        let mut want_d = d.clone();
        want_d.extend(zeros::<T>(6 * rl));
        assert_bits_eq(b.host(), &want_h, &format!("grow host {case}"));
        assert_bits_eq(&device_vec(&b), &want_d, &format!("grow device {case}"));
        assert_eq!(flags(&b), before_flags, "flags kept {case}");

        // Shrink.
        b.resize(4).unwrap();
        assert_eq!(b.shape().dims(), &[4, rl], "{case}");
        assert_bits_eq(b.host(), &h[..4 * rl], &format!("shrink host {case}"));
        assert_bits_eq(
            &device_vec(&b),
            &d[..4 * rl],
            &format!("shrink device {case}"),
        );
        assert_eq!(flags(&b), before_flags, "flags kept {case}");

        // Same size.
        b.resize(4).unwrap();
        assert_bits_eq(b.host(), &h[..4 * rl], &format!("same host {case}"));
        assert_bits_eq(
            &device_vec(&b),
            &d[..4 * rl],
            &format!("same device {case}"),
        );

        // To zero rows and back: all zero.
        b.resize(0).unwrap();
        assert!(b.is_empty(), "{case}");
        b.resize(5).unwrap();
        assert_bits_eq(b.host(), &zeros::<T>(5 * rl), &case);
        assert_bits_eq(&device_vec(&b), &zeros::<T>(5 * rl), &case);
        if placement != Host {
            assert_eq!(b.host().as_ptr() as usize % PINNED_ALIGN, 0, "{case}");
        }
    }
}

#[test]
fn resize_grow_and_shrink_preserve_the_prefix_every_width() {
    for_each_width!(resize_preserves_prefix);
}

#[test]
fn resize_keeps_trailing_dims_and_turns_a_scalar_into_a_vector() {
    for placement in ALL {
        let mut b = CpuGpuBuffer::<i32>::new(&dev(), "r", &[2, 2, 2], placement).unwrap();
        b.host_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        b.copy_to_device().unwrap();
        b.resize(3).unwrap();
        assert_eq!(b.shape().dims(), &[3, 2, 2]);
        assert_eq!(b.host(), &[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0]);
        assert_eq!(device_vec(&b), vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0]);

        let mut s = CpuGpuBuffer::<i32>::new(&dev(), "s", &[], placement).unwrap();
        s.host_mut()[0] = 7;
        s.copy_to_device().unwrap();
        s.resize(3).unwrap();
        assert_eq!(s.shape().dims(), &[3]);
        assert_eq!(s.host(), &[7, 0, 0]);
        assert_eq!(device_vec(&s), vec![7, 0, 0]);
    }
}

#[test]
fn resize_overflow_is_an_error_and_leaves_the_buffer_alone() {
    for placement in ALL {
        let mut b = CpuGpuBuffer::<u8>::new(&dev(), "r", &[0, 1 << 40], placement).unwrap();
        let err = b.resize(1 << 30).unwrap_err();
        assert!(
            matches!(err, Error::SizeOverflow { op: Op::Resize, .. }),
            "{placement}: {err:?}"
        );
        assert!(err.to_string().starts_with("resize:"), "{err}");
        assert_eq!(b.shape().dims(), &[0, 1 << 40]);
    }
}

// ---------------------------------------------------------------------------------------------
// UVA buffers
// ---------------------------------------------------------------------------------------------

fn uva_is_one_memory<T: Element>() {
    let mut r = rng(71);
    let case = std::any::type_name::<T>();
    let mut b = CpuGpuBuffer::<T>::new(&dev(), "uva", &[6, 4], Uva).unwrap();
    assert_eq!(b.device_bytes(), 0, "{case}");
    assert_eq!(b.size_bytes(), 24 * std::mem::size_of::<T>(), "{case}");

    // Host writes are visible on the device side immediately, and never dirty.
    let h: Vec<T> = random_vec(&mut r, 24);
    b.host_mut().copy_from_slice(&h);
    assert_eq!(flags(&b), (false, false), "{case}");
    assert_bits_eq(&device_vec(&b), &h, case);
    assert_eq!(
        b.device_view().as_host_slice().unwrap().as_ptr(),
        b.host().as_ptr()
    );
    assert_eq!(b.sync().unwrap(), SyncOutcome::UpToDate, "{case}");

    // Device writes are visible on the host side, and never dirty.
    let d: Vec<T> = random_vec(&mut r, 24);
    set_device(&mut b, &d);
    assert_eq!(flags(&b), (false, false), "{case}");
    assert_bits_eq(b.host(), &d, case);
    let part: Vec<T> = random_vec(&mut r, 4);
    b.device_rows_mut(5..6)
        .unwrap()
        .copy_from_host(&part)
        .unwrap();
    assert_bits_eq(&b.host()[20..], &part, case);
    b.host_rows_mut(0..1).unwrap().copy_from_slice(&part);
    assert_bits_eq(&device_vec(&b)[..4], &part, case);
    b.mark_host_dirty();
    b.mark_device_dirty();
    assert_eq!(flags(&b), (false, false), "{case}");
    assert_eq!(b.sync().unwrap(), SyncOutcome::UpToDate, "{case}");

    // Copies are no-ops that still validate.
    let snapshot = b.host().to_vec();
    b.copy_to_device().unwrap();
    b.copy_to_host().unwrap();
    b.copy_to_device_rows(6).unwrap();
    b.copy_to_host_rows(3).unwrap();
    assert_bits_eq(b.host(), &snapshot, case);
    assert!(matches!(
        b.copy_to_device_rows(7),
        Err(Error::RowRangeOutOfBounds {
            op: Op::CopyToDevice,
            end: 7,
            rows: 6,
            ..
        })
    ));
}

#[test]
fn uva_buffers_share_one_memory_and_are_never_dirty_every_width() {
    for_each_width!(uva_is_one_memory);
}

// ---------------------------------------------------------------------------------------------
// Zero-sized buffers
// ---------------------------------------------------------------------------------------------

#[test]
fn zero_row_buffers_work_everywhere() {
    for placement in ALL {
        let mut b = CpuGpuBuffer::<f64>::new(&dev(), "z", &[0, 4], placement).unwrap();
        assert_eq!((b.rows(), b.row_len(), b.len()), (0, 4, 0));
        assert!(b.is_empty());
        assert_eq!((b.size_bytes(), b.device_bytes()), (0, 0));
        assert!(b.host().is_empty());
        assert!(b.device_view().is_empty());
        b.host_mut();
        b.copy_to_device_rows(0).unwrap();
        b.copy_to_host_rows(0).unwrap();
        b.copy_to_device().unwrap();
        b.copy_to_host().unwrap();
        assert_eq!(b.sync().unwrap(), SyncOutcome::UpToDate);
        assert!(b.slice(0..0).unwrap().host.is_empty());
        assert_eq!(
            b.slice(0..1).unwrap_err(),
            Error::RowRangeOutOfBounds {
                op: Op::Slice,
                start: 0,
                end: 1,
                rows: 0
            }
        );
        assert_eq!(
            b.copy_to_device_rows(1).unwrap_err(),
            Error::RowRangeOutOfBounds {
                op: Op::CopyToDevice,
                start: 0,
                end: 1,
                rows: 0
            }
        );
        b.fill(1.5);
        b.reset();
        b.resize(3).unwrap();
        assert_eq!(b.host(), &[0.0; 12]);
        assert_eq!(device_vec(&b), vec![0.0; 12]);
    }
}

#[test]
fn zero_width_rows_work_everywhere() {
    for placement in ALL {
        let mut b = CpuGpuBuffer::<u32>::new(&dev(), "z", &[5, 0], placement).unwrap();
        assert_eq!((b.rows(), b.row_len(), b.len()), (5, 0, 0));
        b.copy_to_device_rows(5).unwrap();
        b.copy_to_host_rows(3).unwrap();
        assert!(b.copy_to_device_rows(6).is_err());
        let s = b.slice(1..4).unwrap();
        assert!(s.host.is_empty());
        assert_eq!(s.device.shape().dims(), &[3, 0]);
        assert!(b.host_rows_mut(2..5).unwrap().is_empty());
        b.resize(9).unwrap();
        assert_eq!(b.shape().dims(), &[9, 0]);
    }
}

// ---------------------------------------------------------------------------------------------
// Pinned budget
// ---------------------------------------------------------------------------------------------

#[test]
fn with_manager_draws_from_the_budget_and_returns_it_on_drop() {
    let mgr = PinnedMemoryManager::new(&dev(), 1 << 20);
    let bytes = 100 * 16 * 4;

    for placement in [Pinned, Uva] {
        let b = CpuGpuBuffer::<f32>::with_manager(&mgr, "m", &[100, 16], placement).unwrap();
        assert_eq!(b.device().kind(), mgr.device().kind());
        assert_eq!(mgr.allocated_bytes(), bytes, "{placement}");
        assert_eq!(mgr.available_bytes(), (1 << 20) - bytes, "{placement}");
        assert_eq!(b.host().as_ptr() as usize % PINNED_ALIGN, 0);
        drop(b);
        assert_eq!(mgr.allocated_bytes(), 0, "{placement}");
        assert_eq!(mgr.cached_bytes(), bytes, "{placement}");
    }

    // Pageable host memory is not pinned and does not count.
    let b = CpuGpuBuffer::<f32>::with_manager(&mgr, "h", &[100, 16], Host).unwrap();
    assert_eq!(mgr.allocated_bytes(), 0);
    drop(b);

    // The second buffer reused the first one's block.
    assert_eq!(mgr.stats().fresh_allocations, 1);
    assert_eq!(mgr.stats().reuses, 1);
}

#[test]
fn with_manager_over_budget_is_pinned_budget_exceeded() {
    let mgr = PinnedMemoryManager::new(&dev(), 1000);
    let _a = CpuGpuBuffer::<u8>::with_manager(&mgr, "a", &[600], Pinned).unwrap();
    let err = CpuGpuBuffer::<u32>::with_manager(&mgr, "b", &[125], Pinned).unwrap_err();
    assert_eq!(
        err,
        Error::PinnedBudgetExceeded {
            op: Op::Allocate,
            requested: 500,
            available: 400,
            budget: 1000
        }
    );
    assert_eq!(mgr.allocated_bytes(), 600);
}

#[test]
fn resize_with_manager_moves_the_budget_to_the_new_size() {
    let mgr = PinnedMemoryManager::new(&dev(), 10_000);
    let mut b = CpuGpuBuffer::<u16>::with_manager(&mgr, "r", &[100, 2], Pinned).unwrap();
    b.host_mut().fill(3);
    assert_eq!(mgr.allocated_bytes(), 400);
    b.resize(300).unwrap();
    assert_eq!(mgr.allocated_bytes(), 1200);
    assert_eq!(mgr.cached_bytes(), 400);
    assert!(b.host()[..200].iter().all(|&x| x == 3));
    assert!(b.host()[200..].iter().all(|&x| x == 0));

    // A resize that does not fit fails and leaves the buffer as it was.
    let err = b.resize(5000).unwrap_err();
    assert_eq!(
        err,
        Error::PinnedBudgetExceeded {
            op: Op::Resize,
            requested: 20_000,
            available: 8800,
            budget: 10_000
        }
    );
    assert_eq!(b.shape().dims(), &[300, 2]);
    assert!(b.host()[..200].iter().all(|&x| x == 3));
    assert_eq!(mgr.allocated_bytes(), 1200);
    drop(b);
    assert_eq!(mgr.allocated_bytes(), 0);
}

#[test]
fn resize_shrinks_a_buffer_that_holds_the_whole_budget() {
    // Before the fix, shrinking allocated the smaller block before returning the old one, so a
    // buffer holding the whole budget could not shrink (PinnedBudgetExceeded).
    for placement in [Pinned, Uva] {
        let mgr = PinnedMemoryManager::new(&dev(), 1024);
        let mut b = CpuGpuBuffer::<u32>::with_manager(&mgr, "s", &[16, 16], placement).unwrap();
        let data: Vec<u32> = (0..256).collect();
        b.host_mut().copy_from_slice(&data);
        b.copy_to_device().unwrap();
        b.host_mut()[0] = 7; // host-dirty: the flag must survive
        assert_eq!(mgr.available_bytes(), 0);

        b.resize(5).unwrap();
        assert_eq!(b.shape().dims(), &[5, 16], "{placement}");
        assert_eq!(b.len(), 80);
        assert_eq!(b.host()[0], 7);
        assert_eq!(&b.host()[1..], &data[1..80], "{placement}");
        let mut want = data[..80].to_vec();
        if placement == Uva {
            want[0] = 7; // one memory
        }
        assert_eq!(device_vec(&b), want, "{placement}");
        assert_eq!(flags(&b), (placement == Pinned, false), "{placement}");
        assert!(mgr.allocated_bytes() <= 1024);

        // Growing back needs a second block, which the budget does not have: the error names
        // resize and the buffer is left as it was.
        let err = b.resize(16).unwrap_err();
        assert!(
            matches!(
                err,
                Error::PinnedBudgetExceeded {
                    op: Op::Resize,
                    requested: 1024,
                    ..
                }
            ),
            "{placement}: {err:?}"
        );
        assert!(
            err.to_string().starts_with("resize: 1024 bytes requested"),
            "{err}"
        );
        assert_eq!(b.shape().dims(), &[5, 16]);
        assert_eq!(&b.host()[1..], &data[1..80]);

        drop(b);
        assert_eq!(mgr.allocated_bytes(), 0, "{placement}: the block went back");
    }
}

#[test]
fn resize_to_a_smaller_size_returns_budget_when_there_is_room() {
    let mgr = PinnedMemoryManager::new(&dev(), 2048);
    let mut b = CpuGpuBuffer::<u32>::with_manager(&mgr, "s", &[16, 16], Pinned).unwrap();
    b.host_mut().fill(9);
    b.resize(4).unwrap();
    assert_eq!(mgr.allocated_bytes(), 256, "a fresh block of the new size");
    assert_eq!(b.host(), &[9; 64]);
}

#[test]
fn resize_errors_name_resize() {
    // 2^62 u16 rows are 2^63 bytes: the size fits usize but is past isize::MAX, the largest
    // allocation possible. Before the fix this was "allocate: ... overflows usize".
    let rows = 1usize << 62;
    let bytes = 1usize << 63;
    for placement in ALL {
        let mut b = CpuGpuBuffer::<u16>::new(&dev(), "r", &[1], placement).unwrap();
        let err = b.resize(rows).unwrap_err();
        assert_eq!(
            err,
            Error::AllocationTooLarge {
                op: Op::Resize,
                bytes,
                max: isize::MAX as usize
            },
            "{placement}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "resize: {bytes} bytes requested, more than {} (isize::MAX), the largest \
                 allocation possible",
                isize::MAX
            )
        );
        assert_eq!(b.shape().dims(), &[1]);
    }
    // Through a manager with room for anything, the pinned block is refused the same way.
    let mgr = PinnedMemoryManager::new(&dev(), usize::MAX);
    let mut b = CpuGpuBuffer::<u16>::with_manager(&mgr, "r", &[1], Pinned).unwrap();
    let err = b.resize(rows).unwrap_err();
    assert!(
        matches!(err, Error::AllocationTooLarge { op: Op::Resize, bytes: b, .. } if b == bytes),
        "{err:?}"
    );
    assert_eq!(mgr.allocated_bytes(), 2);
}

// ---------------------------------------------------------------------------------------------
// Model-based property test
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    WriteHost(usize, usize, u32),
    WriteDevice(usize, usize, u32),
    CopyToDevice,
    CopyToHost,
    CopyToDeviceRows(usize),
    CopyToHostRows(usize),
    Sync,
    Fill(u32),
    Reset,
    Resize(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..10, 0usize..10, any::<u32>()).prop_map(|(a, b, v)| Step::WriteHost(a, b, v)),
        (0usize..10, 0usize..10, any::<u32>()).prop_map(|(a, b, v)| Step::WriteDevice(a, b, v)),
        Just(Step::CopyToDevice),
        Just(Step::CopyToHost),
        (0usize..10).prop_map(Step::CopyToDeviceRows),
        (0usize..10).prop_map(Step::CopyToHostRows),
        Just(Step::Sync),
        any::<u32>().prop_map(Step::Fill),
        Just(Step::Reset),
        (0usize..10).prop_map(Step::Resize),
    ]
}

/// The obvious model: two vectors and two flags (one vector and no flags for UVA).
struct Model {
    uva: bool,
    rows: usize,
    rl: usize,
    host: Vec<u32>,
    dev: Vec<u32>,
    hd: bool,
    dd: bool,
}

impl Model {
    fn dev_mut(&mut self) -> &mut Vec<u32> {
        if self.uva {
            &mut self.host
        } else {
            &mut self.dev
        }
    }
    fn device(&self) -> &[u32] {
        if self.uva {
            &self.host
        } else {
            &self.dev
        }
    }
}

fn run_model(placement: MemoryPlacement, rows: usize, rl: usize, steps: &[Step]) {
    let mut b = CpuGpuBuffer::<u32>::new(&dev(), "prop", &[rows, rl], placement).unwrap();
    let uva = placement == Uva;
    let mut m = Model {
        uva,
        rows,
        rl,
        host: vec![0; rows * rl],
        dev: vec![0; rows * rl],
        hd: false,
        dd: false,
    };
    for (i, s) in steps.iter().enumerate() {
        match *s {
            Step::WriteHost(a, e, v) => {
                let r = b.host_rows_mut(a..e);
                if a <= e && e <= m.rows {
                    r.unwrap().fill(v);
                    m.host[a * m.rl..e * m.rl].fill(v);
                    m.hd = !uva;
                } else {
                    assert!(r.is_err());
                }
            }
            Step::WriteDevice(a, e, v) => {
                let r = b.device_rows_mut(a..e);
                if a <= e && e <= m.rows {
                    r.unwrap().fill(v);
                    let rl = m.rl;
                    m.dev_mut()[a * rl..e * rl].fill(v);
                    m.dd = !uva;
                } else {
                    assert!(r.is_err());
                }
            }
            Step::CopyToDevice => {
                b.copy_to_device().unwrap();
                if !uva {
                    m.dev = m.host.clone();
                }
                // Both sides are equal after a whole copy.
                m.hd = false;
                m.dd = false;
            }
            Step::CopyToHost => {
                b.copy_to_host().unwrap();
                if !uva {
                    m.host = m.dev.clone();
                }
                m.hd = false;
                m.dd = false;
            }
            Step::CopyToDeviceRows(n) => {
                let r = b.copy_to_device_rows(n);
                if n <= m.rows {
                    r.unwrap();
                    if !uva {
                        let k = n * m.rl;
                        m.dev[..k].copy_from_slice(&m.host[..k]);
                    }
                } else {
                    assert!(r.is_err());
                }
            }
            Step::CopyToHostRows(n) => {
                let r = b.copy_to_host_rows(n);
                if n <= m.rows {
                    r.unwrap();
                    if !uva {
                        let k = n * m.rl;
                        m.host[..k].copy_from_slice(&m.dev[..k]);
                    }
                } else {
                    assert!(r.is_err());
                }
            }
            Step::Sync => {
                let r = b.sync();
                match (m.hd, m.dd) {
                    (true, true) => assert!(matches!(r, Err(Error::SyncConflict { .. }))),
                    (true, false) => {
                        assert_eq!(r.unwrap(), SyncOutcome::CopiedToDevice);
                        m.dev = m.host.clone();
                        m.hd = false;
                    }
                    (false, true) => {
                        assert_eq!(r.unwrap(), SyncOutcome::CopiedToHost);
                        m.host = m.dev.clone();
                        m.dd = false;
                    }
                    (false, false) => assert_eq!(r.unwrap(), SyncOutcome::UpToDate),
                }
            }
            Step::Fill(v) => {
                b.fill(v);
                m.host.fill(v);
                m.dev.fill(v);
                m.hd = false;
                m.dd = false;
            }
            Step::Reset => {
                b.reset();
                m.host.fill(0);
                m.dev.fill(0);
                m.hd = false;
                m.dd = false;
            }
            Step::Resize(n) => {
                b.resize(n).unwrap();
                m.rows = n;
                m.host.resize(n * m.rl, 0);
                m.dev.resize(n * m.rl, 0);
            }
        }
        assert_eq!(b.host(), &m.host[..], "host after step {i} {s:?}");
        assert_eq!(device_vec(&b), m.device(), "device after step {i} {s:?}");
        assert_eq!(flags(&b), (m.hd, m.dd), "flags after step {i} {s:?}");
        assert_eq!(b.rows(), m.rows);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn buffer_matches_a_two_vector_model(
        placement in prop_oneof![Just(Host), Just(Pinned), Just(Uva)],
        rows in 0usize..8,
        rl in 0usize..4,
        steps in proptest::collection::vec(step(), 0..24),
    ) {
        run_model(placement, rows, rl, &steps);
    }
}
