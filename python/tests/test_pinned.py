"""PinnedMemoryManager: the original's API on the crate's budget, with arrays that keep their
blocks alive."""

from __future__ import annotations

import numpy as np
import pytest

import cpugpu
from conftest import collect


def test_allocate_and_budget():
    mgr = cpugpu.PinnedMemoryManager(max_bytes=4096)
    assert mgr.max_bytes == 4096 and mgr.allocated_bytes == 0 and mgr.available_bytes == 4096
    a = mgr.allocate((16, 4), np.float32)
    assert a.shape == (16, 4) and a.dtype == np.float32 and not a.any()
    assert a.ctypes.data % 256 == 0  # pinned blocks are 256-byte aligned
    assert mgr.allocated_bytes == 256 and mgr.available_bytes == 3840
    b = mgr.allocate(10)  # default dtype float32, int shape
    assert b.shape == (10,) and b.dtype == np.float32
    with pytest.raises(cpugpu.BudgetExceededError, match="pinned_allocate: 4000 bytes requested, 3800 of the 4096-byte budget available") as e:
        mgr.allocate(1000, np.float32)
    assert isinstance(e.value, MemoryError)
    assert (e.value.requested, e.value.available, e.value.budget) == (4000, 3800, 4096)
    assert cpugpu.PinnedMemoryManager().max_bytes == 1 << 30  # the original's default


def test_free_clear_and_reuse():
    mgr = cpugpu.PinnedMemoryManager(max_bytes=1 << 20)
    a = mgr.allocate(1024, np.int32)
    a[:] = 7
    assert mgr.free(a) is True and mgr.free(a) is False
    assert mgr.free(np.zeros(3)) is False
    assert mgr.allocated_bytes == 4096  # `a` still views the block
    del a
    collect()
    assert mgr.allocated_bytes == 0 and mgr.cached_bytes == 4096
    b = mgr.allocate(1024, np.uint32)  # the cached block, zeroed
    assert not b.any() and mgr.stats()["reuses"] == 1
    mgr.clear()
    assert mgr.stats()["held_arrays"] == 0
    assert mgr.allocated_bytes == 4096  # b is alive
    del b
    collect()
    assert mgr.allocated_bytes == 0


def test_manager_holds_arrays_until_free():
    mgr = cpugpu.PinnedMemoryManager(max_bytes=1 << 20)
    mgr.allocate(256, np.int64)  # dropped by the caller, held by the manager (as the original)
    collect()
    assert mgr.allocated_bytes == 2048 and mgr.stats()["held_arrays"] == 1
    mgr.clear()
    collect()
    assert mgr.allocated_bytes == 0


def test_arrays_outlive_the_manager():
    mgr = cpugpu.PinnedMemoryManager(max_bytes=1 << 20)
    a = mgr.allocate((64, 64), np.float64)
    a[:] = 3.0
    del mgr
    collect()
    junk = [np.full((64, 64), -1.0) for _ in range(20)]
    assert (a == 3.0).all()
    del junk


def test_buffers_from_a_manager():
    mgr = cpugpu.PinnedMemoryManager(max_bytes=1024)
    buf = cpugpu.CpuGpuBuffer.allocate("m", 64, np.int32, True, manager=mgr)
    assert mgr.allocated_bytes == 256
    with pytest.raises(MemoryError):
        cpugpu.CpuGpuBuffer.allocate("n", 256, np.int32, True, manager=mgr)
    view = buf.cpu
    del buf
    collect()
    assert mgr.allocated_bytes == 256  # the view holds the block
    del view
    collect()
    assert mgr.allocated_bytes == 0


def test_bad_shapes_and_dtypes():
    mgr = cpugpu.PinnedMemoryManager()
    with pytest.raises(cpugpu.InvalidArgumentError, match="dimensions must be >= 0"):
        mgr.allocate((2, -1))
    with pytest.raises(cpugpu.InvalidArgumentError):
        mgr.allocate("big")
    with pytest.raises(cpugpu.DtypeError, match="complex128"):
        mgr.allocate(4, np.complex128)
    with pytest.raises(cpugpu.DtypeError, match="not a numpy dtype"):
        mgr.allocate(4, "no-such-dtype")
