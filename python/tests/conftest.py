"""Shared helpers: the numpy original's semantics (written here from the original module's
documented behaviour), dtypes, seeded data, and access to a buffer's device side on either
backend."""

from __future__ import annotations

import gc
import sys
import threading
import time

import numpy as np
import pytest

import cpugpu

try:
    import ml_dtypes  # noqa: F401

    BF16 = np.dtype("bfloat16")
except ImportError:  # pragma: no cover - CI installs ml_dtypes
    BF16 = None

# Every dtype the issue lists (bfloat16 when ml_dtypes is there).
DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
] + ([BF16] if BF16 is not None else [])

# Boundary sizes (STYLE.md): 0, 1, 2, 31, 32, 33, a non-multiple of the vector width, and one
# past the crate's parallel threshold (512 KiB moved) and the GIL-release threshold (64 KiB).
SIZES = [0, 1, 2, 31, 32, 33, 1000]
LARGE_ROWS = 40_000  # x 16 float32 = 2.5 MiB


INFO = cpugpu.backend_info()
# Buffers live on a GPU: the package was built with the GPU paths and one answered (in CI: the
# crate's emulated GPU, `--features emulator`). The whole suite runs on both backends; on a GPU a
# buffer's `gpu` side is a DeviceArray of CUDA memory instead of a numpy view.
GPU = INFO["backend"] == "cuda"
EMULATED = bool(INFO.get("emulated"))


def read(side):
    """A side's contents as a numpy array: the side itself on the host backend, a copy of its
    CUDA memory on a GPU."""
    return side if isinstance(side, np.ndarray) else side.copy_to_host()


def write(side, values):
    """Sets a side (or a view of one) to `values`, broadcast: in place on the host backend,
    copied into its CUDA memory on a GPU."""
    if isinstance(side, np.ndarray):
        side[...] = values
    else:
        side.copy_from_host(np.ascontiguousarray(np.broadcast_to(np.asarray(values, side.dtype), side.shape)))


def data(rng, shape, dtype):
    """Seeded values of `dtype` (bools, small ints, floats) of `shape`."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --- the numpy original's operations (its semantics, for comparison) -----------------------


def ref_copy_with_indices(src, dst, indices):
    np.take(src, indices, axis=0, out=dst[: len(indices)])


def ref_scatter_with_indices(src, dst, indices):
    dst[indices] = src[: len(indices)]


def ref_pad_to_multiple(arr, multiple, axis=0, pad_value=0):
    size = arr.shape[axis]
    target = ((size + multiple - 1) // multiple) * multiple
    if target == size:
        return arr
    width = [(0, 0)] * arr.ndim
    width[axis] = (0, target - size)
    return np.pad(arr, width, mode="constant", constant_values=pad_value)


def ref_cumsum_offsets(lengths):
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    out[1:] = np.cumsum(lengths)
    return out


def ref_flatten_with_offsets(arrays):
    offsets = ref_cumsum_offsets(np.array([len(a) for a in arrays], dtype=np.int64))
    if not arrays:
        return np.array([], dtype=np.float32), offsets
    return np.concatenate(arrays), offsets


def ref_split_by_offsets(arr, offsets):
    return [arr[int(offsets[i]) : int(offsets[i + 1])] for i in range(len(offsets) - 1)]


def collect():
    """Runs the garbage collector until nothing more is freed."""
    while gc.collect():
        pass


def ticks_while(call):
    """How often the main thread ran while `call` ran in another thread, in the call's last 80%.

    With a huge switch interval a thread that keeps the GIL is not interrupted, so the main
    thread ticks during the call only if the call releases the GIL. (The call's first 20% does
    not count: its thread may let the GIL go for a moment before it enters the operation.)
    Returns the ticks and the call's duration."""
    bounds = {}
    started = threading.Event()

    def op():
        started.set()
        bounds["start"] = time.perf_counter()
        call()
        bounds["end"] = time.perf_counter()

    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        t = threading.Thread(target=op)
        t.start()
        started.wait()
        ticks = []
        while t.is_alive():
            ticks.append(time.perf_counter())
            time.sleep(0.001)  # releases the GIL, so the operation's thread can take it back
        t.join()
    finally:
        sys.setswitchinterval(old)
    start, end = bounds["start"], bounds["end"]
    return [x for x in ticks if start + 0.2 * (end - start) < x < end], end - start
