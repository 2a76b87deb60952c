//! The six operations: the original module's functions, run by the crate's host implementation
//! (`cpugpu::host`) on numpy arrays' own memory, or, when a data operand is CUDA memory (a
//! `DeviceArray` on a GPU, a PyTorch or CuPy tensor through `__cuda_array_interface__`), by the
//! crate's CUDA path on that memory (`gpu_ops.rs`, builds with the GPU paths). The argument
//! checks are shared, so both raise the same errors.

use cpugpu::{Error, GatherPolicy, Op, ScatterPolicy, Shape};
use numpy::{PyArrayDescr, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::arrays::{check_no_overlap, empty, from_vec, index_input, is_cuda, view, Arr, Operand};
use crate::dtype::{by_index, by_width, from_bytes, resolve, value_bytes, DType};
use crate::errors::{err, run, to_py};

/// Runs a GPU form (`$call`, returning from the caller) when the build has the GPU paths, else
/// raises `DeviceError`: CUDA memory was passed to a build without them.
macro_rules! on_gpu {
    ($py:expr, $call:expr) => {{
        #[cfg(gpu)]
        {
            return $call;
        }
        #[cfg(not(gpu))]
        {
            return Err(err(
                $py,
                "DeviceError",
                "CUDA memory was passed, but this build of cpugpu has no GPU paths (build it \
                 with --features cuda)",
            ));
        }
    }};
}

/// Host operands take no `stream`.
fn host_stream(py: Python<'_>, stream: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    if stream.is_some_and(|s| !s.is_none()) {
        return Err(err(
            py,
            "InvalidArgumentError",
            "stream= applies to operations on CUDA memory; these operands are host memory",
        ));
    }
    Ok(())
}

/// `ShapeError` from the crate's `ShapeMismatch` (its message format), for shapes the binding
/// checks before the crate sees them.
pub(crate) fn shape_mismatch(
    py: Python<'_>,
    op: Op,
    what: &'static str,
    expected: &[usize],
    actual: &[usize],
) -> PyErr {
    let shape = |d: &[usize]| Shape::new(d).map(Box::new);
    match (shape(expected), shape(actual)) {
        (Ok(expected), Ok(actual)) => to_py(
            py,
            Error::ShapeMismatch {
                op,
                what,
                expected,
                actual,
            },
        ),
        (Err(e), _) | (_, Err(e)) => to_py(py, e),
    }
}

/// Both arrays must have the same dtype.
pub(crate) fn same_dtype(
    py: Python<'_>,
    a: &impl Operand,
    a_what: &str,
    b: &impl Operand,
    b_what: &str,
) -> PyResult<()> {
    if a.dt() != b.dt() {
        return Err(err(
            py,
            "DtypeError",
            format!(
                "{a_what} has dtype {} and {b_what} has dtype {}: cpugpu moves elements without \
                 converting them, so they must match",
                a.dt().name(),
                b.dt().name()
            ),
        ));
    }
    Ok(())
}

/// Rows run along axis 0: an array needs at least one axis.
pub(crate) fn need_axis(py: Python<'_>, a: &impl Operand, what: &str) -> PyResult<()> {
    if a.dims().is_empty() {
        return Err(err(
            py,
            "ShapeError",
            format!(
                "{what} is zero-dimensional: rows run along axis 0, so it needs at least one axis"
            ),
        ));
    }
    Ok(())
}

/// The gather policy named by `policy`.
pub(crate) fn gather_policy<T: bytemuck::Pod>(
    py: Python<'_>,
    policy: &str,
    fill: Option<[u8; 8]>,
) -> PyResult<GatherPolicy<T>> {
    match policy {
        "checked" => Ok(GatherPolicy::Checked),
        "negative_fill" => Ok(GatherPolicy::NegativeFill(from_bytes(
            &fill.unwrap_or([0; 8]),
        ))),
        other => Err(err(
            py,
            "InvalidArgumentError",
            format!("policy={other:?}: copy_with_indices takes \"checked\" or \"negative_fill\""),
        )),
    }
}

