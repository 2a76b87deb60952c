"""The GPU paths: buffers on a GPU, exports of CUDA memory (DLPack kDLCUDA / kDLCUDAHost, the
CUDA array interface) with their stream ordering, copies that complete before Python sees the
host side, and the six operations on CUDA memory (DeviceArrays, and objects exposing
``__cuda_array_interface__`` as PyTorch and CuPy tensors do).

Run in CI on the crate's emulated GPU (``--features emulator``: the crate's CUDA code path
against an emulated driver on CPU threads, docs/EMULATOR.md), never on a real GPU. Tests marked
``emulator`` rely on what only the emulator gives: device pointers that are host addresses
(read here with ctypes, which would fault on a GPU) and a hold on cpugpu's stream
(``_native._emu``) that keeps work in flight for as long as a test needs, so that a missing wait
or a missing stream dependency fails deterministically instead of by luck.
"""

from __future__ import annotations

import ctypes
import threading
import time

import numpy as np
import pytest

import cpugpu
from conftest import EMULATED, GPU, INFO, collect, data, read, write
from cpugpu import MemoryPlacement, _native
from test_dlpack import DLManagedTensorVersioned, DLTensor, pythonapi

pytestmark = pytest.mark.skipif(not GPU, reason=f"no GPU in this build or machine: {INFO['fallback_reason']}")
emulator_only = pytest.mark.skipif(not EMULATED, reason="needs the emulated GPU (host-addressable device memory, stream holds)")
emu = getattr(_native, "_emu", None)


pythonapi.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
pythonapi.PyCapsule_SetName.restype = ctypes.c_int


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


def versioned_tensor(cap):
    return DLManagedTensorVersioned.from_address(pythonapi.PyCapsule_GetPointer(cap, b"dltensor_versioned"))


def peek(ptr, nbytes, dtype):
    """Emulated GPU only: the bytes at a device address, read by the host. Device pointers of the
    emulated GPU are host addresses; on a real GPU this read would fault."""
    return np.frombuffer(ctypes.string_at(ptr, nbytes), dtype).copy()


class CudaArray:
    """A minimal producer of the CUDA array interface over memory it does not own, presenting
    itself as a PyTorch or CuPy tensor does (``owner`` keeps the memory alive)."""

    def __init__(self, owner, ptr=None, shape=None, typestr=None, *, strides=None, readonly=False, stream=None, dlpack_device=None, **extra):
        self.owner = owner
        iface = owner.__cuda_array_interface__ if hasattr(owner, "__cuda_array_interface__") else {}
        self.__cuda_array_interface__ = {
            "shape": tuple(owner.shape if shape is None else shape),
            "typestr": typestr or np.dtype(owner.dtype).str,
            "data": (iface["data"][0] if ptr is None else ptr, readonly),
            "strides": strides,
            "version": 3,
            "stream": stream,
            **extra,
        }
        if dlpack_device is not None:
            self.__dlpack_device__ = lambda: dlpack_device


def device_array(values):
    """`values` in CUDA memory: the device side of a fresh pinned buffer (kept alive by the
    returned DeviceArray)."""
    values = np.asarray(values)
    buf = cpugpu.CpuGpuBuffer.allocate("d", values.shape, values.dtype, True)
    buf.cpu[...] = values
    buf.cpu_to_gpu()
    return buf.gpu


class Held:
    """cpugpu's stream held (emulated GPU): work issued to it from now on waits. A Python thread
    releases it after `delay` seconds, or as soon as `finish()` is called if that comes first;
    a thread of the extension releases it after 10 s regardless, so that a call which wrongly
    keeps the GIL while it waits ends (and fails the `elapsed` check) instead of hanging."""

    def __init__(self, delay=0.3):
        self.hold = emu.hold()
        self.hold.release_after(10.0)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._release, args=(delay,))
        self.start = time.monotonic()
        self.thread.start()

    def _release(self, delay):
        self.done.wait(delay)
        self.hold.release()

    def returned(self):
        """To call right after the call under test returned: (whether the stream was still held,
        seconds since the hold)."""
        return self.hold.held, time.monotonic() - self.start

    def finish(self):
        self.done.set()
        self.thread.join()


