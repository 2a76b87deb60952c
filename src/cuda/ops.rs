//! The six operations on CUDA: argument checks as on the host, then the kernels of `kernels/`
//! with the launch math of `src/kernels/launch.rs` (the code the emulator runs), enqueued on the
//! device's stream. Errors found in the data by the kernels are captured after the launch and
//! reported by the next [`Queue::synchronize`].

use std::ffi::c_void;

use super::{CheckKind, DevAlloc, Queue};
use crate::element::width_of;
use crate::error::{Error, Op, Result};
use crate::kernels::abi::*;
use crate::kernels::launch::{self, i64_of, ScanPlan};
use crate::memory::{DeviceBuffer, DeviceView, DeviceViewMut};
use crate::ops::gather::{self, GatherArgs};
use crate::ops::scatter::{self, ScatterArgs};
use crate::ops::split::{check_split_outs, host as split_host};
use crate::{Device, Element, GatherPolicy, Index, Offset, ScatterPolicy, Shape};

fn is_i64<I: Index>() -> bool {
    std::mem::size_of::<I>() == 8
}

fn queue(dev: &Device, op: Op) -> Result<&Queue> {
    dev.cuda_queue(op)
}

fn ptr<T>(p: u64) -> *const T {
    p as *const T
}

fn ptr_mut<T>(p: u64) -> *mut T {
    p as *mut T
}

/// The end of a checked operation: capture its error word (or, when its kernels could not all
/// be issued, re-arm the word and return that failure), then order the other streams after its
/// work, on every path, since kernels reading their memory may already be queued.
#[allow(clippy::too_many_arguments)]
fn finish_checked(
    q: &Queue,
    joined: super::Joined<'_>,
    issued: Result<()>,
    op: Op,
    kind: CheckKind,
    data: u64,
    n: usize,
    elem_bytes: usize,
) -> Result<()> {
    let captured = match issued {
        Err(e) => {
            q.rearm();
            Err(e)
        }
        Ok(()) => q.capture(op, kind, data, n, elem_bytes),
    };
    let finished = joined.finish(q);
    captured.and(finished)
}

/// Launches `validate_indices_<I>`: the first of the `n` indices at `ip` outside `0..rows`
/// (negatives allowed when `allow_negative`) goes to the error word `error`.
fn validate_indices<I: Index>(
    q: &Queue,
    op: Op,
    ip: u64,
    n: usize,
    rows: usize,
    allow_negative: bool,
    error: u64,
) -> Result<()> {
    let pv = CpugpuValidateParams {
        indices: ptr(ip),
        error: ptr_mut(error),
        n: i64_of(n),
        bound: i64_of(rows),
        allow_negative: i64::from(allow_negative),
    };
    // SAFETY: reads indices[0..n] (the caller's view holds n indices) and atomically updates
    // the queue's error word; both stay valid in stream order.
    unsafe {
        q.launch(
            op,
            launch::validate_kernel(is_i64::<I>()),
            launch::flat_launch(n, 4),
            &pv,
        )
    }
}

