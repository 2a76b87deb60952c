//! The CUDA runtime of the crate (`src/cuda/`) on the emulated GPU: the error ring past 256
//! pending operations, frees and pool slots ordered after the work that uses them, host access
//! to paired buffers during in-flight copies, driver failures in the middle of an operation, the
//! crate's own memory pool, and the emulated driver's answers to misuse.
//!
//! Ordering tests do not rely on timing: `emu::hold` stops a stream so that work stays queued
//! for as long as the test needs, and a helper thread releases it once the main thread has had
//! every chance to go wrong. `.ci/emu-sanitizers` also runs them with random delays before every
//! stream operation under AddressSanitizer and ThreadSanitizer.
#![cfg(feature = "emulator")]

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_bits_eq, poisoned, random_indices, random_vec, rng};
use cpugpu::emu::{self, Fault};
use cpugpu::{
    CpuGpuBuffer, Device, DeviceBuffer, Error, GatherPolicy, MemoryPlacement, Op, ScatterPolicy,
    UvaBufferPool,
};

fn gpu() -> Device {
    Device::cuda(0).expect("the emulated GPU")
}

/// Releases `hold` from another thread after a pause, so that the calling thread can block on
/// work queued behind it (a correct wait) without deadlocking, while a missing wait would let the
/// calling thread run ahead and be caught by the test's data check.
fn release_later(hold: emu::Hold) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(150));
        hold.release();
    })
}

/// A tag of this test's own, so its resource counts are not mixed with other tests'.
fn own_tag(name: &str) -> u64 {
    let tag = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    emu::set_tag(tag);
    tag
}

#[test]
fn the_emulated_gpu_says_it_is_emulated() {
    let dev = gpu();
    assert!(dev.is_emulated());
    let shown = dev.to_string();
    assert!(shown.contains("emulated"), "{shown}");
    assert!(Device::auto().is_emulated());
    assert!(!Device::host().is_emulated());
    eprintln!("{shown}; {}", emu::describe());
}

#[test]
fn more_than_256_checked_operations_between_synchronisations() {
    let dev = gpu().new_stream().unwrap();
    let table: Vec<u32> = (0..64).collect();
    let t = dev.upload(&table, &[16, 4]).unwrap();
    let good = dev.upload(&[3i64, 15, 0], &[3]).unwrap();
    let bad_early = dev.upload(&[1i64, 2, 16, 5], &[4]).unwrap(); // position 2
    let bad_late = dev.upload(&[-1i32, 0], &[2]).unwrap(); // position 0
    let mut outs = Vec::new();
    // 600 checked operations, more than twice the 256-entry read-out ring, one sync at the end.
    for k in 0..600 {
        let r = match k {
            7 => dev.gather_rows(t.view(), bad_early.view(), GatherPolicy::Checked),
            400 => dev.gather_rows(t.view(), bad_late.view(), GatherPolicy::Checked),
            _ => dev.gather_rows(t.view(), good.view(), GatherPolicy::Checked),
        };
        outs.push(r.unwrap());
    }
    // The earliest error is the one reported, with its position and value.
    assert_eq!(
        dev.synchronize().unwrap_err(),
        Error::IndexOutOfBounds {
            op: Op::GatherRows,
            position: 2,
            index: 16,
            bound: 16
        }
    );
    dev.synchronize().unwrap();
    // Every good operation did its work.
    for (k, o) in outs.iter().enumerate() {
        if k != 7 && k != 400 {
            assert_eq!(o.to_vec().unwrap()[..4], [12, 13, 14, 15], "op {k}");
        }
    }
    // 300 good ones: nothing to report.
    for _ in 0..300 {
        dev.gather_rows(t.view(), good.view(), GatherPolicy::Checked)
            .unwrap();
    }
    dev.synchronize().unwrap();
}

