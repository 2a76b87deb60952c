//! The crate's one error type.
//!
//! Every variant names the operation that failed ([`Op`]) and carries what a caller needs to fix
//! the call: the offending position, value or limit. Nothing in this crate panics on user input;
//! bad input comes back as one of these.

use std::fmt;

use crate::placement::MemoryPlacement;
use crate::shape::Shape;

/// `Result<T, cpugpu::Error>`.
///
/// `Error` is kept small (shapes are boxed), so returning it costs little on the success path.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The operation an [`Error`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `dst[i, ..] = src[idx[i], ..]`
    GatherRows,
    /// `dst[idx[i], ..] = src[i, ..]`
    ScatterRows,
    /// Pad along one axis up to the next multiple.
    PadToMultiple,
    /// n lengths to n + 1 offsets.
    PrefixSumOffsets,
    /// Ragged arrays to one buffer plus offsets.
    Flatten,
    /// One buffer plus offsets to segments.
    Split,
    /// A host-to-device copy of a paired buffer.
    CopyToDevice,
    /// A device-to-host copy of a paired buffer.
    CopyToHost,
    /// A dirty-flag driven sync of a paired buffer.
    Sync,
    /// Allocation of a buffer.
    Allocate,
    /// A row-range slice of a buffer.
    Slice,
    /// A resize of a buffer.
    Resize,
    /// A pool allocation (create or reuse a named buffer).
    PoolAllocate,
    /// A typed pool look-up.
    PoolGet,
    /// A pinned-memory manager allocation.
    PinnedAllocate,
    /// Opening a device (context, kernel module, stream) or waiting for its work.
    Device,
    /// A stream or event call.
    Stream,
    /// A copy between two device views.
    CopyDeviceToDevice,
    /// A fill of device memory.
    Fill,
    /// Segment expansion: counts or offsets to a segment id and a position per element.
    ExpandSegments,
    /// Slot mapping through the block tables of one or several KV-cache groups.
    SlotMapping,
    /// A windowed row gather: `table[row[r], start[r]..start[r] + len[r]]` for every entry.
    GatherWindows,
    /// Queued writes of (row, start column, values) applied to a device table.
    StagedWrite,
    /// Pad along one axis to an exact length.
    PadToLength,
    /// Pad along one axis to the smallest of a list of bucket sizes.
    PadToBucket,
    /// The fused input preparation of one step.
    PrepareStep,
}

