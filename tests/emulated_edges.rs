//! Edge paths of the kernels found by review, on the emulated GPU through `Device`: a scan of
//! more than 256 tiles (many look-back windows), overflow exactly at a tile edge,
//! flatten/split and pad with a capped grid (grid-stride loops taken many times), fill patterns
//! when the access width is smaller or larger than the element, and scatter through every
//! access width.
#![cfg(feature = "emulator")]

mod common;

use std::sync::{Mutex, MutexGuard};

use common::gpu;
use cpugpu::{emu, host};
use rand::{rngs::SmallRng, Rng, SeedableRng};

/// `emu::set_grid_cap` is per thread; these tests still run one at a time, so each sees only
/// its own cap in its launch log and timing.
fn cap_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn big_scan_multi_chunk() {
    let _g = cap_lock();
    // > 256 tiles: look-back windows of 32 tiles taken many times, by a grid of 3 blocks too.
    let n = 256 * 4096 + 3 * 4096 + 17;
    let mut r = SmallRng::seed_from_u64(1);
    let l: Vec<i32> = (0..n).map(|_| r.gen_range(0..100)).collect();
    for cap in [0u32, 3] {
        emu::set_grid_cap(cap);
        let mut a = vec![-1i64; n + 1];
        let mut b = vec![-1i64; n + 1];
        let e = gpu::prefix_sum_offsets_into(&l, &mut a);
        let h = host::prefix_sum_offsets_into(&l, &mut b);
        assert_eq!(e, h);
        assert!(a == b, "cap {cap}");
    }
    // Overflow in tile 258 of 260, i32 offsets: nothing written, the position reported.
    let mut l2 = vec![1000i32; n];
    let pos = 258 * 4096 + 5;
    l2[pos] = i32::MAX - 100;
    for cap in [0u32, 3] {
        emu::set_grid_cap(cap);
        let mut a = vec![-1i32; n + 1];
        let mut b = vec![-1i32; n + 1];
        let e = gpu::prefix_sum_offsets_into(&l2, &mut a);
        let h = host::prefix_sum_offsets_into(&l2, &mut b);
        assert_eq!(e, h);
        assert!(a.iter().all(|&x| x == -1));
    }
    emu::set_grid_cap(0);
}

#[test]
fn flatten_capped_grid() {
    let _g = cap_lock();
    let mut r = SmallRng::seed_from_u64(2);
    for cap in [1u32, 2, 3] {
        emu::set_grid_cap(cap);
        for n in [0usize, 1, 5, 3000] {
            let bufs: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    (0..(if i % 97 == 0 { 5000 } else { r.gen_range(0..9) }))
                        .map(|_| r.gen())
                        .collect()
                })
                .collect();
            let arrays: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
            let h: (Vec<u8>, Vec<i64>) = host::flatten(&arrays).unwrap();
            let e: (Vec<u8>, Vec<i64>) = gpu::flatten(&arrays).unwrap();
            assert!(h == e, "cap {cap} n {n}");
            let mut outs: Vec<Vec<u8>> = bufs.iter().map(|b| vec![0xA5; b.len()]).collect();
            let mut refs: Vec<&mut [u8]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            gpu::split_copy_into(&e.0, &e.1, &mut refs).unwrap();
            assert!(outs == bufs);
        }
    }
    emu::set_grid_cap(0);
}

#[test]
fn pad_capped_grid() {
    let _g = cap_lock();
    let mut r = SmallRng::seed_from_u64(3);
    for cap in [1u32, 2] {
        emu::set_grid_cap(cap);
        for (shape, axis, m) in [
            (vec![37usize, 5, 3], 1usize, 4usize),
            (vec![3, 1000], 1, 7),
            (vec![1001, 1], 0, 16),
            (vec![9, 300, 2], 1, 256),
        ] {
            let numel: usize = shape.iter().product();
            let src: Vec<u16> = (0..numel).map(|_| r.gen()).collect();
            let h = host::pad_to_multiple(&src, &shape, axis, m, 0xBEEFu16).unwrap();
            let (_, e, _) = gpu::pad_to_multiple(&src, &shape, axis, m, 0xBEEFu16).unwrap();
            assert!(*h.data == e[..], "cap {cap} {shape:?}");
        }
    }
    emu::set_grid_cap(0);
}