# --- exports ----------------------------------------------------------------------------------


@pytest.mark.parametrize("placement", [MemoryPlacement.PINNED, MemoryPlacement.CPU])
def test_device_side_is_cuda_memory(rng, placement):
    buf = cpugpu.CpuGpuBuffer.allocate("x", (33, 3), np.float32, placement=placement)
    gpu = buf.gpu
    assert isinstance(gpu, cpugpu.DeviceArray) and gpu is buf.gpu
    assert gpu.device == "cuda:0" and gpu.__dlpack_device__() == buf.__dlpack_device__() == (2, 0)
    assert gpu.shape == (33, 3) and gpu.dtype == np.float32 and gpu.nbytes == 33 * 3 * 4
    assert gpu.data_ptr != buf.cpu.ctypes.data  # two memories
    assert not hasattr(gpu, "__array_interface__")
    with pytest.raises(cpugpu.DeviceError, match="cuda:0 memory; copy_to_host"):
        gpu.numpy()
    with pytest.raises((BufferError, RuntimeError, TypeError)):
        np.from_dlpack(gpu)  # numpy does not import CUDA memory
    want = data(rng, (33, 3), np.float32)
    buf.cpu[...] = want
    buf.cpu_to_gpu()
    assert gpu.copy_to_host().tobytes() == want.tobytes()


def test_cuda_array_interface_v3():
    buf = cpugpu.CpuGpuBuffer.allocate("i", (4, 2), np.int16, True)
    other = cpugpu.CpuGpuBuffer.allocate("j", 3, np.uint8, True)
    iface = buf.gpu.__cuda_array_interface__
    assert iface["version"] == 3 and iface["shape"] == (4, 2) and iface["typestr"] == "<i2"
    assert iface["data"] == (buf.gpu.data_ptr, False) and iface["strides"] is None
    # The stream to wait on is cpugpu's: one stream for every buffer, a real handle (not 0, 1, 2).
    stream = iface["stream"]
    assert isinstance(stream, int) and stream > 2 and other.gpu.__cuda_array_interface__["stream"] == stream