/// Gathers rows: `dst[i] = src[indices[i]]` for every `i` (numpy:
/// `np.take(src, indices, axis=0, out=dst[:len(indices)])`). Writes the first `len(indices)`
/// rows of `dst`, in place; returns None.
///
/// `src` and `dst` are numpy arrays (or DLPack exporters such as PyTorch CPU tensors) of the
/// same dtype, C-contiguous, with the same shape past axis 0; `dst` has at least
/// `len(indices)` rows. `indices` is one-dimensional int32 or int64 (a list is converted).
/// Nothing is copied: a non-contiguous, misaligned or overlapping array is refused with
/// `cpugpu.LayoutError`.
///
/// Policies (the crate's `GatherPolicy`), differences from numpy:
///
/// * ``policy="checked"`` (default): every index must be in ``0 <= i < len(src)``. A negative
///   index is out of bounds (numpy wraps it from the end). The first bad index raises
///   `cpugpu.IndexOutOfBoundsError` (an `IndexError`) naming its position and value, and
///   `dst` is left untouched (numpy may have written part of it).
/// * ``policy="negative_fill"``: a negative index writes a row of ``fill_value`` (default 0),
///   vLLM's padding convention; non-negative indices are still checked.
///
/// The GIL is released while it runs on large inputs.
/// On CUDA memory (``src`` and ``dst`` a :class:`DeviceArray` on a GPU, or PyTorch / CuPy
/// tensors through ``__cuda_array_interface__``) it runs on the GPU, without copies: ``indices``
/// may be CUDA memory too, or host memory (uploaded). It runs on ``stream`` (an int, or an
/// object with ``cuda_stream``; default: cpugpu's stream), after the work already issued on
/// the operands' streams, and returns when it has completed (so a bad index raises from the
/// call, as on the host); the GIL is released while it waits. ``stream`` is refused for host
/// arrays.
#[pyfunction]
#[pyo3(signature = (src, dst, indices, *, policy = "checked", fill_value = None, stream = None))]
pub(crate) fn copy_with_indices(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    indices: &Bound<'_, PyAny>,
    policy: &str,
    fill_value: Option<&Bound<'_, PyAny>>,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    if is_cuda(src) || is_cuda(dst) {
        on_gpu!(
            py,
            crate::gpu_ops::copy_with_indices(py, src, dst, indices, policy, fill_value, stream)
        );
    }
    host_stream(py, stream)?;
    let src = Arr::input(src, "src")?;
    let dst = Arr::output(dst, "dst")?;
    let idx = index_input(indices, "indices")?;
    let n = gather_checks(py, &src, &dst, &idx)?;
    let fill = gather_fill(py, policy, fill_value, dst.dtype, &dst.obj.dtype())?;
    let s = src.shape();
    let row_len: usize = s[1..].iter().product();
    let out_len = n * row_len; // <= dst.len, which fits
    let bytes = out_len * src.dtype.width();
    by_width!(src.dtype.width(), T => {
        let policy = gather_policy::<T>(py, policy, fill)?;
        by_index!(idx.dtype, I => {
            // SAFETY: widths match the dtypes; dst overlaps neither input (checked) and is
            // writeable; the arrays stay referenced by this frame while the slices are used.
            let (sv, iv, dv) = unsafe { (src.slice::<T>(), idx.slice::<I>(), dst.slice_mut::<T>()) };
            run(py, bytes, || cpugpu::host::gather_rows_into(sv, s, iv, &mut dv[..out_len], policy))
        })
    })
}

/// `copy_with_indices`'s checks of its operands (`idx` already checked as indices); returns the
/// rows it writes, `len(indices)`.
pub(crate) fn gather_checks(
    py: Python<'_>,
    src: &impl Operand,
    dst: &impl Operand,
    idx: &impl Operand,
) -> PyResult<usize> {
    same_dtype(py, src, "src", dst, "dst")?;
    need_axis(py, src, "src")?;
    need_axis(py, dst, "dst")?;
    check_no_overlap(py, dst, "dst", src, "src")?;
    check_no_overlap(py, dst, "dst", idx, "indices")?;
    let n = idx.dims().iter().product();
    let (s, d) = (src.dims(), dst.dims());
    if d.len() != s.len() || d[1..] != s[1..] || d[0] < n {
        let mut expected = s.to_vec();
        expected[0] = n;
        return Err(shape_mismatch(
            py,
            Op::GatherRows,
            "dst's shape (it needs at least len(indices) rows)",
            &expected,
            d,
        ));
    }
    Ok(n)
}