impl Op {
    /// The operation's name as it appears in messages, e.g. `"gather_rows"`.
    pub const fn name(self) -> &'static str {
        match self {
            Op::GatherRows => "gather_rows",
            Op::ScatterRows => "scatter_rows",
            Op::PadToMultiple => "pad_to_multiple",
            Op::PrefixSumOffsets => "prefix_sum_offsets",
            Op::Flatten => "flatten",
            Op::Split => "split",
            Op::CopyToDevice => "copy_to_device",
            Op::CopyToHost => "copy_to_host",
            Op::Sync => "sync",
            Op::Allocate => "allocate",
            Op::Slice => "slice",
            Op::Resize => "resize",
            Op::PoolAllocate => "pool_allocate",
            Op::PoolGet => "pool_get",
            Op::PinnedAllocate => "pinned_allocate",
            Op::Device => "device",
            Op::Stream => "stream",
            Op::CopyDeviceToDevice => "copy_device_to_device",
            Op::Fill => "fill",
            Op::ExpandSegments => "expand_segments",
            Op::SlotMapping => "slot_mapping",
            Op::GatherWindows => "gather_windows",
            Op::StagedWrite => "staged_write",
            Op::PadToLength => "pad_to_length",
            Op::PadToBucket => "pad_to_bucket",
            Op::PrepareStep => "prepare_step",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in `cpugpu`.
///
/// Field meanings are given by each variant's documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // fields are described by each variant's documentation
pub enum Error {
    /// Under the checked index policy, `indices[position] = index` is outside `0..bound`.
    IndexOutOfBounds {
        op: Op,
        position: usize,
        index: i64,
        bound: usize,
    },
    /// `lengths[position] = value` is negative.
    NegativeLength { op: Op, position: usize, value: i64 },
    /// The running offset after `lengths[position]` exceeds `limit`, the largest value of the
    /// offset type.
    OffsetOverflow { op: Op, position: usize, limit: i64 },
    /// `offsets[position] = value` is smaller than `offsets[position - 1] = previous`.
    OffsetsNotMonotonic {
        op: Op,
        position: usize,
        previous: i64,
        value: i64,
    },
    /// `offsets[position] = value` is negative or past the end of a buffer of `len` elements.
    OffsetOutOfRange {
        op: Op,
        position: usize,
        value: i64,
        len: usize,
    },
    /// A length (`what`) is `actual` where `expected` is required.
    LengthMismatch {
        op: Op,
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A shape (`what`) is `actual` where `expected` is required.
    ShapeMismatch {
        op: Op,
        what: &'static str,
        expected: Box<Shape>,
        actual: Box<Shape>,
    },
    /// `axis` does not exist in an array of `ndim` dimensions.
    AxisOutOfRange { op: Op, axis: usize, ndim: usize },
    /// An argument has a value the operation cannot take.
    InvalidArgument {
        op: Op,
        name: &'static str,
        value: i128,
        reason: &'static str,
    },
    /// `placement` cannot be used here (for example a paired buffer's host side in device
    /// memory).
    UnsupportedPlacement {
        op: Op,
        placement: MemoryPlacement,
        reason: &'static str,
    },
    /// A size computed from the arguments (`what`) overflows `usize`.
    SizeOverflow { op: Op, what: &'static str },
    /// A shape has more dimensions than [`Shape::MAX_DIMS`].
    TooManyDims { op: Op, ndim: usize, max: usize },
    /// The row range `start..end` does not fit in a buffer of `rows` rows.
    RowRangeOutOfBounds {
        op: Op,
        start: usize,
        end: usize,
        rows: usize,
    },
    /// Both sides of the paired buffer `name` were written since the last sync; neither is
    /// overwritten. Resolve it with an explicit `copy_to_device` or `copy_to_host`.
    SyncConflict { op: Op, name: String },
    /// The pool already holds `name` with another shape or element type.
    PoolKeyMismatch {
        op: Op,
        name: String,
        existing_shape: Box<Shape>,
        existing_type: &'static str,
        existing_placement: MemoryPlacement,
        requested_shape: Box<Shape>,
        requested_type: &'static str,
        requested_placement: MemoryPlacement,
    },
    /// The pool holds no buffer called `name`.
    PoolNameNotFound { op: Op, name: String },
    /// Every round-robin slot of `name` (there are `depth`) is still held by an in-flight step.
    PoolSlotsBusy { op: Op, name: String, depth: usize },
    /// A pinned allocation of `requested` bytes does not fit: `available` of `budget` bytes are
    /// free.
    PinnedBudgetExceeded {
        op: Op,
        requested: usize,
        available: usize,
        budget: usize,
    },
    /// The system allocator refused `bytes` bytes.
    OutOfMemory { op: Op, bytes: usize },
    /// An allocation of `bytes` bytes was requested: more than `max` (`isize::MAX`), the largest
    /// allocation Rust allows, so no allocator was asked.
    AllocationTooLarge { op: Op, bytes: usize, max: usize },
    /// A CUDA driver call failed: `call` is the driver function, `code` its `CUresult` and
    /// `name` the driver's name for it (e.g. `CUDA_ERROR_OUT_OF_MEMORY`).
    Driver {
        op: Op,
        call: &'static str,
        code: u32,
        name: &'static str,
    },
    /// An operand lives on another backend or device than the one running the operation (e.g.
    /// a host slice given to a CUDA device, or memory of GPU 1 given to GPU 0).
    WrongDevice {
        op: Op,
        what: &'static str,
        expected: &'static str,
        actual: &'static str,
    },
    /// Token `position` needs block `block` (its position divided by the block size) of its
    /// block-table row in KV-cache group `group`, which has only `valid` valid blocks (a
    /// negative position needs a negative block).
    BlockOutOfRange {
        op: Op,
        position: usize,
        group: usize,
        block: i64,
        valid: i64,
    },
    /// The block-table entry token `position` needs in KV-cache group `group` is a negative
    /// block number, `value`.
    NegativeBlock {
        op: Op,
        position: usize,
        group: usize,
        value: i64,
    },
    /// The window `start..start + len` of entry `position` does not fit in `cols` columns (a
    /// negative start or length included).
    WindowOutOfRange {
        op: Op,
        position: usize,
        start: i64,
        len: i64,
        cols: usize,
    },
    /// A value computed for entry `position` exceeds `limit`, the output type's maximum.
    ValueOverflow { op: Op, position: usize, limit: i64 },
    /// `value` is above `largest`, the largest bucket size.
    AboveLargestBucket {
        op: Op,
        value: usize,
        largest: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::IndexOutOfBounds {
                op,
                position,
                index,
                bound,
            } => write!(
                f,
                "{op}: indices[{position}] = {index} is out of bounds for {bound} rows"
            ),
            Error::NegativeLength {
                op,
                position,
                value,
            } => write!(f, "{op}: lengths[{position}] = {value} is negative"),
            Error::OffsetOverflow {
                op,
                position,
                limit,
            } => write!(
                f,
                "{op}: the offset after lengths[{position}] exceeds {limit}, the offset type's maximum"
            ),
            Error::OffsetsNotMonotonic {
                op,
                position,
                previous,
                value,
            } => write!(
                f,
                "{op}: offsets[{position}] = {value} is smaller than the offset before it, {previous}"
            ),
            Error::OffsetOutOfRange {
                op,
                position,
                value,
                len,
            } => write!(
                f,
                "{op}: offsets[{position}] = {value} is outside 0..={len} (the buffer's length)"
            ),
            Error::LengthMismatch {
                op,
                what,
                expected,
                actual,
            } => write!(f, "{op}: {what} is {actual}, expected {expected}"),
            Error::ShapeMismatch {
                op,
                what,
                expected,
                actual,
            } => write!(f, "{op}: {what} is {actual}, expected {expected}"),
            Error::AxisOutOfRange { op, axis, ndim } => {
                write!(f, "{op}: axis {axis} is out of range for {ndim} dimensions")
            }
            Error::InvalidArgument {
                op,
                name,
                value,
                reason,
            } => write!(f, "{op}: {name} = {value}: {reason}"),
            Error::UnsupportedPlacement {
                op,
                placement,
                reason,
            } => write!(f, "{op}: placement {placement}: {reason}"),
            Error::SizeOverflow { op, what } => write!(f, "{op}: {what} overflows usize"),
            Error::TooManyDims { op, ndim, max } => {
                write!(f, "{op}: {ndim} dimensions, at most {max} are supported")
            }
            Error::RowRangeOutOfBounds {
                op,
                start,
                end,
                rows,
            } => write!(
                f,
                "{op}: rows {start}..{end} are out of bounds for a buffer of {rows} rows"
            ),
            Error::SyncConflict { op, name } => write!(
                f,
                "{op}: buffer {name:?} was written on both the host and the device since the last \
                 copy; copy explicitly in the direction you mean"
            ),
            Error::PoolKeyMismatch {
                op,
                name,
                existing_shape,
                existing_type,
                existing_placement,
                requested_shape,
                requested_type,
                requested_placement,
            } => write!(
                f,
                "{op}: {name:?} exists as {existing_placement} {existing_type}{existing_shape}, \
                 requested {requested_placement} {requested_type}{requested_shape}"
            ),
            Error::PoolNameNotFound { op, name } => write!(f, "{op}: no buffer named {name:?}"),
            Error::PoolSlotsBusy { op, name, depth } => write!(
                f,
                "{op}: all {depth} round-robin slots of {name:?} are held by in-flight steps"
            ),
            Error::PinnedBudgetExceeded {
                op,
                requested,
                available,
                budget,
            } => write!(
                f,
                "{op}: {requested} bytes requested, {available} of the {budget}-byte \
                 budget available"
            ),
            Error::OutOfMemory { op, bytes } => {
                write!(f, "{op}: the allocator refused {bytes} bytes")
            }
            Error::AllocationTooLarge { op, bytes, max } => write!(
                f,
                "{op}: {bytes} bytes requested, more than {max} (isize::MAX), the largest \
                 allocation possible"
            ),
            Error::Driver {
                op,
                call,
                code,
                name,
            } => write!(f, "{op}: CUDA driver call {call} failed: {name} ({code})"),
            Error::WrongDevice {
                op,
                what,
                expected,
                actual,
            } => write!(f, "{op}: {what} is {actual} memory, this operation needs {expected} memory"),
            Error::BlockOutOfRange {
                op,
                position,
                group,
                block,
                valid,
            } => write!(
                f,
                "{op}: tokens[{position}] needs block {block} of its block-table row in KV-cache \
                 group {group}, which has {valid} valid blocks"
            ),
            Error::NegativeBlock {
                op,
                position,
                group,
                value,
            } => write!(
                f,
                "{op}: tokens[{position}] maps to the negative block number {value} in KV-cache \
                 group {group}"
            ),
            Error::WindowOutOfRange {
                op,
                position,
                start,
                len,
                cols,
            } => write!(
                f,
                "{op}: the window of entry [{position}], start {start} and length {len}, does not \
                 fit in {cols} columns"
            ),
            Error::ValueOverflow {
                op,
                position,
                limit,
            } => write!(
                f,
                "{op}: the value computed for [{position}] exceeds {limit}, the output type's maximum"
            ),
            Error::AboveLargestBucket { op, value, largest } => write!(
                f,
                "{op}: {value} is above the largest bucket size, {largest} (run it unpadded, or add \
                 a larger bucket)"
            ),
        }
    }
}

impl Error {
    /// The operation the error names.
    pub fn op(&self) -> Op {
        match self {
            Error::IndexOutOfBounds { op, .. }
            | Error::NegativeLength { op, .. }
            | Error::OffsetOverflow { op, .. }
            | Error::OffsetsNotMonotonic { op, .. }
            | Error::OffsetOutOfRange { op, .. }
            | Error::LengthMismatch { op, .. }
            | Error::ShapeMismatch { op, .. }
            | Error::AxisOutOfRange { op, .. }
            | Error::InvalidArgument { op, .. }
            | Error::UnsupportedPlacement { op, .. }
            | Error::SizeOverflow { op, .. }
            | Error::TooManyDims { op, .. }
            | Error::RowRangeOutOfBounds { op, .. }
            | Error::SyncConflict { op, .. }
            | Error::PoolKeyMismatch { op, .. }
            | Error::PoolNameNotFound { op, .. }
            | Error::PoolSlotsBusy { op, .. }
            | Error::PinnedBudgetExceeded { op, .. }
            | Error::OutOfMemory { op, .. }
            | Error::AllocationTooLarge { op, .. }
            | Error::Driver { op, .. }
            | Error::WrongDevice { op, .. }
            | Error::BlockOutOfRange { op, .. }
            | Error::NegativeBlock { op, .. }
            | Error::WindowOutOfRange { op, .. }
            | Error::ValueOverflow { op, .. }
            | Error::AboveLargestBucket { op, .. } => *op,
        }
    }

    /// The same error attributed to `op`: a call that fails inside a step it delegates (a
    /// `resize` whose allocation is refused, a pool `allocate` whose buffer does not fit)
    /// reports the call the user made.
    pub(crate) fn in_op(mut self, new: Op) -> Self {
        match &mut self {
            Error::IndexOutOfBounds { op, .. }
            | Error::NegativeLength { op, .. }
            | Error::OffsetOverflow { op, .. }
            | Error::OffsetsNotMonotonic { op, .. }
            | Error::OffsetOutOfRange { op, .. }
            | Error::LengthMismatch { op, .. }
            | Error::ShapeMismatch { op, .. }
            | Error::AxisOutOfRange { op, .. }
            | Error::InvalidArgument { op, .. }
            | Error::UnsupportedPlacement { op, .. }
            | Error::SizeOverflow { op, .. }
            | Error::TooManyDims { op, .. }
            | Error::RowRangeOutOfBounds { op, .. }
            | Error::SyncConflict { op, .. }
            | Error::PoolKeyMismatch { op, .. }
            | Error::PoolNameNotFound { op, .. }
            | Error::PoolSlotsBusy { op, .. }
            | Error::PinnedBudgetExceeded { op, .. }
            | Error::OutOfMemory { op, .. }
            | Error::AllocationTooLarge { op, .. }
            | Error::Driver { op, .. }
            | Error::WrongDevice { op, .. }
            | Error::BlockOutOfRange { op, .. }
            | Error::NegativeBlock { op, .. }
            | Error::WindowOutOfRange { op, .. }
            | Error::ValueOverflow { op, .. }
            | Error::AboveLargestBucket { op, .. } => *op = new,
        }
        self
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        // Every fallible call returns Result<_, Error>; a large Err makes every return slot large
        // (clippy::result_large_err warns at 128 bytes, in user code too).
        assert!(
            std::mem::size_of::<Error>() <= 96,
            "{}",
            std::mem::size_of::<Error>()
        );
    }
}
