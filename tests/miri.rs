//! The host side's unsafe code at sizes Miri can run: CI runs this file (with the library's unit
//! tests, `tests/pinned.rs` and `tests/pool.rs`) under Miri with Tree Borrows and two CPUs, see
//! `.ci/run`. It is an ordinary test file too, so `cargo test` runs it as well.
//!
//! What it reaches: pinned blocks (allocation, zeroing on reuse, eviction, `Deref`/`DerefMut`,
//! truncation, frees, from several threads), `zeroed_vec` (empty, small, and a block large
//! enough for the huge-page advice arithmetic; Miri skips only the `madvise` call), paired
//! buffers and their views (every placement, prefix copies, row views, resize both ways), pool
//! guards handed between threads, and every host operation's sequential and parallel path: under
//! Miri `PAR_MIN_BYTES` is 4 KiB and a parallel chunk 1 KiB, so inputs of a few KiB run on
//! the thread pool in several tasks. Each result is compared with a plain reference.

mod common;

use common::{random_vec, rng};
use cpugpu::ops::PAR_MIN_BYTES;
use cpugpu::{
    host, CpuGpuBuffer, Device, Element, GatherPolicy, MemoryPlacement, PinnedBuffer,
    PinnedMemoryManager, ScatterPolicy, UvaBufferPool, PINNED_ALIGN,
};
use rand::Rng;

/// Element counts of `T` just below and well above the parallel threshold.
fn seq_and_par<T>() -> [usize; 2] {
    let w = std::mem::size_of::<T>();
    [PAR_MIN_BYTES / w - 1, 3 * PAR_MIN_BYTES / w + 5]
}

#[test]
fn pinned_blocks_allocate_zero_reuse_evict_truncate_and_free() {
    let m = PinnedMemoryManager::new(&Device::host(), 4096);
    let mut a = m.allocate::<u32>(100).unwrap();
    assert_eq!(a.as_ptr() as usize % PINNED_ALIGN, 0);
    assert!(a.iter().all(|&x| x == 0));
    a.iter_mut().enumerate().for_each(|(i, x)| *x = i as u32);
    let b = m.allocate::<u128>(20).unwrap();
    assert_eq!(b.as_ptr() as usize % PINNED_ALIGN, 0);
    drop(a); // to the cache
             // The same size is served by the cached block, zeroed again.
    let mut c = m.allocate::<u8>(400).unwrap();
    assert_eq!(m.stats().reuses, 1);
    assert!(c.iter().all(|&x| x == 0));
    c.fill(0xA5);
    drop(c);
    // A request that needs the cached block's budget evicts it.
    let d = m.allocate::<u8>(4096 - 320).unwrap();
    assert_eq!(m.stats().evictions, 1);
    drop((b, d));
    m.clear();
    assert_eq!(m.cached_bytes(), 0);
    // Unmanaged blocks free themselves.
    let mut u = PinnedBuffer::<u64>::new(33).unwrap();
    u[32] = 7;
    assert_eq!(u.iter().sum::<u64>(), 7);
    let empty = PinnedBuffer::<u16>::new(0).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn pinned_manager_shared_between_threads() {
    let m = PinnedMemoryManager::new(&Device::host(), 8 * 1024);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let m = m.clone();
            s.spawn(move || {
                let mut held = Vec::new();
                for i in 0..12u64 {
                    if let Ok(mut b) = m.allocate::<u64>([8, 32, 100][(i % 3) as usize]) {
                        assert!(b.iter().all(|&x| x == 0));
                        b.fill((t << 32) | i);
                        held.push(b);
                    }
                    if held.len() > 2 {
                        let b = held.remove(0);
                        assert!(b.iter().all(|&x| x >> 32 == t));
                    }
                }
            });
        }
    });
    let s = m.stats();
    assert_eq!(s.allocated_bytes, 0);
    assert!(s.cached_bytes <= s.budget_bytes);
}

#[test]
fn zeroed_allocations_small_empty_and_huge_page_sized() {
    let dev = Device::host();
    assert!(dev.alloc::<f32>(&[0]).unwrap().to_vec().unwrap().is_empty());
    let small = dev.alloc::<u16>(&[33, 3]).unwrap();
    assert_eq!(small.to_vec().unwrap(), vec![0; 99]);
    // 4 MiB (HUGE_PAGE_MIN_BYTES): the huge-page advice computes its 2 MiB-aligned range inside
    // the allocation (Miri skips only the system call). Read a few bytes, not all of them.
    let big = dev.alloc::<u8>(&[4 << 20]).unwrap();
    let v = big.view();
    let mut edge = [1u8; 16];
    v.rows(0..16).unwrap().copy_to_host(&mut edge).unwrap();
    assert_eq!(edge, [0; 16]);
    v.rows((4 << 20) - 16..4 << 20)
        .unwrap()
        .copy_to_host(&mut edge)
        .unwrap();
    assert_eq!(edge, [0; 16]);
}

