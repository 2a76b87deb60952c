//! The six operations on CUDA memory (builds with the GPU paths): the same functions as
//! `ops.rs`, with the same argument checks, run by the crate's CUDA path on the operands' own
//! memory, without copies.
//!
//! Each call runs on one stream (its `stream` argument, or cpugpu's), ordered after the work
//! already issued on its operands' streams (a buffer's `DeviceArray`: cpugpu's stream; another
//! library's tensor: the `stream` of its `__cuda_array_interface__`) by the crate's cross-stream
//! ordering, and waits for its kernels before it returns, so that the errors they find in the
//! data (a bad index, a negative length) are raised by the call, as on the host. New results are
//! allocated on cpugpu's stream and freed there, so no result depends on a caller's stream
//! outliving it.

use std::sync::Arc;

use cpugpu::{Device, DeviceBuffer, DeviceView, Element, Error, Op};
use numpy::{PyArrayDescr, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::arrays::{check_index, index_input, is_cuda, Operand};
use crate::dlpack::{DeviceArray, Keep, KDL_CUDA};
use crate::dtype::{by_index, by_width, from_bytes, DType};
use crate::errors::{run, to_py};
use crate::gpu::{arg, output, DevArg, Streams};
use crate::ops::{
    flatten_item, gather_checks, gather_fill, gather_policy, need_axis, pad_args, scatter_checks,
};

impl Operand for DevArg {
    fn dims(&self) -> &[usize] {
        &self.shape
    }
    fn dt(&self) -> DType {
        self.dtype
    }
    fn span(&self) -> (u64, usize) {
        (self.addr, self.len() * self.dtype.width())
    }
}

/// Runs `f` on the operation's device, then waits for its work (GIL released) and returns the
/// first error: of issuing it, or one its kernels found.
fn finish<R: Send>(
    py: Python<'_>,
    streams: &Streams,
    f: impl FnOnce(&Device) -> cpugpu::Result<R> + Send,
) -> PyResult<R> {
    let dev = &streams.op;
    run(py, usize::MAX, || {
        let out = f(dev);
        let done = dev.synchronize();
        let v = out?;
        done.map(|()| v)
    })
}

/// An index operand of an operation on CUDA memory: CUDA memory (checked in place), or host
/// memory (an array or a list, checked as on the host) uploaded to cpugpu's stream.
fn index_arg(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &str,
    streams: &mut Streams,
) -> PyResult<DevArg> {
    if is_cuda(obj) {
        let a = arg(obj, what, streams)?;
        check_index(py, &a, what)?;
        return Ok(a);
    }
    let h = index_input(obj, what)?;
    let dev = crate::device();
    let (addr, keep) = by_index!(h.dtype, I => {
        // SAFETY: the width matches the dtype (int32 or int64, checked); only read, while `h`
        // is alive (this frame).
        let v = unsafe { h.slice::<I>() };
        let b = run(py, usize::MAX, || dev.upload(v, &[v.len()]))?;
        (b.view().cuda_ptr().unwrap_or(0), Arc::new(b) as Keep)
    });
    Ok(DevArg {
        addr,
        shape: vec![h.len],
        dtype: h.dtype,
        descr: h.obj.dtype().unbind(),
        readonly: true,
        dev: dev.clone(),
        keep,
    })
}

/// A new device buffer as a `DeviceArray` (a result): on cpugpu's stream, owning the buffer.
fn result<T: Element>(
    b: DeviceBuffer<T>,
    dtype: DType,
    descr: &Bound<'_, PyArrayDescr>,
) -> DeviceArray {
    let dev = crate::device();
    DeviceArray {
        addr: b.view().cuda_ptr().unwrap_or(0),
        shape: b.shape().dims().to_vec(),
        keep: Arc::new(b),
        dtype,
        descr: descr.clone().unbind(),
        device: (KDL_CUDA, dev.cuda_info().map_or(0, |(o, _, _)| o as i32)),
        readonly: false,
        order: Some(dev.clone()),
    }
}

/// `copy_with_indices` on CUDA memory.
pub(crate) fn copy_with_indices(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    indices: &Bound<'_, PyAny>,
    policy: &str,
    fill_value: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let mut st = Streams::new(py, stream)?;
    let src = arg(src, "src", &mut st)?;
    let dst = output(dst, "dst", &mut st)?;
    let idx = index_arg(py, indices, "indices", &mut st)?;
    let n = gather_checks(py, &src, &dst, &idx)?;
    let fill = gather_fill(py, policy, fill_value, dst.dtype, dst.descr.bind(py))?;
    by_width!(src.dtype.width(), T => {
        let policy = gather_policy::<T>(py, policy, fill)?;
        by_index!(idx.dtype, I => {
            finish(py, &st, |dev| {
                // SAFETY: widths match the dtypes; dst is writable and overlaps neither input
                // (checked); the operands' owners are held by this frame until the call ends,
                // after the kernels completed.
                let (sv, iv, dv) = unsafe { (src.view::<T>()?, idx.view::<I>()?, dst.view_mut::<T>()?) };
                dev.gather_rows_into(sv, iv, dv.into_rows(0..n)?, policy)
            })
        })
    })
}

/// `scatter_with_indices` on CUDA memory.
pub(crate) fn scatter_with_indices(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    indices: &Bound<'_, PyAny>,
    policy: &str,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let mut st = Streams::new(py, stream)?;
    let src = arg(src, "src", &mut st)?;
    let dst = output(dst, "dst", &mut st)?;
    let idx = index_arg(py, indices, "indices", &mut st)?;
    let (n, policy) = scatter_checks(py, &src, &dst, &idx, policy)?;
    by_width!(src.dtype.width(), T => {
        by_index!(idx.dtype, I => {
            finish(py, &st, |dev| {
                // SAFETY: as in copy_with_indices.
                let (sv, iv, dv) = unsafe { (src.view::<T>()?, idx.view::<I>()?, dst.view_mut::<T>()?) };
                dev.scatter_rows_into(sv.rows(0..n)?, iv, dv, policy)
            })
        })
    })
}

/// `pad_to_multiple` on CUDA memory: `arr` itself when the axis already is a multiple, else a
/// new array on cpugpu's stream.
pub(crate) fn pad_to_multiple<'py>(
    py: Python<'py>,
    arr: &Bound<'py, PyAny>,
    multiple: i64,
    axis: isize,
    pad_value: Option<&Bound<'py, PyAny>>,
    stream: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut st = Streams::new(py, stream)?;
    let a = arg(arr, "arr", &mut st)?;
    let descr = a.descr.bind(py).clone();
    let (multiple, ax, fill) = pad_args(py, &a, &descr, multiple, axis, pad_value)?;
    let op = Op::PadToMultiple;
    let ndim = a.shape.len();
    if ax >= ndim {
        return Err(to_py(py, Error::AxisOutOfRange { op, axis: ax, ndim }));
    }
    let Some(target) = a.shape[ax].checked_next_multiple_of(multiple) else {
        return Err(to_py(
            py,
            Error::SizeOverflow {
                op,
                what: "the padded axis",
            },
        ));
    };
    if target == a.shape[ax] {
        return Ok(arr.clone()); // no copy, as on the host
    }
    let mut padded = a.shape.clone();
    padded[ax] = target;
    by_width!(a.dtype.width(), T => {
        let fill: T = from_bytes(&fill);
        let out = finish(py, &st, |dev| {
            let mut out = crate::device().alloc::<T>(&padded)?;
            // SAFETY: the width matches the dtype; only read; `out` is new.
            let src = unsafe { a.view::<T>()? };
            dev.pad_to_multiple_into(src, ax, multiple, fill, out.view_mut())?;
            Ok(out)
        })?;
        Ok(Bound::new(py, result(out, a.dtype, &descr))?.into_any())
    })
}