@pytest.mark.parametrize("versioned", [True, False])
def test_dlpack_capsule_of_cuda_memory(versioned):
    buf = cpugpu.CpuGpuBuffer.allocate("c", (5, 3), np.int64, True)
    if versioned:
        cap = buf.gpu.__dlpack__(max_version=(1, 0), stream=-1)
        m = versioned_tensor(cap)
        assert (m.major, m.minor, m.flags) == (1, 0, 0)
    else:
        cap = buf.__dlpack__(stream=None)  # the buffer delegates to its device side
        m = DLManagedTensor.from_address(pythonapi.PyCapsule_GetPointer(cap, b"dltensor"))
    t = m.dl_tensor
    # The exported pointer is the crate's device pointer (what data_ptr reports).
    assert t.data == buf.gpu.data_ptr and t.byte_offset == 0
    if emu:  # asked of the crate's buffer now, not the address cached at allocation
        assert t.data == emu.device_ptr(buf)
    assert (t.device.device_type, t.device.device_id) == (2, 0)  # kDLCUDA, device 0
    assert t.ndim == 2 and [t.shape[i] for i in range(2)] == [5, 3] and [t.strides[i] for i in range(2)] == [3, 1]
    assert (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (0, 64, 1)
    for bad, match in [({"stream": 0}, "ambiguous"), ({"dl_device": (1, 0)}, "would need a copy"), ({"copy": True}, "copy=True")]:
        with pytest.raises(BufferError, match=match):
            buf.gpu.__dlpack__(**bad)


@emulator_only
def test_data_written_through_the_crate_is_at_the_exported_address(rng):
    buf = cpugpu.CpuGpuBuffer.allocate("w", (64, 4), np.uint16, True)
    want = data(rng, (64, 4), np.uint16)
    buf.cpu[...] = want
    buf.cpu_to_gpu()  # returns once the copy has landed
    buf.cpu[...] = 0  # only the device side holds `want` now
    cap = buf.gpu.__dlpack__(max_version=(1, 0))
    ptr = versioned_tensor(cap).dl_tensor.data
    # Emulator only: the device address is a host address here.
    assert peek(ptr, want.nbytes, np.uint16).tobytes() == want.tobytes()
    assert peek(buf.gpu.__cuda_array_interface__["data"][0], want.nbytes, np.uint16).tobytes() == want.tobytes()
    buf.fill(7)  # the device side is filled on cpugpu's stream
    assert (buf.gpu.copy_to_host() == 7).all()  # copy_to_host follows cpugpu's stream
    assert (peek(ptr, want.nbytes, np.uint16) == 7).all()


def test_page_locked_host_side_is_cuda_host_memory():
    pinned = cpugpu.CpuGpuBuffer.allocate("p", (4, 2), np.float64, True)
    host = pinned.device_array("cpu")
    assert host.__dlpack_device__() == (3, 0) and host.device == "cuda_host"  # kDLCUDAHost
    assert host.data_ptr == pinned.cpu.ctypes.data and host.__array_interface__["data"][0] == host.data_ptr
    pinned.cpu[:] = 2.5
    assert np.shares_memory(np.from_dlpack(host), pinned.cpu) and (host.numpy() == 2.5).all()
    # A consumer that asks for kDLCPU gets the same memory as kDLCPU (no copy).
    cap = host.__dlpack__(max_version=(1, 0), dl_device=(1, 0))
    t = versioned_tensor(cap).dl_tensor
    assert (t.device.device_type, t.data) == (1, host.data_ptr)
    with pytest.raises(BufferError, match="host memory takes no stream"):
        host.__dlpack__(stream=5)
    pageable = cpugpu.CpuGpuBuffer.allocate("q", 3, np.int8)
    assert pageable.device_array("cpu").__dlpack_device__() == (1, 0)


def test_uva_buffer_exports_its_mapped_device_address(rng):
    buf = cpugpu.CpuGpuBuffer.allocate("u", (8, 2), np.int32, placement=MemoryPlacement.UVA)
    assert buf.gpu.__dlpack_device__() == (2, 0) and buf.device_array("cpu").__dlpack_device__() == (3, 0)
    if EMULATED:
        # The crate's mapped device address (cuMemHostGetDevicePointer), which on the emulated
        # GPU, as with unified addressing, is the host address.
        assert buf.gpu.data_ptr == emu.device_ptr(buf) == buf.cpu.ctypes.data
    buf.cpu[:] = np.arange(16).reshape(8, 2)  # no upload: the GPU reads this memory
    out = cpugpu.CpuGpuBuffer.allocate("o", (3, 2), np.int32, True)
    cpugpu.copy_with_indices(buf.gpu, out.gpu, [7, 0, 3])
    assert read(out.gpu).tolist() == [[14, 15], [0, 1], [6, 7]]
    cpugpu.scatter_with_indices(out.gpu, buf.gpu, [1, 2, -1], policy="negative_skip")  # the GPU writes it
    assert buf.cpu[1:3].tolist() == [[14, 15], [0, 1]]  # the call waited for its kernels


# --- lifetimes --------------------------------------------------------------------------------


@emulator_only
def test_exports_hold_the_memory_alive(rng):
    buf = cpugpu.CpuGpuBuffer.allocate("l", 4096, np.int64, True)
    want = data(rng, 4096, np.int64)
    buf.cpu[:] = want
    buf.cpu_to_gpu()
    cap = buf.gpu.__dlpack__(max_version=(1, 0))  # unconsumed
    row = buf.gpu[100:110]
    parts = cpugpu.split_by_offsets(buf.gpu, [0, 2048, 4096])
    ptr = versioned_tensor(cap).dl_tensor.data
    del buf
    collect()
    churn = [cpugpu.CpuGpuBuffer.allocate("c", 4096, np.int64, True) for _ in range(6)]
    for c in churn:
        c.fill(-1)  # would overwrite freed device memory
    assert peek(ptr, want.nbytes, np.int64).tobytes() == want.tobytes()
    assert read(row).tobytes() == want[100:110].tobytes()
    assert read(parts[1]).tobytes() == want[2048:].tobytes()


def test_a_consumer_may_call_the_deleter_from_any_thread():
    pool = cpugpu.UvaBufferPool("d", depth=1)
    buf = pool.allocate("x", 64, np.float32)
    cap = buf.gpu.__dlpack__(max_version=(1, 0))
    m = versioned_tensor(cap)
    # Consume it as a C consumer does: rename the capsule, then call the deleter later, here from
    # a thread that does not hold the GIL (ctypes releases it around the call).
    assert pythonapi.PyCapsule_SetName(cap, b"used_dltensor_versioned") == 0
    deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(m.deleter)
    addr = ctypes.addressof(m)
    del buf, cap, m
    collect()
    with pytest.raises(cpugpu.PoolBusyError):  # the consumer still holds the slot
        pool.allocate("x", 64, np.float32)
    t = threading.Thread(target=deleter, args=(addr,))
    t.start()
    t.join()
    collect()
    assert pool.allocate("x", 64, np.float32).slot == 0


def test_pool_slot_held_by_a_device_view():
    pool = cpugpu.UvaBufferPool("v", depth=1)
    buf = pool.allocate("x", (4, 2), np.int32)
    view = buf.gpu[1:3]
    del buf
    collect()
    with pytest.raises(cpugpu.PoolBusyError):
        pool.allocate("x", (4, 2), np.int32)
    del view
    collect()
    assert pool.allocate("x", (4, 2), np.int32).slot == 0


# --- the host side waits for copies (emulated GPU: the stream is held) ------------------------
#
# Design: a numpy view of the host side cannot wait for anything, so each copy method returns
# only once its copy has completed (it synchronizes cpugpu's stream, with the GIL released).
# Checked: with that wait removed (`settle` in python/src/side.rs returning at once), every test
# below fails: the call returns while the stream is still held and the data is stale.

COPIES = {
    "gpu_to_cpu": lambda b: b.gpu_to_cpu(),
    "copy_to_cpu(n)": lambda b: b.copy_to_cpu(b.shape[0]),
    "sync (copies to cpu)": lambda b: (b.mark_gpu_dirty(), b.sync()),
}


@emulator_only
@pytest.mark.parametrize("copy", COPIES, ids=str)
def test_no_stale_host_side_after_a_download(copy):
    buf = cpugpu.CpuGpuBuffer.allocate("dl", (256, 4), np.int32, True)
    cpu = buf.cpu  # held across the copy, as user code holds it
    cpu[:] = 1
    buf.cpu_to_gpu()
    cpu[:] = 0
    held = Held()
    try:
        COPIES[copy](buf)
        still_held, elapsed = held.returned()
        seen = cpu.copy()  # what Python reads right after the call
    finally:
        held.finish()
    assert not still_held, f"{copy} returned while its copy was still queued"
    assert elapsed < 5, f"{copy} kept the GIL while waiting ({elapsed:.1f} s)"
    assert (seen == 1).all(), f"{copy}: Python read a host side the download had not written"


UPLOADS = {
    "cpu_to_gpu": lambda b: b.cpu_to_gpu(),
    "copy_to_gpu(n)": lambda b: b.copy_to_gpu(b.shape[0]),
    "sync (copies to gpu)": lambda b: (b.mark_cpu_dirty(), b.sync()),
}


@emulator_only
@pytest.mark.parametrize("copy", UPLOADS, ids=str)
def test_no_overwrite_of_the_host_side_during_an_upload(copy):
    buf = cpugpu.CpuGpuBuffer.allocate("ul", (256, 4), np.int32, True)
    cpu = buf.cpu
    cpu[:] = 1
    held = Held()
    try:
        UPLOADS[copy](buf)
        still_held, elapsed = held.returned()
        cpu[:] = 2  # the next step's data, written at once, as a batching loop does
    finally:
        held.finish()
    assert not still_held, f"{copy} returned while its copy was still queued"
    assert elapsed < 5, f"{copy} kept the GIL while waiting ({elapsed:.1f} s)"
    assert (buf.gpu.copy_to_host() == 1).all(), f"{copy}: the upload read the next step's data"


# --- stream ordering of exports (emulated GPU) ------------------------------------------------


@emulator_only
def test_dlpack_orders_the_consumer_stream_after_cpugpu_work():
    # Checked: with the event wait removed from `order_for_consumer` (python/src/gpu.rs), the
    # consumer's copy runs before the fill and this test fails.
    buf = cpugpu.CpuGpuBuffer.allocate("s", 1024, np.int32, True)
    consumer = emu.new_stream()
    held = Held()
    try:
        buf.fill(7)  # queued on cpugpu's stream, behind the hold
        cap = buf.gpu.__dlpack__(stream=consumer)  # an object with cuda_stream, as torch's
        got = buf.gpu.copy_to_host(stream=consumer.cuda_stream)  # the consumer reads on its stream
        still_held, _ = held.returned()
    finally:
        held.finish()
    assert not still_held and (got == 7).all()
    del cap


@emulator_only
def test_dlpack_stream_minus_one_asks_for_no_ordering():
    # The same consumer without ordering reads before cpugpu's queued work: the test above can
    # tell ordering from its absence.
    buf = cpugpu.CpuGpuBuffer.allocate("n", 1024, np.int32, True)
    consumer = emu.new_stream()
    held = Held(delay=5.0)
    try:
        buf.fill(7)
        buf.gpu.__dlpack__(stream=-1)
        got = buf.gpu.copy_to_host(stream=consumer)
        still_held, _ = held.returned()
    finally:
        held.finish()
    # Not ordered: the copy ran before the fill (and possibly before the allocation's zeroing:
    # fresh emulated device memory holds 0xCB bytes).
    assert still_held and not (got == 7).any()
    assert (buf.gpu.copy_to_host() == 7).all()


# --- the operations on CUDA memory ------------------------------------------------------------

OP_DTYPES = [np.int8, np.float16, np.int32, np.float64]


@pytest.mark.parametrize("dtype", OP_DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 33, 1000])
def test_gather_and_scatter_on_device_arrays(rng, dtype, n):
    src = data(rng, (max(n, 1) + 3, 5), dtype)
    idx = rng.integers(0, len(src), size=n)
    d_src = device_array(src)
    d_out = device_array(np.full((n + 2, 5), 9, dtype))
    d_idx = device_array(idx.astype(np.int32))
    assert cpugpu.copy_with_indices(d_src, d_out, d_idx) is None
    want = np.full((n + 2, 5), 9, dtype)
    want[:n] = src[idx]
    assert read(d_out).tobytes() == want.tobytes()  # rows past len(indices) untouched
    # scatter: host indices (a list) are uploaded; a repeated index: the last occurrence wins
    perm = rng.permutation(len(src))[: max(n, 1)]
    dst = device_array(np.zeros_like(src))
    cpugpu.scatter_with_indices(d_src, dst, list(map(int, perm)))
    ref = np.zeros_like(src)
    ref[perm] = src[: len(perm)]
    assert read(dst).tobytes() == ref.tobytes()


