//! The input-preparation operations (the crate's issue-10 operations) on numpy arrays: segment
//! expansion, slot mapping, windowed gather, pad to a length or a bucket, the fused step, and
//! staged writes. They run the crate's host implementations (`cpugpu::host`) on the arrays' own
//! memory, with the argument checks and error mapping of `ops.rs`. CUDA memory is refused with
//! `DeviceError` (these bindings have no GPU path yet).

use std::sync::Mutex;

use cpugpu::{Error, Index, Op, SegmentBounds, StagedWrites, StepPadding, StepRequests};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyList, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::arrays::{
    asarray, check_index, check_no_overlap, from_vec, index_input, int_sequence, is_cuda, Arr,
};
use crate::dtype::{by_index, by_width, from_bytes, resolve, value_bytes, DType};
use crate::errors::{err, guarded, make, run, to_py, Outcome};
use crate::ops::{need_axis, offsets_dtype, same_dtype, shape_mismatch};

/// `DeviceError` for CUDA memory given to a host-only operation.
fn refuse_cuda(py: Python<'_>, op: &str, args: &[Option<&Bound<'_, PyAny>>]) -> PyResult<()> {
    if args.iter().flatten().any(|a| is_cuda(a)) {
        return Err(err(
            py,
            "DeviceError",
            format!(
                "{op}: CUDA memory was passed, but {op} runs on host memory only (numpy arrays \
                 and DLPack CPU tensors); copy the operands to the host first"
            ),
        ));
    }
    Ok(())
}

/// `InvalidArgumentError` in the crate's format for an argument of `op`.
fn invalid(py: Python<'_>, op: Op, name: &'static str, value: i128, reason: &'static str) -> PyErr {
    to_py(
        py,
        Error::InvalidArgument {
            op,
            name,
            value,
            reason,
        },
    )
}

/// A non-negative integer argument.
fn count_arg(py: Python<'_>, op: Op, name: &'static str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| invalid(py, op, name, i128::from(v), "must not be negative"))
}

/// An int argument of `op` (a Python int or an object with `__index__`, such as a numpy
/// integer), converted here rather than by PyO3 so that a value past 64 bits or an object that
/// is not an int raises `InvalidArgumentError` naming the operation and the argument (PyO3 would
/// raise a bare `OverflowError` or `TypeError`).
fn int_arg(py: Python<'_>, op: Op, name: &'static str, obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    if let Ok(v) = obj.extract::<i64>() {
        return Ok(v);
    }
    let is_int = obj.is_instance_of::<PyInt>() || obj.hasattr("__index__").unwrap_or(false);
    let message = if is_int {
        format!("{}: {name} = {obj}: out of range (a 64-bit int)", op.name())
    } else {
        format!(
            "{}: {name} must be an int, got {}",
            op.name(),
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        )
    };
    Err(make(
        py,
        "InvalidArgumentError",
        message,
        &[
            ("op", op.name().into_py_any(py)?),
            ("name", name.into_py_any(py)?),
            ("value", obj.clone().unbind()),
        ],
    ))
}

/// An optional int argument (`None`: `default`).
fn opt_int_arg(
    py: Python<'_>,
    op: Op,
    name: &'static str,
    obj: Option<&Bound<'_, PyAny>>,
    default: i64,
) -> PyResult<i64> {
    match obj {
        Some(o) if !o.is_none() => int_arg(py, op, name, o),
        _ => Ok(default),
    }
}

/// The `cpugpu.Error` class, imported once.
fn error_base(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static BASE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    BASE.import(py, "cpugpu._errors", "Error")
}

/// `e` naming `op`: a cpugpu exception raised by a shared helper (which does not know the
/// operation: "counts must be int32 or int64, ...") gets `e.op` and its message prefixed with
/// the operation's name, as the crate's own messages read. One that already has `e.op` (the
/// crate's) is unchanged, and one whose message already starts with the name only gets `e.op`;
/// an exception that is not cpugpu's passes through.
fn naming(py: Python<'_>, op: &str, e: PyErr) -> PyErr {
    let v = e.value(py);
    if !error_base(py).is_ok_and(|base| v.is_instance(base).unwrap_or(false)) {
        return e;
    }
    if v.getattr("op").is_ok_and(|o| !o.is_none()) {
        return e;
    }
    let _ = v.setattr("op", op);
    if let Ok(msg) = v.str() {
        let msg = msg.to_string();
        if !msg.starts_with(op) {
            let _ = v.setattr("args", (format!("{op}: {msg}"),));
        }
    }
    e
}

/// Runs the body of the binding of `op`, its errors naming `op` (see [`naming`]).
fn named<T>(py: Python<'_>, op: &str, body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    body().map_err(|e| naming(py, op, e))
}

/// A zero-filled vector of `len` elements for a new output of `op`, allocated fallibly (`len`
/// comes from the caller's arguments): a size past `usize` or `isize::MAX` bytes raises
/// `ShapeError` (`SizeOverflow`), an allocation the system refuses `OutOfMemoryError` (with
/// `e.bytes`); never an abort or a panic.
fn zeroed<T: Copy + Default>(py: Python<'_>, op: Op, len: usize) -> PyResult<Vec<T>> {
    let too_large = || {
        to_py(
            py,
            Error::SizeOverflow {
                op,
                what: "the output's size in bytes",
            },
        )
    };
    let bytes = len
        .checked_mul(std::mem::size_of::<T>())
        .filter(|&b| isize::try_from(b).is_ok())
        .ok_or_else(too_large)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| to_py(py, Error::OutOfMemory { op, bytes }))?;
    v.resize(len, T::default());
    Ok(v)
}

/// The first error `cpugpu::host::gather_windows_into` would report for a new output of
/// `out_len` elements (ragged layout) or `width` elements per row (rows layout), found before
/// that output is allocated: the crate's checks (`check_at` in `ops/windows/host.rs`) in the
/// same position order, so that a window past its row raises `IndexOutOfBoundsError` instead of
/// asking for the memory its bogus length implies. The lengths of `starts` and `ext` must fit
/// `rows` (`n` and `n + 1` or `n`); the crate checks everything again.
#[allow(clippy::too_many_arguments)]
fn window_error<I: Index>(
    rows: &[I],
    starts: Option<&[I]>,
    ext: &[I],
    ragged: bool,
    table_rows: usize,
    cols: usize,
    width: usize,
    out_len: usize,
) -> Option<Error> {
    let op = Op::GatherWindows;
    let n = rows.len();
    let items = if ragged { n + 1 } else { n };
    for q in 0..items {
        if ragged {
            let o = ext[q].to_i64();
            if o < 0 || o as u64 > out_len as u64 {
                return Some(Error::OffsetOutOfRange {
                    op,
                    position: q,
                    value: o,
                    len: out_len,
                });
            }
            if q > 0 && o < ext[q - 1].to_i64() {
                return Some(Error::OffsetsNotMonotonic {
                    op,
                    position: q,
                    previous: ext[q - 1].to_i64(),
                    value: o,
                });
            }
        }
        if q >= n {
            continue;
        }
        let row = rows[q].to_i64();
        if row < 0 || row as u64 >= table_rows as u64 {
            return Some(Error::IndexOutOfBounds {
                op,
                position: q,
                index: row,
                bound: table_rows,
            });
        }
        let start = starts.map_or(0, |s| s[q].to_i64());
        let len = if ragged {
            let len = ext[q + 1].to_i64() - ext[q].to_i64();
            if len < 0 {
                continue; // reported at q + 1 as a decreasing offset
            }
            len
        } else {
            ext[q].to_i64()
        };
        let c = cols as i64;
        let bound = if start < 0 || len < 0 || start > c || len > c - start {
            cols
        } else if !ragged && len as u64 > width as u64 {
            width
        } else {
            continue;
        };
        return Some(Error::WindowOutOfRange {
            op,
            position: q,
            start,
            len,
            cols: bound,
        });
    }
    None
}

/// An optional index-like argument (`None`: absent).
fn opt_index<'py>(obj: Option<&Bound<'py, PyAny>>, what: &str) -> PyResult<Option<Arr<'py>>> {
    obj.map(|o| index_input(o, what)).transpose()
}

/// `obj` as a list of items when it is a list or tuple, else `None` (a single item).
fn as_items<'py>(obj: &Bound<'py, PyAny>) -> Option<Vec<Bound<'py, PyAny>>> {
    if let Ok(l) = obj.cast::<PyList>() {
        return Some(l.iter().collect());
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return Some(t.iter().collect());
    }
    None
}

/// A list of ints (bucket sizes, block sizes): each non-negative.
fn usize_list(
    py: Python<'_>,
    op: Op,
    obj: &Bound<'_, PyAny>,
    name: &'static str,
) -> PyResult<Vec<usize>> {
    let v: Vec<i64> = obj.extract().map_err(|_| {
        err(
            py,
            "InvalidArgumentError",
            format!(
                "{}: {name} must be a sequence of ints, got {obj}",
                op.name()
            ),
        )
    })?;
    v.into_iter().map(|x| count_arg(py, op, name, x)).collect()
}

