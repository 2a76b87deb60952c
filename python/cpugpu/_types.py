"""Plain-Python types of the cpugpu package."""

from __future__ import annotations

from enum import Enum

__all__ = ["MemoryPlacement"]


class MemoryPlacement(Enum):
    """Where a buffer's host side lives (the original module's ``MemoryPlacement``).

    * ``CPU``: pageable host memory (the crate's ``Host``).
    * ``PINNED``: page-locked host memory: asynchronous, full-bandwidth uploads.
    * ``UVA``: pinned host memory mapped into the device's address space: kernels read it
      directly, there is no separate device copy (zero copy).
    * ``GPU``: device memory; a paired buffer's host side cannot live there, so asking for it
      raises :class:`cpugpu.InvalidArgumentError`.

    On the host backend pinned memory is 256-byte-aligned heap memory and "device" memory a
    second host allocation, with the same semantics.
    """

    CPU = "cpu"
    GPU = "gpu"
    PINNED = "pinned"
    UVA = "uva"