#[test]
fn fill_paths_misaligned() {
    let _g = cap_lock();
    use cpugpu::GatherPolicy;
    let mut r = SmallRng::seed_from_u64(4);
    // 16-byte elements viewed 4 bytes off 16-byte alignment -> V = 4 < element width.
    let idx: Vec<i64> = (0..40)
        .map(|i| if i % 3 == 0 { -1 } else { (i * 7) % 16 })
        .collect();
    let fill = [0x11223344u32, 0x55667788, 0x99aabbcc, 0xddeeff00];
    for view_off in [0usize, 1, 2] {
        let big: Vec<u32> = (0..4 * 70).map(|_| r.gen()).collect();
        let mut dstbuf = vec![0u32; 4 * 4 * 40 + 8];
        let s: &[[u32; 4]] = bytemuck::cast_slice(&big[view_off..view_off + 4 * 64]);
        let d: &mut [[u32; 4]] =
            bytemuck::cast_slice_mut(&mut dstbuf[view_off..view_off + 4 * 4 * 40]);
        emu::take_launch_log();
        gpu::gather_rows_into(s, &[16, 4], &idx, d, GatherPolicy::NegativeFill(fill)).unwrap();
        let log = emu::take_launch_log();
        let mut want = vec![[0u32; 4]; 4 * 40];
        host::gather_rows_into(
            s,
            &[16, 4],
            &idx,
            &mut want,
            GatherPolicy::NegativeFill(fill),
        )
        .unwrap();
        assert!(d == &want[..], "off {view_off} {log:?}");
    }
    // [u8; 16]-like: u16 elements, rows of 8 (16 bytes) -> V=16 > element width with fill.
    let s16: Vec<u16> = (0..8 * 10).map(|_| r.gen()).collect();
    let mut d = vec![0u16; 8 * 40];
    let mut w = vec![0u16; 8 * 40];
    let idx2: Vec<i32> = (0..40)
        .map(|i| if i % 2 == 0 { -5 } else { i % 10 })
        .collect();
    emu::take_launch_log();
    gpu::gather_rows_into(
        &s16,
        &[10, 8],
        &idx2,
        &mut d,
        GatherPolicy::NegativeFill(0xA1B2u16),
    )
    .unwrap();
    host::gather_rows_into(
        &s16,
        &[10, 8],
        &idx2,
        &mut w,
        GatherPolicy::NegativeFill(0xA1B2u16),
    )
    .unwrap();
    assert!(d == w);
}