#[test]
fn a_buffer_freed_while_another_stream_uses_it_is_freed_after_that_use() {
    let dev = gpu().new_stream().unwrap();
    let other = dev.new_stream().unwrap();
    let n = 4096;
    for round in 0..4u32 {
        // Made and filled on `other`, read by a gather on `dev` that cannot run yet (held), then
        // dropped: the free (on `other`) must wait for the gather.
        let mut table = other.alloc::<u32>(&[n, 2]).unwrap();
        table.fill(round + 7);
        let idx: Vec<i64> = (0..n as i64).rev().collect();
        let idx = dev.upload(&idx, &[n]).unwrap();
        let hold = emu::hold(&dev).unwrap();
        let out = dev
            .gather_rows(table.view(), idx.view(), GatherPolicy::Checked)
            .unwrap();
        drop(table);
        // Let `other` run everything it was given (the free among it) before the gather may.
        let t = release_later(hold);
        other.synchronize().unwrap();
        t.join().unwrap();
        dev.synchronize().unwrap();
        assert!(
            out.to_vec().unwrap().iter().all(|&v| v == round + 7),
            "round {round}: the gather read freed memory"
        );
    }
}

#[test]
fn a_pool_slot_is_handed_out_again_only_after_the_work_that_read_it() {
    let dev = gpu().new_stream().unwrap();
    let pool = UvaBufferPool::new(&dev, 2);
    let n = 2048;
    let table: Vec<u32> = (0..n as u32).collect();
    let t = dev.upload(&table, &[n, 1]).unwrap();
    for placement in [MemoryPlacement::Uva, MemoryPlacement::Pinned] {
        let mut outs = Vec::new();
        let mut releases = Vec::new();
        for step in 0..6u32 {
            // Steps 0 and 1 hold the stream, so their uploads and gathers (reading the slots)
            // are still queued when steps 2 and 3 come back for the same slots.
            let hold = (step < 2).then(|| emu::hold(&dev).unwrap());
            let mut ids = match placement {
                MemoryPlacement::Uva => pool.allocate_uva::<i32>("uva ids", &[n]).unwrap(),
                _ => pool.allocate::<i32>("pinned ids", &[n]).unwrap(),
            };
            if let Some(h) = hold {
                releases.push(release_later(h));
            }
            for (k, v) in ids.host_mut().iter_mut().enumerate() {
                *v = ((k as u32 * 7 + step) % n as u32) as i32;
            }
            ids.copy_to_device_rows(n).unwrap(); // a no-op for UVA: one memory
            let out = dev
                .gather_rows(t.view(), ids.device_view(), GatherPolicy::Checked)
                .unwrap();
            drop(ids);
            outs.push((step, out));
        }
        for r in releases {
            r.join().unwrap();
        }
        dev.synchronize().unwrap();
        for (step, out) in outs {
            let want: Vec<u32> = (0..n as u32).map(|k| (k * 7 + step) % n as u32).collect();
            assert_eq!(
                out.to_vec().unwrap(),
                want,
                "{placement}: step {step} read another step's ids"
            );
        }
    }
}

#[test]
fn host_access_to_a_paired_buffer_waits_for_its_in_flight_copy() {
    let dev = gpu().new_stream().unwrap();
    let n = 1000;
    let mut b = CpuGpuBuffer::<i64>::new(&dev, "positions", &[n], MemoryPlacement::Pinned).unwrap();
    // Upload: the copy is queued behind a hold; writing the host side again must wait for it.
    b.host_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(k, v)| *v = k as i64);
    let hold = emu::hold(&dev).unwrap();
    b.copy_to_device_rows(n).unwrap();
    let t = release_later(hold);
    b.host_mut().fill(-1); // must not land before the upload has read the first values
    t.join().unwrap();
    let mut on_device = vec![0i64; n];
    b.device_view().copy_to_host(&mut on_device).unwrap();
    assert_eq!(
        on_device,
        (0..n as i64).collect::<Vec<_>>(),
        "the upload saw a later write"
    );
    // Download: reading the host side must wait for the copy to land.
    b.device_view_mut().fill(42);
    let hold = emu::hold(&dev).unwrap();
    b.copy_to_host().unwrap();
    let t = release_later(hold);
    assert!(
        b.host().iter().all(|&v| v == 42),
        "read before the download landed"
    );
    t.join().unwrap();
}