/// Raises `LayoutError` when any output overlaps another output or an input.
fn no_overlaps(
    py: Python<'_>,
    outs: &[(&Arr<'_>, &str)],
    ins: &[(&Arr<'_>, &str)],
) -> PyResult<()> {
    for (i, (o, ow)) in outs.iter().enumerate() {
        for (x, xw) in ins.iter().chain(&outs[i + 1..]) {
            check_no_overlap(py, *o, ow, *x, xw)?;
        }
    }
    Ok(())
}

/// `out` as a pair of arrays.
fn out_pair<'py>(
    py: Python<'py>,
    out: &Bound<'py, PyAny>,
    op: &str,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    match as_items(out) {
        Some(v) if v.len() == 2 => Ok((v[0].clone(), v[1].clone())),
        _ => Err(err(
            py,
            "InvalidArgumentError",
            format!("{op}: out must be a pair of arrays (seg_ids, positions)"),
        )),
    }
}

/// Segment expansion (CSR to COO): for every element ``i`` of the outputs, ``seg_ids[i]`` is its
/// segment ``s`` and ``positions[i] = starts[s] + (i - offsets[s])`` (``starts`` None: 0).
/// Returns ``(seg_ids, positions)``.
///
/// vLLM's request index and position of every token: with ``counts`` = ``num_scheduled_tokens``
/// and ``starts`` = ``num_computed_tokens`` it is (numpy)
/// ``req = np.repeat(np.arange(n), counts)`` and
/// ``pos = starts[req] + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)``.
///
/// The segments are ``counts`` (``n`` non-negative counts) or ``offsets=`` (``n + 1``
/// non-decreasing offsets, ``query_start_loc``; ``offsets[0]`` may be above 0); exactly one of
/// them. All arguments are one-dimensional int32 or int64 (lists are converted to int64).
/// New arrays: ``seg_ids`` of ``ids_dtype`` (default int32), ``positions`` of
/// ``positions_dtype`` (default: ``starts``' dtype, else int64). int32 ``starts`` may give
/// int64 positions (widened exactly); int64 ``starts`` with int32 positions raise
/// ``cpugpu.DtypeError``. ``out=(seg_ids, positions)``: writeable one-dimensional int32/int64
/// arrays exactly as long as the segments' total, written in place and returned (the dtypes are
/// theirs; ``ids_dtype``/``positions_dtype`` are then refused).
///
/// Differences from numpy: a negative count raises ``cpugpu.OffsetsError`` (``np.repeat``
/// raises ``ValueError`` too, without the position), and so do a negative ``offsets[0]`` and a
/// decreasing offset; a position past the positions dtype's maximum raises
/// ``cpugpu.OffsetsError`` instead of wrapping; ``out`` arrays not exactly as long as the total
/// raise ``cpugpu.ShapeError``. Errors name the operation (``e.op == "expand_segments"``) and
/// the offending position; nothing is written then. CUDA memory raises ``cpugpu.DeviceError``
/// (host memory only). The GIL is released on large inputs.
#[pyfunction]
#[pyo3(signature = (counts = None, starts = None, *, offsets = None, ids_dtype = None, positions_dtype = None, out = None))]
pub(crate) fn expand_segments<'py>(
    py: Python<'py>,
    counts: Option<&Bound<'py, PyAny>>,
    starts: Option<&Bound<'py, PyAny>>,
    offsets: Option<&Bound<'py, PyAny>>,
    ids_dtype: Option<&Bound<'py, PyAny>>,
    positions_dtype: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    named(py, "expand_segments", || {
        let outs = out
            .map(|o| out_pair(py, o, "expand_segments"))
            .transpose()?;
        let (o0, o1) = (outs.as_ref().map(|p| &p.0), outs.as_ref().map(|p| &p.1));
        refuse_cuda(py, "expand_segments", &[counts, starts, offsets, o0, o1])?;
        let (bounds, is_offsets) = match (counts, offsets) {
            (Some(c), None) => (index_input(c, "counts")?, false),
            (None, Some(o)) => (index_input(o, "offsets")?, true),
            _ => return Err(err(
                py,
                "InvalidArgumentError",
                "expand_segments takes the segments as counts or as offsets=, exactly one of them",
            )),
        };
        let st = opt_index(starts, "starts")?;
        let pair = match (o0, o1) {
            (Some(a), Some(b)) => {
                if ids_dtype.is_some() || positions_dtype.is_some() {
                    return Err(err(
                        py,
                        "InvalidArgumentError",
                        "expand_segments: ids_dtype and positions_dtype apply to new arrays; with \
                     out= the dtypes are the out arrays'",
                    ));
                }
                let (s, p) = (Arr::output(a, "out[0]")?, Arr::output(b, "out[1]")?);
                check_index(py, &s, "out[0]")?;
                check_index(py, &p, "out[1]")?;
                let mut ins = vec![(&bounds, "the segments")];
                if let Some(x) = &st {
                    ins.push((x, "starts"));
                }
                no_overlaps(py, &[(&s, "out[0]"), (&p, "out[1]")], &ins)?;
                Some((s, p))
            }
            _ => None,
        };
        let (sd, sdescr) = match &pair {
            Some((s, _)) => (s.dtype, s.obj.dtype()),
            None => match ids_dtype {
                Some(d) => offsets_dtype(py, Some(d), "ids_dtype")?,
                None => (DType::I32, numpy::dtype::<i32>(py)),
            },
        };
        let (pd, pdescr) = match (&pair, positions_dtype, &st) {
            (Some((_, p)), _, _) => (p.dtype, p.obj.dtype()),
            (None, Some(d), _) => offsets_dtype(py, Some(d), "positions_dtype")?,
            (None, None, Some(s)) => (s.dtype, s.obj.dtype()),
            (None, None, None) => (DType::I64, numpy::dtype::<i64>(py)),
        };
        if let Some(s) = &st {
            if s.dtype == DType::I64 && pd == DType::I32 {
                return Err(err(
                    py,
                    "DtypeError",
                    "expand_segments: starts is int64 and the positions int32: cpugpu widens int32 \
                 starts to int64 positions but does not narrow; pass int64 positions or int32 \
                 starts",
                ));
            }
        }
        by_index!(bounds.dtype, L => {
            by_index!(sd, S => {
                by_index!(pd, P => {
                    // SAFETY: `L` is the segments' own dtype (by_index! on `bounds.dtype`); only read,
                    // and no output overlaps it (checked by no_overlaps above); `bounds` stays alive
                    // in this frame while the slice is used.
                    let bv = unsafe { bounds.slice::<L>() };
                    let b = if is_offsets { SegmentBounds::Offsets(bv) } else { SegmentBounds::Counts(bv) };
                    // About the bytes written (for the GIL decision): the segments' total.
                    let total: i64 = if is_offsets {
                        bv.last().zip(bv.first()).map_or(0, |(l, f)| l.to_i64().saturating_sub(f.to_i64()))
                    } else {
                        bv.iter().fold(0i64, |a, c| a.saturating_add(c.to_i64().max(0)))
                    };
                    let bytes = (total.max(0) as usize).saturating_mul(16);
                    let widened: Option<Vec<P>> = match &st {
                        Some(s) if s.dtype != pd => {
                            // `starts` is int32 or int64 (index_input), so is `pd` (offsets_dtype,
                            // or check_index of out[1]), and int64 starts with int32 positions were
                            // refused above: differing dtypes are int32 starts, int64 positions.
                            debug_assert!(s.dtype == DType::I32 && pd == DType::I64);
                            // SAFETY: `starts` is int32 (the reasoning above), read as i32; only
                            // read, no output overlaps it (checked), alive in this frame.
                            Some(unsafe { s.slice::<i32>() }
                            .iter()
                            .map(|&x| P::from_i64(i64::from(x)).unwrap_or_default())
                            .collect())
                        }
                        _ => None,
                    };
                    let sv: Option<&[P]> = match (&widened, &st) {
                        (Some(w), _) => Some(w),
                        // SAFETY: not widened, so `starts` has the positions' dtype `P`; only read, no
                        // output overlaps it (checked), alive in this frame.
                        (None, Some(s)) => Some(unsafe { s.slice::<P>() }),
                        (None, None) => None,
                    };
                    match &pair {
                        Some((s, p)) => {
                            // SAFETY: `S`/`P` are out[0]'s and out[1]'s dtypes (by_index! on them);
                            // both are writeable (Arr::output) and overlap each other and every
                            // input nowhere (no_overlaps above), so these are the only slices of
                            // their memory; alive in this frame.
                            let (seg, pos) = unsafe { (s.slice_mut::<S>(), p.slice_mut::<P>()) };
                            run(py, bytes, || cpugpu::host::expand_segments_into(b, sv, seg, pos))?;
                            PyTuple::new(py, [s.obj.clone().into_any(), p.obj.clone().into_any()])
                        }
                        None => {
                            let (seg, pos) = run(py, bytes, || cpugpu::host::expand_segments::<L, S, P>(b, sv))?;
                            let n = seg.len();
                            PyTuple::new(py, [from_vec(py, &sdescr, &[n], seg)?, from_vec(py, &pdescr, &[n], pos)?])
                        }
                    }
                })
            })
        })
    })
}

/// Slot mapping through block tables: for token ``t`` and KV-cache group ``g``,
/// ``slots[g, t] = block_table_g[rows[t], positions[t] // bs_g] * bs_g + positions[t] % bs_g``
/// (vLLM's ``slot_mapping``), and ``pad_id`` (default -1, vLLM's ``PAD_SLOT_ID``) from the token
/// count to the end of each output row. Returns the slots.
///
/// ``rows`` (each token's block-table row, its request state) and ``positions`` are
/// one-dimensional int32/int64 of one length (lists are converted to int64). One group:
/// ``block_table`` a ``[rows, max_blocks]`` int32/int64 array, ``num_blocks`` its valid-entry
/// count per row (same dtype), ``block_size`` an int; several groups: lists of each, of one
/// length. Without ``out`` the result is new: ``[len(rows)]`` for one group given as an array,
/// ``[groups, len(rows)]`` for lists, of ``dtype`` (int64 default, or int32). ``out=``: a
/// writeable int32/int64 array, ``[T]`` (one group) or ``[groups, T]`` with ``T >=
/// len(rows)``, written in place (the ``pad_id`` tail included) and returned.
///
/// Differences from vLLM's numpy formulation (which reads whatever the table holds): a token
/// whose block is past its row's ``num_blocks`` raises ``cpugpu.IndexOutOfBoundsError``
/// (``BlockOutOfRange``), so does a negative block number and a row outside the table; a slot
/// past the dtype's maximum raises ``cpugpu.OffsetsError``. Errors name ``slot_mapping``, the
/// token position and the group; nothing is written then. CUDA memory raises
/// ``cpugpu.DeviceError`` (host memory only). The GIL is released on large inputs.
#[pyfunction]
#[pyo3(signature = (rows, positions, block_table, num_blocks, block_size, *, pad_id = None, dtype = None, out = None))]
#[pyo3(
    text_signature = "(rows, positions, block_table, num_blocks, block_size, *, pad_id=-1, dtype=None, out=None)"
)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn slot_mapping<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyAny>,
    positions: &Bound<'py, PyAny>,
    block_table: &Bound<'py, PyAny>,
    num_blocks: &Bound<'py, PyAny>,
    block_size: &Bound<'py, PyAny>,
    pad_id: Option<&Bound<'py, PyAny>>,
    dtype: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    named(py, "slot_mapping", || {
        let op = Op::SlotMapping;
        let pad_id = opt_int_arg(py, op, "pad_id", pad_id, -1)?;
        let multi = as_items(block_table);
        let (tables, nbs, sizes): (Vec<Bound<'py, PyAny>>, Vec<Bound<'py, PyAny>>, Vec<usize>) =
            match &multi {
                Some(t) => {
                    let nb = as_items(num_blocks).unwrap_or_else(|| vec![num_blocks.clone()]);
                    let bs = usize_list(py, op, block_size, "block_size")?;
                    if nb.len() != t.len() || bs.len() != t.len() {
                        return Err(to_py(
                            py,
                            Error::LengthMismatch {
                                op,
                                what: "num_blocks / block_size (one per block table)",
                                expected: t.len(),
                                actual: if nb.len() != t.len() {
                                    nb.len()
                                } else {
                                    bs.len()
                                },
                            },
                        ));
                    }
                    (t.clone(), nb, bs)
                }
                None => {
                    let bs: i64 = block_size.extract().map_err(|_| {
                        err(
                            py,
                            "InvalidArgumentError",
                            "slot_mapping: block_size must be an int for one block table",
                        )
                    })?;
                    (
                        vec![block_table.clone()],
                        vec![num_blocks.clone()],
                        vec![count_arg(py, op, "block_size", bs)?],
                    )
                }
            };
        let mut cuda_args: Vec<Option<&Bound<'py, PyAny>>> = vec![Some(rows), Some(positions), out];
        cuda_args.extend(tables.iter().chain(&nbs).map(Some));
        refuse_cuda(py, "slot_mapping", &cuda_args)?;
        let r = index_input(rows, "rows")?;
        let p = index_input(positions, "positions")?;
        let n = r.len;
        let mut ts = Vec::with_capacity(tables.len());
        let mut ns = Vec::with_capacity(tables.len());
        for (g, (t, nb)) in tables.iter().zip(&nbs).enumerate() {
            let t = Arr::input(t, &format!("block_table[{g}]"))?;
            if !matches!(t.dtype, DType::I32 | DType::I64) || t.shape().len() != 2 {
                return Err(err(
                    py,
                    "DtypeError",
                    format!(
                        "slot_mapping: block_table[{g}] must be a two-dimensional int32 or int64 \
                     array, got {} of shape {:?}",
                        t.dtype.name(),
                        t.shape()
                    ),
                ));
            }
            let nb = index_input(nb, &format!("num_blocks[{g}]"))?;
            same_dtype(py, &t, "block_table", &nb, "num_blocks")?;
            if let Some(t0) = ts.first() {
                same_dtype(py, &t, "block_table[g]", t0, "block_table[0]")?;
            }
            ts.push(t);
            ns.push(nb);
        }
        let groups = ts.len();
        if groups == 0 {
            return Err(invalid(
                py,
                op,
                "the number of KV-cache groups",
                0,
                "at least one group is needed",
            ));
        }
        let (out_arr, new_descr) = match out {
            Some(o) => {
                if dtype.is_some() {
                    return Err(err(
                        py,
                        "InvalidArgumentError",
                        "slot_mapping: dtype applies to a new array; with out= the dtype is out's",
                    ));
                }
                let o = Arr::output(o, "out")?;
                let s = o.shape();
                let ok_shape = match s.len() {
                    1 => groups == 1,
                    2 => s[0] == groups,
                    _ => false,
                };
                if !matches!(o.dtype, DType::I32 | DType::I64) {
                    return Err(err(
                        py,
                        "DtypeError",
                        format!(
                            "slot_mapping: out must be int32 or int64, got {}",
                            o.dtype.name()
                        ),
                    ));
                }
                if !ok_shape {
                    return Err(shape_mismatch(
                        py,
                        op,
                        "out's shape ([T] for one group, [groups, T] with T >= len(rows))",
                        &[groups, n],
                        s,
                    ));
                }
                let mut ins: Vec<(&Arr<'_>, &str)> = vec![(&r, "rows"), (&p, "positions")];
                ins.extend(ts.iter().map(|t| (t, "a block table")));
                ins.extend(ns.iter().map(|t| (t, "num_blocks")));
                no_overlaps(py, &[(&o, "out")], &ins)?;
                (Some(o), None)
            }
            None => (None, Some(offsets_dtype(py, dtype, "dtype")?)),
        };
        let od = out_arr.as_ref().map_or_else(
            || new_descr.as_ref().map_or(DType::I64, |d| d.0),
            |o| o.dtype,
        );
        let bytes = groups.saturating_mul(n).saturating_mul(8);
        by_index!(r.dtype, I => { by_index!(p.dtype, P => { by_index!(ts[0].dtype, B => { by_index!(od, O => {
        let pad = O::from_i64(pad_id).ok_or_else(|| invalid(py, op, "pad_id", i128::from(pad_id), "does not fit the slot dtype"))?;
        // SAFETY (the table and num_blocks slices): `B` is block_table[0]'s dtype, and every
        // table and num_blocks has it (same_dtype above); only read; `out` overlaps none of them
        // (no_overlaps above); the arrays stay referenced by this frame meanwhile.
        let hg: Vec<cpugpu::host::KvCacheGroup<'_, B>> = ts.iter().zip(&ns).zip(&sizes).map(|((t, nb), &bs)| {
            cpugpu::host::KvCacheGroup {
                // SAFETY: the table's dtype is `B` (the comment above).
                block_table: unsafe { t.slice::<B>() },
                max_blocks: t.shape()[1],
                // SAFETY: num_blocks' dtype is `B` (the comment above).
                num_blocks: unsafe { nb.slice::<B>() },
                block_size: bs,
            }
        }).collect();
        // SAFETY: `I`/`P` are rows'/positions' dtypes (by_index!); only read; `out` overlaps
        // neither (checked); alive in this frame.
        let (rv, pv) = unsafe { (r.slice::<I>(), p.slice::<P>()) };
        match (&out_arr, &new_descr) {
            (Some(o), _) => {
                // SAFETY: `O` is out's dtype (`od`); out is writeable (Arr::output) and overlaps
                // no input (no_overlaps above), so this is the only slice of its memory.
                let ov = unsafe { o.slice_mut::<O>() };
                run(py, bytes, || cpugpu::host::slot_mapping_into(rv, pv, &hg, pad, ov))?;
                Ok(o.obj.clone().into_any())
            }
            (None, Some((_, descr))) => {
                let len = groups.checked_mul(n).ok_or_else(|| to_py(py, Error::SizeOverflow { op, what: "the output's size" }))?;
                let mut v: Vec<O> = zeroed(py, op, len)?;
                run(py, bytes, || cpugpu::host::slot_mapping_into(rv, pv, &hg, pad, &mut v))?;
                let shape: Vec<usize> = if multi.is_some() { vec![groups, n] } else { vec![n] };
                from_vec(py, descr, &shape, v)
            }
            (None, None) => unreachable!("a new array has a dtype"),
        }
    }) }) }) })
    })
}

