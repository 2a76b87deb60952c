//! Windowed row gather on CUDA: `gather_windows_validate`, `gather_windows_w<V>`, then
//! `gather_windows_capture`.

use super::{WindowArgs, WindowLayout};
use crate::cuda::CodedReport;
use crate::element::{width_of, Element, Index};
use crate::error::{Error, Op, Result};
use crate::kernels::abi::CpugpuWindowsParams;
use crate::kernels::launch::{self, i64_of};
use crate::kernels::list;
use crate::memory::{DeviceView, DeviceViewMut};
use crate::ops::launch::{finish_coded, is_i64, ptr, ptr_mut, signed};
use crate::Device;

const OP: Op = Op::GatherWindows;

/// The coded error of `windows.cu`; `ctx` is (out.len(), unused, unused).
fn decode(r: &CodedReport) -> Error {
    let position = usize::try_from(r.position).unwrap_or(usize::MAX);
    let (v0, v1) = (signed(r.values[0]), signed(r.values[1]));
    match r.code {
        1 => Error::OffsetOutOfRange {
            op: r.op,
            position,
            value: v0,
            len: r.ctx[0] as usize,
        },
        2 => Error::OffsetsNotMonotonic {
            op: r.op,
            position,
            previous: v1,
            value: v0,
        },
        3 => Error::IndexOutOfBounds {
            op: r.op,
            position,
            index: v0,
            bound: r.values[1] as usize,
        },
        _ => Error::WindowOutOfRange {
            op: r.op,
            position,
            start: v0,
            len: v1,
            cols: r.values[2] as usize,
        },
    }
}

/// Windowed row gather on CUDA (arguments checked by the caller).
pub(crate) fn gather_windows_into<T: Element, I: Index>(
    dev: &Device,
    table: DeviceView<'_, T>,
    rows: DeviceView<'_, I>,
    starts: Option<DeviceView<'_, I>>,
    layout: WindowLayout<DeviceView<'_, I>>,
    args: WindowArgs,
    out: DeviceViewMut<'_, T>,
) -> Result<()> {
    let w = width_of::<T>();
    let q = dev.cuda_queue(OP)?;
    let ord = q.ctx.ordinal;
    let ext = *layout.extents();
    let tp = table.cuda_or(OP, "table", ord)?;
    let rp = rows.cuda_or(OP, "rows", ord)?;
    let sp = starts
        .map(|s| s.cuda_or(OP, "starts", ord))
        .transpose()?
        .unwrap_or(0);
    let ep = ext.cuda_or(OP, "the offsets or lengths", ord)?;
    let op_ = out.cuda_or(OP, "out", ord)?;
    // Windows start at any element: the access width divides the element and both bases.
    let v = launch::access_width(w, &[tp as usize, op_ as usize]);
    let _bound = q.ctx.bind()?;
    let joined = q.join(
        OP,
        &[
            table.cuda_queue(),
            rows.cuda_queue(),
            starts.and_then(|s| s.cuda_queue()),
            ext.cuda_queue(),
            out.cuda_queue(),
        ],
    )?;
    let _issue = q.issue();
    let p = CpugpuWindowsParams {
        table: ptr(tp),
        out: ptr_mut(op_),
        rows: ptr(rp),
        starts: ptr(sp),
        extents: ptr(ep),
        error: ptr_mut(q.error_word(OP)?),
        report: std::ptr::null_mut(),
        n: i64_of(args.n),
        table_rows: args.table_rows as u64,
        cols: i64_of(args.cols),
        out_len: i64_of(out.len()),
        width: i64_of(args.width),
        ragged: i64::from(layout.is_ragged()),
        idx_i64: i64::from(is_i64::<I>()),
        units_per_elem: i64_of(w / v),
    };
    let items = args.n + usize::from(layout.is_ragged());
    // SAFETY (both launches): the validation reads the n rows, starts and lengths (n + 1
    // offsets) the views hold; the copy runs only when the error word is clear, so every
    // window lies inside its table row and its output range (out.len() units of the output,
    // validated), with V dividing the element width and both base addresses.
    let issued = unsafe {
        q.launch(
            OP,
            list::gather_windows_validate,
            launch::flat_launch(items, 1),
            &p,
        )
        .and_then(|()| {
            q.launch(
                OP,
                launch::windows_kernel(v),
                launch::flat_launch(out.len() * (w / v), 4),
                &p,
            )
        })
    };
    finish_coded(
        q,
        joined,
        issued,
        OP,
        decode,
        [i64_of(out.len()), 0, 0],
        list::gather_windows_capture,
        p,
        |p, error, report| {
            p.error = error;
            p.report = report;
        },
    )
}
