"""cpugpu: paired CPU/GPU buffers, a pinned-memory manager, a pool of named buffers and six
batching operations, zero-copy with numpy (and, through DLPack, PyTorch and CuPy).

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
    CpuGpuBuffer,
    DeviceArray,
    PinnedMemoryManager,
    UvaBufferPool,
    backend_info,
    compute_cumsum_offsets,
    copy_with_indices,
    flatten_with_offsets,
    pad_to_multiple,
    scatter_with_indices,
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