/// `fill_value` as `dtype`'s bytes, for `policy="negative_fill"`.
pub(crate) fn gather_fill(
    py: Python<'_>,
    policy: &str,
    fill_value: Option<&Bound<'_, PyAny>>,
    dtype: DType,
    descr: &Bound<'_, PyArrayDescr>,
) -> PyResult<Option<[u8; 8]>> {
    match (policy, fill_value) {
        ("negative_fill", Some(v)) => Ok(Some(value_bytes(py, v, dtype, descr, "fill_value")?)),
        _ => Ok(None),
    }
}

/// Scatters rows: `dst[indices[i]] = src[i]` for every `i` (numpy:
/// `dst[indices] = src[:len(indices)]`), in place; returns None.
///
/// `src` and `dst` have the same dtype and the same shape past axis 0; `src` has at least
/// `len(indices)` rows (the first `len(indices)` are scattered). No broadcasting.
///
/// Differences from numpy:
///
/// * **A repeated index: the last occurrence wins**, deterministically, also when the rows are
///   written in parallel (numpy leaves the result unspecified).
/// * ``policy="checked"`` (default): every index must be in ``0 <= i < len(dst)``; a negative
///   index is out of bounds (numpy wraps it). The first bad index raises
///   `cpugpu.IndexOutOfBoundsError` and `dst` is left untouched.
/// * ``policy="negative_skip"``: a negative index skips its source row (vLLM's padding slots).
///
/// On CUDA memory it runs on the GPU as :func:`copy_with_indices` does (``stream``, ordering,
/// completion, host ``indices`` uploaded).
#[pyfunction]
#[pyo3(signature = (src, dst, indices, *, policy = "checked", stream = None))]
pub(crate) fn scatter_with_indices(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: &Bound<'_, PyAny>,
    indices: &Bound<'_, PyAny>,
    policy: &str,
    stream: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    if is_cuda(src) || is_cuda(dst) {
        on_gpu!(
            py,
            crate::gpu_ops::scatter_with_indices(py, src, dst, indices, policy, stream)
        );
    }
    host_stream(py, stream)?;
    let src = Arr::input(src, "src")?;
    let dst = Arr::output(dst, "dst")?;
    let idx = index_input(indices, "indices")?;
    let (n, policy) = scatter_checks(py, &src, &dst, &idx, policy)?;
    let d = dst.shape();
    let row_len: usize = d[1..].iter().product();
    let in_len = n * row_len; // <= src.len
    let bytes = in_len * src.dtype.width();
    by_width!(src.dtype.width(), T => {
        by_index!(idx.dtype, I => {
            // SAFETY: as in copy_with_indices.
            let (sv, iv, dv) = unsafe { (src.slice::<T>(), idx.slice::<I>(), dst.slice_mut::<T>()) };
            run(py, bytes, || cpugpu::host::scatter_rows_into(&sv[..in_len], iv, dv, d, policy))
        })
    })
}

