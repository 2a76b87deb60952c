"""UvaBufferPool: the original's API with the crate's round-robin slots, exact keys, and slots
held while Python holds them."""

from __future__ import annotations

import numpy as np
import pytest

import cpugpu
from conftest import GPU, collect, read, write
from cpugpu import MemoryPlacement


def test_allocate_round_robin_and_reset():
    pool = cpugpu.UvaBufferPool("step")
    assert pool.name == "step" and pool.depth == 2
    a = pool.allocate("input_ids", 16, np.int32)
    b = pool.allocate("input_ids", 16, np.int32)
    assert {a.slot, b.slot} == {0, 1}
    assert a.is_pinned and a.placement is MemoryPlacement.PINNED
    a.cpu[:] = 5
    a.mark_cpu_dirty()
    a.close()
    c = pool.allocate("input_ids", 16, np.int32)  # a's slot, zeroed by allocate
    assert c.slot == a.slot and not c.cpu.any() and not c.cpu_dirty
    assert pool.num_buffers == 1 and pool.total_bytes == 2 * 2 * 16 * 4


def test_rebinding_each_step_works_with_depth_two():
    pool = cpugpu.UvaBufferPool()
    slots = []
    buf = None
    for step in range(6):
        buf = pool.allocate("x", 4, np.float32)  # the previous step's buffer is still bound here
        buf.cpu[:] = step
        slots.append(buf.slot)
    assert slots == [0, 1, 0, 1, 0, 1]


def test_slots_are_held_by_views():
    pool = cpugpu.UvaBufferPool(depth=1)
    buf = pool.allocate("x", 4, np.int64)
    view = buf.cpu
    with pytest.raises(cpugpu.PoolBusyError, match='all 1 round-robin slots of "x" are held') as e:
        pool.allocate("x", 4, np.int64)
    assert isinstance(e.value, RuntimeError) and e.value.depth == 1
    del buf
    collect()
    with pytest.raises(cpugpu.PoolBusyError):  # the numpy view still holds the slot
        pool.get("x")
    view[:] = 3
    del view
    collect()
    again = pool.get("x")  # get: the slot as the last step left it
    assert again.slot == 0 and (again.cpu == 3).all()


def test_get_release_clear():
    pool = cpugpu.UvaBufferPool()
    assert pool.get("missing") is None
    buf = pool.allocate("y", (2, 2), np.float64)
    held = buf.cpu
    assert pool.release("y") is True and pool.release("y") is False
    assert pool.get("y") is None and pool.num_buffers == 0
    held[:] = 1.0  # a released name's held slot stays valid until its holders go
    assert (read(buf.gpu) == 0).all()
    pool.allocate("a", 1)
    pool.allocate("b", 1)
    pool.clear()
    assert pool.num_buffers == 0 and pool.total_bytes == 0


def test_keys_are_exact():
    pool = cpugpu.UvaBufferPool()
    pool.allocate("k", (4, 2), np.float32)
    # Same width, other dtype: the crate would not see it, the binding does.
    with pytest.raises(cpugpu.PoolKeyError, match='"k" exists as pinned float32\\[4, 2\\], requested pinned int32\\[4, 2\\]') as e:
        pool.allocate("k", (4, 2), np.int32)
    assert isinstance(e.value, ValueError)
    with pytest.raises(cpugpu.PoolKeyError, match="requested pinned float32\\[8, 2\\]"):
        pool.allocate("k", (8, 2), np.float32)
    with pytest.raises(cpugpu.PoolKeyError, match="requested uva"):
        pool.allocate("k", (4, 2), np.float32, placement=MemoryPlacement.UVA)
    with pytest.raises(cpugpu.InvalidArgumentError, match="a pool's buffers are pinned or UVA"):
        pool.allocate("z", 4, placement=MemoryPlacement.CPU)


def test_uva_pool_buffers():
    pool = cpugpu.UvaBufferPool()
    buf = pool.allocate("slot_mapping", 8, np.int64, placement=MemoryPlacement.UVA)
    buf.cpu[:] = 7
    assert (read(buf.gpu) == 7).all()  # one memory: the device side sees it without a copy
    if not GPU:
        assert np.shares_memory(buf.cpu, buf.gpu)
    stats = pool.stats()
    assert stats["uva_buffers"] == 1 and stats["device_bytes"] == 0
    assert stats["buffers"]["slot_mapping"] == {"shape": (8,), "dtype": "int64", "bytes": 128, "placement": "uva"}


def test_pool_dropped_first():
    pool = cpugpu.UvaBufferPool()
    buf = pool.allocate("x", 1024, np.float64)
    buf.cpu[:] = 2.5
    view = buf.gpu
    del pool
    collect()
    buf.cpu_to_gpu()
    assert (read(view) == 2.5).all()
    del buf
    collect()
    write(view, 1.0)  # the slot's memory is still the view's
    assert (read(view) == 1.0).all()


def test_sync_all_and_stats():
    pool = cpugpu.UvaBufferPool("s", depth=2)
    a = pool.allocate("a", 4, np.int32)
    a.cpu[:] = 1
    a.mark_cpu_dirty()
    b = pool.allocate("b", 4, np.int32)  # held during sync_all: skipped
    a.close()  # a's slot is idle now (nothing views it)
    report = pool.sync_all()
    assert report["copied_to_gpu"] == 1 and report["skipped_in_use"] == 1 and report["failed"] == 0
    assert report["up_to_date"] == 2  # a's other slot and b's idle one
    other, again = pool.get("a"), pool.get("a")  # round robin: the other slot comes first
    assert (other.slot, again.slot) == (1 - a.slot, a.slot)
    assert (read(again.gpu) == 1).all() and not again.cpu_dirty
    del other, again
    c = pool.allocate("c", 2, np.int8)
    c.cpu[:] = 1
    write(c.gpu, 2)
    c.mark_cpu_dirty()
    c.mark_gpu_dirty()
    c.close()
    with pytest.raises(cpugpu.SyncConflictError) as e:
        pool.sync_all()
    assert e.value.report["failed"] == 1
    s = pool.stats()
    assert s["name"] == "s" and s["num_buffers"] == 3 and s["depth"] == 2 and s["slots"] == 6
    assert s["total_bytes"] == pool.total_bytes and abs(s["total_mb"] - s["total_bytes"] / 2**20) < 1e-12
    assert s["created"] == 3 and set(s["buffers"]) == {"a", "b", "c"}
    del b


def test_pool_with_a_manager_budget():
    mgr = cpugpu.PinnedMemoryManager(max_bytes=1024)
    pool = cpugpu.UvaBufferPool("m", depth=2, manager=mgr)
    pool.allocate("x", 64, np.int32)  # 2 slots x 256 bytes
    assert mgr.allocated_bytes == 512
    with pytest.raises(cpugpu.BudgetExceededError):
        pool.allocate("y", 256, np.int32)
