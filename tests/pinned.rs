//! Integration tests for `PinnedMemoryManager` and `PinnedBuffer`: accounting, caching and
//! reuse (with the 25 % slack and no power-of-two rounding), budget errors, eviction, zeroing,
//! edge sizes, alignment and concurrent use.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::rng;
use cpugpu::{
    Device, Element, Error, Op, PinnedBuffer, PinnedMemoryManager, PinnedStats, PINNED_ALIGN,
    REUSE_SLACK_DIVISOR,
};
use rand::Rng;

fn mgr(budget: usize) -> PinnedMemoryManager {
    PinnedMemoryManager::new(&Device::host(), budget)
}

/// allocated + cached never exceeds the budget, and the derived fields agree.
#[track_caller]
fn assert_consistent(s: &PinnedStats) {
    assert!(
        s.allocated_bytes + s.cached_bytes <= s.budget_bytes,
        "over budget: {s}"
    );
    assert_eq!(s.available_bytes, s.budget_bytes - s.allocated_bytes, "{s}");
}

#[test]
fn allocate_and_free_accounting() {
    let m = mgr(1 << 20);
    assert_eq!(m.budget_bytes(), 1 << 20);
    assert_eq!(
        (m.allocated_bytes(), m.cached_bytes(), m.available_bytes()),
        (0, 0, 1 << 20)
    );

    let a = m.allocate::<f32>(1000).unwrap();
    assert_eq!(a.len(), 1000);
    assert_eq!(a.block_bytes(), 4000);
    assert!(a.is_managed());
    assert!(a.iter().all(|&x| x == 0.0));
    assert_eq!(m.allocated_bytes(), 4000);
    assert_eq!(m.available_bytes(), (1 << 20) - 4000);

    let b = m.allocate::<u8>(100).unwrap();
    assert_eq!(m.allocated_bytes(), 4100);
    assert_eq!(m.cached_bytes(), 0);

    drop(a); // to the cache
    assert_eq!(m.allocated_bytes(), 100);
    assert_eq!(m.cached_bytes(), 4000);
    // Cached blocks do not reduce what a new request can get: they are evicted on demand.
    assert_eq!(m.available_bytes(), (1 << 20) - 100);

    m.free(b);
    assert_eq!(m.allocated_bytes(), 0);
    assert_eq!(m.cached_bytes(), 4100);
    assert_eq!(m.available_bytes(), 1 << 20);

    let s = m.stats();
    assert_eq!(
        s,
        PinnedStats {
            budget_bytes: 1 << 20,
            allocated_bytes: 0,
            cached_bytes: 4100,
            available_bytes: 1 << 20,
            fresh_allocations: 2,
            reuses: 0,
            evictions: 0,
        }
    );
    assert_eq!(
        s.to_string(),
        "pinned: 0 of 1048576 bytes in use, 4100 cached, 1048576 available; 2 fresh, 0 reused, \
         0 evicted"
    );
    assert!(format!("{m:?}").contains("PinnedMemoryManager"));
}

#[test]
fn clones_share_one_budget() {
    let m = mgr(10_000);
    let m2 = m.clone();
    let a = m2.allocate::<u64>(100).unwrap();
    assert_eq!(m.allocated_bytes(), 800);
    drop(a);
    assert_eq!(m.cached_bytes(), 800);
    let _b = m.allocate::<u64>(100).unwrap();
    assert_eq!(m2.stats().reuses, 1);
}

#[test]
fn freed_block_is_reused_by_a_later_request_that_fits() {
    let m = mgr(1 << 20);
    let a = m.allocate::<u8>(4096).unwrap();
    let ptr = a.as_ptr() as usize;
    drop(a);
    // Same byte size, another element type.
    let b = m.allocate::<u32>(1024).unwrap();
    assert_eq!(
        b.as_ptr() as usize,
        ptr,
        "the cached block itself is handed out"
    );
    assert_eq!(b.len(), 1024);
    let s = m.stats();
    assert_eq!((s.fresh_allocations, s.reuses), (1, 1));
    assert_eq!((s.allocated_bytes, s.cached_bytes), (4096, 0));
}

#[test]
fn no_power_of_two_rounding() {
    let m = mgr(8 << 20);
    let n = (3 << 20) + 1;
    let a = m.allocate::<u8>(n).unwrap();
    assert_eq!(a.block_bytes(), n);
    assert_eq!(m.allocated_bytes(), n);
    assert_eq!(m.available_bytes(), (8 << 20) - n);

    let k = (3 << 18) + 1;
    let b = m.allocate::<u32>(k).unwrap();
    assert_eq!(b.block_bytes(), 4 * k);
    assert_eq!(m.allocated_bytes(), n + 4 * k);
    drop((a, b));
    assert_eq!(m.cached_bytes(), n + 4 * k);
}