/// `scatter_with_indices`'s checks of its operands and policy; returns the rows it reads,
/// `len(indices)`, and the policy.
pub(crate) fn scatter_checks(
    py: Python<'_>,
    src: &impl Operand,
    dst: &impl Operand,
    idx: &impl Operand,
    policy: &str,
) -> PyResult<(usize, ScatterPolicy)> {
    same_dtype(py, src, "src", dst, "dst")?;
    need_axis(py, src, "src")?;
    need_axis(py, dst, "dst")?;
    check_no_overlap(py, dst, "dst", src, "src")?;
    check_no_overlap(py, dst, "dst", idx, "indices")?;
    let policy = match policy {
        "checked" => ScatterPolicy::Checked,
        "negative_skip" => ScatterPolicy::NegativeSkip,
        other => {
            return Err(err(
                py,
                "InvalidArgumentError",
                format!(
                    "policy={other:?}: scatter_with_indices takes \"checked\" or \"negative_skip\""
                ),
            ))
        }
    };
    let n = idx.dims().iter().product();
    let (s, d) = (src.dims(), dst.dims());
    if d.len() != s.len() || d[1..] != s[1..] || s[0] < n {
        let mut expected = d.to_vec();
        expected[0] = n;
        return Err(shape_mismatch(
            py,
            Op::ScatterRows,
            "src's shape (it needs at least len(indices) rows)",
            &expected,
            s,
        ));
    }
    Ok((n, policy))
}

/// Pads `arr` along `axis` up to the next multiple of `multiple`, with `pad_value` after the
/// data (numpy: `np.pad(arr, ..., mode="constant", constant_values=pad_value)`).
///
/// When the axis already is a multiple, `arr` itself is returned (no copy), as in the
/// original; otherwise a new array. `axis` may be negative (counted from the end).
/// `pad_value` is converted to `arr.dtype` as numpy converts it. `multiple < 1` raises
/// `cpugpu.InvalidArgumentError` (a `ValueError`; the original divided by zero), an axis out
/// of range `cpugpu.ShapeError`.
///
/// On CUDA memory it runs on the GPU (``stream`` and completion as :func:`copy_with_indices`),
/// and a padded result is a new :class:`DeviceArray` on the GPU.
#[pyfunction]
#[pyo3(signature = (arr, multiple, axis = 0, pad_value = None, *, stream = None))]
pub(crate) fn pad_to_multiple<'py>(
    py: Python<'py>,
    arr: &Bound<'py, PyAny>,
    multiple: i64,
    axis: isize,
    pad_value: Option<&Bound<'py, PyAny>>,
    stream: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if is_cuda(arr) {
        on_gpu!(
            py,
            crate::gpu_ops::pad_to_multiple(py, arr, multiple, axis, pad_value, stream)
        );
    }
    host_stream(py, stream)?;
    let a = Arr::input(arr, "arr")?;
    let descr = a.obj.dtype();
    let (multiple, ax, fill) = pad_args(py, &a, &descr, multiple, axis, pad_value)?;
    let shape = a.shape();
    let bytes = a.nbytes(); // about what the padded copy moves (for the GIL decision)
    by_width!(a.dtype.width(), T => {
        // SAFETY: the width matches the dtype; only read.
        let sv = unsafe { a.slice::<T>() };
        let fill: T = from_bytes(&fill);
        let padded = run(py, bytes, || {
            cpugpu::host::pad_to_multiple(sv, shape, ax, multiple, fill).map(|p| match p.data {
                std::borrow::Cow::Borrowed(_) => None,
                std::borrow::Cow::Owned(v) => Some((v, p.shape)),
            })
        })?;
        match padded {
            None => Ok(arr.clone()),
            Some((v, shape)) => from_vec(py, &descr, shape.dims(), v),
        }
    })
}

/// `pad_to_multiple`'s arguments: the multiple (at least 1), the axis (counted from the end when
/// negative) and the pad value as `a`'s dtype.
pub(crate) fn pad_args(
    py: Python<'_>,
    a: &impl Operand,
    descr: &Bound<'_, PyArrayDescr>,
    multiple: i64,
    axis: isize,
    pad_value: Option<&Bound<'_, PyAny>>,
) -> PyResult<(usize, usize, [u8; 8])> {
    let op = Op::PadToMultiple;
    let multiple = usize::try_from(multiple)
        .ok()
        .filter(|&m| m >= 1)
        .ok_or_else(|| {
            to_py(
                py,
                Error::InvalidArgument {
                    op,
                    name: "multiple",
                    value: i128::from(multiple),
                    reason: "must be at least 1",
                },
            )
        })?;
    let ndim = a.dims().len();
    let ax = if axis < 0 { axis + ndim as isize } else { axis };
    let Ok(ax) = usize::try_from(ax) else {
        return Err(err(
            py,
            "ShapeError",
            format!("pad_to_multiple: axis {axis} is out of range for {ndim} dimensions"),
        ));
    };
    let fill = match pad_value {
        Some(v) => value_bytes(py, v, a.dt(), descr, "pad_value")?,
        None => [0; 8],
    };
    Ok((multiple, ax, fill))
}

