//! Where an allocation lives: [`MemoryPlacement`].

use std::fmt;

/// Where an allocation lives.
///
/// | placement | what it is | on the host backend |
/// |---|---|---|
/// | `Host` | ordinary pageable host memory; uploads from it are staged by the driver | a `Vec` |
/// | `Pinned` | page-locked host memory: asynchronous, full-bandwidth uploads; scarce, so budgeted by [`PinnedMemoryManager`](crate::PinnedMemoryManager) | 256-byte-aligned heap memory |
/// | `Device` | device memory, read by kernels at full bandwidth | a second host allocation |
/// | `Uva` | pinned host memory mapped into the device's address space: kernels read it directly over the bus, no upload; best for data written every step and read once | one host allocation seen by both sides |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryPlacement {
    /// Pageable host memory.
    Host,
    /// Page-locked host memory.
    Pinned,
    /// Device memory.
    Device,
    /// Mapped pinned host memory the device reads directly (zero copy).
    Uva,
}

impl fmt::Display for MemoryPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryPlacement::Host => "host",
            MemoryPlacement::Pinned => "pinned",
            MemoryPlacement::Device => "device",
            MemoryPlacement::Uva => "uva",
        })
    }
}
