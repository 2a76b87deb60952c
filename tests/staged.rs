//! Staged writes against sequential application, on every backend: overlapping writes (the
//! later wins), every element width, several applies, one launch per apply, the staging
//! memory's growth and reuse, and (on the emulated GPU) a staging block never rewritten while
//! its upload is in flight.

mod common;

use common::prep::*;
use common::{random_vec, rng};
use cpugpu::{BackendKind, Device, Element, Error, Op, StagedWrites};
use rand::Rng;

fn width_case<T: Element + PartialEq + std::fmt::Debug>(seed: u64) {
    for dev in backends() {
        let mut rng = rng(seed);
        let (rows, cols) = (13usize, 40usize);
        let mut want: Vec<T> = random_vec(&mut rng, rows * cols);
        let mut dst = up(&dev, &want, &[rows, cols]);
        let mut w = StagedWrites::<T>::new(&dev, rows, cols);
        for step in 0..6 {
            let writes = [0usize, 1, 2, 9, 50][step % 5];
            for _ in 0..writes {
                let row = rng.gen_range(0..rows);
                let start = rng.gen_range(0..=cols);
                let len = rng.gen_range(0..=cols - start);
                let vals: Vec<T> = random_vec(&mut rng, len);
                w.stage(row, start, &vals).unwrap();
                want[row * cols + start..][..len].copy_from_slice(&vals);
            }
            launches();
            let queued = w.len();
            w.apply(dst.view_mut()).unwrap();
            dev.synchronize().unwrap();
            assert!(w.is_empty());
            if dev.kind() != BackendKind::Host && cfg!(feature = "emulator") {
                let l = launches();
                let expected = usize::from(queued > 0);
                assert_eq!(
                    l.len(),
                    expected,
                    "{}: one launch per apply: {l:?}",
                    dev.kind()
                );
                assert!(l.iter().all(|k| k.starts_with("staged_write_w")), "{l:?}");
            }
            common::assert_bits_eq(&read(&dst), &want, &format!("{} step {step}", dev.kind()));
        }
        if dev.kind() == BackendKind::Host {
            assert_eq!(w.staging_bytes(), 0, "no staging on the host backend");
        }
    }
}

#[test]
fn staged_writes_match_sequential_application() {
    width_case::<u8>(1);
    width_case::<half::bf16>(2);
    width_case::<i32>(3);
    width_case::<f64>(4);
    width_case::<u128>(5);
    width_case::<[u32; 4]>(6);
}

#[test]
fn staging_grows_without_doubling_and_is_reused() {
    for dev in backends() {
        if dev.kind() == BackendKind::Host {
            continue;
        }
        let mut dst = dev.alloc::<i32>(&[64, 1000]).unwrap();
        let mut w = StagedWrites::<i32>::new(&dev, 64, 1000);
        // Steady sizes: after the first two applies (one per staging slot) nothing is allocated.
        for _ in 0..6 {
            w.stage(3, 0, &[7; 300]).unwrap();
            w.apply(dst.view_mut()).unwrap();
        }
        assert_eq!(w.staging_allocations(), 2);
        let steady = w.staging_bytes();
        // Each slot holds its apply's bytes rounded to 256, not a power of two.
        let need = 16 * 2 + 8 + 300 * 4; // offsets, lengths, values (16-aligned)
        assert_eq!(steady, 2 * (need as usize).next_multiple_of(256));
        // A slowly growing apply regrows by at least a quarter each time, so a bounded number
        // of times, and stays within 1.25x of the largest need (plus rounding).
        for k in 1..=40usize {
            w.stage(5, 0, &vec![k as i32; 300 + 10 * k]).unwrap();
            w.apply(dst.view_mut()).unwrap();
        }
        let largest = 16 * 2 + 8 + (300 + 400) * 4;
        assert!(
            w.staging_allocations() <= 2 + 8,
            "{}",
            w.staging_allocations()
        );
        assert!(
            w.staging_bytes() <= 2 * (largest * 5 / 4 + 256),
            "{}",
            w.staging_bytes()
        );
        dev.synchronize().unwrap();
        assert!(read(&dst)[5000..5700].iter().all(|&x| x == 40));
    }
}

#[test]
fn stage_checks_bounds_and_queues_nothing_on_error() {
    let op = Op::StagedWrite;
    for dev in backends() {
        let mut w = StagedWrites::<i64>::new(&dev, 4, 8);
        w.stage(0, 0, &[1, 2]).unwrap();
        let e = w.stage(4, 0, &[1]).unwrap_err();
        assert_eq!(
            e,
            Error::IndexOutOfBounds {
                op,
                position: 1,
                index: 4,
                bound: 4
            }
        );
        assert_names(&e, op, Some(1));
        let e = w.stage(1, 6, &[1, 2, 3]).unwrap_err();
        assert_eq!(
            e,
            Error::WindowOutOfRange {
                op,
                position: 1,
                start: 6,
                len: 3,
                cols: 8
            }
        );
        let e = w.stage(1, 9, &[]).unwrap_err();
        assert!(matches!(e, Error::WindowOutOfRange { .. }), "{e:?}");
        assert_eq!((w.len(), w.staged_values()), (1, 2));
        w.stage(1, 8, &[]).unwrap(); // empty at the end of a row: nothing queued
        assert_eq!(w.len(), 1);
        let mut wrong = dev.alloc::<i64>(&[4, 9]).unwrap();
        let e = w.apply(wrong.view_mut()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::ShapeMismatch {
                    op: Op::StagedWrite,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(w.len(), 1, "a refused apply keeps the queue");
        w.clear();
        assert!(w.is_empty());
    }
}

/// A staging block is not rewritten while the upload reading it is in flight: with the stream
/// held, a third apply (which reuses the first one's block) must wait for the first upload.
#[cfg(feature = "emulator")]
#[test]
fn staging_is_not_overwritten_while_its_upload_is_in_flight() {
    let dev = Device::cuda(0).unwrap();
    let mut dst = dev.alloc::<u32>(&[3, 64]).unwrap();
    let mut w = StagedWrites::<u32>::new(&dev, 3, 64);
    let hold = cpugpu::emu::hold(&dev).unwrap();
    w.stage(0, 0, &[1; 64]).unwrap();
    w.apply(dst.view_mut()).unwrap(); // slot 0: its upload is queued behind the hold
    w.stage(1, 0, &[2; 64]).unwrap();
    w.apply(dst.view_mut()).unwrap(); // slot 1
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(150));
        hold.release();
    });
    let t = std::time::Instant::now();
    w.stage(2, 0, &[3; 64]).unwrap();
    w.apply(dst.view_mut()).unwrap(); // slot 0 again: waits for the first upload
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(100),
        "the third apply waited"
    );
    release.join().unwrap();
    dev.synchronize().unwrap();
    let got = read(&dst);
    assert!(
        got[..64].iter().all(|&x| x == 1),
        "the first apply's data reached row 0"
    );
    assert!(got[64..128].iter().all(|&x| x == 2));
    assert!(got[128..].iter().all(|&x| x == 3));
}

#[allow(dead_code)]
fn _device_is_used(_: &Device) {}