/// The offsets dtype named by `dtype` (int32 or int64; default int64).
pub(crate) fn offsets_dtype<'py>(
    py: Python<'py>,
    dtype: Option<&Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<(DType, Bound<'py, PyArrayDescr>)> {
    let (d, descr) = match dtype {
        None => {
            let descr = numpy::dtype::<i64>(py);
            (DType::I64, descr)
        }
        Some(obj) => resolve(py, obj, what)?,
    };
    if !matches!(d, DType::I32 | DType::I64) {
        return Err(err(
            py,
            "DtypeError",
            format!("{what} must be int32 or int64, got {}", d.name()),
        ));
    }
    Ok((d, descr))
}

/// Prefix-sum offsets: `offsets[0] = 0`, `offsets[i + 1] = offsets[i] + lengths[i]`, a new
/// array of `len(lengths) + 1` offsets (int64 unless ``dtype=np.int32``).
///
/// `lengths` is one-dimensional int32 or int64 (a list is converted). Differences from the
/// original (`np.cumsum`): a negative length raises `cpugpu.OffsetsError` (a `ValueError`)
/// naming its position, and an offset past the offset dtype's maximum raises instead of
/// wrapping around.
///
/// When `lengths` is CUDA memory it runs on the GPU (``stream`` and completion as
/// :func:`copy_with_indices`) and the offsets are a new :class:`DeviceArray` on the GPU.
#[pyfunction]
#[pyo3(signature = (lengths, *, dtype = None, stream = None))]
pub(crate) fn compute_cumsum_offsets<'py>(
    py: Python<'py>,
    lengths: &Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyAny>>,
    stream: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if is_cuda(lengths) {
        on_gpu!(
            py,
            crate::gpu_ops::compute_cumsum_offsets(py, lengths, dtype, stream)
        );
    }
    host_stream(py, stream)?;
    let lens = index_input(lengths, "lengths")?;
    let (od, descr) = offsets_dtype(py, dtype, "dtype")?;
    let out = Arr::checked(empty(py, &descr, &[lens.len + 1])?, "offsets")?;
    let bytes = lens.nbytes() + out.nbytes();
    by_index!(lens.dtype, L => {
        by_index!(od, O => {
            // SAFETY: widths match the dtypes; `out` is a new array nobody else sees yet.
            let (lv, ov) = unsafe { (lens.slice::<L>(), out.slice_mut::<O>()) };
            run(py, bytes, || cpugpu::host::prefix_sum_offsets_into(lv, ov))?;
        })
    });
    Ok(out.obj.into_any())
}

