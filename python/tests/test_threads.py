"""Threads calling in concurrently: results stay right, pool slots are never handed out twice,
and large operations release the GIL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import cpugpu
from conftest import LARGE_ROWS, data, read, ticks_while


def test_operations_from_many_threads_are_correct():
    rng = np.random.default_rng(7)
    src = data(rng, (LARGE_ROWS // 4, 16), np.float32)  # 640 KiB: past the GIL threshold

    def work(seed):
        r = np.random.default_rng(seed)
        idx = r.integers(0, len(src), size=len(src))
        out = np.empty_like(src)
        for _ in range(5):
            cpugpu.copy_with_indices(src, out, idx)
            assert out.tobytes() == src[idx].tobytes()
            lens = r.integers(0, 50, size=1000)
            offs = cpugpu.compute_cumsum_offsets(lens)
            flat, offs2 = cpugpu.flatten_with_offsets(cpugpu.split_by_offsets(out.reshape(-1), offs))
            assert (offs2 == offs).all() and flat.tobytes() == out.reshape(-1)[: offs[-1]].tobytes()
            padded = cpugpu.pad_to_multiple(out[:-3], 64)
            assert padded.shape[0] % 64 == 0 and padded[: len(out) - 3].tobytes() == out[:-3].tobytes()
        return True

    with ThreadPoolExecutor(max_workers=4) as ex:
        assert all(ex.map(work, range(8)))


def test_pool_slots_are_never_shared_between_threads():
    pool = cpugpu.UvaBufferPool("threads", depth=3)
    errors = []
    busy = [0]
    lock = threading.Lock()

    def step(tid):
        for i in range(200):
            try:
                buf = pool.allocate("x", 256, np.int64)
            except cpugpu.PoolBusyError:
                with lock:
                    busy[0] += 1
                continue
            mark = tid * 1_000_000 + i
            buf.cpu[:] = mark
            buf.cpu_to_gpu()
            time.sleep(0)  # let another thread try to take this slot now
            if not ((buf.cpu == mark).all() and (read(buf.gpu) == mark).all()):
                errors.append((tid, i, buf.slot))
            buf.close()

    threads = [threading.Thread(target=step, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors  # no slot was handed to two threads at once
    assert pool.stats()["slots_in_use"] == 0


def test_one_buffer_shared_by_threads():
    buf = cpugpu.CpuGpuBuffer.allocate("shared", (1 << 15,), np.int32, True)

    def work(v):
        for _ in range(50):
            buf.fill(v)
            buf.cpu_to_gpu()
            buf.copy_to_gpu(100)
            buf.sync()
        return True

    with ThreadPoolExecutor(max_workers=4) as ex:
        assert all(ex.map(work, range(4)))
    # Each fill sets both sides whole, under the buffer's lock: the sides end equal and uniform.
    assert len(np.unique(buf.cpu)) == 1 and (buf.cpu == read(buf.gpu)).all()


def test_large_operations_release_the_gil():
    # With a huge switch interval, a thread that keeps the GIL is not interrupted: the main
    # thread then gets no tick in before the operation ends. If the operation releases the GIL,
    # the main thread ticks while it runs. (Checked: with the release removed from
    # `errors::run`, this test fails with no tick.)
    rng = np.random.default_rng(3)
    src = np.ones((1 << 21, 16), np.float32)  # 128 MiB: a gather of tens of milliseconds
    idx = rng.permutation(len(src))
    dst = np.empty_like(src)
    during, took = ticks_while(lambda: cpugpu.copy_with_indices(src, dst, idx))
    assert len(during) >= 3, f"{len(during)} ticks while the {took:.3f} s gather ran"