/// Windowed row gather: entry ``r`` copies ``table[rows[r], starts[r] : starts[r] + len_r]``
/// (``starts`` None: 0) into the output. Returns the output.
///
/// Two layouts, exactly one of them:
///
/// * ``offsets=`` (``n + 1`` non-decreasing offsets, ragged): entry ``r`` fills
///   ``out[offsets[r]:offsets[r + 1]]`` (its length is the difference). A step's ``input_ids``
///   from the token table: ``rows`` = request states, ``starts`` = tokens computed, ``offsets`` =
///   ``query_start_loc``. New output: one-dimensional, ``offsets[-1]`` elements, zero outside
///   the windows.
/// * ``lens=`` (``n`` lengths): entry ``r`` fills the first ``lens[r]`` elements of row ``r`` of
///   an ``[n, width]`` output (vLLM's ``gather_block_tables``); the rest of each row is
///   untouched. New output: ``[n, width]`` (``width`` default ``max(lens)``), zero-filled.
///
/// ``table`` is any supported dtype with rows along axis 0 (the rest flattened: a window runs
/// over a row's elements); ``rows``, ``starts`` and the offsets or lengths are one-dimensional
/// int32 or int64 of one dtype (lists are converted to int64). ``out=``: a writeable array of
/// ``table``'s dtype (one-dimensional for ``offsets``, ``[n, width]`` for ``lens``), written in
/// place and returned; ``width`` is then refused.
///
/// Errors (numpy would wrap negative indices or raise without the entry): a row outside the
/// table raises ``cpugpu.IndexOutOfBoundsError``, a window past its row (or past the output's
/// width) ``cpugpu.IndexOutOfBoundsError`` (``WindowOutOfRange``), bad offsets
/// ``cpugpu.OffsetsError``; each names ``gather_windows`` and the entry; nothing is written
/// then. A new output is allocated only after these checks; one too large to allocate raises
/// ``cpugpu.OutOfMemoryError`` (``cpugpu.ShapeError`` when its size overflows). CUDA memory
/// raises ``cpugpu.DeviceError`` (host memory only).
#[pyfunction]
#[pyo3(signature = (table, rows, starts = None, *, offsets = None, lens = None, width = None, out = None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gather_windows<'py>(
    py: Python<'py>,
    table: &Bound<'py, PyAny>,
    rows: &Bound<'py, PyAny>,
    starts: Option<&Bound<'py, PyAny>>,
    offsets: Option<&Bound<'py, PyAny>>,
    lens: Option<&Bound<'py, PyAny>>,
    width: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    named(py, "gather_windows", || {
        let op = Op::GatherWindows;
        let width = width
            .filter(|w| !w.is_none())
            .map(|w| int_arg(py, op, "width", w).and_then(|w| count_arg(py, op, "width", w)))
            .transpose()?;
        refuse_cuda(
            py,
            "gather_windows",
            &[Some(table), Some(rows), starts, offsets, lens, out],
        )?;
        let (ext, ragged) = match (offsets, lens) {
            (Some(o), None) => (index_input(o, "offsets")?, true),
            (None, Some(l)) => (index_input(l, "lens")?, false),
            _ => {
                return Err(err(
                    py,
                    "InvalidArgumentError",
                    "gather_windows takes the layout as offsets= or lens=, exactly one of them",
                ))
            }
        };
        let t = Arr::input(table, "table")?;
        need_axis(py, &t, "table")?;
        let r = index_input(rows, "rows")?;
        let st = opt_index(starts, "starts")?;
        same_dtype(
            py,
            &r,
            "rows",
            &ext,
            if ragged { "offsets" } else { "lens" },
        )?;
        if let Some(s) = &st {
            same_dtype(py, &r, "rows", s, "starts")?;
        }
        let n = r.len;
        let o = match out {
            Some(o) => {
                if width.is_some() {
                    return Err(err(
                        py,
                        "InvalidArgumentError",
                        "gather_windows: width applies to a new array; with out= the width is out's",
                    ));
                }
                let o = Arr::output(o, "out")?;
                same_dtype(py, &t, "table", &o, "out")?;
                let s = o.shape();
                if ragged && s.len() != 1 {
                    return Err(shape_mismatch(
                        py,
                        op,
                        "out's shape (one-dimensional for offsets=)",
                        &[s.iter().product()],
                        s,
                    ));
                }
                if !ragged && (s.len() != 2 || s[0] != n) {
                    let w = if s.len() == 2 { s[1] } else { 0 };
                    return Err(shape_mismatch(
                        py,
                        op,
                        "out's shape ([n, width] for lens=)",
                        &[n, w],
                        s,
                    ));
                }
                let mut ins: Vec<(&Arr<'_>, &str)> = vec![
                    (&t, "table"),
                    (&r, "rows"),
                    (&ext, "the offsets or lengths"),
                ];
                if let Some(x) = &st {
                    ins.push((x, "starts"));
                }
                no_overlaps(py, &[(&o, "out")], &ins)?;
                Some(o)
            }
            None => None,
        };
        let tshape = t.shape().to_vec();
        let descr = t.obj.dtype();
        let bytes = o.as_ref().map_or(0, |o| o.nbytes());
        by_width!(t.dtype.width(), T => { by_index!(r.dtype, I => {
        // SAFETY: `T` has the table's width (by_width!), `I` is rows' dtype (by_index!), and the
        // offsets/lengths and starts have it too (same_dtype above); only read; `out` overlaps
        // none of them (no_overlaps above); the arrays stay referenced by this frame meanwhile.
        let (tv, rv, ev) = unsafe { (t.slice::<T>(), r.slice::<I>(), ext.slice::<I>()) };
        // SAFETY: as above (starts has rows' dtype).
        let sv = st.as_ref().map(|s| unsafe { s.slice::<I>() });
        let layout = if ragged { cpugpu::WindowLayout::Ragged { offsets: ev } } else { cpugpu::WindowLayout::Rows { lens: ev } };
        match &o {
            Some(o) => {
                // SAFETY: out has the table's dtype (same_dtype above), so `T`'s width; it is
                // writeable (Arr::output) and overlaps no input (checked): the only slice of it.
                let ov = unsafe { o.slice_mut::<T>() };
                run(py, bytes, || cpugpu::host::gather_windows_into(tv, &tshape, rv, sv, layout, ov))?;
                Ok(o.obj.clone().into_any())
            }
            None => {
                let shape = if ragged {
                    vec![ev.last().map_or(0, |x| x.to_i64().max(0) as usize)]
                } else {
                    let w = match width {
                        Some(w) => w,
                        None => ev.iter().map(|x| x.to_i64().max(0) as usize).max().unwrap_or(0),
                    };
                    vec![n, w]
                };
                // Validate before allocating: the output's size comes from the offsets or
                // lengths, so a bad one (a window past its row) must not ask for its memory.
                let consistent = sv.is_none_or(|s| s.len() == n) && ev.len() == if ragged { n + 1 } else { n };
                if !consistent {
                    // A length mismatch: the crate reports it before looking at any output.
                    run(py, 0, || cpugpu::host::gather_windows_into(tv, &tshape, rv, sv, layout, &mut []))?;
                }
                let cols = tshape[1..].iter().product::<usize>();
                let (w, out_len) = if ragged { (0, shape[0]) } else { (shape[1], 0) };
                if let Some(e) = window_error(rv, sv, ev, ragged, tshape[0], cols, w, out_len) {
                    return Err(to_py(py, e));
                }
                let len = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or_else(|| to_py(py, Error::SizeOverflow { op, what: "the output's size" }))?;
                let mut v: Vec<T> = zeroed(py, op, len)?;
                run(py, len.saturating_mul(std::mem::size_of::<T>()), || cpugpu::host::gather_windows_into(tv, &tshape, rv, sv, layout, &mut v))?;
                from_vec(py, &descr, &shape, v)
            }
        }
    }) })
    })
}