def test_gather_policies_and_kernel_errors_raise_from_the_call(rng):
    src = device_array(np.arange(12, dtype=np.float32).reshape(6, 2))
    out = device_array(np.zeros((3, 2), np.float32))
    cpugpu.copy_with_indices(src, out, np.array([5, -1, 0]), policy="negative_fill", fill_value=-2)
    assert read(out).tolist() == [[10, 11], [-2, -2], [0, 1]]
    with pytest.raises(cpugpu.IndexOutOfBoundsError, match=r"gather_rows: indices\[1\] = 6 is out of bounds for 6 rows") as e:
        cpugpu.copy_with_indices(src, out, [0, 6, 1])
    assert (e.value.position, e.value.index) == (1, 6)
    with pytest.raises(cpugpu.IndexOutOfBoundsError, match=r"scatter_rows: indices\[0\] = -1"):
        cpugpu.scatter_with_indices(out, src, [-1, 0, 1])
    cpugpu.scatter_with_indices(out, src, [3, -1, 3], policy="negative_skip")  # still usable
    assert read(src)[3].tolist() == [0, 1]


@pytest.mark.parametrize("dtype", OP_DTYPES, ids=str)
def test_pad_offsets_flatten_split_on_device_arrays(rng, dtype):
    arr = data(rng, (13, 3), dtype)
    d = device_array(arr)
    padded = cpugpu.pad_to_multiple(d, 8, pad_value=1)
    assert isinstance(padded, cpugpu.DeviceArray) and padded.shape == (16, 3)
    assert read(padded).tobytes() == np.pad(arr, [(0, 3), (0, 0)], constant_values=1).tobytes()
    assert cpugpu.pad_to_multiple(d, 13) is d  # already a multiple: the input itself
    assert read(cpugpu.pad_to_multiple(d, 2, axis=-1)).shape == (13, 4)
    lens = rng.integers(0, 50, size=33)
    for odt in (np.int32, np.int64):
        offs = cpugpu.compute_cumsum_offsets(device_array(lens.astype(odt)), dtype=odt)
        assert offs.dtype == odt and read(offs).tolist() == [0] + np.cumsum(lens).tolist()
    parts = [arr[:4], arr[4:4], arr[4:]]
    flat, offsets = cpugpu.flatten_with_offsets([device_array(p) for p in parts])
    assert read(flat).tobytes() == arr.tobytes() and read(offsets).tolist() == [0, 4, 4, 13]
    vec = arr.reshape(-1)
    flat1, offsets1 = cpugpu.flatten_with_offsets([device_array(vec[:5]), device_array(vec[5:])], offsets_dtype=np.int32)
    assert read(flat1).tobytes() == vec.tobytes() and read(offsets1).tolist() == [0, 5, len(vec)]
    segs = cpugpu.split_by_offsets(d, [0, 4, 4, 13])
    assert [s.shape for s in segs] == [(4, 3), (0, 3), (9, 3)]
    assert segs[2].data_ptr == d.data_ptr + 4 * 3 * np.dtype(dtype).itemsize  # views, no copy
    assert read(segs[2]).tobytes() == arr[4:].tobytes()
    segs = cpugpu.split_by_offsets(d, offsets)  # offsets in CUDA memory are read back first
    assert [s.shape[0] for s in segs] == [4, 0, 9]