fn paired_buffer_case(placement: MemoryPlacement) {
    let dev = Device::host();
    let mgr = PinnedMemoryManager::new(&dev, 64 * 1024);
    // 12 KiB per side: whole copies run on the thread pool in several chunks.
    let (rows, row_len) = (96usize, 32usize);
    let mut b = if placement == MemoryPlacement::Host {
        CpuGpuBuffer::<u32>::new(&dev, "b", &[rows, row_len], placement).unwrap()
    } else {
        CpuGpuBuffer::<u32>::with_manager(&mgr, "b", &[rows, row_len], placement).unwrap()
    };
    let data: Vec<u32> = (0..(rows * row_len) as u32).collect();
    b.host_mut().copy_from_slice(&data);
    b.copy_to_device().unwrap();
    let mut got = vec![0u32; rows * row_len];
    b.device_view().copy_to_host(&mut got).unwrap();
    assert_eq!(got, data);

    // Row views both ways, and a prefix copy back.
    b.device_rows_mut(2..4).unwrap().fill(9);
    b.copy_to_host_rows(4).unwrap();
    assert!(b.host()[2 * row_len..4 * row_len].iter().all(|&x| x == 9));
    let s = b.slice(1..3).unwrap();
    assert_eq!(s.host.len(), 2 * row_len);
    assert_eq!(s.device.len(), 2 * row_len);
    b.host_rows_mut(5..6).unwrap().fill(3);
    b.copy_to_device_rows(6).unwrap();

    // Resize up, then down (fresh blocks), then down with no room for a second block.
    b.resize(rows + 5).unwrap();
    assert_eq!(b.host()[..row_len], data[..row_len]);
    b.resize(rows / 2).unwrap();
    assert_eq!(b.len(), rows / 2 * row_len);
    if placement != MemoryPlacement::Host {
        let tight = PinnedMemoryManager::new(&dev, 4096);
        let mut t = CpuGpuBuffer::<u8>::with_manager(&tight, "t", &[64, 64], placement).unwrap();
        t.host_mut().fill(5);
        t.resize(10).unwrap(); // keeps its block, shortened
        assert_eq!(t.host(), &[5; 640][..]);
        assert_eq!(tight.allocated_bytes(), 4096);
        drop(t);
        assert_eq!(tight.allocated_bytes(), 0);
    }
    b.fill(1);
    b.reset();
    assert!(b.host().iter().all(|&x| x == 0));
}

#[test]
fn paired_buffers_every_placement() {
    for p in [
        MemoryPlacement::Host,
        MemoryPlacement::Pinned,
        MemoryPlacement::Uva,
    ] {
        paired_buffer_case(p);
    }
}

#[test]
fn pool_guards_handed_between_threads() {
    let dev = Device::host();
    let mgr = PinnedMemoryManager::new(&dev, 64 * 1024);
    let pool = UvaBufferPool::with_manager(&mgr, 2);
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let pool = pool.clone();
            s.spawn(move || {
                for i in 0..6u32 {
                    let mut g = match pool.allocate::<u32>("ids", &[64]) {
                        Ok(g) => g,
                        Err(cpugpu::Error::PoolSlotsBusy { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    };
                    g.host_mut().fill(t * 100 + i);
                    g.copy_to_device_rows(64).unwrap();
                    // Hand the guard to another thread, which reads and drops it.
                    std::thread::scope(|s2| {
                        s2.spawn(move || {
                            assert!(g.host().iter().all(|&x| x == t * 100 + i));
                            drop(g);
                        });
                    });
                    if i == 3 && t == 0 {
                        pool.release("ids");
                    }
                }
            });
        }
    });
    let mut held = pool.allocate_uva::<u16>("uva", &[8]).unwrap();
    held.host_mut().fill(2);
    assert!(pool.release("uva")); // freed when the guard drops
    held.host_mut()[0] = 3;
    drop(held);
    let report = pool.sync_all();
    assert!(report.errors.is_empty());
    pool.clear();
    assert_eq!(pool.num_buffers(), 0);
}

/// Gather through every fixed row width (4 to 256 bytes) and the generic path, sequential and
/// parallel, against the obvious loop.
fn gather_case<T: Element>(seed: u64) {
    let mut r = rng(seed);
    let w = std::mem::size_of::<T>();
    let row_lens: Vec<usize> = [4usize, 8, 16, 32, 64, 128, 256, 12]
        .iter()
        .filter(|&&bytes| bytes % w == 0)
        .map(|&bytes| bytes / w)
        .collect();
    for row_len in row_lens {
        let rows = 7;
        let src: Vec<T> = random_vec(&mut r, rows * row_len);
        for n in [3usize, PAR_MIN_BYTES / (row_len * w) + 9] {
            let idx: Vec<i32> = (0..n).map(|_| r.gen_range(-1..rows as i32)).collect();
            let fill: T = random_vec(&mut r, 1)[0];
            let got = host::gather_rows(
                &src,
                &[rows, row_len],
                &idx,
                GatherPolicy::NegativeFill(fill),
            )
            .unwrap();
            let mut want = Vec::with_capacity(n * row_len);
            for &i in &idx {
                match usize::try_from(i) {
                    Ok(i) => want.extend_from_slice(&src[i * row_len..(i + 1) * row_len]),
                    Err(_) => want.extend(std::iter::repeat_n(fill, row_len)),
                }
            }
            assert_eq!(
                bytemuck::cast_slice::<T, u8>(&got),
                bytemuck::cast_slice::<T, u8>(&want)
            );
        }
    }
}