/// The axis `axis` (negative: from the end) of an `ndim`-dimensional array, for `op`. Out of
/// range: `ShapeError` in the crate's wording, with the axis as given (`e.axis` may be
/// negative).
fn norm_axis(py: Python<'_>, op: Op, axis: i64, ndim: usize) -> PyResult<usize> {
    let nd = i64::try_from(ndim).unwrap_or(i64::MAX);
    let ax = if axis < 0 {
        axis.saturating_add(nd)
    } else {
        axis
    };
    match usize::try_from(ax) {
        Ok(a) if a < ndim => Ok(a),
        _ => Err(make(
            py,
            "ShapeError",
            format!(
                "{}: axis {axis} is out of range for {ndim} dimensions",
                op.name()
            ),
            &[
                ("op", op.name().into_py_any(py)?),
                ("axis", axis.into_py_any(py)?),
                ("ndim", ndim.into_py_any(py)?),
            ],
        )),
    }
}

/// numpy's own error for a `pad_value` it cannot store in the array's dtype (a `ValueError` for
/// `"x"`, an `OverflowError` for an int out of range) as `InvalidArgumentError`; cpugpu's errors
/// and other exceptions pass through.
fn typed_value_error(
    py: Python<'_>,
    e: PyErr,
    value: &Bound<'_, PyAny>,
    descr: &Bound<'_, PyArrayDescr>,
) -> PyErr {
    use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
    let ours = error_base(py).is_ok_and(|b| e.value(py).is_instance(b).unwrap_or(false));
    if ours
        || !(e.is_instance_of::<PyValueError>(py)
            || e.is_instance_of::<PyTypeError>(py)
            || e.is_instance_of::<PyOverflowError>(py))
    {
        return e;
    }
    err(
        py,
        "InvalidArgumentError",
        format!(
            "pad_value = {value} cannot be stored as {descr}: {}",
            e.value(py)
        ),
    )
}