def test_device_operation_errors(rng):
    src = device_array(np.zeros((4, 2), np.float32))
    out = device_array(np.zeros((4, 2), np.float32))
    host = np.zeros((4, 2), np.float32)
    with pytest.raises(cpugpu.DeviceError, match="dst is host memory, but the operation runs on cuda:0"):
        cpugpu.copy_with_indices(src, host, [0])
    with pytest.raises(cpugpu.DeviceError, match="src is host memory"):
        cpugpu.copy_with_indices(host, out, [0])
    with pytest.raises(cpugpu.DeviceError, match=r"arrays\[1\] is host memory"):
        cpugpu.flatten_with_offsets([src, host])
    with pytest.raises(cpugpu.DtypeError, match="src has dtype float32 and dst has dtype int32"):
        cpugpu.copy_with_indices(src, device_array(np.zeros((4, 2), np.int32)), [0])
    with pytest.raises(cpugpu.LayoutError, match="dst overlaps src"):
        cpugpu.copy_with_indices(src, src[1:], [0])
    with pytest.raises(cpugpu.DtypeError, match="indices must be int32 or int64, got uint8"):
        cpugpu.copy_with_indices(src, out, device_array(np.zeros(2, np.uint8)))
    with pytest.raises(cpugpu.ShapeError, match="dst's shape"):
        cpugpu.copy_with_indices(src, out, [0] * 5)
    with pytest.raises(cpugpu.OffsetsError, match=r"lengths\[1\] = -3 is negative"):
        cpugpu.compute_cumsum_offsets(device_array(np.array([1, -3, 2])))
    with pytest.raises(cpugpu.OffsetsError):
        cpugpu.split_by_offsets(src, [0, 3, 2])
    with pytest.raises(cpugpu.OffsetsError):
        cpugpu.split_by_offsets(src, [0, 5])
    with pytest.raises(cpugpu.InvalidArgumentError, match="multiple = 0"):
        cpugpu.pad_to_multiple(src, 0)
    with pytest.raises(cpugpu.ShapeError):
        cpugpu.pad_to_multiple(src, 4, axis=2)
    with pytest.raises(cpugpu.InvalidArgumentError, match="stream= applies to operations on CUDA memory"):
        cpugpu.copy_with_indices(host, np.zeros_like(host), [0], stream=1)
    with pytest.raises(cpugpu.InvalidArgumentError, match="not negative"):
        cpugpu.copy_with_indices(src, out, [0], stream=-5)


