//! The CUDA backend's runtime, one file per resource:
//!
//! | file | what |
//! |---|---|
//! | `driver.rs` | the driver entry points, declared once for libcuda and the emulated driver |
//! | `result.rs` | `CUresult` to [`Error::Driver`](crate::Error::Driver); whether a device exists |
//! | `context.rs` | primary contexts, the kernel module, the crate's memory pool |
//! | `stream.rs` | [`Stream`](crate::cuda::Stream) and [`Event`](crate::cuda::Event) |
//! | `alloc.rs` | device memory, page-locked mapped host memory, copies and memsets |
//! | `error_ring.rs` | errors the kernels find in the data, read out at synchronisation |
//! | `queue.rs` | a device handle's stream, ordering, launches and metadata staging |
//! | `fill.rs` | filling device memory with one element |
//! | `emu.rs` | the emulated GPU's test interface (`--features emulator`) |
//!
//! Each operation's launch sequence sits beside the operation, in `src/ops/<op>/launch.rs`.
//!
//! The crate keeps its own thin owners (not cust's `Stream`/`DeviceBuffer`) because it must
//! also accept streams and device pointers made by other libraries in the same process.
//! Contexts are the devices' *primary* contexts (what the CUDA runtime, PyTorch and CuPy use), so
//! memory and streams interoperate. Each context is retained once per process, and the kernel
//! module is loaded into it once.

pub(crate) mod alloc;
pub(crate) mod context;
pub(crate) mod driver;
#[cfg(cpugpu_emulated)]
pub mod emu;
pub(crate) mod error_ring;
pub(crate) mod fill;
pub(crate) mod queue;
pub(crate) mod result;
pub(crate) mod stream;

pub use context::FATBIN_ARCHS;
pub use stream::{Event, Stream};

pub(crate) use alloc::{
    copy_dtod_async, copy_dtoh_async, copy_htod_async, copy_htod_sync, DevAlloc, HostAlloc,
};
pub(crate) use context::Context;
pub(crate) use error_ring::{CheckKind, CodedReport, CODE_BITS};
pub(crate) use queue::{CaptureSlot, Joined, Queue};
pub(crate) use result::probe;
