"""Type stubs of cpugpu._native (the Rust extension; the package re-exports everything)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, SupportsIndex

import numpy as np
import numpy.typing as npt

from ._types import MemoryPlacement

_Shape = SupportsIndex | Sequence[SupportsIndex]
_DType = npt.DTypeLike
_Indices = npt.NDArray[np.int32] | npt.NDArray[np.int64] | Sequence[int] | Any
# A CUDA stream: an int handle (0 or 1: the legacy default stream, 2: the per-thread default
# stream), or an object with a ``cuda_stream`` attribute (PyTorch's and CuPy's streams).
_Stream = int | Any | None
# CUDA memory: a DeviceArray on a GPU, or an object with ``__cuda_array_interface__``.
_Cuda = DeviceArray | Any

GIL_RELEASE_MIN_BYTES: int

def copy_with_indices(
    src: npt.NDArray[Any] | Any,
    dst: npt.NDArray[Any] | Any,
    indices: _Indices,
    *,
    policy: Literal["checked", "negative_fill"] = "checked",
    fill_value: Any = None,
    stream: _Stream = None,
) -> None:
    """``dst[i] = src[indices[i]]`` for the first ``len(indices)`` rows of ``dst``, in place."""

def scatter_with_indices(
    src: npt.NDArray[Any] | Any,
    dst: npt.NDArray[Any] | Any,
    indices: _Indices,
    *,
    policy: Literal["checked", "negative_skip"] = "checked",
    stream: _Stream = None,
) -> None:
    """``dst[indices[i]] = src[i]``, in place; a repeated index: the last occurrence wins."""

def pad_to_multiple(
    arr: npt.NDArray[Any] | Any,
    multiple: int,
    axis: int = 0,
    pad_value: Any = None,
    *,
    stream: _Stream = None,
) -> npt.NDArray[Any] | DeviceArray:
    """``arr`` padded along ``axis`` to the next multiple; ``arr`` itself when it already is."""

def compute_cumsum_offsets(
    lengths: _Indices, *, dtype: _DType | None = None, stream: _Stream = None
) -> npt.NDArray[np.int64] | DeviceArray:
    """``len(lengths) + 1`` offsets starting at 0 (int64, or ``dtype=np.int32``)."""

def flatten_with_offsets(
    arrays: Iterable[npt.NDArray[Any] | Any],
    *,
    offsets_dtype: _DType | None = None,
    dtype: _DType | None = None,
    stream: _Stream = None,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]] | tuple[DeviceArray, DeviceArray]:
    """``(np.concatenate(arrays), offsets)`` with offsets in rows."""

def split_by_offsets(arr: npt.NDArray[Any] | _Cuda, offsets: _Indices) -> list[npt.NDArray[Any]] | list[DeviceArray]:
    """``[arr[offsets[i]:offsets[i + 1]] ...]``: views, not copies."""

PAD_SLOT_ID: int

def expand_segments(
    counts: _Indices | None = None,
    starts: _Indices | None = None,
    *,
    offsets: _Indices | None = None,
    ids_dtype: _DType | None = None,
    positions_dtype: _DType | None = None,
    out: tuple[npt.NDArray[Any], npt.NDArray[Any]] | None = None,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """``(seg_ids, positions)``: each element's segment and ``starts[seg] + index in it``."""