/// Gather on CUDA: `validate_indices`, `gather_rows_w<V>` (which does nothing when validation
/// failed), `capture_error`. The destination's shape was checked by the caller.
pub(crate) fn gather_rows_into<T: Element, I: Index>(
    dev: &Device,
    src: DeviceView<'_, T>,
    indices: DeviceView<'_, I>,
    dst: DeviceViewMut<'_, T>,
    policy: GatherPolicy<T>,
) -> Result<()> {
    let op = Op::GatherRows;
    let w = width_of::<T>();
    let q = queue(dev, op)?;
    let ord = q.ctx.ordinal;
    let GatherArgs {
        rows,
        row_len,
        dst_len,
    } = gather::check_args(src.len(), src.shape().dims(), indices.len())?;
    debug_assert_eq!(dst.len(), dst_len);
    let sp = src.cuda_or(op, "src", ord)?;
    let ip = indices.cuda_or(op, "indices", ord)?;
    let dp = dst.cuda_or(op, "dst", ord)?;
    let n = indices.len();
    if n == 0 {
        return Ok(());
    }
    let (allow_negative, fill) = match policy {
        GatherPolicy::Checked => (false, T::zeroed()),
        GatherPolicy::NegativeFill(v) => (true, v),
    };
    let _bound = q.ctx.bind()?;
    let joined = q.join(&[src.cuda_queue(), indices.cuda_queue(), dst.cuda_queue()])?;
    let _issue = q.issue();
    let error = q.error_word();
    let issued = (|| -> Result<()> {
        validate_indices::<I>(q, op, ip, n, rows, allow_negative, error)?;
        if dst_len > 0 {
            let row_bytes = row_len * w;
            let v = launch::copy_policy(w, row_bytes, &[sp as usize, dp as usize], Some(q.ctx.cc))
                .access_width;
            let rl = launch::rows_launch(n, row_bytes / v);
            let pg = CpugpuGatherRowsParams {
                src: ptr(sp),
                dst: ptr_mut(dp),
                indices: ptr(ip),
                error: ptr(error),
                n_indices: i64_of(n),
                src_rows: i64_of(rows),
                row_units: i64_of(row_bytes / v),
                lanes_per_row: rl.lanes_per_row,
                fill: launch::fill_pattern(fill),
            };
            // SAFETY: v divides the row size and both base addresses, so every unit access is
            // aligned and inside: src holds rows * row_len elements, dst n * row_len (its shape was
            // checked); src rows are read only for indices in 0..rows, and nothing runs when the
            // validation above set the error word.
            unsafe { q.launch(op, launch::gather_kernel(v, is_i64::<I>()), rl.config, &pg)? };
        }
        Ok(())
    })();
    let kind = CheckKind::Index {
        bound: rows,
        signed32: !is_i64::<I>(),
    };
    finish_checked(q, joined, issued, op, kind, ip, n, std::mem::size_of::<I>())
}

/// Allocating gather on CUDA.
pub(crate) fn gather_rows<T: Element, I: Index>(
    dev: &Device,
    src: DeviceView<'_, T>,
    indices: DeviceView<'_, I>,
    policy: GatherPolicy<T>,
    shape: Shape,
) -> Result<DeviceBuffer<T>> {
    // Every row of the output is written (a row, or the fill for a negative index) unless an
    // index is bad, which the next synchronisation reports.
    let mut out = DeviceBuffer::zeroed(dev, shape)?;
    gather_rows_into(dev, src, indices, out.view_mut(), policy)?;
    Ok(out)
}