#[test]
fn scatter_widths_and_tile_edge_overflow() {
    let _g = cap_lock();
    use cpugpu::ScatterPolicy;
    let mut r = SmallRng::seed_from_u64(5);
    for off in [0usize, 1, 2, 4, 8] {
        let buf: Vec<u8> = (0..16 * 50 + 16).map(|_| r.gen()).collect();
        let src = &buf[off..off + 16 * 50];
        let idx: Vec<i32> = (0..50).map(|i| (i * 7) % 20).collect();
        let mut dbuf = vec![0xA5u8; 16 * 20 + 16];
        let mut want = dbuf[off..off + 16 * 20].to_vec();
        emu::take_launch_log();
        gpu::scatter_rows_into(
            src,
            &idx,
            &mut dbuf[off..off + 16 * 20],
            &[20, 16],
            ScatterPolicy::Checked,
        )
        .unwrap();
        let log = emu::take_launch_log();
        // The widest access dividing the row size (16 bytes) and both base offsets.
        let width = [16usize, 8, 4, 2, 1]
            .into_iter()
            .find(|w| off % w == 0)
            .unwrap();
        let kernel = format!("scatter_rows_w{width}_i32");
        assert!(log.iter().any(|k| *k == kernel), "offset {off}: {log:?}");
        host::scatter_rows_into(src, &idx, &mut want, &[20, 16], ScatterPolicy::Checked).unwrap();
        assert!(dbuf[off..off + 16 * 20] == want[..]);
    }
    // Overflow exactly at a tile boundary: tile 0 sums to i32::MAX, the first length of tile 1 is 1.
    let mut l = vec![0i64; 3 * 4096];
    l[4095] = i64::from(i32::MAX);
    l[4096] = 1;
    let mut a = vec![-1i32; l.len() + 1];
    let mut b = vec![-1i32; l.len() + 1];
    let e = gpu::prefix_sum_offsets_into(&l, &mut a);
    let h = host::prefix_sum_offsets_into(&l, &mut b);
    assert_eq!(e, h);
    // Exactly limit at the end: no error.
    l[4096] = 0;
    let e = gpu::prefix_sum_offsets_into(&l, &mut a);
    let h = host::prefix_sum_offsets_into(&l, &mut b);
    assert_eq!(e, h);
    assert!(a == b);
}

#[test]
fn row_counts_past_i64_max_are_compared_exactly_on_the_device() {
    use cpugpu::{DeviceView, DeviceViewMut, Error, GatherPolicy, Op, ScatterPolicy};
    let dev = gpu::dev();
    let rows = usize::MAX; // rows of zero elements: more of them than i64::MAX
    let src = dev.alloc::<u32>(&[0]).unwrap();
    // SAFETY: a zero-element view at the buffer's (unused) address.
    let table = unsafe {
        DeviceView::<u32>::from_raw_cuda(&dev, src.view().cuda_ptr().unwrap(), &[rows, 0])
    }
    .unwrap();
    let idx = dev.upload(&[i64::MAX, 3, -1], &[3]).unwrap();
    let mut out = dev.alloc::<u32>(&[0]).unwrap();
    let out_ptr = out.view_mut().cuda_ptr().unwrap();
    let sync = |r: cpugpu::Result<()>| r.and_then(|()| dev.synchronize());
    // i64::MAX is a valid row; -1 (position 2) is not, under the checked policy.
    // SAFETY: as above, for the three-row, zero-element destination.
    let dst = unsafe { DeviceViewMut::<u32>::from_raw_cuda(&dev, out_ptr, &[3, 0]) }.unwrap();
    assert_eq!(
        sync(dev.gather_rows_into(table, idx.view(), dst, GatherPolicy::Checked)),
        Err(Error::IndexOutOfBounds {
            op: Op::GatherRows,
            position: 2,
            index: -1,
            bound: rows
        })
    );
    // SAFETY: as above.
    let dst = unsafe { DeviceViewMut::<u32>::from_raw_cuda(&dev, out_ptr, &[3, 0]) }.unwrap();
    assert_eq!(
        sync(dev.gather_rows_into(table, idx.view(), dst, GatherPolicy::NegativeFill(0))),
        Ok(())
    );
    // Scatter into usize::MAX zero-element rows.
    // SAFETY: as above.
    let big = unsafe { DeviceViewMut::<u32>::from_raw_cuda(&dev, out_ptr, &[rows, 0]) }.unwrap();
    let rows3 = unsafe { DeviceView::<u32>::from_raw_cuda(&dev, out_ptr, &[3, 0]) }.unwrap();
    assert_eq!(
        sync(dev.scatter_rows_into(rows3, idx.view(), big, ScatterPolicy::Checked)),
        Err(Error::IndexOutOfBounds {
            op: Op::ScatterRows,
            position: 2,
            index: -1,
            bound: rows
        })
    );
    drop(src);
}