#[test]
fn dropping_one_handle_does_not_wait_for_the_shared_stream() {
    let a = gpu();
    let b = Device::cuda(0).unwrap(); // the same default stream, a read-out of its own
    assert_eq!(a.stream().unwrap().as_raw(), b.stream().unwrap().as_raw());
    // (Uploads wait for their copy: made before the stream is held.)
    let x = b.upload(&[1u32, 2, 3], &[3]).unwrap();
    let idx = b.upload(&[2i32, 0], &[2]).unwrap();
    let hold = emu::hold(&a).unwrap();
    let y = b
        .gather_rows(x.view(), idx.view(), GatherPolicy::Checked)
        .unwrap();
    drop((x, idx, y));
    let (tx, rx) = mpsc::channel();
    let dropper = thread::spawn(move || {
        drop(b);
        tx.send(()).unwrap();
    });
    // The stream is held until the drop has returned: a drop that waited would never return.
    let dropped = rx.recv_timeout(Duration::from_secs(30));
    hold.release();
    dropper.join().unwrap();
    assert!(
        dropped.is_ok(),
        "dropping a handle waited for the shared stream"
    );
    a.synchronize().unwrap();
}

#[test]
fn an_operation_whose_cross_stream_ordering_fails_waits_for_its_work() {
    // The gather runs on `b` and reads memory owned through `a`: after issuing it, the crate
    // makes `a` wait for it (so `a`'s free of the source comes after). When that ordering
    // cannot be made, the operation must wait for its own work instead.
    let a = gpu().new_stream().unwrap();
    let b = a.new_stream().unwrap();
    let n = 4096usize;
    let src: Vec<u32> = (0..n as u32).map(|i| i * 3 + 1).collect();
    let x = a.upload(&src, &[n, 1]).unwrap();
    let idx = b.upload(&(0..n as i64).collect::<Vec<_>>(), &[n]).unwrap();
    let mut out = b.alloc::<u32>(&[n, 1]).unwrap();
    a.synchronize().unwrap();
    b.synchronize().unwrap();
    let hold = emu::hold(&b).unwrap();
    let release = release_later(hold);
    // The join makes and records an event (calls 1 and 2); the ordering after it fails (3).
    emu::fail_nth(Fault::Event, 3, 2);
    let e = b
        .gather_rows_into(x.view(), idx.view(), out.view_mut(), GatherPolicy::Checked)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Driver {
                op: Op::GatherRows,
                call: "cuEventCreate",
                ..
            }
        ),
        "{e:?}"
    );
    drop(x); // freed on `a`'s stream
    a.synchronize().unwrap();
    release.join().unwrap();
    b.synchronize().unwrap();
    assert_eq!(out.to_vec().unwrap(), src, "the gather read freed memory");
}

