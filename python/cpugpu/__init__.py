"""cpugpu: paired CPU/GPU buffers, a pinned-memory manager, a pool of named buffers and six
batching operations, zero-copy with numpy (and, through DLPack, PyTorch and CuPy).

The input-preparation operations of a vLLM step (host memory only): ``expand_segments``,
``slot_mapping``, ``gather_windows``, ``StagedWrites``, ``pad_to_length``, ``pad_to_bucket``,
``bucket_for``, ``cuda_graph_sizes`` and the fused ``prepare_step``.

The API of the original ``CpuGpuBufferPool.py`` module (after vLLM's ``buffer_utils.py``),
with the Rust crate ``cpugpu`` underneath. The names and argument orders are the original's;
where the crate's semantics differ (last-wins scatter, exact pool keys, checked indices and
offsets, exceptions instead of ``None``), the docstrings say so.

    >>> import numpy as np, cpugpu
    >>> table = np.arange(12, dtype=np.float32).reshape(6, 2)
    >>> out = np.empty((3, 2), np.float32)
    >>> cpugpu.copy_with_indices(table, out, np.array([5, 0, 2]))
    >>> out[:, 0].tolist()
    [10.0, 0.0, 4.0]
"""

from __future__ import annotations

from . import _native
from ._errors import (
    BudgetExceededError,
    ClosedBufferError,
    DeviceError,
    DtypeError,
    Error,
    IndexOutOfBoundsError,
    InternalError,
    InvalidArgumentError,
    LayoutError,
    OffsetsError,
    OutOfMemoryError,
    PoolBusyError,
    PoolKeyError,
    ShapeError,
    SyncConflictError,
)
from ._native import (
    GIL_RELEASE_MIN_BYTES,
    PAD_SLOT_ID,
    CpuGpuBuffer,
    DeviceArray,
    PinnedMemoryManager,
    StagedWrites,
    UvaBufferPool,
    backend_info,
    bucket_for,
    compute_cumsum_offsets,
    copy_with_indices,
    cuda_graph_sizes,
    expand_segments,
    flatten_with_offsets,
    gather_windows,
    pad_to_bucket,
    pad_to_length,
    pad_to_multiple,
    prepare_step,
    scatter_with_indices,
    slot_mapping,
    split_by_offsets,
)
from ._types import MemoryPlacement

__version__ = "0.1.0"

__all__ = [
    "MemoryPlacement",
    "CpuGpuBuffer",
    "UvaBufferPool",
    "PinnedMemoryManager",
    "DeviceArray",
    "copy_with_indices",
    "scatter_with_indices",
    "pad_to_multiple",
    "compute_cumsum_offsets",
    "flatten_with_offsets",
    "split_by_offsets",
    "expand_segments",
    "slot_mapping",
    "gather_windows",
    "StagedWrites",
    "pad_to_length",
    "pad_to_bucket",
    "bucket_for",
    "cuda_graph_sizes",
    "prepare_step",
    "PAD_SLOT_ID",
    "backend_info",
    "GIL_RELEASE_MIN_BYTES",
    "Error",
    "IndexOutOfBoundsError",
    "ShapeError",
    "OffsetsError",
    "InvalidArgumentError",
    "LayoutError",
    "DtypeError",
    "ClosedBufferError",
    "PoolKeyError",
    "PoolBusyError",
    "SyncConflictError",
    "BudgetExceededError",
    "OutOfMemoryError",
    "DeviceError",
    "InternalError",
]
