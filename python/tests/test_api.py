"""The package's surface: the original module's names and argument orders, docstrings on
everything public, the stubs in step with the extension, and the exception hierarchy."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import cpugpu
from cpugpu import _native

STUB = Path(cpugpu.__file__).with_name("_native.pyi")

# The original module's signatures: (callable, leading parameter names in order).
ORIGINAL = [
    (cpugpu.copy_with_indices, ["src", "dst", "indices"]),
    (cpugpu.scatter_with_indices, ["src", "dst", "indices"]),
    (cpugpu.pad_to_multiple, ["arr", "multiple", "axis", "pad_value"]),
    (cpugpu.compute_cumsum_offsets, ["lengths"]),
    (cpugpu.flatten_with_offsets, ["arrays"]),
    (cpugpu.split_by_offsets, ["arr", "offsets"]),
    (cpugpu.CpuGpuBuffer.allocate, ["name", "shape", "dtype", "pinned"]),
    (cpugpu.UvaBufferPool, ["name"]),
    (cpugpu.UvaBufferPool.allocate, ["self", "name", "shape", "dtype", "pinned"]),
    (cpugpu.UvaBufferPool.get, ["self", "name"]),
    (cpugpu.UvaBufferPool.release, ["self", "name"]),
    (cpugpu.PinnedMemoryManager, ["max_bytes"]),
    (cpugpu.PinnedMemoryManager.allocate, ["self", "shape", "dtype"]),
    (cpugpu.PinnedMemoryManager.free, ["self", "buf"]),
]


@pytest.mark.parametrize("fn, names", ORIGINAL, ids=lambda x: getattr(x, "__qualname__", ""))
def test_original_names_and_argument_orders(fn, names):
    params = [p.name for p in inspect.signature(fn).parameters.values()]
    assert params[: len(names)] == names


def test_original_methods_and_properties_exist():
    for cls, names in {
        cpugpu.CpuGpuBuffer: "allocate cpu_to_gpu gpu_to_cpu sync mark_cpu_dirty mark_gpu_dirty fill reset slice copy_to_gpu cpu gpu name shape dtype is_pinned nbytes",
        cpugpu.UvaBufferPool: "allocate get release clear total_bytes num_buffers sync_all stats name",
        cpugpu.PinnedMemoryManager: "allocate free clear allocated_bytes available_bytes max_bytes",
    }.items():
        for n in names.split():
            assert hasattr(cls, n), (cls, n)
    assert [m.name for m in cpugpu.MemoryPlacement] == ["CPU", "GPU", "PINNED", "UVA"]


def public_members():
    for name in dir(_native):
        if name.startswith("_") or name == "GIL_RELEASE_MIN_BYTES":
            continue
        obj = getattr(_native, name)
        yield name, obj
        if inspect.isclass(obj):
            for m, v in vars(obj).items():
                if not m.startswith("_") or m in ("__dlpack__", "__dlpack_device__", "__array_interface__", "__cuda_array_interface__"):
                    yield f"{name}.{m}", v


def test_every_public_function_has_a_docstring():
    missing = [n for n, v in public_members() if not (getattr(v, "__doc__", None) or "").strip()]
    assert not missing


def test_stubs_match_the_extension():
    tree = ast.parse(STUB.read_text())
    stubbed = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stubbed.add(node.name)
            if isinstance(node, ast.ClassDef):
                for m in node.body:
                    if isinstance(m, ast.FunctionDef) and m.name not in ("__init__", "__enter__", "__exit__", "__len__", "__getitem__"):
                        stubbed.add(f"{node.name}.{m.name}")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not node.target.id.startswith("_"):
            stubbed.add(node.target.id)
    runtime = {n for n, _ in public_members()} | {"GIL_RELEASE_MIN_BYTES"}
    assert stubbed == runtime, (sorted(stubbed - runtime), sorted(runtime - stubbed))


@pytest.mark.parametrize(
    "cls, builtin",
    [
        (cpugpu.IndexOutOfBoundsError, IndexError),
        (cpugpu.ShapeError, ValueError),
        (cpugpu.OffsetsError, ValueError),
        (cpugpu.InvalidArgumentError, ValueError),
        (cpugpu.LayoutError, ValueError),
        (cpugpu.DtypeError, TypeError),
        (cpugpu.ClosedBufferError, ValueError),
        (cpugpu.PoolKeyError, ValueError),
        (cpugpu.PoolBusyError, RuntimeError),
        (cpugpu.SyncConflictError, RuntimeError),
        (cpugpu.BudgetExceededError, MemoryError),
        (cpugpu.OutOfMemoryError, MemoryError),
        (cpugpu.DeviceError, RuntimeError),
        (cpugpu.InternalError, RuntimeError),
    ],
)
def test_exception_hierarchy(cls, builtin):
    assert issubclass(cls, cpugpu.Error) and issubclass(cls, builtin)
    assert cls.__doc__


def test_backend_info():
    info = cpugpu.backend_info()
    assert info["backend"] in ("host", "cuda")
    assert info["gil_release_min_bytes"] == cpugpu.GIL_RELEASE_MIN_BYTES == 64 * 1024
    if info["backend"] == "host":
        assert info["fallback_reason"]  # says why no GPU is used
    if info["cuda_feature"] and info["backend"] == "host":
        # The cuda build's no-device path (CI: Debian's libcuda, whose cuInit finds no device).
        assert "CUDA" in info["fallback_reason"] or "cuda" in info["fallback_reason"]


def test_cuda_memory_is_refused_without_a_gpu():
    if cpugpu.backend_info()["backend"] == "cuda":
        pytest.skip("a GPU is in use (test_gpu.py covers CUDA memory)")

    class CudaTensor:  # what a PyTorch or CuPy tensor on a GPU presents
        __cuda_array_interface__ = {"shape": (2, 2), "typestr": "<f4", "data": (1 << 40, False), "version": 3}

    reason = "no GPU paths" if not cpugpu.backend_info()["cuda_feature"] else "cpugpu uses no GPU"
    for call in (
        lambda: cpugpu.copy_with_indices(CudaTensor(), np.zeros((2, 2), np.float32), [0]),
        lambda: cpugpu.pad_to_multiple(CudaTensor(), 4),
        lambda: cpugpu.flatten_with_offsets([CudaTensor()]),
        lambda: cpugpu.split_by_offsets(CudaTensor(), [0, 2]),
    ):
        with pytest.raises(cpugpu.DeviceError, match=reason):
            call()