#[test]
fn an_event_wait_concerns_the_record_made_before_it() {
    let d1 = gpu().new_stream().unwrap();
    let d2 = d1.new_stream().unwrap();
    let d3 = d1.new_stream().unwrap();
    let hold = emu::hold(&d1).unwrap();
    let e = d1.record_event(false).unwrap(); // record 1, behind the hold
    e.make_wait(d3.stream().unwrap()).unwrap(); // d3 waits for record 1
    e.record(d2.stream().unwrap()).unwrap(); // record 2, on a free stream
    d2.synchronize().unwrap(); // record 2 has run
    let after = d3.record_event(false).unwrap(); // behind d3's wait
                                                 // Had record 2 released d3's wait, `after` would complete at once; give it every chance.
    let mut ran_past = false;
    for _ in 0..50 {
        ran_past |= after.query().unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    // The event's own synchronisation now concerns record 2 (done), a wait made earlier still
    // record 1.
    e.synchronize().unwrap();
    hold.release();
    d3.synchronize().unwrap();
    assert!(
        !ran_past,
        "d3 ran past its wait for record 1 while d1 was held"
    );
    assert!(after.query().unwrap());
}

fn assert_no_leak(tag: u64, before: emu::Stats, what: &str) {
    let after = emu::stats(tag);
    assert_eq!(
        (
            after.device_allocs,
            after.host_allocs,
            after.events,
            after.streams
        ),
        (
            before.device_allocs,
            before.host_allocs,
            before.events,
            before.streams
        ),
        "{what}: resources left behind ({after:?} vs {before:?})"
    );
}

#[test]
fn a_driver_failure_in_the_middle_of_an_operation_is_typed_leaks_nothing_and_the_next_works() {
    // The default stream is made by the process's first Device::cuda(0), under that thread's
    // tag: make sure it exists before this test counts its own resources.
    let default = gpu();
    let tag = own_tag("driver failures");
    let dev = default.new_stream().unwrap();
    let mut r = rng(3);
    let src: Vec<f32> = random_vec(&mut r, 300 * 4);
    let s = dev.upload(&src, &[300, 4]).unwrap();
    let idx_host = random_indices(&mut r, 500, 300);
    let idx = dev.upload(&idx_host, &[500]).unwrap();
    let init: Vec<f32> = random_vec(&mut r, 300 * 4);
    let src500: Vec<f32> = random_vec(&mut r, 500 * 4);
    let s500 = dev.upload(&src500, &[500, 4]).unwrap();
    dev.synchronize().unwrap();

    // Scatter's scratch allocation fails: a typed error naming the call, nothing written.
    let mut cache = dev.upload(&init, &[300, 4]).unwrap();
    dev.synchronize().unwrap(); // stream-ordered frees count once they have executed
    let before_cache = emu::stats(tag);
    emu::fail_nth(Fault::DeviceAlloc, 1, 1);
    let e = dev
        .scatter_rows_into(
            s500.view(),
            idx.view(),
            cache.view_mut(),
            ScatterPolicy::Checked,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Driver {
                op: Op::ScatterRows,
                call: "cuMemAllocFromPoolAsync",
                code: 1,
                name: "CUDA_ERROR_INVALID_VALUE"
            }
        ),
        "{e:?}"
    );
    dev.synchronize().unwrap();
    assert_bits_eq(&cache.to_vec().unwrap(), &init, "a failed scatter wrote");
    assert_no_leak(tag, before_cache, "failed scatter");
    // The next one works.
    dev.scatter_rows_into(
        s500.view(),
        idx.view(),
        cache.view_mut(),
        ScatterPolicy::Checked,
    )
    .unwrap();
    dev.synchronize().unwrap();
    drop(cache);

    // Gather's copy kernel fails to launch after the validation launched (the large-n path,
    // forced): the error word and the scratch are re-armed, so the next operation is not blamed
    // for a stale error. Then the one-launch path's only launch fails.
    let mut out = dev.alloc::<f32>(&[500, 4]).unwrap();
    dev.synchronize().unwrap();
    let before_out = emu::stats(tag);
    for (limit, nth) in [(Some(0), 2), (None, 1)] {
        emu::set_small_batch(limit);
        emu::fail_nth(Fault::Launch, nth, 719);
        let e = dev
            .gather_rows_into(s.view(), idx.view(), out.view_mut(), GatherPolicy::Checked)
            .unwrap_err();
        emu::set_small_batch(None);
        assert!(
            matches!(
                e,
                Error::Driver {
                    op: Op::GatherRows,
                    call: "cuLaunchKernel",
                    code: 719,
                    ..
                }
            ),
            "{e:?}"
        );
        dev.synchronize().unwrap();
    }
    // Scatter's copy fails to launch after its winners pass set entries: they are returned to -1,
    // so the next scatter's last-wins is not spoiled by a stale winner.
    let mut cache = dev.upload(&init, &[300, 4]).unwrap();
    emu::set_small_batch(Some(0));
    emu::fail_nth(Fault::Launch, 2, 719);
    let e = dev
        .scatter_rows_into(
            s500.view(),
            idx.view(),
            cache.view_mut(),
            ScatterPolicy::Checked,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Driver {
                op: Op::ScatterRows,
                ..
            }
        ),
        "{e:?}"
    );
    dev.synchronize().unwrap();
    assert_bits_eq(&cache.to_vec().unwrap(), &init, "a failed scatter wrote");
    // The first 250 rows only: an entry left at a later position by the failed scatter would
    // make its row lose.
    dev.scatter_rows_into(
        s500.view().rows(0..250).unwrap(),
        idx.view().rows(0..250).unwrap(),
        cache.view_mut(),
        ScatterPolicy::Checked,
    )
    .unwrap();
    emu::set_small_batch(None);
    dev.synchronize().unwrap();
    let mut want = init.clone();
    cpugpu::host::scatter_rows_into(
        &src500[..250 * 4],
        &idx_host[..250],
        &mut want,
        &[300, 4],
        ScatterPolicy::Checked,
    )
    .unwrap();
    assert_bits_eq(
        &cache.to_vec().unwrap(),
        &want,
        "the scatter after a failed one",
    );
    drop(cache);
    dev.synchronize().unwrap(); // the stream-ordered free has executed
    assert_no_leak(tag, before_out, "failed gather");
    let g = dev
        .gather_rows(s.view(), idx.view(), GatherPolicy::Checked)
        .unwrap();
    dev.synchronize().unwrap();
    let want =
        cpugpu::host::gather_rows(&src, &[300, 4], &idx_host, GatherPolicy::Checked).unwrap();
    assert_bits_eq(&g.to_vec().unwrap(), &want, "the gather after a failed one");
    drop((g, out));

    // Flatten's metadata upload fails.
    let parts: Vec<DeviceBuffer<u16>> = (0..5)
        .map(|k| dev.upload(&vec![k as u16; k + 1], &[k + 1]).unwrap())
        .collect();
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    emu::fail_nth(Fault::Copy, 1, 1);
    let e = dev.flatten::<u16, i64>(&views).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Driver {
                op: Op::Flatten,
                call: "cuMemcpyHtoDAsync",
                ..
            }
        ),
        "{e:?}"
    );
    let (flat, offs) = dev.flatten::<u16, i64>(&views).unwrap();
    assert_eq!(offs.to_vec().unwrap(), [0, 1, 3, 6, 10, 15]);
    assert_eq!(flat.to_vec().unwrap()[..3], [0, 1, 1]);
    drop((flat, offs, views));
    drop(parts);

    // A multi-tile prefix sum whose second launch fails.
    let lengths = dev.upload(&vec![1i32; 10_000], &[10_000]).unwrap();
    let mut offsets = dev.upload(&poisoned::<i64>(10_001), &[10_001]).unwrap();
    emu::fail_nth(Fault::Launch, 2, 1);
    let e = dev
        .prefix_sum_offsets_into(lengths.view(), offsets.view_mut())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Driver {
                op: Op::PrefixSumOffsets,
                call: "cuLaunchKernel",
                ..
            }
        ),
        "{e:?}"
    );
    dev.synchronize().unwrap();
    dev.prefix_sum_offsets_into(lengths.view(), offsets.view_mut())
        .unwrap();
    dev.synchronize().unwrap();
    assert_eq!(offsets.to_vec().unwrap()[10_000], 10_000);
    drop((lengths, offsets));

    // A new stream cannot be made: a typed error, and the device still works.
    emu::fail_nth(Fault::Stream, 1, 2);
    let e = dev.new_stream().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Driver {
                call: "cuStreamCreate",
                ..
            }
        ),
        "{e:?}"
    );
    drop(dev.new_stream().unwrap());

    dev.synchronize().unwrap();
    drop((s, s500, idx));
    drop(dev);
    // Everything this test made is released once the dropped handle's last work has run (its
    // staging and read-out memory wait on the context's reclaim list, swept at synchronisation).
    emu::set_tag(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        default.synchronize().unwrap();
        let st = emu::stats(tag);
        if (st.device_allocs, st.host_allocs, st.events, st.streams) == (0, 0, 0, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "resources left behind: {st:?}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// The emulated driver's entry points, called directly (as libcuda's would be), to check its
/// answers to misuse.
mod raw {
    use std::ffi::{c_char, c_int, c_uint, c_void};
    pub type H = *mut c_void;
    extern "C" {
        pub fn cpugpu_emu_cuInit(flags: c_uint) -> i32;
        pub fn cpugpu_emu_cuDevicePrimaryCtxRetain(ctx: *mut H, dev: c_int) -> i32;
        pub fn cpugpu_emu_cuCtxSetCurrent(ctx: H) -> i32;
        pub fn cpugpu_emu_cuStreamCreate(s: *mut H, flags: c_uint) -> i32;
        pub fn cpugpu_emu_cuStreamDestroy_v2(s: H) -> i32;
        pub fn cpugpu_emu_cuStreamSynchronize(s: H) -> i32;
        pub fn cpugpu_emu_cuMemAlloc_v2(p: *mut u64, bytes: usize) -> i32;
        pub fn cpugpu_emu_cuMemFree_v2(p: u64) -> i32;
        pub fn cpugpu_emu_cuMemcpyDtoDAsync_v2(d: u64, s: u64, bytes: usize, st: H) -> i32;
        pub fn cpugpu_emu_cuMemsetD32Async(d: u64, v: u32, n: usize, st: H) -> i32;
        pub fn cpugpu_emu_cuEventCreate(e: *mut H, flags: c_uint) -> i32;
        pub fn cpugpu_emu_cuEventRecord(e: H, s: H) -> i32;
        pub fn cpugpu_emu_cuEventElapsedTime(ms: *mut f32, a: H, b: H) -> i32;
        pub fn cpugpu_emu_cuEventDestroy_v2(e: H) -> i32;
        pub fn cpugpu_emu_cuModuleLoadData(m: *mut H, image: *const c_void) -> i32;
        pub fn cpugpu_emu_cuModuleGetFunction(f: *mut H, m: H, name: *const c_char) -> i32;
        pub fn cpugpu_emu_cuFuncSetAttribute(f: H, attr: c_int, v: c_int) -> i32;
        pub fn cpugpu_emu_cuLaunchKernel(
            f: H,
            gx: c_uint,
            gy: c_uint,
            gz: c_uint,
            bx: c_uint,
            by: c_uint,
            bz: c_uint,
            shared: c_uint,
            s: H,
            params: *mut *mut c_void,
            extra: *mut *mut c_void,
        ) -> i32;
        pub fn cpugpu_emu_cuDeviceGetDefaultMemPool(pool: *mut H, dev: c_int) -> i32;
        pub fn cpugpu_emu_cuMemPoolGetAttribute(pool: H, attr: c_int, v: *mut c_void) -> i32;
    }
}

#[test]
fn the_emulated_driver_answers_misuse_with_real_result_codes() {
    use raw::*;
    use std::ffi::c_void;
    use std::ptr::null_mut;
    const INVALID_VALUE: i32 = 1;
    const INVALID_IMAGE: i32 = 200;
    const INVALID_CONTEXT: i32 = 201;
    const INVALID_HANDLE: i32 = 400;
    const NOT_FOUND: i32 = 500;
    const LAUNCH_OUT_OF_RESOURCES: i32 = 701;
    let _ = gpu(); // the crate initialised the driver and retained the context
                   // SAFETY (the whole test): each call is given valid pointers to write its results to, or
                   // handles whose invalidity is the point of the call; the driver validates before acting.
    unsafe {
        assert_eq!(cpugpu_emu_cuInit(0), 0);
        // No current context on a fresh thread.
        let code = thread::spawn(|| {
            let mut s: H = null_mut();
            cpugpu_emu_cuStreamCreate(&mut s, 0)
        })
        .join()
        .unwrap();
        assert_eq!(code, INVALID_CONTEXT);
        let mut ctx: H = null_mut();
        assert_eq!(cpugpu_emu_cuDevicePrimaryCtxRetain(&mut ctx, 0), 0);
        assert_eq!(cpugpu_emu_cuCtxSetCurrent(ctx), 0);
        assert_eq!(cpugpu_emu_cuCtxSetCurrent(0x1234 as H), INVALID_CONTEXT);
        // A destroyed stream is a bad handle.
        let mut s: H = null_mut();
        assert_eq!(cpugpu_emu_cuStreamCreate(&mut s, 1), 0);
        assert_eq!(cpugpu_emu_cuStreamDestroy_v2(s), 0);
        assert_eq!(cpugpu_emu_cuStreamSynchronize(s), INVALID_HANDLE);
        assert_eq!(cpugpu_emu_cuStreamDestroy_v2(s), INVALID_HANDLE);
        // Freed memory: a second free, and a copy from it, are invalid values.
        let (mut a, mut b) = (0u64, 0u64);
        assert_eq!(cpugpu_emu_cuMemAlloc_v2(&mut a, 256), 0);
        assert_eq!(cpugpu_emu_cuMemAlloc_v2(&mut b, 256), 0);
        assert_eq!(cpugpu_emu_cuMemFree_v2(a), 0);
        assert_eq!(cpugpu_emu_cuMemFree_v2(a), INVALID_VALUE);
        assert_eq!(
            cpugpu_emu_cuMemcpyDtoDAsync_v2(b, a, 16, null_mut()),
            INVALID_VALUE
        );
        // Past the end of a live allocation, and a misaligned 32-bit memset.
        assert_eq!(
            cpugpu_emu_cuMemcpyDtoDAsync_v2(b, b + 128, 256, null_mut()),
            INVALID_VALUE
        );
        assert_eq!(
            cpugpu_emu_cuMemsetD32Async(b + 2, 7, 4, null_mut()),
            INVALID_VALUE
        );
        assert_eq!(cpugpu_emu_cuMemFree_v2(b), 0);
        // Elapsed time needs timing events.
        let (mut e1, mut e2): (H, H) = (null_mut(), null_mut());
        assert_eq!(cpugpu_emu_cuEventCreate(&mut e1, 2), 0); // CU_EVENT_DISABLE_TIMING
        assert_eq!(cpugpu_emu_cuEventCreate(&mut e2, 2), 0);
        assert_eq!(cpugpu_emu_cuEventRecord(e1, null_mut()), 0);
        assert_eq!(cpugpu_emu_cuEventRecord(e2, null_mut()), 0);
        assert_eq!(cpugpu_emu_cuStreamSynchronize(null_mut()), 0);
        let mut ms = 0f32;
        assert_eq!(
            cpugpu_emu_cuEventElapsedTime(&mut ms, e1, e2),
            INVALID_HANDLE
        );
        assert_eq!(cpugpu_emu_cuEventDestroy_v2(e1), 0);
        assert_eq!(cpugpu_emu_cuEventDestroy_v2(e2), 0);
        assert_eq!(cpugpu_emu_cuEventRecord(e1, null_mut()), INVALID_HANDLE);
        // Modules: a bad image, a kernel the image does not hold.
        let mut m: H = null_mut();
        assert_eq!(
            cpugpu_emu_cuModuleLoadData(&mut m, c"not an image".as_ptr().cast()),
            INVALID_IMAGE
        );
        let image = b"CPUGPU-EMULATED-IMAGE-1\0offsets_lookback_i64_i64\0pad_w1\0\0";
        assert_eq!(
            cpugpu_emu_cuModuleLoadData(&mut m, image.as_ptr().cast()),
            0
        );
        let mut f: H = null_mut();
        assert_eq!(
            cpugpu_emu_cuModuleGetFunction(&mut f, m, c"gather_rows_w16_i64".as_ptr().cast()),
            NOT_FOUND
        );
        assert_eq!(
            cpugpu_emu_cuModuleGetFunction(&mut f, m, c"offsets_lookback_i64_i64".as_ptr().cast()),
            0
        );
        // Launches CUDA refuses: over 1,024 threads, over the kernel's launch bounds (256),
        // over 48 KiB of dynamic shared memory without the opt-in, a zero grid.
        let mut params = [0u64; 7];
        let mut args = [params.as_mut_ptr().cast::<c_void>()];
        let launch = |f: H, grid: u32, block: u32, shared: u32, args: &mut [*mut c_void; 1]| {
            cpugpu_emu_cuLaunchKernel(
                f,
                grid,
                1,
                1,
                block,
                1,
                1,
                shared,
                null_mut(),
                args.as_mut_ptr(),
                null_mut(),
            )
        };
        assert_eq!(launch(f, 1, 2048, 0, &mut args), INVALID_VALUE);
        assert_eq!(launch(f, 1, 512, 0, &mut args), LAUNCH_OUT_OF_RESOURCES);
        assert_eq!(launch(f, 1, 256, 64 * 1024, &mut args), INVALID_VALUE);
        assert_eq!(launch(f, 0, 256, 0, &mut args), INVALID_VALUE);
        assert_eq!(
            cpugpu_emu_cuFuncSetAttribute(f, 8, 300 * 1024),
            INVALID_VALUE
        );
        assert_eq!(cpugpu_emu_cuFuncSetAttribute(f, 8, 64 * 1024), 0);
        // A bad function handle.
        assert_eq!(launch(0x40 as H, 1, 32, 0, &mut args), INVALID_HANDLE);
    }
}

#[test]
fn the_crate_allocates_from_a_pool_of_its_own_and_leaves_the_default_pool_alone() {
    use raw::*;
    let dev = gpu();
    let b = dev.upload(&vec![1u8; 1 << 20], &[1 << 20]).unwrap();
    let idx = dev.upload(&[0i32; 100], &[100, 1]).unwrap();
    let _ = dev.scatter_rows_into(
        b.view().rows(0..100).unwrap().reshape(&[100, 1]).unwrap(),
        idx.view().reshape(&[100]).unwrap(),
        dev.alloc::<u8>(&[10, 1]).unwrap().view_mut(),
        ScatterPolicy::Checked,
    );
    dev.synchronize().unwrap();
    // SAFETY: valid out-pointers; the default pool of device 0 exists once cuInit ran.
    unsafe {
        let mut pool: raw::H = std::ptr::null_mut();
        assert_eq!(cpugpu_emu_cuDeviceGetDefaultMemPool(&mut pool, 0), 0);
        let (mut threshold, mut used) = (u64::MAX, u64::MAX);
        assert_eq!(
            cpugpu_emu_cuMemPoolGetAttribute(pool, 4, (&mut threshold as *mut u64).cast()),
            0
        );
        assert_eq!(
            cpugpu_emu_cuMemPoolGetAttribute(pool, 7, (&mut used as *mut u64).cast()),
            0
        );
        assert_eq!(
            threshold, 0,
            "the default pool's release threshold was changed"
        );
        assert_eq!(used, 0, "the crate allocated from the default pool");
    }
}
