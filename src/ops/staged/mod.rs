//! Staged writes: (row, start column, values) queued on the host between steps, applied to a
//! device table with one packed upload and one launch (vLLM's `StagedWriteTensor`).

#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use std::fmt;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element};
use crate::error::{Error, Op, Result};
use crate::memory::DeviceViewMut;
use crate::ops::check_shape;
use crate::shape::Shape;

const OP: Op = Op::StagedWrite;

/// Round-robin staging slots: an apply reuses a slot only once the upload of the apply that
/// used it two calls earlier has completed (vLLM's `max_concurrency` of 2).
pub const STAGING_DEPTH: usize = 2;

/// One queued write: `len` values from `src` of the value list, at flat element `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub dst: usize,
    pub src: usize,
    pub len: usize,
}

/// Writes to a `[rows, cols]` device table, queued on the host and applied together.
///
/// Batching code stages the step's block-table updates as they come
/// ([`stage`](Self::stage): a request's new block ids at its row, after its current blocks),
/// then [`apply`](Self::apply)s them all before the step's kernels run. On CUDA an apply is one
/// packed upload (write descriptors and values, from page-locked staging memory) and one launch;
/// on the host backend it copies directly.
///
/// Semantics: writes are applied in queue order, so where two writes of one apply overlap the
/// later one wins (vLLM leaves that to the order its kernel's blocks run in). Bounds are checked
/// when a write is staged, so an apply has no data errors.
///
/// Staging memory (CUDA): [`STAGING_DEPTH`] page-locked blocks used in turn. A block is reused
/// only after the upload that read it has completed (an event), so a write staged for the next
/// step never lands in memory an in-flight copy is still reading. A block too small for an apply
/// is replaced by one of `max(needed, 1.25 x old)` bytes rounded to 256: it is never doubled,
/// stays within a quarter of the largest apply, and regrows a bounded number of times.
///
/// ```
/// use cpugpu::{Device, StagedWrites};
/// let dev = Device::auto();
/// let mut block_table = dev.alloc::<i32>(&[4, 8])?;
/// let mut writes = StagedWrites::<i32>::new(&dev, 4, 8);
/// writes.stage(2, 0, &[17, 3, 9])?;   // a new request in state 2 gets blocks 17, 3, 9
/// writes.stage(0, 5, &[40])?;         // request 0 grows by one block, after its first five
/// writes.apply(block_table.view_mut())?;
/// let t = block_table.to_vec()?;
/// assert_eq!(&t[16..19], &[17, 3, 9]);
/// assert_eq!(t[5], 40);
/// assert!(writes.is_empty());
/// # Ok::<(), cpugpu::Error>(())
/// ```
pub struct StagedWrites<T: Element> {
    device: Device,
    rows: usize,
    cols: usize,
    /// (row, start, offset into `values`, len), in queue order.
    writes: Vec<(usize, usize, usize, usize)>,
    values: Vec<T>,
    #[cfg(cpugpu_cuda)]
    staging: launch::Staging,
}

impl<T: Element> StagedWrites<T> {
    /// An empty queue of writes to a `[rows, cols]` table on `device`.
    pub fn new(device: &Device, rows: usize, cols: usize) -> Self {
        width_of::<T>();
        StagedWrites {
            device: device.clone(),
            rows,
            cols,
            writes: Vec::new(),
            values: Vec::new(),
            #[cfg(cpugpu_cuda)]
            staging: launch::Staging::default(),
        }
    }

    /// Queues `values` for `table[row, start..start + values.len()]`. An empty `values` queues
    /// nothing. A row outside the table is [`Error::IndexOutOfBounds`], a range past the row
    /// [`Error::WindowOutOfRange`], both naming the write's position in the queue; nothing is
    /// queued then.
    pub fn stage(&mut self, row: usize, start: usize, values: &[T]) -> Result<()> {
        let position = self.writes.len();
        if row >= self.rows {
            return Err(Error::IndexOutOfBounds {
                op: OP,
                position,
                index: i64::try_from(row).unwrap_or(i64::MAX),
                bound: self.rows,
            });
        }
        if start > self.cols || values.len() > self.cols - start {
            return Err(Error::WindowOutOfRange {
                op: OP,
                position,
                start: i64::try_from(start).unwrap_or(i64::MAX),
                len: i64::try_from(values.len()).unwrap_or(i64::MAX),
                cols: self.cols,
            });
        }
        if values.is_empty() {
            return Ok(());
        }
        self.writes
            .push((row, start, self.values.len(), values.len()));
        self.values.extend_from_slice(values);
        Ok(())
    }

    /// Writes queued since the last apply.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Values queued since the last apply.
    pub fn staged_values(&self) -> usize {
        self.values.len()
    }

    /// Drops the queued writes.
    pub fn clear(&mut self) {
        self.writes.clear();
        self.values.clear();
    }