/// Scatter on CUDA: `scatter_winners` (validation and last-wins), `scatter_rows_w<V>`,
/// `capture_error`. The source's shape was checked by the caller.
pub(crate) fn scatter_rows_into<T: Element, I: Index>(
    dev: &Device,
    src: DeviceView<'_, T>,
    indices: DeviceView<'_, I>,
    dst: DeviceViewMut<'_, T>,
    policy: ScatterPolicy,
) -> Result<()> {
    let op = Op::ScatterRows;
    let w = width_of::<T>();
    let q = queue(dev, op)?;
    let ord = q.ctx.ordinal;
    let dst_shape = dst.shape();
    let ScatterArgs { rows, row_len } =
        scatter::check_args(src.len(), indices.len(), dst.len(), dst_shape.dims())?;
    let sp = src.cuda_or(op, "src", ord)?;
    let ip = indices.cuda_or(op, "indices", ord)?;
    let dp = dst.cuda_or(op, "dst", ord)?;
    let n = indices.len();
    if n == 0 {
        return Ok(());
    }
    let allow_negative = matches!(policy, ScatterPolicy::NegativeSkip);
    let _bound = q.ctx.bind()?;
    let joined = q.join(&[src.cuda_queue(), indices.cuda_queue(), dst.cuda_queue()])?;
    let _issue = q.issue();
    let error = q.error_word();
    let issued = (|| -> Result<()> {
        if src.is_empty() {
            // Rows of zero elements: nothing to move, but the indices are still checked.
            validate_indices::<I>(q, op, ip, n, rows, allow_negative, error)?;
        } else {
            // One i64 per destination row, all -1 (every byte 0xFF); freed in stream order after
            // the two kernels.
            let winners = DevAlloc::filled(op, &q.stream, rows.saturating_mul(8), 0xFF)?;
            let row_bytes = row_len * w;
            let v = launch::copy_policy(w, row_bytes, &[sp as usize, dp as usize], Some(q.ctx.cc))
                .access_width;
            let rl = launch::rows_launch(n, row_bytes / v);
            let pw = CpugpuScatterWinnersParams {
                indices: ptr(ip),
                winners: ptr_mut(winners.ptr),
                error: ptr_mut(error),
                n: i64_of(n),
                dst_rows: i64_of(rows),
                allow_negative: i64::from(allow_negative),
            };
            // SAFETY: reads indices[0..n]; atomically updates winners[k] only for k in 0..rows (the
            // scratch holds rows entries) and the error word.
            unsafe {
                q.launch(
                    op,
                    launch::scatter_winners_kernel(is_i64::<I>()),
                    launch::flat_launch(n, 4),
                    &pw,
                )?
            };
            let pr = CpugpuScatterRowsParams {
                src: ptr(sp),
                dst: ptr_mut(dp),
                indices: ptr(ip),
                winners: ptr(winners.ptr),
                error: ptr(error),
                n_indices: i64_of(n),
                dst_rows: i64_of(rows),
                row_units: i64_of(row_bytes / v),
                lanes_per_row: rl.lanes_per_row,
            };
            // SAFETY: v divides the row size and both base addresses; src holds n rows and dst
            // `rows` rows; only rows 0..rows are written, each by its single winner, and nothing
            // when the error word is set.
            unsafe { q.launch(op, launch::scatter_kernel(v, is_i64::<I>()), rl.config, &pr)? };
            drop(winners);
        }
        Ok(())
    })();
    let kind = CheckKind::Index {
        bound: rows,
        signed32: !is_i64::<I>(),
    };
    finish_checked(q, joined, issued, op, kind, ip, n, std::mem::size_of::<I>())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Pad on CUDA: one `pad_w<V>` launch copies and fills. The destination's shape was checked.
pub(crate) fn pad_to_multiple_into<T: Element>(
    dev: &Device,
    src: DeviceView<'_, T>,
    axis: usize,
    multiple: usize,
    fill: T,
    dst: DeviceViewMut<'_, T>,
) -> Result<()> {
    let op = Op::PadToMultiple;
    let w = width_of::<T>();
    let q = queue(dev, op)?;
    let ord = q.ctx.ordinal;
    let (s, padded) = crate::ops::pad::check_args(
        src.len(),
        src.shape().dims(),
        axis,
        multiple,
        Some(dst.len()),
    )?;
    let sp = src.cuda_or(op, "src", ord)?;
    let dp = dst.cuda_or(op, "dst", ord)?;
    if dst.is_empty() {
        return Ok(());
    }
    // dst is not empty, so none of these products overflows (they divide its length).
    let dims = s.dims();
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let src_row_bytes = dims[axis] * inner * w;
    let dst_row_bytes = padded.dims()[axis] * inner * w;
    let policy = launch::copy_policy(
        w,
        gcd(src_row_bytes, dst_row_bytes),
        &[sp as usize, dp as usize],
        Some(q.ctx.cc),
    );
    let v = policy.access_width;
    let p = CpugpuPadParams {
        src: ptr(sp),
        dst: ptr_mut(dp),
        outer: i64_of(outer),
        src_row_units: i64_of(src_row_bytes / v),
        dst_row_units: i64_of(dst_row_bytes / v),
        fill: launch::fill_pattern(fill),
    };
    let cfg = launch::flat_launch(dst.len() * w / v, policy.items_per_thread);
    let _bound = q.ctx.bind()?;
    let joined = q.join(&[src.cuda_queue(), dst.cuda_queue()])?;
    // SAFETY: v divides both row sizes and both base addresses; the kernel writes
    // outer * dst_row_units units (all of dst) and reads outer * src_row_units (all of src).
    let launched = unsafe { q.launch(op, launch::pad_kernel(v), cfg, &p) };
    let finished = joined.finish(q);
    launched.and(finished)
}

/// Sets `n` elements at device address `dst` to `value`: `cuMemsetD8/16/32Async` for 1-, 2- and
/// 4-byte elements, the pad kernel with an empty source row for 8 and 16.
pub(crate) fn fill<T: Element>(q: &Queue, dst: u64, n: usize, value: T) -> Result<()> {
    use super::driver as cu;
    let op = Op::Fill;
    let w = width_of::<T>();
    if n == 0 {
        return Ok(());
    }
    let _bound = q.ctx.bind()?;
    let bytes = bytemuck::bytes_of(&value);
    // cuMemsetD16/D32 need a 2- or 4-byte aligned start; `[u8; 4]` views need not be: those
    // take the kernel path (0 selects it below).
    let memset_width = if dst.is_multiple_of(w as u64) { w } else { 0 };
    let s = q.stream.raw();
    // SAFETY (the memsets): dst holds n elements of w bytes, ours to write (the caller holds
    // an exclusive view).
    match memset_width {
        1 => super::check(op, "cuMemsetD8Async", unsafe {
            cu::cuMemsetD8Async(dst, bytes[0], n, s)
        }),
        // SAFETY: as for the 1-byte memset; dst is 2-byte aligned (checked above).
        2 => super::check(op, "cuMemsetD16Async", unsafe {
            cu::cuMemsetD16Async(dst, u16::from_ne_bytes([bytes[0], bytes[1]]), n, s)
        }),
        // SAFETY: as for the 1-byte memset; dst is 4-byte aligned (checked above).
        4 => super::check(op, "cuMemsetD32Async", unsafe {
            cu::cuMemsetD32Async(
                dst,
                u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
                n,
                s,
            )
        }),
        _ => {
            let total = n * w; // the view exists, so this fits
            let policy = launch::copy_policy(w, total, &[dst as usize], Some(q.ctx.cc));
            let v = policy.access_width;
            let p = CpugpuPadParams {
                src: std::ptr::null(),
                dst: ptr_mut(dst),
                outer: 1,
                src_row_units: 0,
                dst_row_units: i64_of(total / v),
                fill: launch::fill_pattern(value),
            };
            // SAFETY: one row of total / v units at dst, all written with the fill pattern; the
            // empty source row is never read.
            unsafe {
                q.launch(
                    op,
                    launch::pad_kernel(v),
                    launch::flat_launch(total / v, policy.items_per_thread),
                    &p,
                )
            }
        }
    }
}

/// Prefix-sum offsets on CUDA: one launch up to one tile (4,096 lengths), reduce / scan-tiles /
/// downsweep beyond, then `capture_error`.
pub(crate) fn prefix_sum_offsets_into<L: Index, O: Offset>(
    dev: &Device,
    lengths: DeviceView<'_, L>,
    offsets: DeviceViewMut<'_, O>,
) -> Result<()> {
    let op = Op::PrefixSumOffsets;
    let q = queue(dev, op)?;
    let ord = q.ctx.ordinal;
    let n = lengths.len();
    if offsets.len() != n.saturating_add(1) {
        return Err(Error::LengthMismatch {
            op,
            what: "offsets.len()",
            expected: n.saturating_add(1),
            actual: offsets.len(),
        });
    }
    let lp = lengths.cuda_or(op, "lengths", ord)?;
    let opp = offsets.cuda_or(op, "offsets", ord)?;
    let kernels = launch::offsets_kernels(is_i64::<L>(), is_i64::<O>());
    let plan = launch::scan_plan(n);
    let _bound = q.ctx.bind()?;
    let joined = q.join(&[lengths.cuda_queue(), offsets.cuda_queue()])?;
    let _issue = q.issue();
    let tiles = match plan {
        ScanPlan::Single(_) => 0,
        ScanPlan::Multi { tiles, .. } => tiles,
    };
    let tile_sums = match plan {
        ScanPlan::Single(_) => None,
        ScanPlan::Multi { .. } => {
            Some(DevAlloc::new(op, &q.stream, (tiles + 2).saturating_mul(8))?)
        }
    };
    let p = CpugpuOffsetsParams {
        lengths: ptr(lp),
        offsets: ptr_mut(opp),
        tile_sums: tile_sums
            .as_ref()
            .map_or(std::ptr::null_mut(), |t| ptr_mut(t.ptr)),
        error: ptr_mut(q.error_word()),
        n: i64_of(n),
        limit: O::MAX,
        tiles: i64_of(tiles),
    };
    // SAFETY (all launches): the kernels read lengths[0..n], write offsets[0..=n] (n + 1
    // elements, checked above) only when error-free, use tile_sums[0..tiles + 2] (allocated
    // above for the multi-tile plan; the single-tile kernel never touches it) and update the
    // error word. Shared memory is sized by scan_plan (34,816 bytes, under the 48 KiB default).
    let issued = match plan {
        ScanPlan::Single(cfg) => unsafe { q.launch(op, kernels.single, cfg, &p) },
        // SAFETY: as above, for the three passes in stream order.
        ScanPlan::Multi {
            reduce,
            scan_tiles,
            downsweep,
            ..
        } => unsafe {
            q.launch(op, kernels.reduce, reduce, &p)
                .and_then(|()| q.launch(op, kernels.scan_tiles, scan_tiles, &p))
                .and_then(|()| q.launch(op, kernels.downsweep, downsweep, &p))
        },
    };
    drop(tile_sums);
    let kind = CheckKind::Offsets {
        limit: O::MAX,
        signed32: !is_i64::<L>(),
    };
    finish_checked(q, joined, issued, op, kind, lp, n, std::mem::size_of::<L>())
}

/// Packs `u64` words for a metadata upload.
fn words(parts: &[&[u64]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len() * 8).sum());
    for p in parts {
        for w in *p {
            v.extend_from_slice(&w.to_ne_bytes());
        }
    }
    v
}