def test_stream_argument_forms(rng):
    src = device_array(np.arange(8, dtype=np.int64).reshape(4, 2))
    out = device_array(np.zeros((2, 2), np.int64))
    s = emu.new_stream() if emu else None
    for stream in [None, 0, 1, 2] + ([s, s.cuda_stream] if s else []):
        write(out, 0)
        cpugpu.copy_with_indices(src, out, [3, 1], stream=stream)
        assert read(out).tolist() == [[6, 7], [2, 3]], stream


@emulator_only
def test_an_operation_on_another_stream_follows_cpugpu_work_on_its_operands():
    # Checked: with a DeviceArray's operand view made on the operation's stream instead of
    # cpugpu's (`dev:` in `gpu::arg`), the gather runs before the fill and this test fails.
    buf = cpugpu.CpuGpuBuffer.allocate("f", (64, 2), np.float32, True)
    out = cpugpu.CpuGpuBuffer.allocate("o", (64, 2), np.float32, True)
    idx = device_array(np.arange(64, dtype=np.int64))
    # Output and indices as bare pointers without a stream: the only dependency left is the
    # one on `buf`'s stream.
    out_raw, idx_raw = CudaArray(out.gpu, stream=None), CudaArray(idx, stream=None)
    other = emu.new_stream()
    held = Held()
    try:
        buf.fill(5)  # cpugpu's stream, behind the hold
        cpugpu.copy_with_indices(buf.gpu, out_raw, idx_raw, stream=other)
        still_held, _ = held.returned()
    finally:
        held.finish()
    assert not still_held and (read(out.gpu) == 5).all()