#[test]
fn reuse_slack_boundaries() {
    assert_eq!(REUSE_SLACK_DIVISOR, 4);
    let m = mgr(1 << 20);
    drop(m.allocate::<u8>(1000).unwrap());
    assert_eq!(m.cached_bytes(), 1000);

    // 800 + 800/4 = 1000: the 1000-byte block serves it.
    let a = m.allocate::<u8>(800).unwrap();
    assert_eq!(a.len(), 800);
    assert_eq!(a.block_bytes(), 1000);
    assert_eq!(m.allocated_bytes(), 1000, "the whole block is counted");
    assert_eq!(m.stats().reuses, 1);
    drop(a);
    assert_eq!(m.cached_bytes(), 1000);

    // 799 + 799/4 = 998 < 1000: a fresh block of exactly 799 bytes.
    let b = m.allocate::<u8>(799).unwrap();
    assert_eq!(b.block_bytes(), 799);
    assert_eq!(m.stats().reuses, 1);
    assert_eq!(m.stats().fresh_allocations, 2);
    assert_eq!(m.cached_bytes(), 1000);

    // Much smaller: fresh.
    let c = m.allocate::<u8>(100).unwrap();
    assert_eq!(c.block_bytes(), 100);
    // Larger than the block: fresh.
    let d = m.allocate::<u8>(1001).unwrap();
    assert_eq!(d.block_bytes(), 1001);
    assert_eq!(m.stats().reuses, 1);
    assert_eq!(m.stats().fresh_allocations, 4);
    assert_eq!(m.cached_bytes(), 1000);

    // Exactly the block size in another type: reused.
    let e = m.allocate::<u64>(125).unwrap();
    assert_eq!(e.block_bytes(), 1000);
    assert_eq!(m.stats().reuses, 2);
}

#[test]
fn reuse_picks_the_smallest_block_that_fits() {
    let m = mgr(1 << 20);
    let blocks: Vec<_> = [1000usize, 900, 2000, 860]
        .iter()
        .map(|&n| m.allocate::<u8>(n).unwrap())
        .collect();
    drop(blocks);
    assert_eq!(m.cached_bytes(), 4760);
    // 850 accepts 850..=1062: 860, 900 and 1000 fit; 860 is the smallest.
    let a = m.allocate::<u8>(850).unwrap();
    assert_eq!(a.block_bytes(), 860);
    let b = m.allocate::<u8>(850).unwrap();
    assert_eq!(b.block_bytes(), 900);
    let c = m.allocate::<u8>(850).unwrap();
    assert_eq!(c.block_bytes(), 1000);
    let d = m.allocate::<u8>(850).unwrap();
    assert_eq!(d.block_bytes(), 850, "2000 is too big to serve 850");
    assert_eq!(m.cached_bytes(), 2000);
    assert_eq!(m.stats().reuses, 3);
}

#[test]
fn budget_exceeded_reports_exact_numbers() {
    let m = mgr(10_000);
    let _a = m.allocate::<u8>(6000).unwrap();
    let err = m.allocate::<u8>(5000).unwrap_err();
    assert_eq!(
        err,
        Error::PinnedBudgetExceeded {
            op: Op::PinnedAllocate,
            requested: 5000,
            available: 4000,
            budget: 10_000
        }
    );
    assert_eq!(
        err.to_string(),
        "pinned_allocate: 5000 bytes requested, 4000 of the 10000-byte budget available"
    );

    // Requested is in bytes, not elements.
    let err = m.allocate::<u64>(501).unwrap_err();
    assert_eq!(
        err,
        Error::PinnedBudgetExceeded {
            op: Op::PinnedAllocate,
            requested: 4008,
            available: 4000,
            budget: 10_000
        }
    );
    // Exactly the available bytes fit.
    let b = m.allocate::<u64>(500).unwrap();
    assert_eq!(m.available_bytes(), 0);
    let err = m.allocate::<u8>(1).unwrap_err();
    assert_eq!(
        err,
        Error::PinnedBudgetExceeded {
            op: Op::PinnedAllocate,
            requested: 1,
            available: 0,
            budget: 10_000
        }
    );
    // A failed request changes nothing.
    let s = m.stats();
    assert_eq!((s.allocated_bytes, s.cached_bytes), (10_000, 0));
    assert_eq!(s.fresh_allocations, 2);
    drop(b);
}