/// Flatten on CUDA: the segment pointers and offsets go up in one staged copy, then one
/// `flatten_w<V>_<O>` launch copies every segment and writes the offsets.
pub(crate) fn flatten_into<T: Element, O: Offset>(
    dev: &Device,
    arrays: &[DeviceView<'_, T>],
    dst: DeviceViewMut<'_, T>,
    offsets: DeviceViewMut<'_, O>,
) -> Result<()> {
    let op = Op::Flatten;
    let w = width_of::<T>();
    let q = queue(dev, op)?;
    let ord = q.ctx.ordinal;
    let elem_offsets = crate::ops::flatten::check_args::<O>(
        arrays.iter().map(|a| a.len()),
        offsets.len(),
        dst.len(),
    )?;
    let total = dst.len();
    let mut src_ptrs = Vec::with_capacity(arrays.len());
    for a in arrays {
        src_ptrs.push(a.cuda_or(op, "arrays[i]", ord)?);
    }
    let dp = dst.cuda_or(op, "dst", ord)?;
    let op_ptr = offsets.cuda_or(op, "offsets", ord)?;
    let mut addrs: Vec<usize> = arrays
        .iter()
        .zip(&src_ptrs)
        .filter(|(a, _)| !a.is_empty())
        .map(|(_, &p)| p as usize)
        .collect();
    addrs.push(dp as usize);
    let v = launch::copy_policy(w, w, &addrs, Some(q.ctx.cc)).access_width;
    let units_per_elem = i64_of(w / v);
    // Cannot overflow: total * w bytes of dst exist.
    let seg_offsets: Vec<u64> = elem_offsets
        .iter()
        .map(|&o| (o * units_per_elem) as u64)
        .collect();
    let _bound = q.ctx.bind()?;
    let mut operands: Vec<_> = arrays.iter().map(|a| a.cuda_queue()).collect();
    operands.push(dst.cuda_queue());
    operands.push(offsets.cuda_queue());
    let joined = q.join(&operands)?;
    let meta = match q.upload_bytes(op, &words(&[&src_ptrs, &seg_offsets])) {
        Ok(m) => m,
        Err(e) => {
            let _ = joined.finish(q);
            return Err(e);
        }
    };
    let n = arrays.len();
    let p = CpugpuBatchedCopyParams {
        src_ptrs: ptr(meta.ptr),
        dst_ptrs: std::ptr::null(),
        flat: ptr_mut(dp),
        seg_offsets: ptr(meta.ptr + 8 * n as u64),
        offsets_out: ptr_mut::<c_void>(op_ptr),
        n_segments: i64_of(n),
        units_per_elem,
        tile_units: launch::COPY_TILE_UNITS,
    };
    let cfg = launch::batched_copy_launch(total * w / v, n);
    // SAFETY: the metadata (n pointers, n + 1 offsets) is on the device in stream order before
    // the kernel; segment s is read at src_ptrs[s][0..len_s * w / v] units (its own view) and
    // written at flat[seg_offsets[s]..seg_offsets[s + 1]], inside dst (total elements); v
    // divides the element width and every pointer; offsets has n + 1 elements (checked).
    let launched = unsafe { q.launch(op, launch::flatten_kernel(v, is_i64::<O>()), cfg, &p) };
    drop(meta);
    let finished = joined.finish(q);
    launched.and(finished)
}

/// Split's copying form on CUDA: one `split_copy_w<V>` launch copies segment `i` of `data` (at
/// validated `offsets`) into `outs[i]`.
pub(crate) fn split_copy_into<T: Element, O: Offset>(
    dev: &Device,
    data: DeviceView<'_, T>,
    offsets: &[O],
    outs: &mut [DeviceViewMut<'_, T>],
) -> Result<()> {
    let op = Op::Split;
    let w = width_of::<T>();
    let q = queue(dev, op)?;
    let ord = q.ctx.ordinal;
    split_host::validate(offsets, data.len())?;
    check_split_outs(offsets, outs.iter().map(|o| o.len()), outs.len())?;
    let base_ptr = data.cuda_or(op, "data", ord)?;
    let mut dst_ptrs = Vec::with_capacity(outs.len());
    for o in outs.iter() {
        dst_ptrs.push(o.cuda_or(op, "outs[i]", ord)?);
    }
    if outs.is_empty() {
        return Ok(());
    }
    let first = usize::try_from(offsets[0].to_i64()).unwrap_or(0);
    // Validated: first <= data.len(), so the byte offset exists.
    let base = base_ptr + (first * w) as u64;
    let mut addrs: Vec<usize> = outs
        .iter()
        .zip(&dst_ptrs)
        .filter(|(o, _)| !o.is_empty())
        .map(|(_, &p)| p as usize)
        .collect();
    addrs.push(base as usize);
    let v = launch::copy_policy(w, w, &addrs, Some(q.ctx.cc)).access_width;
    let seg_offsets = launch::flat_offsets(outs.iter().map(|o| o.len()), i64::MAX, w / v).map_err(
        |position| Error::OffsetOverflow {
            op,
            position,
            limit: i64::MAX,
        },
    )?;
    let total: usize = outs.iter().map(|o| o.len()).sum();
    let seg_words: Vec<u64> = seg_offsets.iter().map(|&o| o as u64).collect();
    let _bound = q.ctx.bind()?;
    let mut operands: Vec<_> = outs.iter().map(|o| o.cuda_queue()).collect();
    operands.push(data.cuda_queue());
    let joined = q.join(&operands)?;
    let meta = match q.upload_bytes(op, &words(&[&dst_ptrs, &seg_words])) {
        Ok(m) => m,
        Err(e) => {
            let _ = joined.finish(q);
            return Err(e);
        }
    };
    let n = outs.len();
    let p = CpugpuBatchedCopyParams {
        src_ptrs: std::ptr::null(),
        dst_ptrs: ptr(meta.ptr),
        flat: ptr_mut(base),
        seg_offsets: ptr(meta.ptr + 8 * n as u64),
        offsets_out: std::ptr::null_mut(),
        n_segments: i64_of(n),
        units_per_elem: i64_of(w / v),
        tile_units: launch::COPY_TILE_UNITS,
    };
    let cfg = launch::batched_copy_launch(total * w / v, n);
    // SAFETY: the segments are consecutive in data from `base` (validated offsets), so flat
    // units 0..total * w / v are inside data and only read; outs[s] has exactly segment s's
    // length (checked) and is written at 0..len_s units; v divides the width and every pointer.
    let launched = unsafe { q.launch(op, launch::split_copy_kernel(v), cfg, &p) };
    drop(meta);
    let finished = joined.finish(q);
    launched.and(finished)
}