/// Concatenates `arrays` along axis 0 into one new array and returns ``(flat, offsets)``:
/// `flat[offsets[i]:offsets[i + 1]]` is `arrays[i]` (numpy:
/// `np.concatenate(arrays)` plus the cumulative sum of their lengths).
///
/// The arrays are numpy arrays (or DLPack exporters) of one dtype, C-contiguous, with the same
/// shape past axis 0; offsets count rows (elements for one-dimensional arrays) and are int64
/// unless ``offsets_dtype=np.int32``. An empty list gives an empty float32 array (the
/// original's choice) or one of ``dtype``, and offsets ``[0]``. Differences from numpy: mixed
/// dtypes raise `cpugpu.DtypeError` instead of being promoted; zero-dimensional arrays raise
/// `cpugpu.ShapeError`.
///
/// When the arrays are CUDA memory it runs on the GPU (``stream`` and completion as
/// :func:`copy_with_indices`), and ``flat`` and ``offsets`` are new :class:`DeviceArray`\ s on
/// the GPU; host and CUDA arrays cannot be mixed.
#[pyfunction]
#[pyo3(signature = (arrays, *, offsets_dtype = None, dtype = None, stream = None))]
pub(crate) fn flatten_with_offsets<'py>(
    py: Python<'py>,
    arrays: &Bound<'py, PyAny>,
    offsets_dtype: Option<&Bound<'py, PyAny>>,
    dtype: Option<&Bound<'py, PyAny>>,
    stream: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let (od, odescr) = self::offsets_dtype(py, offsets_dtype, "offsets_dtype")?;
    let want = dtype.map(|d| resolve(py, d, "dtype")).transpose()?;
    let items: Vec<Bound<'py, PyAny>> = match arrays.cast::<PyList>() {
        Ok(list) => list.iter().collect(),
        Err(_) => arrays.try_iter()?.collect::<PyResult<_>>()?,
    };
    if items.iter().any(is_cuda) {
        on_gpu!(
            py,
            crate::gpu_ops::flatten_with_offsets(py, &items, (od, odescr), want, stream)
        );
    }
    host_stream(py, stream)?;
    let mut parts: Vec<Arr<'py>> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        // Fast path, per array a few field reads: an ndarray with the first one's descriptor
        // object (numpy shares one per builtin dtype), C-contiguous, aligned, and the first's
        // shape past axis 0.
        if let Some(first) = parts.first() {
            if let Some(a) = first.same_layout(&item) {
                parts.push(a);
                continue;
            }
        }
        // The full check; the name is formatted only when there is something to report.
        let a = Arr::input(&item, "an array")
            .or_else(|_| Arr::input(&item, &format!("arrays[{i}]")))?;
        flatten_item(py, i, &a, parts.first(), want.as_ref().map(|w| w.0))?;
        parts.push(a);
    }
    let offsets = Arr::checked(empty(py, &odescr, &[parts.len() + 1])?, "offsets")?;
    let (dt, descr) = match (parts.first(), &want) {
        (Some(p), _) => (p.dtype, p.obj.dtype()),
        (None, Some((d, descr))) => (*d, descr.clone()),
        (None, None) => (DType::F32, numpy::dtype::<f32>(py)),
    };
    let tail: Vec<usize> = parts
        .first()
        .map(|p| p.shape()[1..].to_vec())
        .unwrap_or_default();
    let rows: usize = parts.iter().map(|p| p.shape()[0]).sum();
    let mut out_shape = vec![rows];
    out_shape.extend_from_slice(&tail);
    let flat = Arr::checked(empty(py, &descr, &out_shape)?, "flat")?;
    let bytes = flat.nbytes();
    by_width!(dt.width(), T => {
        // SAFETY: every part has the dtype's width (checked); `flat` and `offsets` are new
        // arrays nobody else sees yet; the parts stay referenced by `parts` meanwhile.
        let slices: Vec<&[T]> = parts.iter().map(|p| unsafe { p.slice::<T>() }).collect();
        let fv = unsafe { flat.slice_mut::<T>() };
        by_index!(od, O => {
            let ov = unsafe { offsets.slice_mut::<O>() };
            if tail.is_empty() {
                // One-dimensional: the element offsets are the row offsets.
                run(py, bytes, || cpugpu::host::flatten_into(&slices, fv, ov))?;
            } else {
                // Rows of several elements: flatten by elements, offsets by rows.
                let lens: Vec<i64> = parts.iter().map(|p| p.shape()[0] as i64).collect();
                run(py, bytes, || {
                    let mut elem = vec![0i64; slices.len() + 1];
                    cpugpu::host::flatten_into(&slices, fv, &mut elem)?;
                    cpugpu::host::prefix_sum_offsets_into(&lens, ov)
                })?;
            }
        })
    });
    PyTuple::new(py, [flat.obj.into_any(), offsets.obj.into_any()])
}