#[test]
fn gather_fixed_widths_sequential_and_parallel() {
    gather_case::<u8>(1);
    gather_case::<f32>(2);
    gather_case::<u128>(3);
}

#[test]
fn scatter_sequential_and_parallel_last_write_wins() {
    let mut r = rng(4);
    for (rows, row_len) in [(5usize, 3usize), (40, 16)] {
        let n = rows * 2 + 1;
        let src: Vec<u32> = random_vec(&mut r, n * row_len);
        let idx: Vec<i64> = (0..n).map(|_| r.gen_range(-1..rows as i64)).collect();
        let mut got = vec![0u32; rows * row_len];
        host::scatter_rows_into(
            &src,
            &idx,
            &mut got,
            &[rows, row_len],
            ScatterPolicy::NegativeSkip,
        )
        .unwrap();
        let mut want = vec![0u32; rows * row_len];
        for (k, &i) in idx.iter().enumerate() {
            if let Ok(i) = usize::try_from(i) {
                want[i * row_len..(i + 1) * row_len]
                    .copy_from_slice(&src[k * row_len..(k + 1) * row_len]);
            }
        }
        assert_eq!(got, want, "rows {rows}");
    }
}

#[test]
fn flatten_and_split_sequential_and_parallel() {
    let mut r = rng(5);
    for total in seq_and_par::<u16>() {
        let mut arrays: Vec<Vec<u16>> = Vec::new();
        let mut left = total;
        while left > 0 {
            let l = r.gen_range(0..=left.min(300));
            arrays.push(random_vec(&mut r, l));
            left -= l;
        }
        let want: Vec<u16> = arrays.concat();
        // The allocating form writes into uninitialised capacity, then sets the length.
        let (flat, offsets) = host::flatten::<u16, i64, _>(&arrays).unwrap();
        assert_eq!(flat, want);
        let mut into = vec![0u16; total];
        let mut offs = vec![0i32; arrays.len() + 1];
        host::flatten_into(&arrays, &mut into, &mut offs).unwrap();
        assert_eq!(into, want);
        // Split back; the offsets check runs in parallel once the offsets pass 4 KiB.
        let segs = host::split(&flat, &offsets).unwrap();
        assert!(segs.iter().eq(arrays.iter().map(|a| &a[..])));
        let mut many: Vec<i64> = (0..600).map(|_| r.gen_range(0..=total as i64)).collect();
        many.sort_unstable();
        let mut views = Vec::new();
        host::split_into(&flat, &many, &mut views).unwrap();
        assert_eq!(views.len(), 599);
        many[450] = -1;
        assert!(host::split_into(&flat, &many, &mut views).is_err());
        assert_eq!(views.len(), 599, "untouched on error");
    }
}

#[test]
fn offsets_and_pad_sequential_and_parallel() {
    let mut r = rng(6);
    for n in seq_and_par::<i32>() {
        let lens: Vec<i32> = (0..n).map(|_| r.gen_range(0..9)).collect();
        let offs = host::prefix_sum_offsets::<i32, i64>(&lens).unwrap();
        let mut acc = 0i64;
        for (i, &l) in lens.iter().enumerate() {
            assert_eq!(offs[i], acc);
            acc += i64::from(l);
        }
        assert_eq!(offs[n], acc);
        let mut bad = lens.clone();
        bad[n - 2] = -4;
        let mut out = vec![7i64; n + 1];
        assert!(host::prefix_sum_offsets_into(&bad, &mut out).is_err());
        assert!(out.iter().all(|&x| x == 7), "untouched on error");
    }
    // Pad: one block (axis 0) and many blocks (axis 1), both above the threshold.
    let src: Vec<u32> = random_vec(&mut r, 300 * 5);
    let p0 = host::pad_to_multiple(&src, &[300, 5], 0, 64, 7).unwrap();
    assert_eq!(p0.shape.dims(), &[320, 5]);
    assert_eq!(&p0.data[..1500], &src[..]);
    assert!(p0.data[1500..].iter().all(|&x| x == 7));
    let p1 = host::pad_to_multiple(&src, &[300, 5], 1, 4, 9).unwrap();
    assert_eq!(p1.shape.dims(), &[300, 8]);
    for (row, chunk) in p1.data.chunks(8).enumerate() {
        assert_eq!(&chunk[..5], &src[row * 5..row * 5 + 5]);
        assert_eq!(&chunk[5..], &[9; 3]);
    }
}
