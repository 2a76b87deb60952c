//! `Device::host_with_pool`: the host backend's work runs on the caller's rayon pool, with the
//! same results as on the global pool.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{random_vec, rng};
use cpugpu::{Device, GatherPolicy, ScatterPolicy};
use rand::seq::SliceRandom;

fn pool(n: usize) -> Arc<rayon::ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap(),
    )
}

/// Returns once one of `pool`'s threads has started a task that keeps it busy for `ms` ms.
fn occupy(pool: &rayon::ThreadPool, ms: u64) {
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    pool.spawn(move || {
        g.wait();
        std::thread::sleep(Duration::from_millis(ms));
    });
    gate.wait();
}

/// Offsets of `n` ones on `dev`, issued from a new thread; `done` is set when the call returns.
fn offsets_on_thread(
    dev: &Device,
    n: usize,
    done: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<i64>> {
    let (dev, done) = (dev.clone(), done.clone());
    std::thread::spawn(move || {
        let lens = dev.upload(&vec![1i64; n], &[n]).unwrap();
        let offs = dev.prefix_sum_offsets::<i64, i64>(lens.view()).unwrap();
        done.store(true, Ordering::SeqCst);
        offs.to_vec().unwrap()
    })
}

#[test]
fn operations_run_on_the_devices_pool() {
    // The pool's only thread is held by a task: a large operation issued from outside must wait
    // for it, so it cannot have run on the calling thread or the global pool; a small one runs
    // on the calling thread at once (a handoff would cost more than it).
    let p = pool(1);
    let dev = Device::host_with_pool(p.clone());
    assert_eq!(dev.host_threads(), Some(1));
    assert!(
        dev.to_string().contains("1 rayon threads, own pool"),
        "{dev}"
    );
    occupy(&p, 300); // the pool's only thread is now busy for 300 ms
    let (large_done, small_done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let n_large = cpugpu::ops::PAR_MIN_BYTES / 8 + 1; // i64 lengths: past the threshold
    let large = offsets_on_thread(&dev, n_large, &large_done);
    let small = offsets_on_thread(&dev, 3, &small_done);
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        !large_done.load(Ordering::SeqCst),
        "the large op ran while its pool was busy"
    );
    assert!(
        small_done.load(Ordering::SeqCst),
        "the small op waited for the busy pool"
    );
    assert_eq!(small.join().unwrap(), [0, 1, 2, 3]);
    let got = large.join().unwrap();
    assert_eq!(got.len(), n_large + 1);
    assert!(got.iter().enumerate().all(|(k, &v)| v == k as i64));
    // From inside the pool an op runs in place (no handoff to itself, no deadlock).
    let inside = p.install(|| {
        let lens = dev.upload(&vec![5i32; n_large], &[n_large]).unwrap();
        dev.prefix_sum_offsets::<i32, i32>(lens.view())
            .unwrap()
            .to_vec()
            .unwrap()
    });
    assert_eq!(inside[n_large], 5 * n_large as i32);
}

#[test]
fn results_match_the_global_pool_for_every_thread_count() {
    let mut r = rng(7);
    let (rows, cols) = (70_000usize, 16usize); // 4.5 MB of rows: the parallel paths
    let src: Vec<u32> = random_vec(&mut r, rows * cols);
    let mut perm: Vec<i64> = (0..rows as i64).collect();
    perm.shuffle(&mut r);
    let lens: Vec<i64> = (0..300_000).map(|k| (k % 7) as i64).collect();
    let run = |dev: &Device| {
        let s = dev.upload(&src, &[rows, cols]).unwrap();
        let i = dev.upload(&perm, &[rows]).unwrap();
        let g = dev
            .gather_rows(s.view(), i.view(), GatherPolicy::Checked)
            .unwrap();
        let mut out = dev.alloc::<u32>(&[rows, cols]).unwrap();
        dev.scatter_rows_into(g.view(), i.view(), out.view_mut(), ScatterPolicy::Checked)
            .unwrap();
        let l = dev.upload(&lens, &[lens.len()]).unwrap();
        let o = dev.prefix_sum_offsets::<i64, i64>(l.view()).unwrap();
        (
            g.to_vec().unwrap(),
            out.to_vec().unwrap(),
            o.to_vec().unwrap(),
        )
    };
    let want = run(&Device::host());
    assert_eq!(want.1, src, "scatter(gather(x, p), p) is x");
    for n in [1, 2, 3, 5] {
        let got = run(&Device::host_with_pool(pool(n)));
        assert!(got == want, "{n} threads");
    }
}

#[test]
fn uploads_allocations_and_buffer_copies_run_on_the_devices_pool() {
    // As above: with the pool's only thread busy, each of these (large enough to be handed to
    // the pool) must wait for it; had one run on the calling thread or rayon's global pool, it
    // would be done before the pool is free.
    let p = pool(1);
    let dev = Device::host_with_pool(p.clone());
    let n = cpugpu::ops::PAR_MIN_BYTES / 4 + 1; // u32s: past the threshold
    let mut filled = dev.alloc::<u32>(&[n]).unwrap();
    let read = dev.upload(&vec![5u32; n], &[n]).unwrap();
    occupy(&p, 500); // the pool's only thread is now busy for 500 ms
    let done: Vec<Arc<AtomicBool>> = (0..4).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let flag = |k: usize| done[k].clone();
    let threads = [
        {
            let (dev, d) = (dev.clone(), flag(0));
            std::thread::spawn(move || {
                let b = dev.upload(&vec![3u32; n], &[n]).unwrap();
                d.store(true, Ordering::SeqCst);
                b.to_vec().unwrap()
            })
        },
        {
            let (dev, d) = (dev.clone(), flag(1));
            std::thread::spawn(move || {
                let b = dev.alloc::<u32>(&[n]).unwrap();
                d.store(true, Ordering::SeqCst);
                b.to_vec().unwrap()
            })
        },
        {
            let d = flag(2);
            std::thread::spawn(move || {
                filled.fill(9);
                d.store(true, Ordering::SeqCst);
                filled.to_vec().unwrap()
            })
        },
        {
            let d = flag(3);
            std::thread::spawn(move || {
                let v = read.to_vec().unwrap();
                d.store(true, Ordering::SeqCst);
                v
            })
        },
    ];
    std::thread::sleep(Duration::from_millis(150));
    for (k, what) in ["upload", "alloc", "fill", "to_vec"].iter().enumerate() {
        assert!(
            !done[k].load(Ordering::SeqCst),
            "{what} ran while the device's pool was busy"
        );
    }
    let got: Vec<Vec<u32>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (v, want) in got.iter().zip([3u32, 0, 9, 5]) {
        assert!(v.len() == n && v.iter().all(|&x| x == want));
    }
}
