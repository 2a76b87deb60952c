"""CpuGpuBuffer: the original's API, numpy views of both sides that keep the memory alive, and
the crate's dirty-flag semantics."""

from __future__ import annotations

import numpy as np
import pytest

import cpugpu
from conftest import DTYPES, GPU, collect, data, read, write
from cpugpu import MemoryPlacement


def test_allocate_like_the_original():
    buf = cpugpu.CpuGpuBuffer.allocate("positions", (8, 3), np.int64, True)
    assert buf.name == "positions"
    assert buf.shape == (8, 3) and buf.dtype == np.int64
    assert buf.is_pinned and buf.placement is MemoryPlacement.PINNED
    assert buf.cpu.shape == (8, 3) and buf.cpu.dtype == np.int64 and not buf.cpu.any()
    assert buf.gpu.shape == (8, 3) and not read(buf.gpu).any()
    assert buf.nbytes == 2 * 8 * 3 * 8
    assert buf.slot is None and not buf.closed
    # Defaults: float32, pageable; the constructor takes the same arguments.
    plain = cpugpu.CpuGpuBuffer("x", 5)
    assert plain.dtype == np.float32 and plain.shape == (5,)
    assert not plain.is_pinned and plain.placement is MemoryPlacement.CPU
    assert "CpuGpuBuffer(name=\"x\"" in repr(plain)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_round_trips(rng, dtype):
    buf = cpugpu.CpuGpuBuffer.allocate("b", (33, 2), dtype)
    want = data(rng, (33, 2), dtype)
    buf.cpu[...] = want
    buf.cpu_to_gpu()
    assert read(buf.gpu).tobytes() == want.tobytes()
    write(buf.gpu, want[::-1])
    buf.gpu_to_cpu()
    assert buf.cpu.tobytes() == want[::-1].tobytes()
    one = np.ones((), dtype)
    buf.fill(one.item() if dtype != np.bool_ else True)
    assert buf.cpu.tobytes() == np.ones((33, 2), dtype).tobytes() == read(buf.gpu).tobytes()


def test_sides_are_views_not_copies():
    buf = cpugpu.CpuGpuBuffer.allocate("v", (4, 2), np.float32)
    cpu, gpu = buf.cpu, buf.gpu
    assert buf.cpu is cpu and buf.np is cpu and buf.gpu is gpu  # made once
    assert not cpu.flags.owndata and cpu.flags.writeable and cpu.flags.c_contiguous
    if GPU:
        assert isinstance(gpu, cpugpu.DeviceArray) and gpu.device == "cuda:0"
    else:
        assert not np.shares_memory(cpu, gpu)  # two sides
    cpu[1] = [1.0, 2.0]
    assert (buf.cpu[1] == [1.0, 2.0]).all()
    buf.cpu_to_gpu()
    assert (read(gpu)[1] == [1.0, 2.0]).all()  # the old array sees the copy: it is the memory
    buf.reset()
    assert not cpu.any() and not read(gpu).any()


def test_uva_buffer_is_one_memory():
    buf = cpugpu.CpuGpuBuffer.allocate("u", 16, np.int32, placement=MemoryPlacement.UVA)
    assert buf.placement is MemoryPlacement.UVA and buf.is_pinned
    if not GPU:
        assert np.shares_memory(buf.cpu, buf.gpu)
    buf.cpu[:] = 3
    assert (read(buf.gpu) == 3).all()  # no copy: the device reads the host side
    buf.mark_cpu_dirty()
    assert not buf.cpu_dirty and buf.sync() == "up_to_date"  # never dirty
    assert buf.nbytes == 64


def test_gpu_placement_is_refused():
    with pytest.raises(cpugpu.InvalidArgumentError, match="placement device"):
        cpugpu.CpuGpuBuffer.allocate("g", 4, placement=MemoryPlacement.GPU)
    with pytest.raises(cpugpu.InvalidArgumentError, match="expected a MemoryPlacement"):
        cpugpu.CpuGpuBuffer.allocate("g", 4, placement="hbm")
    assert cpugpu.CpuGpuBuffer.allocate("s", 4, placement="pinned").placement is MemoryPlacement.PINNED


def test_dirty_flags_and_sync():
    buf = cpugpu.CpuGpuBuffer.allocate("d", 6, np.int32, True)
    assert buf.sync() == "up_to_date"
    buf.cpu[:] = np.arange(6)
    assert not buf.cpu_dirty  # writing the view does not mark (as in the original)
    buf.mark_cpu_dirty()
    assert buf.cpu_dirty and buf.sync() == "copied_to_gpu"
    assert (read(buf.gpu) == np.arange(6)).all() and not buf.cpu_dirty
    write(buf.gpu, 9)
    buf.mark_gpu_dirty()
    assert buf.sync() == "copied_to_cpu" and (buf.cpu == 9).all()
    # The crate's rule: both sides marked is a conflict, nothing is overwritten.
    buf.cpu[:] = 1
    write(buf.gpu, 2)
    buf.mark_cpu_dirty()
    buf.mark_gpu_dirty()
    with pytest.raises(cpugpu.SyncConflictError, match='buffer "d" was written on both') as e:
        buf.sync()
    assert isinstance(e.value, RuntimeError)
    assert (buf.cpu == 1).all() and (read(buf.gpu) == 2).all()
    buf.cpu_to_gpu()  # an explicit copy resolves it and clears both flags
    assert not buf.cpu_dirty and not buf.gpu_dirty and (read(buf.gpu) == 1).all()