# --- objects exposing __cuda_array_interface__ (as PyTorch and CuPy tensors) ------------------


def test_operations_on_cuda_array_interface_objects(rng):
    table = data(rng, (10, 4), np.float32)
    d_table = device_array(table)
    d_out = device_array(np.zeros((3, 4), np.float32))
    d_idx = device_array(np.array([9, 0, 4], np.int64))
    src, dst, idx = CudaArray(d_table, dlpack_device=(2, 0)), CudaArray(d_out), CudaArray(d_idx)
    cpugpu.copy_with_indices(src, dst, idx)
    assert read(d_out).tobytes() == table[[9, 0, 4]].tobytes()  # written in place, no copy
    # mixed with DeviceArrays, explicit C-contiguous strides, a version-2 interface
    strided = CudaArray(d_table, strides=(16, 4))
    cpugpu.scatter_with_indices(d_out, strided, CudaArray(d_idx, version=2))
    assert read(d_table)[[9, 0, 4]].tobytes() == table[[9, 0, 4]].tobytes()
    segs = cpugpu.split_by_offsets(CudaArray(d_table), [0, 3, 10])
    assert [s.shape for s in segs] == [(3, 4), (7, 4)] and segs[1].data_ptr == d_table.data_ptr + 48
    padded = cpugpu.pad_to_multiple(CudaArray(d_table), 4)
    assert read(padded)[:10].tobytes() == read(d_table).tobytes() and not read(padded)[10:].any()
    lens = CudaArray(device_array(np.array([2, 3], np.int32)))
    assert read(cpugpu.compute_cumsum_offsets(lens)).tolist() == [0, 2, 5]