#[test]
fn zero_budget() {
    let m = mgr(0);
    assert_eq!(
        m.allocate::<f32>(1).unwrap_err(),
        Error::PinnedBudgetExceeded {
            op: Op::PinnedAllocate,
            requested: 4,
            available: 0,
            budget: 0
        }
    );
    let z = m.allocate::<f32>(0).unwrap();
    assert!(z.is_empty());
}

#[test]
fn cached_blocks_are_evicted_to_make_room() {
    let m = mgr(10_000);
    drop(m.allocate::<u8>(6000).unwrap());
    assert_eq!(m.cached_bytes(), 6000);

    // 4000 fits next to the cached 6000: no eviction (and 6000 is too big to be reused).
    let a = m.allocate::<u8>(4000).unwrap();
    assert_eq!(m.stats().evictions, 0);
    assert_eq!(m.cached_bytes(), 6000);
    drop(a);
    assert_eq!(m.cached_bytes(), 10_000);

    // 4500 serves from neither block (4000 too small, 6000 beyond 4500 + 1125), and does not
    // fit next to them: the largest cached block goes first, and that is enough.
    let b = m.allocate::<u8>(4500).unwrap();
    let s = m.stats();
    assert_eq!(s.evictions, 1);
    assert_eq!(s.cached_bytes, 4000);
    assert_eq!(s.allocated_bytes, 4500);
    assert_consistent(&s);
    drop(b);

    // Needs both evicted.
    let c = m.allocate::<u8>(9000).unwrap();
    let s = m.stats();
    assert_eq!(s.evictions, 3);
    assert_eq!((s.allocated_bytes, s.cached_bytes), (9000, 0));
    assert_consistent(&s);
    drop(c);
}

#[test]
fn eviction_takes_the_largest_block_first() {
    let m = mgr(10_000);
    let x = m.allocate::<u8>(3000).unwrap();
    let y = m.allocate::<u8>(2000).unwrap();
    drop((x, y));
    // 6000 + 5000 cached > 10,000; evicting the 3000 block is enough.
    let _big = m.allocate::<u8>(6000).unwrap();
    assert_eq!(m.stats().evictions, 1);
    assert_eq!(m.cached_bytes(), 2000);
    let small = m.allocate::<u8>(2000).unwrap();
    assert_eq!(m.stats().reuses, 1, "the 2000-byte block survived");
    assert_eq!(small.block_bytes(), 2000);
}

#[test]
fn clear_frees_the_cache_only() {
    let m = mgr(1 << 20);
    let live = m.allocate::<u16>(500).unwrap();
    drop(m.allocate::<u16>(700).unwrap());
    assert_eq!(m.cached_bytes(), 1400);
    m.clear();
    assert_eq!(m.cached_bytes(), 0);
    assert_eq!(m.allocated_bytes(), 1000);
    assert_eq!(live.len(), 500);
    // The cleared block is gone: the same request is fresh.
    let _again = m.allocate::<u16>(700).unwrap();
    assert_eq!(m.stats().reuses, 0);
    assert_eq!(m.stats().fresh_allocations, 3);
    drop(live);
    assert_eq!(m.cached_bytes(), 1000);
}

fn reused_is_zeroed<T: Element>() {
    // Fewer elements under Miri, which checks every byte it reads.
    let n = if cfg!(miri) { 100 } else { 1000 };
    let m = mgr(1 << 20);
    let mut a = m.allocate::<T>(n).unwrap();
    bytemuck::cast_slice_mut::<T, u8>(&mut a).fill(0xA5);
    drop(a);
    let b = m.allocate::<T>(n).unwrap();
    assert_eq!(m.stats().reuses, 1);
    assert!(bytemuck::cast_slice::<T, u8>(&b).iter().all(|&x| x == 0));
    drop(b);

    // A smaller request served by the same block sees zeros, and so does the next full one
    // (the part past the smaller buffer's end was zeroed too).
    let w = std::mem::size_of::<T>();
    let mut c = m.allocate::<u8>(n * w - 1).unwrap();
    assert_eq!(m.stats().reuses, 2);
    assert!(c.iter().all(|&x| x == 0));
    c.fill(0xFF);
    drop(c);
    let d = m.allocate::<u8>(n * w).unwrap();
    assert_eq!(m.stats().reuses, 3);
    assert!(d.iter().all(|&x| x == 0));
}

