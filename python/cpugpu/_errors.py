"""cpugpu's exceptions.

Every exception cpugpu raises derives from :class:`Error`. Each subclass also derives from the
built-in exception a Python caller would expect for that kind of failure, so code written
against numpy's errors (``except IndexError``, ``except ValueError``, ``except MemoryError``)
keeps working. The message is the Rust crate's own message, naming the operation and the
offending position, value or limit. The crate's fields are attributes: ``op`` (the operation,
e.g. ``"gather_rows"``) on every error raised by the crate, plus the variant's fields
(``position``, ``index``, ``bound``, ``value``, ``expected``, ``actual``, ...).
"""

from __future__ import annotations

__all__ = [
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


class Error(Exception):
    """Base class of every cpugpu exception."""

    op: str | None = None


class IndexOutOfBoundsError(Error, IndexError):
    """An index outside ``0..rows`` under the checked policy, or a row range past the end; in
    input preparation also a KV-cache block past its row's valid blocks or a negative block
    number (``block``/``valid`` or ``value``, and ``group``), and a window past its row
    (``start``, ``len``, ``cols``)."""


class ShapeError(Error, ValueError):
    """Shapes or lengths that do not fit together, an axis out of range, too many dimensions,
    or a size that overflows."""


class OffsetsError(Error, ValueError):
    """A negative length, an offset past the offset type's maximum, or offsets that decrease or
    fall outside the array; also a computed value (a position, a slot) past its dtype's maximum
    (``limit``)."""


class InvalidArgumentError(Error, ValueError):
    """An argument with a value the operation cannot take (``multiple=0``, a placement a
    buffer cannot have, an unknown policy name), or a size above the largest bucket
    (``pad_to_bucket``, ``bucket_for``: ``value`` and ``largest``)."""


class LayoutError(Error, ValueError):
    """An array cpugpu would have to copy to use (not C-contiguous, misaligned), an output that
    is read-only, or an output that overlaps an input. cpugpu never copies silently: pass
    ``np.ascontiguousarray(x)`` if a copy is what you want."""


class DtypeError(Error, TypeError):
    """A dtype cpugpu does not move (complex, object, strings, byte-swapped, ...), or inputs
    whose dtypes differ."""


class ClosedBufferError(Error, ValueError):
    """An operation on a :class:`CpuGpuBuffer` after :meth:`CpuGpuBuffer.close`."""


class PoolKeyError(Error, ValueError):
    """A pool name requested with another shape, dtype or placement than it was created with
    (pool keys are exact), or a name the pool does not hold."""


class PoolBusyError(Error, RuntimeError):
    """Every round-robin slot of a pool name is held (by a live buffer object or a numpy view
    of one)."""


class SyncConflictError(Error, RuntimeError):
    """Both sides of a paired buffer were marked dirty; neither was overwritten. Copy explicitly
    (``cpu_to_gpu`` or ``gpu_to_cpu``) in the direction you mean."""


class BudgetExceededError(Error, MemoryError):
    """A pinned allocation that does not fit in the manager's byte budget."""


class OutOfMemoryError(Error, MemoryError):
    """The system allocator refused an allocation."""


class DeviceError(Error, RuntimeError):
    """A CUDA driver failure, or memory of one device given to another (e.g. GPU memory to a
    host operation)."""


class InternalError(Error, RuntimeError):
    """A bug in cpugpu (a Rust panic, caught before it reached Python). Please report it."""