def test_cuda_array_interface_objects_are_checked(rng):
    d = device_array(np.zeros((4, 2), np.float32))
    out = device_array(np.zeros((4, 2), np.float32))
    ptr = d.data_ptr
    cases = [
        (CudaArray(d, ptr=ptr + 2), cpugpu.LayoutError, "not aligned for float32"),
        (CudaArray(d, strides=(4, 16)), cpugpu.LayoutError, "not C-contiguous"),
        (CudaArray(d, shape=(2, 2), strides=(16, 4)), cpugpu.LayoutError, "not C-contiguous"),
        (CudaArray(d, typestr="<c8"), cpugpu.DtypeError, "complex64"),
        (CudaArray(d, typestr=">f4"), cpugpu.DtypeError, "byte-swapped"),
        (CudaArray(d, mask=object()), cpugpu.LayoutError, "masked"),
        (CudaArray(d, dlpack_device=(2, 1)), cpugpu.DeviceError, r"DLPack device \(2, 1\)"),
        (CudaArray(d, dlpack_device=(1, 0)), cpugpu.DeviceError, r"DLPack device \(1, 0\)"),
        (CudaArray(d, stream=0), cpugpu.InvalidArgumentError, "stream 0 is disallowed"),
        (CudaArray(d, shape=(4, -2)), cpugpu.InvalidArgumentError, "negative dimension"),
        (CudaArray(d, ptr=0), cpugpu.InvalidArgumentError, "null data pointer"),
    ]
    for src, exc, match in cases:
        with pytest.raises(exc, match=match):
            cpugpu.copy_with_indices(src, out, [0])
    with pytest.raises(cpugpu.LayoutError, match="dst is read-only"):
        cpugpu.copy_with_indices(d, CudaArray(out, readonly=True), [0])
    broken = CudaArray(d)
    del broken.__cuda_array_interface__["data"]
    with pytest.raises(cpugpu.InvalidArgumentError, match='no "data"'):
        cpugpu.copy_with_indices(broken, out, [0])


@emulator_only
def test_the_producer_stream_of_an_interface_is_waited_for():
    # Checked: with the interface's "stream" ignored (`cuda_array_interface` in gpu.rs using the
    # operation's stream), the gather runs before the producer's fill and this test fails.
    buf = cpugpu.CpuGpuBuffer.allocate("p", (64, 2), np.int32, True)
    out = cpugpu.CpuGpuBuffer.allocate("q", (64, 2), np.int32, True)
    idx = device_array(np.arange(64, dtype=np.int32))
    producer = buf.gpu.__cuda_array_interface__["stream"]  # cpugpu's stream, held below
    src = CudaArray(buf.gpu, stream=producer)
    out_raw, idx_raw = CudaArray(out.gpu), CudaArray(idx)
    other = emu.new_stream()
    held = Held()
    try:
        buf.fill(3)
        cpugpu.copy_with_indices(src, out_raw, idx_raw, stream=other)
        still_held, _ = held.returned()
    finally:
        held.finish()
    assert not still_held and (read(out.gpu) == 3).all()


def test_split_views_of_an_interface_object_keep_it_alive(rng):
    want = np.arange(40, dtype=np.int16).reshape(20, 2)
    wrapper = CudaArray(device_array(want))
    parts = cpugpu.split_by_offsets(wrapper, [0, 5, 20])
    del wrapper
    collect()
    churn = [device_array(np.full((20, 2), -1, np.int16)) for _ in range(4)]
    assert read(parts[1]).tobytes() == want[5:].tobytes()
    del churn


def test_the_threads_test_on_device_memory(rng):
    # Operations on CUDA memory from several threads at once (each waits with the GIL released).
    from concurrent.futures import ThreadPoolExecutor

    src_host = data(rng, (2000, 8), np.float32)
    src = device_array(src_host)

    def work(seed):
        r = np.random.default_rng(seed)
        out = device_array(np.zeros_like(src_host))
        for _ in range(3):
            idx = r.integers(0, len(src_host), size=len(src_host))
            cpugpu.copy_with_indices(src, out, idx)
            if read(out).tobytes() != src_host[idx].tobytes():
                return False
        return True

    with ThreadPoolExecutor(max_workers=4) as ex:
        assert all(ex.map(work, range(6)))
