//! `cpugpu`: paired CPU/GPU buffers, a pinned-memory manager, a pool of named buffers and the six
//! data-movement operations that batching code in inference engines runs every step.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod buffer;
mod device;
mod element;
mod error;
mod memory;
pub mod ops;
mod pinned;
mod pool;
mod shape;

pub use buffer::{BufferSlice, CpuGpuBuffer, SyncOutcome};
pub use device::{BackendKind, Device, MemoryPlacement};
pub use element::{Element, Index, Offset};
pub use error::{Error, Op, Result};
pub use memory::{DeviceBuffer, DeviceView, DeviceViewMut, HostBuffer};
pub use ops::pad::DevicePadded;
pub use ops::{GatherPolicy, ScatterPolicy};
pub use pinned::{
    PinnedBuffer, PinnedMemoryManager, PinnedStats, PINNED_ALIGN, REUSE_SLACK_DIVISOR,
};
pub use pool::{PoolBuffer, PoolStats, SyncReport, UvaBufferPool};
pub use shape::Shape;

/// The host implementations of the six operations, on plain slices.
///
/// These are the reference every backend is tested against and the fallback backend itself.
pub mod host {
    pub use crate::ops::flatten::host::{flatten, flatten_into};
    pub use crate::ops::gather::host::{gather_rows, gather_rows_into};
    pub use crate::ops::offsets::host::{prefix_sum_offsets, prefix_sum_offsets_into};
    pub use crate::ops::pad::host::{pad_to_multiple, pad_to_multiple_into, Padded};
    pub use crate::ops::scatter::host::scatter_rows_into;
    pub use crate::ops::split::host::{split, split_into, Segments};
}