    /// Bytes of page-locked staging memory held (0 on the host backend).
    pub fn staging_bytes(&self) -> usize {
        #[cfg(cpugpu_cuda)]
        return self.staging.bytes();
        #[cfg(not(cpugpu_cuda))]
        0
    }

    /// How many staging blocks have been allocated so far (each regrowth counts).
    pub fn staging_allocations(&self) -> u64 {
        #[cfg(cpugpu_cuda)]
        return self.staging.allocations;
        #[cfg(not(cpugpu_cuda))]
        0
    }

    /// The queued writes as disjoint pieces: a later write wins where writes overlap.
    pub(crate) fn pieces(&self) -> Vec<Piece> {
        resolve(&self.writes, self.cols)
    }

    /// Applies every queued write to `dst` (shape `[rows, cols]`) and clears the queue. On CUDA:
    /// one packed upload and one launch, enqueued on the device's stream (failures of the copy
    /// or launch come back here or from [`Device::synchronize`]); nothing happens when the queue
    /// is empty.
    pub fn apply(&mut self, dst: DeviceViewMut<'_, T>) -> Result<()> {
        let want = Shape::for_op(OP, &[self.rows, self.cols])?;
        check_shape(OP, "dst's shape", want, dst.shape())?;
        if self.writes.is_empty() {
            return Ok(());
        }
        let pieces = self.pieces();
        match self.device.kind() {
            BackendKind::Host => {
                let d = dst.into_host(OP)?;
                for p in &pieces {
                    d[p.dst..p.dst + p.len].copy_from_slice(&self.values[p.src..p.src + p.len]);
                }
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                launch::apply(&self.device, &mut self.staging, &pieces, &self.values, dst)?
            }
        }
        self.clear();
        Ok(())
    }
}

impl<T: Element> fmt::Debug for StagedWrites<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedWrites")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("writes", &self.writes.len())
            .field("values", &self.values.len())
            .field("staging_bytes", &self.staging_bytes())
            .finish()
    }
}

/// Disjoint pieces of the writes `(row, start, src, len)` (flat destination `row * cols +
/// start`), where a later write wins over an earlier one on the elements both cover. The usual
/// case, no overlap, is one sort and one scan.
pub(crate) fn resolve(writes: &[(usize, usize, usize, usize)], cols: usize) -> Vec<Piece> {
    let all: Vec<Piece> = writes
        .iter()
        .map(|&(row, start, src, len)| Piece {
            dst: row * cols + start,
            src,
            len,
        })
        .collect();
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_unstable_by_key(|&i| all[i].dst);
    let disjoint = order
        .windows(2)
        .all(|w| all[w[0]].dst + all[w[0]].len <= all[w[1]].dst);
    if disjoint {
        return all;
    }
    // Latest first: each write keeps what no later write covers.
    let mut covered = std::collections::BTreeMap::<usize, usize>::new(); // start -> end
    let mut out = Vec::new();
    for w in all.iter().rev() {
        let (a, b) = (w.dst, w.dst + w.len);
        let mut at = a;
        // Covered intervals overlapping [a, b): the one starting before a, then those inside.
        let mut overlapping: Vec<(usize, usize)> = Vec::new();
        if let Some((&s, &e)) = covered.range(..a).next_back() {
            if e > a {
                overlapping.push((s, e));
            }
        }
        overlapping.extend(covered.range(a..b).map(|(&s, &e)| (s, e)));
        for &(s, e) in &overlapping {
            if s > at {
                out.push(Piece {
                    dst: at,
                    src: w.src + (at - a),
                    len: s - at,
                });
            }
            at = at.max(e);
        }
        if at < b {
            out.push(Piece {
                dst: at,
                src: w.src + (at - a),
                len: b - at,
            });
        }
        // Merge [a, b) with what it overlaps.
        let (mut lo, mut hi) = (a, b);
        for (s, e) in overlapping {
            covered.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        covered.insert(lo, hi);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(pieces: &[Piece], values: &[i32], n: usize) -> Vec<i32> {
        let mut d = vec![0; n];
        for p in pieces {
            d[p.dst..p.dst + p.len].copy_from_slice(&values[p.src..p.src + p.len]);
        }
        d
    }

    #[test]
    fn later_writes_win_and_pieces_are_disjoint() {
        // Sequential application of the writes is the reference.
        let writes = [
            (0, 0, 0, 4),
            (0, 2, 4, 4),
            (0, 1, 8, 1),
            (1, 0, 9, 2),
            (0, 5, 11, 3),
        ];
        let values: Vec<i32> = (1..=14).collect();
        let mut want = vec![0; 16];
        for &(r, s, src, len) in &writes {
            want[r * 8 + s..r * 8 + s + len].copy_from_slice(&values[src..src + len]);
        }
        let pieces = resolve(&writes, 8);
        let mut spans: Vec<(usize, usize)> = pieces.iter().map(|p| (p.dst, p.len)).collect();
        spans.sort_unstable();
        assert!(spans.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
        assert_eq!(apply(&pieces, &values, 16), want);
    }
}