/// How `pad` pads: to a length, or to a bucket.
enum Target {
    Length(usize),
    Buckets(Vec<usize>),
}

/// `pad_to_length` and `pad_to_bucket`.
fn pad<'py>(
    py: Python<'py>,
    op: Op,
    arr: &Bound<'py, PyAny>,
    target: Target,
    axis: i64,
    pad_value: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    refuse_cuda(py, op.name(), &[Some(arr), out])?;
    let a = Arr::input(arr, "arr")?;
    let descr = a.obj.dtype();
    let shape = a.shape().to_vec();
    let ax = norm_axis(py, op, axis, shape.len())?;
    let fill = match pad_value {
        Some(v) => value_bytes(py, v, a.dtype, &descr, "pad_value")
            .map_err(|e| typed_value_error(py, e, v, &descr))?,
        None => [0; 8],
    };
    let o = match out {
        Some(o) => {
            let o = Arr::output(o, "out")?;
            same_dtype(py, &a, "arr", &o, "out")?;
            check_no_overlap(py, &o, "out", &a, "arr")?;
            {
                let len = match &target {
                    Target::Length(l) => *l,
                    Target::Buckets(b) => {
                        cpugpu::bucket_for(shape[ax], b).map_err(|e| to_py(py, e))?
                    }
                };
                let mut want = shape.clone();
                want[ax] = len.max(shape[ax]);
                if o.shape() != want.as_slice() {
                    return Err(shape_mismatch(
                        py,
                        op,
                        "out's shape (the padded shape)",
                        &want,
                        o.shape(),
                    ));
                }
            }
            Some(o)
        }
        None => None,
    };
    let bytes = a.nbytes();
    by_width!(a.dtype.width(), T => {
        // SAFETY: `T` has arr's width (by_width!); only read; `out` overlaps it nowhere
        // (check_no_overlap above); `arr` stays referenced by this frame meanwhile.
        let sv = unsafe { a.slice::<T>() };
        let fill: T = from_bytes(&fill);
        match &o {
            Some(o) => {
                // SAFETY: out has arr's dtype (same_dtype above), so `T`'s width; it is writeable
                // (Arr::output) and does not overlap `arr` (checked): the only slice of it.
                let dv = unsafe { o.slice_mut::<T>() };
                run(py, bytes, || match &target {
                    Target::Length(l) => cpugpu::host::pad_to_length_into(sv, &shape, ax, *l, fill, dv),
                    Target::Buckets(b) => cpugpu::host::pad_to_bucket_into(sv, &shape, ax, b, fill, dv),
                })?;
                Ok(o.obj.clone().into_any())
            }
            None => {
                let padded = run(py, bytes, || {
                    let p = match &target {
                        Target::Length(l) => cpugpu::host::pad_to_length(sv, &shape, ax, *l, fill),
                        Target::Buckets(b) => cpugpu::host::pad_to_bucket(sv, &shape, ax, b, fill),
                    }?;
                    Ok(match p.data {
                        std::borrow::Cow::Borrowed(_) => None,
                        std::borrow::Cow::Owned(v) => Some((v, p.shape)),
                    })
                })?;
                match padded {
                    None => Ok(arr.clone()),
                    Some((v, s)) => from_vec(py, &descr, s.dims(), v),
                }
            }
        }
    })
}

/// Pads ``arr`` along ``axis`` to exactly ``length`` with ``pad_value`` (default 0) after the
/// data (numpy: ``np.pad(arr, ..., constant_values=pad_value)`` with ``length - arr.shape[axis]``
/// after). Returns ``arr`` itself (no copy) when the axis already has that length, else a new
/// array; with ``out=`` (a writeable array of the padded shape and ``arr``'s dtype) writes there
/// and returns ``out``.
///
/// ``axis`` may be negative. A ``length`` shorter than the axis raises
/// ``cpugpu.InvalidArgumentError`` (padding never truncates; ``np.pad`` refuses a negative width
/// too), an axis out of range ``cpugpu.ShapeError``. CUDA memory raises ``cpugpu.DeviceError``
/// (host memory only). The GIL is released on large inputs.
#[pyfunction]
#[pyo3(signature = (arr, length, axis = None, pad_value = None, *, out = None))]
#[pyo3(text_signature = "(arr, length, axis=0, pad_value=None, *, out=None)")]
pub(crate) fn pad_to_length<'py>(
    py: Python<'py>,
    arr: &Bound<'py, PyAny>,
    length: &Bound<'py, PyAny>,
    axis: Option<&Bound<'py, PyAny>>,
    pad_value: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let op = Op::PadToLength;
    named(py, op.name(), || {
        let length = int_arg(py, op, "the padded length", length)?;
        let length = count_arg(py, op, "the padded length", length)?;
        let axis = opt_int_arg(py, op, "axis", axis, 0)?;
        pad(py, op, arr, Target::Length(length), axis, pad_value, out)
    })
}

/// Pads ``arr`` along ``axis`` to the smallest of ``buckets`` (strictly ascending ints, e.g.
/// :func:`cuda_graph_sizes`) at least as long as the axis, with ``pad_value`` (default 0): the
/// batch sizes CUDA graphs were captured for. Returns ``arr`` itself when the axis already is a
/// bucket size, else a new array; with ``out=`` (the padded shape) writes there and returns it.
///
/// An axis above the largest bucket raises ``cpugpu.InvalidArgumentError`` with ``e.value`` and
/// ``e.largest`` (vLLM then runs the batch unpadded, without a graph: catch it and do so); an
/// empty or unsorted list raises ``cpugpu.InvalidArgumentError``. CUDA memory raises
/// ``cpugpu.DeviceError`` (host memory only).
#[pyfunction]
#[pyo3(signature = (arr, buckets, axis = None, pad_value = None, *, out = None))]
#[pyo3(text_signature = "(arr, buckets, axis=0, pad_value=None, *, out=None)")]
pub(crate) fn pad_to_bucket<'py>(
    py: Python<'py>,
    arr: &Bound<'py, PyAny>,
    buckets: &Bound<'py, PyAny>,
    axis: Option<&Bound<'py, PyAny>>,
    pad_value: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let op = Op::PadToBucket;
    named(py, op.name(), || {
        let b = usize_list(py, op, buckets, "buckets")?;
        let axis = opt_int_arg(py, op, "axis", axis, 0)?;
        pad(py, op, arr, Target::Buckets(b), axis, pad_value, out)
    })
}

/// The smallest of ``buckets`` (strictly ascending, non-empty) that is at least ``n``
/// (numpy: ``buckets[np.searchsorted(buckets, n)]``).
///
/// ``n`` above the largest bucket raises ``cpugpu.InvalidArgumentError`` with ``e.value`` and
/// ``e.largest`` (vLLM's reference instead returns ``n``: the batch runs without a CUDA graph);
/// an empty or unsorted list or a negative ``n`` raises ``cpugpu.InvalidArgumentError``.
#[pyfunction]
pub(crate) fn bucket_for(
    py: Python<'_>,
    n: &Bound<'_, PyAny>,
    buckets: &Bound<'_, PyAny>,
) -> PyResult<usize> {
    let op = Op::PadToBucket;
    let n = int_arg(py, op, "n", n)?;
    let n = count_arg(py, op, "n", n)?;
    let b = usize_list(py, op, buckets, "buckets")?;
    cpugpu::bucket_for(n, &b).map_err(|e| to_py(py, e))
}