/// `compute_cumsum_offsets` of CUDA `lengths`: new offsets on cpugpu's stream.
pub(crate) fn compute_cumsum_offsets<'py>(
    py: Python<'py>,
    lengths: &Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyAny>>,
    stream: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut st = Streams::new(py, stream)?;
    let lens = arg(lengths, "lengths", &mut st)?;
    check_index(py, &lens, "lengths")?;
    let (od, descr) = crate::ops::offsets_dtype(py, dtype, "dtype")?;
    let n = lens.len();
    by_index!(lens.dtype, L => {
        by_index!(od, O => {
            let out = finish(py, &st, |dev| {
                let mut out = crate::device().alloc::<O>(&[n + 1])?;
                // SAFETY: the width matches the dtype; only read.
                let lv = unsafe { lens.view::<L>()? };
                dev.prefix_sum_offsets_into(lv, out.view_mut())?;
                Ok(out)
            })?;
            Ok(Bound::new(py, result(out, od, &descr))?.into_any())
        })
    })
}

/// `flatten_with_offsets` of CUDA arrays: new `flat` and `offsets` on cpugpu's stream.
pub(crate) fn flatten_with_offsets<'py>(
    py: Python<'py>,
    items: &[Bound<'py, PyAny>],
    (od, odescr): (DType, Bound<'py, PyArrayDescr>),
    want: Option<(DType, Bound<'py, PyArrayDescr>)>,
    stream: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let mut st = Streams::new(py, stream)?;
    let mut parts: Vec<DevArg> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let a = arg(item, &format!("arrays[{i}]"), &mut st)?;
        flatten_item(py, i, &a, parts.first(), want.as_ref().map(|w| w.0))?;
        parts.push(a);
    }
    // `items` holds at least one CUDA array (that is how this path was chosen), so parts[0]
    // exists.
    let first = &parts[0];
    let (dt, descr) = (first.dtype, first.descr.bind(py).clone());
    let tail = first.shape[1..].to_vec();
    let rows: usize = parts.iter().map(|p| p.shape[0]).sum();
    let mut out_shape = vec![rows];
    out_shape.extend_from_slice(&tail);
    let n = parts.len();
    let row_lens: Vec<i64> = parts.iter().map(|p| p.shape[0] as i64).collect();
    by_width!(dt.width(), T => {
        by_index!(od, O => {
            let (flat, offsets) = finish(py, &st, |dev| {
                let pkg = crate::device();
                let mut flat = pkg.alloc::<T>(&out_shape)?;
                let mut offsets = pkg.alloc::<O>(&[n + 1])?;
                // SAFETY: every part has the dtype's width (checked); only read; the outputs
                // are new.
                let views = parts
                    .iter()
                    .map(|p| unsafe { p.view::<T>() })
                    .collect::<cpugpu::Result<Vec<DeviceView<'_, T>>>>()?;
                if tail.is_empty() {
                    // One-dimensional: the element offsets are the row offsets.
                    dev.flatten_into(&views, flat.flat_mut(), offsets.view_mut())?;
                } else {
                    // Rows of several elements: flatten by elements, offsets by rows.
                    let mut elem = pkg.alloc::<i64>(&[n + 1])?;
                    dev.flatten_into(&views, flat.flat_mut(), elem.view_mut())?;
                    let lens = pkg.upload(&row_lens, &[n])?;
                    dev.prefix_sum_offsets_into(lens.view(), offsets.view_mut())?;
                }
                Ok((flat, offsets))
            })?;
            let flat = Bound::new(py, result(flat, dt, &descr))?;
            let offsets = Bound::new(py, result(offsets, od, &odescr))?;
            PyTuple::new(py, [flat.into_any(), offsets.into_any()])
        })
    })
}

/// `split_by_offsets` of CUDA memory: `DeviceArray` views of `arr`'s rows (no kernel runs).
pub(crate) fn split_by_offsets<'py>(
    py: Python<'py>,
    arr: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let mut st = Streams::new(py, None)?;
    let a = arg(arr, "arr", &mut st)?;
    need_axis(py, &a, "arr")?;
    // The offsets on the host: as given, or copied from CUDA memory.
    let host_offsets;
    let offs = if is_cuda(offsets) {
        let o = arg(offsets, "offsets", &mut st)?;
        check_index(py, &o, "offsets")?;
        let arr = crate::arrays::empty(py, o.descr.bind(py), &o.shape)?;
        let h = crate::arrays::Arr::checked(arr, "offsets")?;
        crate::gpu::copy_to_host(py, &o.dev, o.addr, h.addr, h.nbytes())?;
        host_offsets = h;
        &host_offsets
    } else {
        host_offsets = index_input(offsets, "offsets")?;
        &host_offsets
    };
    let rows = a.shape[0];
    let row_bytes = a.shape[1..].iter().product::<usize>() * a.dtype.width();
    let dev = &st.op;
    by_index!(offs.dtype, O => {
        // SAFETY: the width matches the dtype; only read.
        let ov = unsafe { offs.slice::<O>() };
        // The crate validates the offsets against `rows`: a view of `rows` bytes serves (the
        // array's own first bytes; no kernel reads them), or host memory for rows of zero
        // bytes.
        run(py, 0, || {
            let mut out = Vec::new();
            if row_bytes > 0 || rows == 0 {
                // SAFETY: the array holds rows * row_bytes >= rows bytes at `addr` (or none are
                // claimed); splitting only makes descriptors.
                let probe = unsafe { DeviceView::<u8>::from_raw_cuda(&a.dev, a.addr, &[rows])? };
                dev.split_into(probe, ov, &mut out)
            } else {
                cpugpu::host::split(&vec![0u8; rows], ov).map(|_| ())
            }
        })?;
        let mut seg_shape = a.shape.clone();
        let list = PyList::empty(py);
        for w in ov.windows(2) {
            // Validated: 0 <= w[0] <= w[1] <= rows.
            let (s, e) = (w[0] as usize, w[1] as usize);
            seg_shape[0] = e - s;
            let part = a.part(py, a.addr + (s * row_bytes) as u64, seg_shape.clone());
            list.append(Bound::new(py, part)?)?;
        }
        Ok(list)
    })
}
