//! Errors the kernels find in the data (an index out of bounds, a negative length, an offset
//! overflow), read out without a host synchronisation per operation.
//!
//! Each queue has one device error word and a ring of read-out slots in mapped page-locked
//! memory. Every checked operation's last kernel (or, for the input-preparation operations, its
//! capture kernel) copies the first bad position and the offending element into the operation's
//! slot (from the error word, which it then re-arms, or from its own checks at batch sizes), and
//! the host reads the slots in issue order at the next synchronisation. A full ring is settled
//! (the stream synchronised and its slots read) before the next slot is handed out, keeping the
//! first error.

use std::ptr;

use super::alloc::{DevAlloc, HostAlloc};
use super::driver as cu;
use crate::error::{Error, Op};

/// Entries of the error read-out ring; a full ring is settled (the stream synchronised and the
/// entries read) before the next capture.
pub(crate) const ERROR_SLOTS: usize = 256;

/// Words per read-out slot: the error word, then the values the capture read (one for the six
/// operations' last kernels, up to three for the coded captures of the input-preparation
/// kernels).
pub(crate) const SLOT_WORDS: usize = 4;

/// Bits of a coded error word that hold the error's code: the word is `(position << 4) | code`,
/// so `atomicMin` keeps the first position and, at one position, the smallest code
/// (`CPUGPU_CODE_BITS` of `kernels/cpugpu_abi.h`).
pub(crate) const CODE_BITS: u32 = 4;

/// What a coded capture found: the position and code of the error word, the values its capture
/// kernel read, and the context the operation noted when it issued the capture.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CodedReport {
    pub(crate) op: Op,
    pub(crate) position: u64,
    pub(crate) code: u32,
    pub(crate) values: [u64; 3],
    pub(crate) ctx: [i64; 3],
}

/// What a pending checked operation reports if its error word was set.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CheckKind {
    /// An index out of `0..bound` (negatives allowed or not).
    Index { bound: usize, signed32: bool },
    /// A negative length, or an offset past `limit`.
    Offsets { limit: i64, signed32: bool },
    /// A coded error word (`(position << CODE_BITS) | code`) with up to three values, turned
    /// into an [`Error`] by the operation's own `decode`.
    Coded {
        decode: fn(&CodedReport) -> Error,
        ctx: [i64; 3],
    },
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
    /// Mapped pinned memory: [`SLOT_WORDS`] u64 per slot (the error word, then values), written
    /// by the operations' last kernels and the coded captures.
    pub(crate) out: HostAlloc,
    pub(crate) out_dev: cu::CUdeviceptr,
    /// Reports not yet returned, in issue order.
    pub(crate) pending: Vec<Pending>,
    /// How many of `pending` are slots (their captures in flight or unread).
    pub(crate) slots_pending: usize,
    /// The slot the next capture writes.
    pub(crate) next: usize,
    /// The word may hold an earlier operation's error: a re-arm failed.
    pub(crate) stale: bool,
}

impl ErrorRing {
    /// A ring for work on `stream`: the error word armed ("no error") in stream order, every
    /// read-out slot starting as "no error" too, so a slot read too early cannot invent one.
    pub(crate) fn new(stream: &super::stream::Stream) -> crate::Result<ErrorRing> {
        let word = DevAlloc::filled(Op::Device, stream, 8, 0xFF)?;
        let out = HostAlloc::new(
            Op::Device,
            stream.context(),
            ERROR_SLOTS * SLOT_WORDS * 8,
            0xFF,
        )?;
        let out_dev = out.device_ptr(Op::Device)?;
        Ok(ErrorRing {
            word,
            out,
            out_dev,
            pending: Vec::new(),
            slots_pending: 0,
            next: 0,
            stale: false,
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
            let mut words = [0u64; SLOT_WORDS];
            for (k, w) in words.iter_mut().enumerate() {
                // SAFETY: slot < ERROR_SLOTS and k < SLOT_WORDS, so the word lies inside the
                // ring's allocation; the capture kernel that writes the slot has completed (the
                // caller synchronised the stream after it was issued), and no kernel writes the
                // slot again before it is reissued.
                *w = unsafe { ptr::read_volatile(base.add(SLOT_WORDS * slot + k)) };
                // SAFETY: as above; the slot is re-armed so a later lap cannot reread the words.
                unsafe {
                    ptr::write_volatile(
                        base.add(SLOT_WORDS * slot + k),
                        if k == 0 {
                            crate::kernels::abi::NO_ERROR
                        } else {
                            0
                        },
                    )
                };
            }
            let (pos, value) = (words[0], words[1]);
            if pos == crate::kernels::abi::NO_ERROR {
                continue;
            }
            if let CheckKind::Coded { decode, ctx } = kind {
                return Some(decode(&CodedReport {
                    op,
                    position: pos >> CODE_BITS,
                    code: (pos & ((1 << CODE_BITS) - 1)) as u32,
                    values: [words[1], words[2], words[3]],
                    ctx,
                }));
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
                CheckKind::Coded { .. } => unreachable!("decoded above"),
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