/// `flatten_with_offsets`'s checks of `arrays[i]`: at least one axis, the dtype of the first
/// array (or of `dtype=`), and the first array's shape past axis 0.
pub(crate) fn flatten_item<A: Operand>(
    py: Python<'_>,
    i: usize,
    a: &A,
    first: Option<&A>,
    want: Option<DType>,
) -> PyResult<()> {
    if a.dims().is_empty() {
        return Err(err(
            py,
            "ShapeError",
            format!("arrays[{i}] is zero-dimensional: flatten concatenates along axis 0"),
        ));
    }
    let (d0, what0) = match (first, want) {
        (Some(f), _) => (f.dt(), "arrays[0]"),
        (None, Some(d)) => (d, "dtype"),
        (None, None) => (a.dt(), ""),
    };
    if a.dt() != d0 {
        return Err(err(
            py,
            "DtypeError",
            format!(
                "arrays[{i}] has dtype {}, {what0} is {}: np.concatenate would promote, cpugpu \
                 moves elements without converting them",
                a.dt().name(),
                d0.name()
            ),
        ));
    }
    if let Some(f) = first {
        if a.dims()[1..] != f.dims()[1..] {
            let mut expected = vec![a.dims()[0]];
            expected.extend_from_slice(&f.dims()[1..]);
            return Err(shape_mismatch(
                py,
                Op::Flatten,
                "an array's shape (past axis 0 it must match arrays[0])",
                &expected,
                a.dims(),
            ));
        }
    }
    Ok(())
}

/// Splits `arr` along axis 0 at `offsets` into views: segment `i` is
/// `arr[offsets[i]:offsets[i + 1]]`, a numpy view sharing `arr`'s memory (no copy), as in the
/// original. Returns a list of `len(offsets) - 1` arrays.
///
/// `offsets` is one-dimensional int32 or int64 (a list is converted). Differences from the
/// original (which slices whatever it is given): offsets must be non-decreasing and within
/// ``0..len(arr)``; the first that is not raises `cpugpu.OffsetsError` (a `ValueError`) naming
/// its position and value. An empty `offsets` raises too.
///
/// When `arr` is CUDA memory the segments are :class:`DeviceArray` views of it (no kernel runs;
/// CUDA `offsets` are copied to the host first).
#[pyfunction]
pub(crate) fn split_by_offsets<'py>(
    py: Python<'py>,
    arr: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    if is_cuda(arr) {
        on_gpu!(py, crate::gpu_ops::split_by_offsets(py, arr, offsets));
    }
    let a = Arr::input(arr, "arr")?;
    need_axis(py, &a, "arr")?;
    let offs = index_input(offsets, "offsets")?;
    let shape = a.shape();
    let rows = shape[0];
    let row_bytes = shape[1..].iter().product::<usize>() * a.dtype.width();
    // The crate validates the offsets against `rows`; a byte slice of `rows` bytes serves
    // (the array's own first bytes, or zeroed memory for rows of zero bytes).
    let spare;
    let probe: &[u8] = if rows == 0 {
        &[]
    } else if row_bytes > 0 {
        // SAFETY: the array holds rows * row_bytes >= rows bytes at `addr`; only read.
        unsafe { std::slice::from_raw_parts(a.addr as *const u8, rows) }
    } else {
        spare = vec![0u8; rows];
        &spare
    };
    by_index!(offs.dtype, O => {
        // SAFETY: the width matches the dtype; only read.
        let ov = unsafe { offs.slice::<O>() };
        run(py, 0, || cpugpu::host::split(probe, ov).map(|_| ()))?;
        let writeable = a.writeable();
        let descr = a.obj.dtype();
        let mut seg_shape = shape.to_vec();
        let list = PyList::empty(py);
        for w in ov.windows(2) {
            // Validated: 0 <= w[0] <= w[1] <= rows.
            let (s, e) = (w[0] as usize, w[1] as usize);
            seg_shape[0] = e - s;
            // SAFETY: rows s..e of a C-contiguous array lie at addr + s * row_bytes, inside it;
            // the view's base is the array, which keeps the memory alive.
            let v = unsafe { view(py, &descr, &seg_shape, a.addr + s * row_bytes, writeable, a.obj.clone().into_any())? };
            list.append(v)?;
        }
        Ok(list)
    })
}