/// The largest ``max_size`` :func:`cuda_graph_sizes` takes: 2**20 (1,048,576) tokens, far past
/// any batch a CUDA graph is captured for (vLLM's default largest is 512), and a list of 131,075
/// sizes.
const CUDA_GRAPH_MAX_SIZE: usize = 1 << 20;

/// vLLM's default CUDA-graph capture sizes up to ``max_size``: 1, 2, 4, then every multiple of
/// 8 (``cuda_graph_sizes(24) == [1, 2, 4, 8, 16, 24]``). A negative ``max_size``, or one above
/// 2**20 (1,048,576: far past any captured batch, and the list would grow with it), raises
/// ``cpugpu.InvalidArgumentError``.
#[pyfunction]
pub(crate) fn cuda_graph_sizes(
    py: Python<'_>,
    max_size: &Bound<'_, PyAny>,
) -> PyResult<Vec<usize>> {
    let op = Op::PadToBucket;
    let m = int_arg(py, op, "max_size", max_size)?;
    let m = count_arg(py, op, "max_size", m)?;
    if m > CUDA_GRAPH_MAX_SIZE {
        return Err(invalid(
            py,
            op,
            "max_size",
            m as i128,
            "above 2**20, the largest capture size cuda_graph_sizes lists",
        ));
    }
    Ok(cpugpu::cuda_graph_sizes(m))
}

/// A checked int32 array of `ndim` dimensions: an ndarray (or DLPack object) used in place, or a
/// sequence of ints converted to int32 by [`int_sequence`] (floats and bools refused, values
/// outside int32 refused rather than wrapped).
fn i32_input<'py>(obj: &Bound<'py, PyAny>, what: &str, ndim: usize) -> PyResult<Arr<'py>> {
    let py = obj.py();
    let a = if obj.cast::<PyUntypedArray>().is_ok() || obj.hasattr("__dlpack__")? {
        Arr::input(obj, what)?
    } else {
        Arr::checked(int_sequence(obj, what, &numpy::dtype::<i32>(py))?, what)?
    };
    if a.dtype != DType::I32 {
        return Err(err(
            py,
            "DtypeError",
            format!(
                "prepare_step: {what} must be int32 (vLLM's dtype), got {}; cast with \
                 {what}.astype(np.int32) (cpugpu does not convert arrays silently)",
                a.dtype.name()
            ),
        ));
    }
    if a.shape().len() != ndim {
        return Err(err(
            py,
            "ShapeError",
            format!(
                "prepare_step: {what} must have {ndim} dimension(s), got shape {:?}",
                a.shape()
            ),
        ));
    }
    Ok(a)
}

/// The output names of `prepare_step`, their dtypes, in `StepOutputs` order.
const STEP_OUTS: [(&str, DType); 6] = [
    ("query_start_loc", DType::I32),
    ("seq_lens", DType::I32),
    ("positions", DType::I64),
    ("input_ids", DType::I32),
    ("slot_mapping", DType::I64),
    ("logits_indices", DType::I64),
];

