//! `cpugpu`: paired CPU/GPU buffers, a pinned-memory manager, a pool of named buffers and the six
//! data-movement operations that batching code in inference engines runs every step.
//!
//! # A batching step
//!
//! ```
//! use cpugpu::{Device, DeviceBuffer, DeviceView, GatherPolicy, UvaBufferPool};
//!
//! let dev = Device::auto(); // a GPU (real or emulated) when the build has one, else the host
//! let pool = UvaBufferPool::new(&dev, 2); // two steps in flight at most
//!
//! // Three requests with ragged token lists.
//! let requests: [&[i32]; 3] = [&[101, 7592, 2088], &[101], &[101, 2129]];
//! let bufs = requests
//!     .iter()
//!     .map(|r| dev.upload(r, &[r.len()]))
//!     .collect::<Result<Vec<DeviceBuffer<i32>>, _>>()?;
//! let parts: Vec<DeviceView<'_, i32>> = bufs.iter().map(|b| b.view()).collect();
//!
//! // input_ids and query_start_loc in one call.
//! let (input_ids, query_start_loc) = dev.flatten::<i32, i32>(&parts)?;
//! assert_eq!(query_start_loc.to_vec()?, [0, 3, 4, 6]);
//!
//! // Pad to a CUDA-graph size.
//! let padded = dev.pad_to_multiple(input_ids.view(), 0, 8, 0)?;
//! assert_eq!(padded.shape().rows(), 8);
//!
//! // Each token's row of a per-request table (here: the request's id times 10).
//! let table = dev.upload(&[0i64, 10, 20], &[3, 1])?;
//! let req_of_token = dev.upload(&[0i32, 0, 0, 1, 2, 2], &[6])?;
//! let per_token = dev.gather_rows(table.view(), req_of_token.view(), GatherPolicy::Checked)?;
//! assert_eq!(per_token.to_vec()?, [0, 0, 0, 10, 20, 20]);
//!
//! // Stage through the pool and upload only the active prefix.
//! let mut ids = pool.allocate::<i32>("input_ids", &[8192])?;
//! padded.view().copy_to_host(&mut ids.host_mut()[..8])?;
//! ids.copy_to_device_rows(8)?;
//! # Ok::<(), cpugpu::Error>(())
//! ```
//!
//! # Map
//!
//! * [`Device`]: the backend handle; the six operations are its methods
//!   ([`Device::gather_rows`], [`Device::scatter_rows_into`], [`Device::pad_to_multiple`],
//!   [`Device::prefix_sum_offsets`], [`Device::flatten`], [`Device::split`]), each with an
//!   allocation-free `_into` form.
//! * [`DeviceBuffer`], [`DeviceView`], [`DeviceViewMut`]: device memory as `Vec<T>`, `&[T]` and
//!   `&mut [T]`, with a [`Shape`].
//! * [`CpuGpuBuffer`]: a host side and a device side with dirty tracking.
//! * [`UvaBufferPool`]: named buffers with round-robin slots owned by [`PoolBuffer`] guards.
//! * [`PinnedMemoryManager`]: pinned host memory under a byte budget.
//! * Input preparation, also on [`Device`]: [`Device::expand_segments_into`] (each token's
//!   request and position), [`Device::slot_mapping_into`] (through [`KvCacheGroup`] block
//!   tables), [`Device::gather_windows_into`] ([`WindowLayout`]), [`StagedWrites`] (block-table
//!   updates applied in one upload and one launch), [`Device::pad_to_length`] /
//!   [`Device::pad_to_bucket`] ([`bucket_for`], [`cuda_graph_sizes`]), and
//!   [`Device::prepare_step`], the whole step fused ([`StepRequests`], [`StepState`],
//!   [`StepOutputs`], [`StepPlan`]).
//! * [`host`]: every operation on plain slices, the reference implementation.
//! * [`Error`]: one error type; every variant names the [`Op`] and the offending value.
//! * `cuda` (with `--features cuda`, or `--features emulator` for the emulated GPU):
//!   `Device::cuda(n)`, streams and events (`cpugpu::cuda::{Stream, Event}`), and the kernels of
//!   `kernels/` launched on a stream; device-found errors come back from `Device::synchronize`.
//!
//! [`MemoryPlacement`] explains where each kind of allocation lives and when to use it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod buffer;
/// The CUDA backend's public handles: streams and events (`--features cuda`, or `--features
/// emulator` for the emulated GPU).
#[cfg(cpugpu_cuda)]
pub mod cuda;
mod device;
mod element;
mod error;
mod host_vec;
#[cfg(cpugpu_cuda)]
mod kernels;
mod memory;
pub mod ops;
mod par;
mod pinned;
mod placement;
mod pool;
mod shape;

pub use buffer::{BufferSlice, CpuGpuBuffer, SyncOutcome};
#[cfg(cpugpu_emulated)]
pub use cuda::emu;
pub use device::{BackendKind, Device};
pub use element::{Element, Index, Offset};
pub use error::{Error, Op, Result};
pub use host_vec::{HostVec, HOST_ALIGN, HUGE_PAGE_MIN_BYTES};
pub use memory::{DeviceBuffer, DeviceView, DeviceViewMut, HostBuffer};
pub use ops::expand::SegmentBounds;
pub use ops::pad::DevicePadded;
pub use ops::pad_to::{bucket_for, cuda_graph_sizes};
pub use ops::slots::{KvCacheGroup, PAD_SLOT_ID};
pub use ops::staged::{StagedWrites, STAGING_DEPTH};
pub use ops::step::{StepOutputs, StepPadding, StepPlan, StepRequests, StepState};
pub use ops::windows::WindowLayout;
pub use ops::{GatherPolicy, ScatterPolicy};
pub use pinned::{
    PinnedBuffer, PinnedMemoryManager, PinnedStats, PINNED_ALIGN, REUSE_SLACK_DIVISOR,
};
pub use placement::MemoryPlacement;
pub use pool::{PoolBuffer, PoolStats, SyncReport, UvaBufferPool};
pub use shape::Shape;

// The README's code blocks run as doc tests, so the README stays true to the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The host implementations of the operations, on plain slices.
///
/// These are the reference every backend is tested against and the fallback backend itself.
pub mod host {
    pub use crate::ops::expand::host::{expand_segments, expand_segments_into};
    pub use crate::ops::flatten::host::{flatten, flatten_into};
    pub use crate::ops::gather::host::{gather_rows, gather_rows_into};
    pub use crate::ops::offsets::host::{prefix_sum_offsets, prefix_sum_offsets_into};
    pub use crate::ops::pad::host::{pad_to_multiple, pad_to_multiple_into, Padded};
    pub use crate::ops::pad_to::host::{
        pad_to_bucket, pad_to_bucket_into, pad_to_length, pad_to_length_into,
    };
    pub use crate::ops::scatter::host::scatter_rows_into;
    pub use crate::ops::slots::host::{slot_mapping_into, KvCacheGroup};
    pub use crate::ops::split::host::{split, split_into, Segments, SegmentsIter};
    pub use crate::ops::step::host::{prepare_step_into, StepOutputs, StepTables};
    pub use crate::ops::windows::host::gather_windows_into;
}
