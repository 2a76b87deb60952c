//! Slot mapping on CUDA: the groups' descriptors in one metadata upload, then
//! `slot_mapping_validate`, `slot_mapping_write` and `slot_mapping_capture`.

use super::{GroupDims, KvCacheGroup};
use crate::cuda::CodedReport;
use crate::element::Index;
use crate::error::{Error, Op, Result};
use crate::kernels::abi::{CpugpuKvGroup, CpugpuSlotMappingParams};
use crate::kernels::launch::{self, i64_of};
use crate::kernels::list;
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{finish_coded, is_i64, ptr, ptr_mut, signed};
use crate::Device;

const OP: Op = Op::SlotMapping;

/// The coded error of `slot_mapping.cu`; `ctx` is (groups, slot maximum, unused).
pub(crate) fn decode(r: &CodedReport) -> Error {
    let [groups, limit, _] = r.ctx;
    let k = r.position;
    let (t, g) = ((k / groups as u64) as usize, (k % groups as u64) as usize);
    let (v0, v1) = (signed(r.values[0]), signed(r.values[1]));
    match r.code {
        1 => Error::IndexOutOfBounds {
            op: r.op,
            position: t,
            index: v0,
            bound: r.values[1] as usize,
        },
        2 => Error::BlockOutOfRange {
            op: r.op,
            position: t,
            group: g,
            block: v0,
            valid: v1,
        },
        3 => Error::NegativeBlock {
            op: r.op,
            position: t,
            group: g,
            value: v0,
        },
        _ => Error::ValueOverflow {
            op: r.op,
            position: t,
            limit,
        },
    }
}

/// Packs the groups' descriptors for one metadata upload.
pub(crate) fn descriptors<B: Index>(
    op: Op,
    groups: &[KvCacheGroup<'_, B>],
    dims: &[GroupDims],
    ord: u32,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(groups.len() * std::mem::size_of::<CpugpuKvGroup>());
    for (g, d) in groups.iter().zip(dims) {
        let words = [
            g.block_table.cuda_or(op, "a block table", ord)?,
            g.num_blocks.cuda_or(op, "num_blocks", ord)?,
            d.rows as u64,
            i64_of(d.cols) as u64,
            i64_of(d.block_size) as u64,
        ];
        for w in words {
            bytes.extend_from_slice(&w.to_ne_bytes());
        }
    }
    Ok(bytes)
}

/// Slot mapping on CUDA (arguments checked by the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) fn slot_mapping_into<I: Index, P: Index, B: Index, O: Index>(
    dev: &Device,
    rows: DeviceView<'_, I>,
    positions: DeviceView<'_, P>,
    groups: &[KvCacheGroup<'_, B>],
    dims: &[GroupDims],
    stride: usize,
    pad: O,
    slots: DeviceViewMut<'_, O>,
) -> Result<()> {
    let q = dev.cuda_queue(OP)?;
    let ord = q.ctx.ordinal;
    let n = rows.len();
    let rp = rows.cuda_or(OP, "rows", ord)?;
    let pp = positions.cuda_or(OP, "positions", ord)?;
    let sp = slots.cuda_or(OP, "slots", ord)?;
    let meta = descriptors(OP, groups, dims, ord)?;
    let _bound = q.ctx.bind()?;
    let mut operands = vec![
        rows.cuda_queue(),
        positions.cuda_queue(),
        slots.cuda_queue(),
    ];
    for g in groups {
        operands.push(g.block_table.cuda_queue());
        operands.push(g.num_blocks.cuda_queue());
    }
    let joined = q.join(OP, &operands)?;
    let _issue = q.issue();
    let gd = q.upload_bytes(OP, &meta)?;
    let p = CpugpuSlotMappingParams {
        rows: ptr(rp),
        positions: ptr(pp),
        groups: ptr(gd.ptr),
        slots: ptr_mut(sp),
        error: ptr_mut(q.error_word(OP)?),
        report: std::ptr::null_mut(),
        n: i64_of(n),
        n_groups: i64_of(groups.len()),
        stride: i64_of(stride),
        pad: pad.to_i64(),
        rows_i64: i64::from(is_i64::<I>()),
        pos_i64: i64::from(is_i64::<P>()),
        table_i64: i64::from(is_i64::<B>()),
        slots_i64: i64::from(is_i64::<O>()),
        slot_limit: O::MAX,
    };
    // SAFETY (both launches): the validate kernel reads the n rows and positions, the uploaded
    // descriptors, and per pair one num_blocks entry of a checked row and one table entry inside
    // its valid blocks; the write kernel writes groups x stride slots (the view holds exactly
    // that, checked) only when the error word is clear, reading what the validation read.
    let issued = unsafe {
        q.launch(
            OP,
            list::slot_mapping_validate,
            launch::flat_launch(n.saturating_mul(groups.len()), 2),
            &p,
        )
        .and_then(|()| {
            q.launch(
                OP,
                list::slot_mapping_write,
                launch::flat_launch(slots.len(), 2),
                &p,
            )
        })
    };
    let done = finish_coded(
        q,
        joined,
        issued,
        OP,
        decode,
        [i64_of(groups.len()), O::MAX, 0],
        list::slot_mapping_capture,
        p,
        |p, error, report| {
            p.error = error;
            p.report = report;
        },
    );
    drop(gd); // freed in stream order, after the capture
    done
}