def slot_mapping(
    rows: _Indices,
    positions: _Indices,
    block_table: npt.NDArray[Any] | Sequence[npt.NDArray[Any]],
    num_blocks: _Indices | Sequence[_Indices],
    block_size: int | Sequence[int],
    *,
    pad_id: int = -1,
    dtype: _DType | None = None,
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    """Each token's KV-cache slot in each group, ``pad_id`` over the tail of ``out``."""

def gather_windows(
    table: npt.NDArray[Any] | Any,
    rows: _Indices,
    starts: _Indices | None = None,
    *,
    offsets: _Indices | None = None,
    lens: _Indices | None = None,
    width: int | None = None,
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    """``table[rows[r], starts[r]:starts[r] + len_r]`` for every entry, ragged or in rows."""

def pad_to_length(
    arr: npt.NDArray[Any] | Any,
    length: int,
    axis: int = 0,
    pad_value: Any = None,
    *,
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    """``arr`` padded along ``axis`` to exactly ``length``; ``arr`` itself when it already is."""

def pad_to_bucket(
    arr: npt.NDArray[Any] | Any,
    buckets: Sequence[int],
    axis: int = 0,
    pad_value: Any = None,
    *,
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    """``arr`` padded along ``axis`` to the smallest bucket size that holds it."""

def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest of ``buckets`` that is at least ``n``."""

def cuda_graph_sizes(max_size: int) -> list[int]:
    """vLLM's default CUDA-graph capture sizes up to ``max_size``: 1, 2, 4, 8, 16, ..."""

def prepare_step(
    state_index: _Indices,
    num_computed: _Indices,
    num_scheduled: _Indices,
    token_ids: npt.NDArray[np.int32],
    block_tables: npt.NDArray[np.int32] | Sequence[npt.NDArray[np.int32]],
    num_blocks: npt.NDArray[np.int32] | Sequence[npt.NDArray[np.int32]],
    block_sizes: int | Sequence[int],
    *,
    padding: int | Sequence[int] | None = None,
    out: dict[str, npt.NDArray[Any]] | None = None,
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, int]]:
    """One step's input preparation, fused: ``(outputs, plan)``."""

class StagedWrites:
    """Writes to a ``[rows, cols]`` table, queued and applied together (later writes win)."""

    def __init__(self, rows: int, cols: int, dtype: _DType | None = None) -> None: ...
    def stage(self, row: int, start: int, values: npt.NDArray[Any] | Sequence[Any]) -> None: ...
    def apply(self, table: npt.NDArray[Any]) -> None: ...
    def clear(self) -> None: ...
    @property
    def staged_values(self) -> int: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    def __len__(self) -> int: ...

def backend_info() -> dict[str, Any]:
    """The backend buffers use, and why the host when no GPU is used."""

class DeviceArray:
    """Memory exported without a copy (DLPack, array interfaces): a side of a buffer, a result
    of an operation on CUDA memory, or a view of one."""

    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def data_ptr(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def readonly(self) -> bool: ...
    @property
    def device(self) -> str: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...
    def __dlpack__(
        self,
        *,
        stream: _Stream = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> Any: ...
    @property
    def __array_interface__(self) -> dict[str, Any]: ...
    @property
    def __cuda_array_interface__(self) -> dict[str, Any]: ...
    def numpy(self) -> npt.NDArray[Any]: ...
    def copy_to_host(self, *, stream: _Stream = None) -> npt.NDArray[Any]: ...
    def copy_from_host(self, src: npt.NDArray[Any]) -> None: ...
    def __getitem__(self, key: SupportsIndex | slice | Any) -> DeviceArray: ...
    def __len__(self) -> int: ...

class CpuGpuBuffer:
    """A paired CPU/GPU buffer whose sides numpy views in place."""

    def __init__(
        self,
        name: str,
        shape: _Shape,
        dtype: _DType | None = None,
        pinned: bool = False,
        *,
        placement: MemoryPlacement | str | None = None,
        manager: PinnedMemoryManager | None = None,
    ) -> None: ...
    @classmethod
    def allocate(
        cls,
        name: str,
        shape: _Shape,
        dtype: _DType | None = None,
        pinned: bool = False,
        *,
        placement: MemoryPlacement | str | None = None,
        manager: PinnedMemoryManager | None = None,
    ) -> CpuGpuBuffer: ...
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def cpu(self) -> npt.NDArray[Any]: ...
    @property
    def np(self) -> npt.NDArray[Any]: ...
    @property
    def gpu(self) -> npt.NDArray[Any] | DeviceArray: ...
    @property
    def is_pinned(self) -> bool: ...
    @property
    def placement(self) -> MemoryPlacement: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def slot(self) -> int | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def cpu_dirty(self) -> bool: ...
    @property
    def gpu_dirty(self) -> bool: ...
    def cpu_to_gpu(self) -> None: ...
    def gpu_to_cpu(self) -> None: ...
    def copy_to_gpu(self, n: int | None = None) -> None: ...
    def copy_to_cpu(self, n: int | None = None) -> None: ...
    def sync(self) -> Literal["copied_to_gpu", "copied_to_cpu", "up_to_date"]: ...
    def mark_cpu_dirty(self) -> None: ...
    def mark_gpu_dirty(self) -> None: ...
    def fill(self, value: Any) -> None: ...
    def reset(self) -> None: ...
    def slice(self, *slices: Any) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | DeviceArray]: ...
    def device_array(self, side: Literal["cpu", "gpu"] = "gpu") -> DeviceArray: ...
    def __dlpack__(
        self,
        *,
        stream: _Stream = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> Any: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> CpuGpuBuffer: ...
    def __exit__(self, *args: object) -> bool: ...

class UvaBufferPool:
    """Named paired buffers with ``depth`` round-robin slots each."""

    def __init__(self, name: str = "default", depth: int = 2, manager: PinnedMemoryManager | None = None) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def depth(self) -> int: ...
    def allocate(
        self,
        name: str,
        shape: _Shape,
        dtype: _DType | None = None,
        pinned: bool = True,
        *,
        placement: MemoryPlacement | str | None = None,
    ) -> CpuGpuBuffer: ...
    def get(self, name: str) -> CpuGpuBuffer | None: ...
    def release(self, name: str) -> bool: ...
    def clear(self) -> None: ...
    @property
    def total_bytes(self) -> int: ...
    @property
    def num_buffers(self) -> int: ...
    def sync_all(self) -> dict[str, int]: ...
    def stats(self) -> dict[str, Any]: ...

class PinnedMemoryManager:
    """Pinned host memory under a byte budget, handed out as numpy arrays."""

    def __init__(self, max_bytes: int | None = None) -> None: ...
    def allocate(self, shape: _Shape, dtype: _DType | None = None) -> npt.NDArray[Any]: ...
    def free(self, buf: npt.NDArray[Any]) -> bool: ...
    def clear(self) -> None: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def allocated_bytes(self) -> int: ...
    @property
    def available_bytes(self) -> int: ...
    @property
    def cached_bytes(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