/// The whole input preparation of one step, fused (the crate's ``prepare_step``): from the
/// scheduler's per-request counts and the persistent request state (the token table and the
/// block tables), writes ``query_start_loc``, ``seq_lens``, ``positions``, ``input_ids``,
/// ``slot_mapping`` and ``logits_indices``, padded as ``padding`` says. Returns
/// ``(out, plan)``: the dict of output arrays, and ``plan``, a dict of ints ``num_reqs``,
/// ``num_tokens``, ``padded_tokens``, ``max_query_len``, ``max_seq_len``.
///
/// The results are identical to vLLM's numpy formulation (``benches/step_reference.py``,
/// ``prepare_step_numpy``; the tests check it):
///
/// * ``query_start_loc[Q + 1]`` (int32): offsets of each request's tokens, then the token count
///   for the padded requests; ``seq_lens[Q]`` (int32): computed + scheduled, 0 after ``n``;
/// * ``positions[T]`` (int64), ``input_ids[T]`` (int32, read from ``token_ids``): 0 from the
///   token count to the padded count, untouched after it;
/// * ``slot_mapping`` (int64, ``[groups, T]``, or ``[T]`` for one group): each token's KV-cache
///   slot, -1 (``PAD_SLOT_ID``) over the whole tail;
/// * ``logits_indices[Q]`` (int64): each request's last token; untouched after ``n``.
///
/// Inputs: ``state_index``, ``num_computed``, ``num_scheduled``: one-dimensional int32, one
/// entry per request in batch order (lists are converted to int32); ``token_ids``: ``[rows,
/// max_model_len]`` int32; ``block_tables``, ``num_blocks``, ``block_sizes``: per KV-cache group
/// an int32 ``[rows, max_blocks]`` table, its int32 valid-block count per row, and an int (lists
/// of them, or one of each for one group). ``padding``: None (no padding), an int (exactly that
/// many tokens), or a list of bucket sizes (the smallest that holds the tokens, e.g.
/// :func:`cuda_graph_sizes`; above the largest, no padding, as vLLM). ``out``: a dict of the six
/// persistent arrays (``Q + 1``, ``Q``, ``T``, ``T``, ``[groups, T]``, ``Q`` long, the dtypes
/// above, writeable), written in place; None: new arrays of ``Q = n`` requests and ``T`` = the
/// padded token count.
///
/// Errors, checked before anything is written (the crate's; vLLM's numpy would read stale or
/// wrapped entries): a state index outside the tables raises ``cpugpu.IndexOutOfBoundsError``, a
/// negative scheduled count ``cpugpu.OffsetsError``, tokens past ``max_model_len``
/// ``cpugpu.IndexOutOfBoundsError`` (``WindowOutOfRange``), a token whose block is past its
/// row's ``num_blocks`` or a negative block number ``cpugpu.IndexOutOfBoundsError``, outputs too
/// short ``cpugpu.ShapeError``, other dtypes ``cpugpu.DtypeError``; each names
/// ``prepare_step`` and the request or token position. New outputs too large to allocate (a
/// huge ``padding``) raise ``cpugpu.OutOfMemoryError``, or ``cpugpu.ShapeError`` when their size
/// overflows. Lists of floats or bools raise ``cpugpu.DtypeError``, values outside int32
/// ``cpugpu.InvalidArgumentError`` (not wrapped). CUDA memory raises ``cpugpu.DeviceError``
/// (host memory only). The GIL is released on large steps.
#[pyfunction]
#[pyo3(signature = (state_index, num_computed, num_scheduled, token_ids, block_tables, num_blocks, block_sizes, *, padding = None, out = None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare_step<'py>(
    py: Python<'py>,
    state_index: &Bound<'py, PyAny>,
    num_computed: &Bound<'py, PyAny>,
    num_scheduled: &Bound<'py, PyAny>,
    token_ids: &Bound<'py, PyAny>,
    block_tables: &Bound<'py, PyAny>,
    num_blocks: &Bound<'py, PyAny>,
    block_sizes: &Bound<'py, PyAny>,
    padding: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
    named(py, "prepare_step", || {
        let op = Op::PrepareStep;
        let out = match out {
            Some(o) if !o.is_none() => Some(o.cast::<PyDict>().map_err(|_| {
                err(
                    py,
                    "InvalidArgumentError",
                    format!(
                        "prepare_step: out must be a dict of the six output arrays, got {}",
                        o.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ),
                )
            })?),
            _ => None,
        };
        let multi = as_items(block_tables).is_some();
        let (tables, nbs, sizes) = match as_items(block_tables) {
            Some(t) => {
                let nb = as_items(num_blocks).unwrap_or_else(|| vec![num_blocks.clone()]);
                let bs = usize_list(py, op, block_sizes, "block_sizes")?;
                if nb.len() != t.len() || bs.len() != t.len() {
                    return Err(to_py(
                        py,
                        Error::LengthMismatch {
                            op,
                            what: "num_blocks / block_sizes (one per block table)",
                            expected: t.len(),
                            actual: if nb.len() != t.len() {
                                nb.len()
                            } else {
                                bs.len()
                            },
                        },
                    ));
                }
                (t, nb, bs)
            }
            None => {
                let bs: i64 = block_sizes.extract().map_err(|_| {
                    err(
                        py,
                        "InvalidArgumentError",
                        "prepare_step: block_sizes must be an int for one block table",
                    )
                })?;
                (
                    vec![block_tables.clone()],
                    vec![num_blocks.clone()],
                    vec![count_arg(py, op, "block_sizes", bs)?],
                )
            }
        };
        let out_items: Vec<Option<Bound<'py, PyAny>>> = match out {
            Some(d) => {
                for k in d.keys() {
                    let known = k
                        .extract::<String>()
                        .is_ok_and(|k| STEP_OUTS.iter().any(|(n, _)| *n == k));
                    if !known {
                        return Err(err(py, "InvalidArgumentError", format!("prepare_step: out has an unknown key {k:?} (the keys are query_start_loc, seq_lens, positions, input_ids, slot_mapping, logits_indices)")));
                    }
                }
                STEP_OUTS
                    .iter()
                    .map(|(n, _)| {
                        d.get_item(n)?.map(Some).ok_or_else(|| {
                            err(
                                py,
                                "InvalidArgumentError",
                                format!("prepare_step: out lacks {n:?}"),
                            )
                        })
                    })
                    .collect::<PyResult<_>>()?
            }
            None => vec![None; 6],
        };
        let mut cuda_args: Vec<Option<&Bound<'py, PyAny>>> = vec![
            Some(state_index),
            Some(num_computed),
            Some(num_scheduled),
            Some(token_ids),
        ];
        cuda_args.extend(tables.iter().chain(&nbs).map(Some));
        cuda_args.extend(out_items.iter().map(|o| o.as_ref()));
        refuse_cuda(py, "prepare_step", &cuda_args)?;
        let si = i32_input(state_index, "state_index", 1)?;
        let nc = i32_input(num_computed, "num_computed", 1)?;
        let ns = i32_input(num_scheduled, "num_scheduled", 1)?;
        let tok = i32_input(token_ids, "token_ids", 2)?;
        let mut ts = Vec::with_capacity(tables.len());
        let mut nbv = Vec::with_capacity(tables.len());
        for (g, (t, nb)) in tables.iter().zip(&nbs).enumerate() {
            ts.push(i32_input(t, &format!("block_tables[{g}]"), 2)?);
            nbv.push(i32_input(nb, &format!("num_blocks[{g}]"), 1)?);
        }
        let groups = ts.len();
        let pad_vec;
        let padding = match padding {
            None => StepPadding::None,
            Some(p) if p.is_none() => StepPadding::None,
            Some(p) if p.is_instance_of::<PyInt>() || p.extract::<i64>().is_ok() => {
                let x = int_arg(py, op, "the padded token count", p)?;
                StepPadding::Exact(count_arg(py, op, "the padded token count", x)?)
            }
            Some(p) => {
                pad_vec = usize_list(py, op, p, "padding")?;
                StepPadding::Buckets(&pad_vec)
            }
        };
        // SAFETY: the request arrays are int32 (i32_input), read as i32; only read; they stay
        // referenced by this frame meanwhile. The outputs are checked against them (no_overlaps,
        // below) before any output slice is made.
        let (siv, ncv, nsv) = unsafe { (si.slice::<i32>(), nc.slice::<i32>(), ns.slice::<i32>()) };
        let n = siv.len();
        let outs: Vec<Arr<'py>> = if out.is_some() {
            let mut v = Vec::with_capacity(6);
            for ((name, dt), o) in STEP_OUTS.iter().zip(&out_items) {
                let a = Arr::output(o.as_ref().expect("checked above"), name)?;
                if a.dtype != *dt {
                    return Err(err(
                        py,
                        "DtypeError",
                        format!(
                            "prepare_step: out[{name:?}] must be {}, got {}",
                            dt.name(),
                            a.dtype.name()
                        ),
                    ));
                }
                v.push(a);
            }
            v
        } else {
            // New arrays of n requests and the padded token count (sized generously where the
            // crate will raise: it checks everything again).
            let nt: usize = nsv.iter().map(|&k| k.max(0) as usize).sum();
            let padded = match padding {
                StepPadding::None => nt,
                StepPadding::Exact(p) => p.max(nt),
                StepPadding::Buckets(b) => cpugpu::bucket_for(nt, b).unwrap_or(nt),
            };
            let slots = groups.checked_mul(padded).ok_or_else(|| {
                to_py(
                    py,
                    Error::SizeOverflow {
                        op,
                        what: "slot_mapping's size (groups x padded tokens)",
                    },
                )
            })?;
            let lens = [n + 1, n, padded, padded, slots, n];
            let mut v = Vec::with_capacity(6);
            for (i, ((_, dt), len)) in STEP_OUTS.iter().zip(lens).enumerate() {
                let descr = if *dt == DType::I32 {
                    numpy::dtype::<i32>(py)
                } else {
                    numpy::dtype::<i64>(py)
                };
                let shape: Vec<usize> = if i == 4 && multi {
                    vec![groups, padded]
                } else {
                    vec![len]
                };
                let obj = if *dt == DType::I32 {
                    from_vec(py, &descr, &shape, zeroed::<i32>(py, op, len)?)?
                } else {
                    from_vec(py, &descr, &shape, zeroed::<i64>(py, op, len)?)?
                };
                v.push(Arr::input(&obj, "a new output")?);
            }
            v
        };
        let t_cap = outs[2].len;
        let sm = outs[4].shape();
        if !(sm.len() == 2 && sm[0] == groups && sm[1] == t_cap || sm.len() == 1 && groups == 1) {
            return Err(shape_mismatch(
                py,
                op,
                "slot_mapping's shape ([groups, T], or [T] for one group)",
                &[groups, t_cap],
                sm,
            ));
        }
        let mut ins: Vec<(&Arr<'_>, &str)> = vec![
            (&si, "state_index"),
            (&nc, "num_computed"),
            (&ns, "num_scheduled"),
            (&tok, "token_ids"),
        ];
        ins.extend(ts.iter().map(|t| (t, "a block table")));
        ins.extend(nbv.iter().map(|t| (t, "num_blocks")));
        let out_list: Vec<(&Arr<'_>, &str)> = outs
            .iter()
            .zip(STEP_OUTS)
            .map(|(a, (n, _))| (a, n))
            .collect();
        no_overlaps(py, &out_list, &ins)?;
        // SAFETY (the table slices below): every token table, block table and num_blocks is int32
        // (i32_input), read as i32; only read; no output overlaps any of them (no_overlaps just
        // above); they stay referenced by this frame meanwhile.
        let kv: Vec<cpugpu::host::KvCacheGroup<'_, i32>> = ts
            .iter()
            .zip(&nbv)
            .zip(&sizes)
            .map(|((t, nb), &bs)| cpugpu::host::KvCacheGroup {
                // SAFETY: a block table, int32 (the comment above).
                block_table: unsafe { t.slice::<i32>() },
                max_blocks: t.shape()[1],
                // SAFETY: num_blocks, int32 (the comment above).
                num_blocks: unsafe { nb.slice::<i32>() },
                block_size: bs,
            })
            .collect();
        let tables = cpugpu::host::StepTables {
            // SAFETY: the token table, int32 (the comment above `kv`).
            token_ids: unsafe { tok.slice::<i32>() },
            max_model_len: tok.shape()[1],
            kv_groups: &kv,
        };
        let req = StepRequests {
            state_index: siv,
            num_computed: ncv,
            num_scheduled: nsv,
        };
        // SAFETY: each output has the dtype STEP_OUTS gives it (checked for out=, made so for new
        // arrays), read as that type here; each is writeable (Arr::output, or new) and overlaps no
        // other output and no input (no_overlaps above), so these are the only slices of their
        // memory; they stay referenced by `outs` meanwhile.
        let step_out = unsafe {
            cpugpu::host::StepOutputs {
                query_start_loc: outs[0].slice_mut::<i32>(),
                seq_lens: outs[1].slice_mut::<i32>(),
                positions: outs[2].slice_mut::<i64>(),
                input_ids: outs[3].slice_mut::<i32>(),
                slot_mapping: outs[4].slice_mut::<i64>(),
                logits_indices: outs[5].slice_mut::<i64>(),
            }
        };
        let bytes = t_cap.saturating_mul(groups.saturating_mul(8).saturating_add(12));
        let plan = run(py, bytes, || {
            cpugpu::host::prepare_step_into(&req, &tables, padding, step_out)
        })?;
        let res = PyDict::new(py);
        for (a, (name, _)) in outs.iter().zip(STEP_OUTS) {
            res.set_item(name, a.obj.clone())?;
        }
        let p = PyDict::new(py);
        p.set_item("num_reqs", plan.num_reqs)?;
        p.set_item("num_tokens", plan.num_tokens)?;
        p.set_item("padded_tokens", plan.padded_tokens)?;
        p.set_item("max_query_len", plan.max_query_len)?;
        p.set_item("max_seq_len", plan.max_seq_len)?;
        Ok((res, p))
    })
}

/// The crate's queue, by element width.
enum Queue {
    W1(StagedWrites<u8>),
    W2(StagedWrites<u16>),
    W4(StagedWrites<u32>),
    W8(StagedWrites<u64>),
}

/// Runs `$body` with `$q` the queue of `$queue`'s width and `$T` its element type.
macro_rules! by_queue {
    ($queue:expr, $q:ident, $T:ident => $body:expr) => {
        match $queue {
            Queue::W1($q) => {
                type $T = u8;
                $body
            }
            Queue::W2($q) => {
                type $T = u16;
                $body
            }
            Queue::W4($q) => {
                type $T = u32;
                $body
            }
            Queue::W8($q) => {
                type $T = u64;
                $body
            }
        }
    };
}