def test_prefix_copy_copies_only_n_rows_and_keeps_flags():
    buf = cpugpu.CpuGpuBuffer.allocate("ids", (8, 2), np.int64, True)
    buf.cpu[:] = np.arange(16).reshape(8, 2)
    buf.mark_cpu_dirty()
    buf.copy_to_gpu(3)
    assert (read(buf.gpu)[:3] == buf.cpu[:3]).all() and not read(buf.gpu)[3:].any()
    assert buf.cpu_dirty  # rows past the prefix may still differ
    buf.copy_to_gpu(0)
    buf.copy_to_gpu(8)
    assert (read(buf.gpu) == buf.cpu).all()
    with pytest.raises(cpugpu.IndexOutOfBoundsError, match="rows 0..9 are out of bounds for a buffer of 8 rows"):
        buf.copy_to_gpu(9)
    write(buf.gpu[:2], -1)
    buf.copy_to_cpu(1)
    assert (buf.cpu[0] == -1).all() and (buf.cpu[1] == [2, 3]).all()
    buf.copy_to_gpu()  # n=None: everything, flags clear
    assert not buf.cpu_dirty and (read(buf.gpu) == buf.cpu).all()


def test_fill_converts_like_numpy():
    buf = cpugpu.CpuGpuBuffer.allocate("f", 4, np.uint8)
    buf.fill(255)
    assert (buf.cpu == 255).all() and (read(buf.gpu) == 255).all()
    with pytest.raises(OverflowError):
        buf.fill(256)
    half = cpugpu.CpuGpuBuffer.allocate("h", 3, np.float16)
    half.fill(0.1)
    assert half.cpu.tobytes() == np.full(3, 0.1, np.float16).tobytes()
    f32 = cpugpu.CpuGpuBuffer.allocate("f32", 3, np.float32)
    f32.fill(1 / 3)
    assert f32.cpu.tobytes() == np.full(3, 1 / 3, np.float32).tobytes()


def test_slice_gives_views_of_both_sides():
    buf = cpugpu.CpuGpuBuffer.allocate("s", (6, 4), np.float32)
    cpu, gpu = buf.slice(slice(1, 3))
    assert cpu.shape == gpu.shape == (2, 4)
    assert np.shares_memory(cpu, buf.cpu)
    if GPU:  # a DeviceArray view: rows 1..3 of the device side
        assert gpu.data_ptr == buf.gpu.data_ptr + 1 * 4 * 4
    else:
        assert np.shares_memory(gpu, buf.gpu)
    cpu[:] = 5
    assert (buf.cpu[1:3] == 5).all()
    if GPU:  # a column of CUDA memory would not be contiguous: refused, not copied
        with pytest.raises(cpugpu.LayoutError, match="indexed along axis 0 only"):
            buf.slice(slice(None), 2)
    else:
        c2, g2 = buf.slice(slice(None), 2)  # several indices: numpy's tuple indexing
        assert c2.shape == (6,)


def test_views_outlive_the_buffer(rng):
    # No use-after-free: the buffer object goes first, the views keep the memory.
    buf = cpugpu.CpuGpuBuffer.allocate("big", (1 << 16,), np.float64)
    want = data(rng, (1 << 16,), np.float64)
    buf.cpu[:] = want
    buf.cpu_to_gpu()
    cpu, gpu, part = buf.cpu, buf.gpu, buf.slice(slice(10, 20))[0]
    del buf
    collect()
    churn = [cpugpu.CpuGpuBuffer.allocate("c", (1 << 16,), np.float64) for _ in range(8)]
    for c in churn:
        c.fill(-1.0)  # would overwrite freed memory
    assert cpu.tobytes() == want.tobytes() and read(gpu).tobytes() == want.tobytes()
    assert part.tobytes() == want[10:20].tobytes()
    cpu[:] = 0.0  # still writable memory of its own
    assert not cpu.any()


def test_close_and_context_manager():
    with cpugpu.CpuGpuBuffer.allocate("c", 4, np.int32) as buf:
        view = buf.cpu
        view[:] = 7
    assert buf.closed and "closed" in repr(buf)
    with pytest.raises(cpugpu.ClosedBufferError, match='buffer "c" is closed'):
        buf.cpu
    with pytest.raises(ValueError):
        buf.cpu_to_gpu()
    assert (view == 7).all()  # the view still holds the memory
    buf.close()  # idempotent


@pytest.mark.skipif(GPU, reason="numpy imports host memory only; test_gpu.py exports CUDA memory")
def test_dlpack_export_of_the_device_side(rng):
    buf = cpugpu.CpuGpuBuffer.allocate("x", (3, 4), np.float32)
    buf.gpu[:] = data(rng, (3, 4), np.float32)
    assert buf.__dlpack_device__() == (1, 0)
    imported = np.from_dlpack(buf)  # numpy asks for a versioned capsule
    assert np.shares_memory(imported, buf.gpu) and imported.tobytes() == buf.gpu.tobytes()
    imported[0, 0] = 42.0
    assert buf.gpu[0, 0] == 42.0
    cpu = np.from_dlpack(buf.device_array("cpu"))
    assert np.shares_memory(cpu, buf.cpu)
    del buf
    collect()
    imported[1, 1] = 1.0  # the consumer holds the memory (the capsule's deleter has not run)
    assert imported[1, 1] == 1.0
