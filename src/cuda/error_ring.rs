//! Errors the kernels find in the data (an index out of bounds, a negative length, an offset
//! overflow), read out without a host synchronisation per operation.
//!
//! Each queue has one device error word and a ring of read-out slots in mapped page-locked
//! memory. Every checked operation's last kernel copies the first bad position and the offending
//! element into the operation's slot (from the error word, which it then re-arms, or from its
//! own checks at batch sizes), and the host reads the slots in issue order at the next
//! synchronisation. A full ring is settled (the stream synchronised and its slots read) before
//! the next slot is handed out, keeping the first error.

use std::ptr;

use super::alloc::{DevAlloc, HostAlloc};
use super::driver as cu;
use crate::error::{Error, Op};

/// Entries of the error read-out ring; a full ring is settled (the stream synchronised and the
/// entries read) before the next capture.
pub(crate) const ERROR_SLOTS: usize = 256;

/// What a pending checked operation reports if its error word was set.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CheckKind {
    /// An index out of `0..bound` (negatives allowed or not).
    Index { bound: usize, signed32: bool },
    /// A negative length, or an offset past `limit`.
    Offsets { limit: i64, signed32: bool },
}

/// A pending report, in issue order.
#[derive(Debug)]
pub(crate) enum Pending {
    /// A checked operation's last kernel writes this slot of the read-out ring.
    Slot {
        op: Op,
        slot: usize,
        kind: CheckKind,
    },
    /// An error already known (a deferred failure, or the first error of a settled ring).
    Ready(Error),
}

pub(crate) struct ErrorRing {
    /// The device error word of this queue (one u64, re-armed by each checked operation's last
    /// kernel).
    pub(crate) word: DevAlloc,
    /// Mapped pinned memory: 2 u64 per slot (position, value), written by the last kernels.
    pub(crate) out: HostAlloc,
    pub(crate) out_dev: cu::CUdeviceptr,
    /// Reports not yet returned, in issue order.
    pub(crate) pending: Vec<Pending>,
    /// How many of `pending` are slots (their captures in flight or unread).
    pub(crate) slots_pending: usize,
    /// The slot the next capture writes.
    pub(crate) next: usize,
}

impl ErrorRing {
    /// A ring for work on `stream`: the error word armed ("no error") in stream order, every
    /// read-out slot starting as "no error" too, so a slot read too early cannot invent one.
    pub(crate) fn new(stream: &super::stream::Stream) -> crate::Result<ErrorRing> {
        let word = DevAlloc::filled(Op::Device, stream, 8, 0xFF)?;
        let out = HostAlloc::new(Op::Device, stream.context(), ERROR_SLOTS * 16, 0xFF)?;
        let out_dev = out.device_ptr(Op::Device)?;
        Ok(ErrorRing {
            word,
            out,
            out_dev,
            pending: Vec::new(),
            slots_pending: 0,
            next: 0,
        })
    }

    /// Takes the first `count` pending entries (issue order), keeping the slot count right.
    pub(crate) fn drain_front(&mut self, count: usize) -> Vec<Pending> {
        let count = count.min(self.pending.len());
        let done: Vec<Pending> = self.pending.drain(..count).collect();
        self.slots_pending -= done
            .iter()
            .filter(|p| matches!(p, Pending::Slot { .. }))
            .count();
        done
    }

    /// The first error among `entries` (issue order): a ready one, or a slot whose capture
    /// recorded a position. The slots' kernels must have completed.
    pub(crate) fn first_error(&self, entries: impl Iterator<Item = Pending>) -> Option<Error> {
        let base = self.out.ptr.cast::<u64>();
        for p in entries {
            let (op, slot, kind) = match p {
                Pending::Ready(e) => return Some(e),
                Pending::Slot { op, slot, kind } => (op, slot, kind),
            };
            // SAFETY: slot < ERROR_SLOTS, so both words lie inside the ring's allocation; the
            // capture kernel that writes them has completed (the caller synchronised the stream
            // after it was issued), and no kernel writes the slot again before it is reissued.
            let (pos, value) = unsafe {
                (
                    ptr::read_volatile(base.add(2 * slot)),
                    ptr::read_volatile(base.add(2 * slot + 1)),
                )
            };
            // SAFETY: as above; the slot is re-armed so a later lap cannot reread these words.
            unsafe {
                ptr::write_volatile(base.add(2 * slot), crate::kernels::abi::NO_ERROR);
                ptr::write_volatile(base.add(2 * slot + 1), 0);
            }
            if pos == crate::kernels::abi::NO_ERROR {
                continue;
            }
            let position = usize::try_from(pos).unwrap_or(usize::MAX);
            let widen = |signed32: bool| {
                if signed32 {
                    i64::from(value as u32 as i32)
                } else {
                    value as i64
                }
            };
            return Some(match kind {
                CheckKind::Index { bound, signed32 } => Error::IndexOutOfBounds {
                    op,
                    position,
                    index: widen(signed32),
                    bound,
                },
                CheckKind::Offsets { limit, signed32 } => {
                    let v = widen(signed32);
                    if v < 0 {
                        Error::NegativeLength {
                            op,
                            position,
                            value: v,
                        }
                    } else {
                        Error::OffsetOverflow {
                            op,
                            position,
                            limit,
                        }
                    }
                }
            });
        }
        None
    }
}