#[test]
fn reused_memory_is_zeroed_every_width() {
    for_each_width!(reused_is_zeroed);
}

#[test]
fn zero_length_allocations() {
    let m = mgr(100);
    let a = m.allocate::<u128>(0).unwrap();
    assert!(a.is_empty());
    assert_eq!(a.block_bytes(), 0);
    let b = m.allocate::<u8>(0).unwrap();
    let s = m.stats();
    assert_eq!((s.allocated_bytes, s.cached_bytes), (0, 0));
    assert_eq!((s.fresh_allocations, s.reuses), (0, 0));
    drop((a, b));
    assert_eq!(m.stats(), s);

    let mut u = PinnedBuffer::<f32>::new(0).unwrap();
    assert!(u.is_empty());
    assert!(u.iter_mut().next().is_none());
}

#[test]
fn size_overflow() {
    let m = mgr(usize::MAX);
    let err = m.allocate::<u64>(usize::MAX).unwrap_err();
    assert_eq!(
        err,
        Error::SizeOverflow {
            op: Op::PinnedAllocate,
            what: "len * size_of::<T>()"
        }
    );
    assert!(err.to_string().starts_with("pinned_allocate:"), "{err}");
    let err = m.allocate::<u16>(usize::MAX / 2 + 1).unwrap_err();
    assert!(matches!(err, Error::SizeOverflow { .. }), "{err:?}");

    let err = PinnedBuffer::<u64>::new(usize::MAX).unwrap_err();
    assert!(matches!(err, Error::SizeOverflow { .. }), "{err:?}");
    assert_eq!(m.stats().allocated_bytes, 0);
}

#[test]
fn unallocatable_size_within_budget_is_an_error_not_a_panic() {
    // The byte count fits in usize but no allocation that large can exist (> isize::MAX).
    let m = mgr(usize::MAX);
    // It is named for what it is: more than isize::MAX bytes, not a usize overflow.
    let err = m.allocate::<u8>(usize::MAX - 10).unwrap_err();
    assert_eq!(
        err,
        Error::AllocationTooLarge {
            op: Op::PinnedAllocate,
            bytes: usize::MAX - 10,
            max: isize::MAX as usize
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "pinned_allocate: {} bytes requested, more than {} (isize::MAX), the largest \
             allocation possible",
            usize::MAX - 10,
            isize::MAX
        )
    );
    let s = m.stats();
    assert_eq!(s.allocated_bytes, 0);
    assert_eq!(s.fresh_allocations, 0, "a failed allocation is not counted");
    let err = PinnedBuffer::<u8>::new(usize::MAX - 10).unwrap_err();
    assert_eq!(
        err,
        Error::AllocationTooLarge {
            op: Op::Allocate,
            bytes: usize::MAX - 10,
            max: isize::MAX as usize
        }
    );
}

#[test]
fn eviction_arithmetic_does_not_overflow_near_usize_max() {
    // allocated + cached + request > usize::MAX while request <= budget - allocated: the
    // eviction loop must not overflow (a debug-build panic), it must evict and then fail
    // cleanly because no such allocation can exist.
    let m = mgr(usize::MAX);
    let live = m.allocate::<u8>(1000).unwrap();
    drop(m.allocate::<u8>(1000).unwrap());
    assert_eq!(m.cached_bytes(), 1000);
    let err = m.allocate::<u8>(usize::MAX - 1500).unwrap_err();
    assert!(matches!(err, Error::AllocationTooLarge { .. }), "{err:?}");
    let s = m.stats();
    assert_eq!(s.allocated_bytes, 1000);
    assert_consistent(&s);
    // The manager still works.
    drop(live);
    let _again = m.allocate::<u8>(1000).unwrap();
    assert_consistent(&m.stats());
}