/// Writes to a ``[rows, cols]`` table, queued between steps and applied together (the crate's
/// ``StagedWrites``, vLLM's ``StagedWriteTensor``): batching code stages a step's block-table
/// updates as they come (:meth:`stage`: a request's new block ids at its row, after its current
/// blocks), then :meth:`apply` writes them all.
///
/// ``StagedWrites(rows, cols, dtype=np.int32)``. Writes are applied in queue order: where two
/// overlap, the later wins (deterministically; vLLM leaves it to its kernel's block order).
/// Bounds are checked when a write is staged (``cpugpu.IndexOutOfBoundsError`` naming
/// ``staged_write`` and the write's position in the queue), so :meth:`apply` has no data
/// errors. On this package's host path :meth:`apply` copies directly into a numpy table; CUDA
/// memory raises ``cpugpu.DeviceError`` (host memory only).
#[pyclass(module = "cpugpu", name = "StagedWrites")]
pub(crate) struct PyStagedWrites {
    queue: Mutex<Queue>,
    dtype: DType,
    descr: Py<PyArrayDescr>,
    rows: usize,
    cols: usize,
}

impl PyStagedWrites {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PyStagedWrites {
    /// `StagedWrites(rows, cols, dtype)`, before its errors name the operation.
    fn new_checked(
        py: Python<'_>,
        rows: &Bound<'_, PyAny>,
        cols: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let op = Op::StagedWrite;
        let (rows, cols) = (
            int_arg(py, op, "rows", rows)?,
            int_arg(py, op, "cols", cols)?,
        );
        let (rows, cols) = (
            count_arg(py, op, "rows", rows)?,
            count_arg(py, op, "cols", cols)?,
        );
        let (dt, descr) = match dtype {
            Some(d) => resolve(py, d, "dtype")?,
            None => (DType::I32, numpy::dtype::<i32>(py)),
        };
        let dev = host_device();
        let queue = match dt.width() {
            1 => Queue::W1(StagedWrites::new(dev, rows, cols)),
            2 => Queue::W2(StagedWrites::new(dev, rows, cols)),
            4 => Queue::W4(StagedWrites::new(dev, rows, cols)),
            _ => Queue::W8(StagedWrites::new(dev, rows, cols)),
        };
        Ok(PyStagedWrites {
            queue: Mutex::new(queue),
            dtype: dt,
            descr: descr.unbind(),
            rows,
            cols,
        })
    }

    /// [`PyStagedWrites::stage`], before its errors name the operation.
    fn stage_checked(
        &self,
        py: Python<'_>,
        row: &Bound<'_, PyAny>,
        start: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let op = Op::StagedWrite;
        let (row, start) = (
            int_arg(py, op, "row", row)?,
            int_arg(py, op, "start", start)?,
        );
        refuse_cuda(py, "staged_write", &[Some(values)])?;
        let descr = self.descr.bind(py);
        let v = if values.cast::<PyUntypedArray>().is_ok() || values.hasattr("__dlpack__")? {
            Arr::input(values, "values")?
        } else if matches!(descr.kind(), b'i' | b'u') {
            // An integer table: ints only, in the dtype's range (numpy's cast would truncate
            // floats and wrap the rest).
            Arr::checked(int_sequence(values, "values", descr)?, "values")?
        } else {
            let a = asarray(py)?
                .call1((values, descr))?
                .cast_into::<PyUntypedArray>()
                .map_err(PyErr::from)?;
            Arr::checked(a, "values")?
        };
        if v.dtype != self.dtype {
            return Err(err(
                py,
                "DtypeError",
                format!(
                    "staged_write: values have dtype {}, the table {}",
                    v.dtype.name(),
                    self.dtype.name()
                ),
            ));
        }
        if v.shape().len() != 1 {
            return Err(err(
                py,
                "ShapeError",
                format!(
                    "staged_write: values must be one-dimensional, got shape {:?}",
                    v.shape()
                ),
            ));
        }
        // The queue is locked only around the crate calls: the outcome becomes a Python
        // exception (Python objects, a possible GIL switch) after the guard is dropped.
        let outcome = {
            let mut q = self.queue();
            let position = by_queue!(&*q, w, _T => w.len());
            match (usize::try_from(row), usize::try_from(start)) {
                (Err(_), _) => Outcome::Crate(Error::IndexOutOfBounds {
                    op,
                    position,
                    index: row,
                    bound: self.rows,
                }),
                (_, Err(_)) => Outcome::Crate(Error::WindowOutOfRange {
                    op,
                    position,
                    start,
                    len: v.len as i64,
                    cols: self.cols,
                }),
                (Ok(row), Ok(start)) => by_queue!(&mut *q, w, T => {
                    // SAFETY: `T` has the table dtype's width (the queue was made for it) and
                    // `v` has that dtype (checked above); only read, while `v` is alive; the
                    // crate copies the values into the queue.
                    let vals = unsafe { v.slice::<T>() };
                    guarded(|| w.stage(row, start, vals))
                }),
            }
        };
        outcome.into_py(py)
    }

    /// [`PyStagedWrites::apply`], before its errors name the operation.
    fn apply_checked(&self, py: Python<'_>, table: &Bound<'_, PyAny>) -> PyResult<()> {
        refuse_cuda(py, "staged_write", &[Some(table)])?;
        let t = Arr::output(table, "table")?;
        if t.dtype != self.dtype {
            return Err(err(
                py,
                "DtypeError",
                format!(
                    "staged_write: table has dtype {}, the queue {}",
                    t.dtype.name(),
                    self.dtype.name()
                ),
            ));
        }
        let shape = t.shape().to_vec();
        // Locked only around the crate call (see `stage`).
        let outcome = {
            let mut q = self.queue();
            by_queue!(&mut *q, w, T => {
                // SAFETY: `T` has the queue dtype's width and the table that dtype (checked);
                // the table is writeable (Arr::output) and no other slice of it is in use (the
                // staged values are the queue's own copy).
                let tv = unsafe { t.slice_mut::<T>() };
                guarded(|| w.apply(cpugpu::DeviceViewMut::host(tv, &shape)?))
            })
        };
        outcome.into_py(py)
    }
}

#[pymethods]
impl PyStagedWrites {
    /// ``StagedWrites(rows, cols, dtype=np.int32)``: an empty queue of writes to a ``[rows,
    /// cols]`` table of ``dtype``.
    #[new]
    #[pyo3(signature = (rows, cols, dtype = None))]
    fn py_new(
        py: Python<'_>,
        rows: &Bound<'_, PyAny>,
        cols: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        named(py, "staged_write", || {
            Self::new_checked(py, rows, cols, dtype)
        })
    }

    /// Queues ``values`` (a one-dimensional array of the queue's dtype, or a sequence numpy
    /// converts to it) for ``table[row, start : start + len(values)]``. An empty ``values``
    /// queues nothing. A row outside the table raises ``cpugpu.IndexOutOfBoundsError``, a range
    /// past the row ``cpugpu.IndexOutOfBoundsError`` (``WindowOutOfRange``), both naming the
    /// write's position in the queue; nothing is queued then. For an integer table a sequence
    /// must hold ints (floats and bools raise ``cpugpu.DtypeError``), each within the dtype's
    /// range (else ``cpugpu.InvalidArgumentError``: not wrapped).
    fn stage(
        &self,
        py: Python<'_>,
        row: &Bound<'_, PyAny>,
        start: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        named(py, "staged_write", || {
            self.stage_checked(py, row, start, values)
        })
    }

    /// Applies every queued write to ``table`` (a writeable ``[rows, cols]`` numpy array of the
    /// queue's dtype, in place) and clears the queue. Returns None.
    fn apply(&self, py: Python<'_>, table: &Bound<'_, PyAny>) -> PyResult<()> {
        named(py, "staged_write", || self.apply_checked(py, table))
    }

    /// Drops the queued writes.
    fn clear(&self) {
        by_queue!(&mut *self.queue(), w, _T => w.clear())
    }

    /// Values queued since the last apply.
    #[getter]
    fn staged_values(&self) -> usize {
        by_queue!(&*self.queue(), w, _T => w.staged_values())
    }

    /// The table's shape, ``(rows, cols)``.
    #[getter]
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The table's dtype.
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDescr> {
        self.descr.bind(py).clone()
    }

    /// Writes queued since the last apply.
    fn __len__(&self) -> usize {
        by_queue!(&*self.queue(), w, _T => w.len())
    }

    fn __repr__(&self) -> String {
        format!(
            "StagedWrites(rows={}, cols={}, dtype={}, queued={})",
            self.rows,
            self.cols,
            self.dtype.name(),
            self.__len__()
        )
    }
}

/// The host backend staged writes to numpy tables run on.
fn host_device() -> &'static cpugpu::Device {
    static DEVICE: std::sync::OnceLock<cpugpu::Device> = std::sync::OnceLock::new();
    DEVICE.get_or_init(cpugpu::Device::host)
}
