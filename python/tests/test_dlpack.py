"""DeviceArray: DLPack (legacy and versioned capsules), the array interfaces, and lifetimes, on
either backend (test_gpu.py has what only CUDA memory does)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import cpugpu
from conftest import DTYPES, GPU, collect, data, read, write

pythonapi = ctypes.pythonapi
pythonapi.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
pythonapi.PyCapsule_IsValid.restype = ctypes.c_int
pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [
        ("major", ctypes.c_uint32),
        ("minor", ctypes.c_uint32),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", DLTensor),
    ]


# DLPack's type codes: kDLInt 0, kDLUInt 1, kDLFloat 2, kDLBfloat 4, kDLBool 6.
CODES = {"b": 6, "i": 0, "u": 1, "f": 2}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_exports(rng, dtype):
    buf = cpugpu.CpuGpuBuffer.allocate("e", (5, 3), dtype)
    write(buf.gpu, data(rng, (5, 3), dtype))
    dt = np.dtype(dtype)
    # The capsule's tensor, as a C consumer reads it: the device side's memory, in place.
    cap = buf.device_array().__dlpack__(max_version=(1, 0))
    m = DLManagedTensorVersioned.from_address(pythonapi.PyCapsule_GetPointer(cap, b"dltensor_versioned"))
    t = m.dl_tensor
    assert (m.major, m.flags) == (1, 0)
    ptr, device = (buf.gpu.data_ptr, (2, 0)) if GPU else (buf.gpu.ctypes.data, (1, 0))
    assert t.data == ptr and (t.device.device_type, t.device.device_id) == device
    assert t.ndim == 2 and [t.shape[i] for i in range(2)] == [5, 3] and [t.strides[i] for i in range(2)] == [3, 1]
    assert (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (4 if dt.name == "bfloat16" else CODES[dt.kind], 8 * dt.itemsize, 1)
    del cap, m, t
    if dt.name == "bfloat16":
        return  # numpy has no bfloat16 in DLPack (PyTorch imports it)
    host = buf.device_array("cpu")  # host memory on both backends: numpy imports it in place
    arr = np.from_dlpack(host)
    assert arr.dtype == buf.dtype and arr.shape == (5, 3)
    assert arr.tobytes() == buf.cpu.tobytes() and np.shares_memory(arr, buf.cpu)


def test_device_array_attributes_and_interfaces():
    buf = cpugpu.CpuGpuBuffer.allocate("a", (2, 3), np.int16)  # pageable: kDLCPU on both backends
    a = buf.device_array("cpu")
    assert a.shape == (2, 3) and a.dtype == np.int16 and a.nbytes == 12 and len(a) == 2
    assert a.device == "cpu" and a.__dlpack_device__() == (1, 0) and not a.readonly
    assert a.data_ptr == buf.cpu.__array_interface__["data"][0]
    assert "DeviceArray(shape=[2, 3], dtype=int16, device=cpu" in repr(a)
    # Host memory: numpy's array interface, no CUDA array interface.
    assert not hasattr(a, "__cuda_array_interface__")
    iface = a.__array_interface__
    assert iface["version"] == 3 and iface["typestr"] == "<i2" and iface["data"] == (a.data_ptr, False)
    via_iface = np.asarray(a)
    assert np.shares_memory(via_iface, buf.cpu)
    assert np.shares_memory(a.numpy(), buf.cpu)
    with pytest.raises(cpugpu.InvalidArgumentError):
        buf.device_array("tpu")


def test_device_array_copies_and_views():
    buf = cpugpu.CpuGpuBuffer.allocate("v", (4, 2), np.int32, True)
    for a in (buf.device_array("cpu"), buf.gpu if GPU else buf.device_array("gpu")):
        a.copy_from_host(np.arange(8, dtype=np.int32).reshape(4, 2))
        got = a.copy_to_host()
        assert got.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]] and got.flags.owndata
        row = a[2]  # views along axis 0, no copy
        assert row.shape == (2,) and row.data_ptr == a.data_ptr + 2 * 8 and row.copy_to_host().tolist() == [4, 5]
        assert a[-1].copy_to_host().tolist() == [6, 7] and a[1:3].shape == (2, 2) and a[...].shape == (4, 2)
        assert a[1:3, :].data_ptr == a.data_ptr + 8 and a[4:].shape == (0, 2)
        a[1:3].copy_from_host(np.zeros((2, 2), np.int32))
        assert a.copy_to_host()[:, 0].tolist() == [0, 0, 0, 6]
        with pytest.raises(IndexError):
            a[4]
        with pytest.raises(cpugpu.LayoutError, match="step 1"):
            a[::2]
        with pytest.raises(cpugpu.LayoutError):
            a[:, 0]
        with pytest.raises(cpugpu.ShapeError, match="src has shape"):
            a.copy_from_host(np.zeros(8, np.int32))
        with pytest.raises(cpugpu.DtypeError, match="src has dtype int64"):
            a.copy_from_host(np.zeros((4, 2), np.int64))


def test_legacy_and_versioned_capsules():
    buf = cpugpu.CpuGpuBuffer.allocate("c", 4, np.float64)
    a = buf.device_array("cpu")  # host memory on both backends
    legacy = a.__dlpack__()
    assert pythonapi.PyCapsule_IsValid(legacy, b"dltensor") == 1
    versioned = a.__dlpack__(max_version=(1, 0))
    assert pythonapi.PyCapsule_IsValid(versioned, b"dltensor_versioned") == 1
    # Unconsumed capsules free their export when collected (no leak, no double free).
    del legacy, versioned
    collect()
    # stream: None for host memory; dl_device must match; copy=True is refused.
    with pytest.raises(BufferError, match="host memory takes no stream"):
        a.__dlpack__(stream=5)

    class Stream:
        cuda_stream = 7

    with pytest.raises(BufferError):
        a.__dlpack__(stream=Stream())
    with pytest.raises(cpugpu.InvalidArgumentError, match="stream must be None, an int"):
        a.__dlpack__(stream="default")
    with pytest.raises(BufferError, match="dl_device"):
        a.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError, match="copy=True"):
        a.__dlpack__(copy=True)
    assert np.from_dlpack(a, copy=False).size == 4


def test_a_pool_slot_stays_held_while_an_export_lives():
    pool = cpugpu.UvaBufferPool("p", depth=1)
    buf = pool.allocate("x", 8, np.int32)
    capsule = buf.__dlpack__()  # unconsumed
    imported = np.from_dlpack(buf.device_array("cpu"))  # consumed by numpy
    del buf
    collect()
    with pytest.raises(cpugpu.PoolBusyError):
        pool.allocate("x", 8, np.int32)
    del capsule
    collect()
    with pytest.raises(cpugpu.PoolBusyError):  # numpy's array still views it
        pool.allocate("x", 8, np.int32)
    del imported
    collect()
    assert pool.allocate("x", 8, np.int32).slot == 0