#[test]
fn over_aligned_elements_are_rejected() {
    #[derive(Clone, Copy, Debug, bytemuck::Zeroable, bytemuck::Pod)]
    #[repr(C, align(512))]
    struct Big([u8; 512]);

    let m = mgr(1 << 20);
    let err = m.allocate::<Big>(1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                op: Op::PinnedAllocate,
                name: "align_of::<T>()",
                value: 512,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(PinnedBuffer::<Big>::new(1).is_err());
    assert_eq!(m.allocated_bytes(), 0);
}

fn aligned<T: Element>() {
    let m = mgr(1 << 20);
    for len in [1usize, 3, 17, 1000, 4097] {
        let a = m.allocate::<T>(len).unwrap();
        assert_eq!(a.as_ptr() as usize % PINNED_ALIGN, 0, "managed len={len}");
        drop(a);
        let b = m.allocate::<T>(len).unwrap(); // reused
        assert_eq!(b.as_ptr() as usize % PINNED_ALIGN, 0, "reused len={len}");
        let u = PinnedBuffer::<T>::new(len).unwrap();
        assert_eq!(u.as_ptr() as usize % PINNED_ALIGN, 0, "unmanaged len={len}");
    }
}

#[test]
fn blocks_are_256_byte_aligned_every_width() {
    assert_eq!(PINNED_ALIGN, 256);
    for_each_width!(aligned);
    aligned::<u16>();
    aligned::<i64>();
}

#[test]
fn unmanaged_buffers_do_not_touch_any_budget() {
    let m = mgr(1000);
    let mut u = PinnedBuffer::<i32>::new(10_000).unwrap();
    assert!(!u.is_managed());
    assert_eq!(u.len(), 10_000);
    assert_eq!(u.block_bytes(), 40_000);
    assert!(u.iter().all(|&x| x == 0));
    for (i, x) in u.iter_mut().enumerate() {
        *x = i as i32;
    }
    assert_eq!(u[9_999], 9_999);
    assert!(format!("{u:?}").contains("managed: false"));
    drop(u);
    assert_eq!(m.stats().fresh_allocations, 0);
}

#[test]
fn buffers_outlive_their_manager() {
    let m = mgr(1 << 16);
    let mut a = m.allocate::<u32>(100).unwrap();
    drop(m);
    a.fill(7);
    assert!(a.iter().all(|&x| x == 7));
    drop(a); // returns to a cache nobody else references; must not panic
}

#[test]
fn concurrent_allocate_and_free_keeps_accounting_consistent() {
    const THREADS: u64 = 8;
    // Miri runs the same race with fewer rounds.
    const ITERS: usize = if cfg!(miri) { 12 } else { 200 };
    let budget = 48 * 1024;
    let m = mgr(budget);
    let ok = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let m = m.clone();
            let (ok, refused) = (&ok, &refused);
            s.spawn(move || {
                let mut r = rng(1000 + t);
                let mut held: Vec<PinnedBuffer<u64>> = Vec::new();
                for i in 0..ITERS {
                    // Mostly a few recurring sizes (so blocks get reused), sometimes odd ones.
                    let len = if r.gen_bool(0.8) {
                        [16usize, 64, 200, 512][r.gen_range(0..4)]
                    } else {
                        r.gen_range(1..1024)
                    };
                    match m.allocate::<u64>(len) {
                        Ok(mut b) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            assert!(b.iter().all(|&x| x == 0), "fresh or reused memory is zero");
                            assert_eq!(b.as_ptr() as usize % PINNED_ALIGN, 0);
                            let tag = (t << 32) | i as u64;
                            b.fill(tag);
                            held.push(b);
                        }
                        Err(Error::PinnedBudgetExceeded {
                            requested,
                            available,
                            budget: b,
                            ..
                        }) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            assert_eq!(requested, len * 8);
                            assert!(available < requested);
                            assert_eq!(b, budget);
                        }
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                    let s = m.stats();
                    assert_consistent(&s);
                    std::thread::yield_now();
                    // Hold up to three buffers; verify nobody else wrote into them.
                    while held.len() > r.gen_range(0..=3) {
                        let b = held.swap_remove(r.gen_range(0..held.len()));
                        let tag = b[0];
                        assert_eq!(tag >> 32, t, "buffer written by another thread");
                        assert!(b.iter().all(|&x| x == tag), "buffer corrupted");
                        if r.gen_bool(0.5) {
                            m.free(b);
                        } else {
                            drop(b);
                        }
                    }
                }
                for b in held {
                    let tag = b[0];
                    assert!(b.iter().all(|&x| x == tag));
                }
            });
        }
    });
    let s = m.stats();
    assert_eq!(s.allocated_bytes, 0);
    assert_consistent(&s);
    let ok = ok.into_inner();
    assert_eq!(s.fresh_allocations + s.reuses, ok, "{s}");
    assert!(s.reuses > 0, "recurring sizes should reuse blocks: {s}");
    assert_eq!(ok + refused.into_inner(), THREADS * ITERS as u64);
    m.clear();
    assert_eq!(m.cached_bytes(), 0);
}
