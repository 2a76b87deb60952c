//! Slot mapping through block tables (one or several KV-cache groups).

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use crate::device::{BackendKind, Device};
use crate::element::Index;

use crate::error::{Error, Op, Result};
use crate::memory::{DeviceView, DeviceViewMut};

const OP: Op = Op::SlotMapping;

/// vLLM's `PAD_SLOT_ID`: the slot of a padding token, which the KV-cache write skips.
pub const PAD_SLOT_ID: i64 = -1;

/// One KV-cache group's block table, on the device: what [`Device::slot_mapping_into`] and
/// [`Device::prepare_step`] look tokens up in.
#[derive(Clone, Copy, Debug)]
pub struct KvCacheGroup<'a, B: Index> {
    /// `[rows, max_blocks]` block numbers: row `r` is request state `r`'s blocks, in order.
    pub block_table: DeviceView<'a, B>,
    /// `[rows]`: how many leading entries of each row are valid (vLLM's `num_blocks`). A
    /// position whose block is past them is an error, not a read of a stale entry.
    pub num_blocks: DeviceView<'a, B>,
    /// Tokens per block (at least 1).
    pub block_size: usize,
}

/// A group's sizes, as every backend checks them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupDims {
    pub rows: usize,
    pub cols: usize,
    pub block_size: usize,
}

/// Checks one group: the table holds `rows * cols` entries, `num_blocks` one per row, and the
/// block size is in `1..=slot_max`.
pub(crate) fn check_group(
    op: Op,
    table_len: usize,
    rows: usize,
    cols: usize,
    num_blocks_len: usize,
    block_size: usize,
    slot_max: i64,
) -> Result<GroupDims> {
    if block_size == 0 || block_size as u64 > slot_max as u64 {
        return Err(Error::InvalidArgument {
            op,
            name: "block_size",
            value: block_size as i128,
            reason: "must be at least 1 and fit the slot type",
        });
    }
    if rows.checked_mul(cols) != Some(table_len) {
        return Err(Error::LengthMismatch {
            op,
            what: "the block table's length (rows x max_blocks)",
            expected: rows.saturating_mul(cols),
            actual: table_len,
        });
    }
    if num_blocks_len != rows {
        return Err(Error::LengthMismatch {
            op,
            what: "num_blocks.len() (one per block-table row)",
            expected: rows,
            actual: num_blocks_len,
        });
    }
    Ok(GroupDims {
        rows,
        cols,
        block_size,
    })
}

/// The checks of the token arrays and the output: returns the output's row stride (slots per
/// group, at least the token count).
pub(crate) fn check_tokens(
    n: usize,
    positions_len: usize,
    groups: usize,
    slots_len: usize,
) -> Result<usize> {
    if positions_len != n {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "positions.len()",
            expected: n,
            actual: positions_len,
        });
    }
    if groups == 0 {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "the number of KV-cache groups",
            value: 0,
            reason: "at least one group is needed",
        });
    }
    let stride = slots_len / groups;
    if stride * groups != slots_len || stride < n {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "slots.len() (groups x a padded length of at least the token count)",
            expected: groups.saturating_mul(n),
            actual: slots_len,
        });
    }
    Ok(stride)
}

impl Device {
    /// Slot mapping: for token `t` and KV-cache group `g`,
    /// `slots[g, t] = table_g[rows[t], positions[t] / bs_g] * bs_g + positions[t] % bs_g`, and
    /// `slots[g, t] = pad` for `t` from the token count to the end of the row (vLLM's
    /// `PAD_SLOT_ID` tail, [`PAD_SLOT_ID`], which CUDA graphs need). All groups in one launch on
    /// CUDA. `slots` has `groups.len()` rows of at least `rows.len()` slots (a vector when
    /// there is one group).
    ///
    /// `rows[t]` is the token's block-table row (its request state); a token's block must be
    /// among the row's `num_blocks` valid entries and its block number non-negative: otherwise
    /// [`Error::BlockOutOfRange`] or [`Error::NegativeBlock`] (never a read past the valid
    /// blocks). A row outside the table is [`Error::IndexOutOfBounds`], a slot past the slot
    /// type's maximum [`Error::ValueOverflow`]. On CUDA these come back from
    /// [`Device::synchronize`], and nothing is written.
    ///
    /// ```
    /// use cpugpu::{Device, KvCacheGroup, PAD_SLOT_ID};
    /// let dev = Device::auto();
    /// // Two request states, blocks of 4 tokens: state 0 owns blocks 7, 2; state 1 owns block 5.
    /// let table = dev.upload(&[7i32, 2, 5, -1], &[2, 2])?;
    /// let num_blocks = dev.upload(&[2i32, 1], &[2])?;
    /// let group = KvCacheGroup { block_table: table.view(), num_blocks: num_blocks.view(), block_size: 4 };
    /// let rows = dev.upload(&[0i32, 0, 1], &[3])?;
    /// let positions = dev.upload(&[3i64, 4, 1], &[3])?;
    /// let mut slots = dev.alloc::<i64>(&[1, 4])?;
    /// dev.slot_mapping_into(rows.view(), positions.view(), &[group], PAD_SLOT_ID, slots.view_mut())?;
    /// assert_eq!(slots.to_vec()?, [31, 8, 21, -1]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn slot_mapping_into<I: Index, P: Index, B: Index, O: Index>(
        &self,
        rows: DeviceView<'_, I>,
        positions: DeviceView<'_, P>,
        groups: &[KvCacheGroup<'_, B>],
        pad: O,
        slots: DeviceViewMut<'_, O>,
    ) -> Result<()> {
        let stride = check_tokens(rows.len(), positions.len(), groups.len(), slots.len())?;
        let dims = groups
            .iter()
            .map(|g| {
                let s = g.block_table.shape();
                check_group(
                    OP,
                    g.block_table.len(),
                    s.rows(),
                    s.row_len(),
                    g.num_blocks.len(),
                    g.block_size,
                    O::MAX,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        match self.kind() {
            BackendKind::Host => {
                let _ = stride; // the host reference derives it from the slice again
                let hg = groups
                    .iter()
                    .zip(&dims)
                    .map(|(g, d)| {
                        Ok(host::KvCacheGroup {
                            block_table: g.block_table.on_host(OP)?,
                            max_blocks: d.cols,
                            num_blocks: g.num_blocks.on_host(OP)?,
                            block_size: d.block_size,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let (r, p) = (rows.on_host(OP)?, positions.on_host(OP)?);
                let s = slots.into_host(OP)?;
                self.host_run(std::mem::size_of_val(s), || {
                    host::slot_mapping_into(r, p, &hg, pad, s)
                })
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                launch::slot_mapping_into(self, rows, positions, groups, &dims, stride, pad, slots)
            }
        }
    }
}
