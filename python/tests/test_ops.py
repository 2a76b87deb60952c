"""The six operations against the numpy original, on every dtype and boundary size, in place
and without copies."""

from __future__ import annotations

import numpy as np
import pytest

import cpugpu
from conftest import (
    DTYPES,
    LARGE_ROWS,
    SIZES,
    data,
    ref_copy_with_indices,
    ref_cumsum_offsets,
    ref_flatten_with_offsets,
    ref_pad_to_multiple,
    ref_scatter_with_indices,
    ref_split_by_offsets,
)


def same(a, b):
    """Same shape, dtype and bytes (exact: the operations move elements, they never compute)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.tobytes() == b.tobytes()


# --- copy_with_indices (gather) -------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", SIZES)
def test_copy_with_indices_matches_numpy(rng, dtype, n):
    rows = max(n, 1) + 3
    src = data(rng, (rows, 5), dtype)
    idx = rng.integers(0, rows, size=n)
    for index_dtype in (np.int64, np.int32):
        want = data(rng, (n + 2, 5), dtype)  # more rows than indices: the rest stays
        got = want.copy()
        ref_copy_with_indices(src, want, idx.astype(index_dtype))
        assert cpugpu.copy_with_indices(src, got, idx.astype(index_dtype)) is None
        same(got, want)


def test_copy_with_indices_large_and_nd(rng):
    src = data(rng, (LARGE_ROWS, 4, 4), np.float32)
    idx = rng.permutation(LARGE_ROWS)
    want = np.empty_like(src)
    got = np.empty_like(src)
    ref_copy_with_indices(src, want, idx)
    cpugpu.copy_with_indices(src, got, idx)
    same(got, want)


def test_copy_with_indices_negative_fill(rng):
    src = data(rng, (4, 3), np.int32)
    dst = np.zeros((5, 3), np.int32)
    cpugpu.copy_with_indices(src, dst, [2, -1, 0, -7, 3], policy="negative_fill", fill_value=-5)
    want = np.stack([src[2], np.full(3, -5), src[0], np.full(3, -5), src[3]])
    same(dst, want.astype(np.int32))
    # The default fill is 0; non-negative indices are still checked.
    cpugpu.copy_with_indices(src, dst, [-1], policy="negative_fill")
    same(dst[0], np.zeros(3, np.int32))
    with pytest.raises(cpugpu.IndexOutOfBoundsError):
        cpugpu.copy_with_indices(src, dst, [-1, 4], policy="negative_fill")


def test_copy_with_indices_writes_in_place_through_a_view(rng):
    src = data(rng, (6, 2), np.float64)
    big = np.zeros((10, 2))
    out = big[3:7]  # a C-contiguous view: written in place, no copy
    cpugpu.copy_with_indices(src, out, [5, 4, 3, 2])
    same(big[3:7], src[[5, 4, 3, 2]])
    assert not big[:3].any() and not big[7:].any()


def test_copy_with_indices_checked_rejects_negative_and_leaves_dst(rng):
    src = data(rng, (3, 2), np.float32)
    dst = np.full((4, 2), 9.0, np.float32)
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:
        cpugpu.copy_with_indices(src, dst, np.array([0, 1, -1, 2]))
    assert isinstance(e.value, IndexError) and isinstance(e.value, cpugpu.Error)
    assert str(e.value) == "gather_rows: indices[2] = -1 is out of bounds for 3 rows"
    assert (e.value.op, e.value.position, e.value.index, e.value.bound) == ("gather_rows", 2, -1, 3)
    assert (dst == 9.0).all()  # nothing written
    with pytest.raises(IndexError, match=r"indices\[1\] = 3 is out of bounds for 3 rows"):
        cpugpu.copy_with_indices(src, dst, [0, 3])


# --- scatter_with_indices -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", SIZES)
def test_scatter_with_indices_matches_numpy(rng, dtype, n):
    rows = n + 4
    src = data(rng, (n + 2, 3), dtype)  # more rows than indices: only len(indices) are used
    idx = rng.permutation(rows)[:n]  # distinct: numpy's result is defined
    for index_dtype in (np.int64, np.int32):
        want = data(rng, (rows, 3), dtype)
        got = want.copy()
        ref_scatter_with_indices(src, want, idx.astype(index_dtype))
        cpugpu.scatter_with_indices(src, got, idx.astype(index_dtype))
        same(got, want)


def test_scatter_last_occurrence_wins_even_in_parallel(rng):
    # Every row is written by 4 sources; the last one (in index order) must win, also when the
    # crate splits the work over threads (this is 2.5 MiB, past its parallel threshold).
    rows = LARGE_ROWS // 4
    src = data(rng, (LARGE_ROWS, 16), np.float32)
    idx = np.tile(rng.permutation(rows), 4)
    got = np.zeros((rows, 16), np.float32)
    cpugpu.scatter_with_indices(src, got, idx)
    want = np.zeros_like(got)
    for i, r in enumerate(idx):  # sequential: the last write wins
        want[r] = src[i]
    same(got, want)


def test_scatter_negative_skip(rng):
    src = np.arange(8, dtype=np.int16).reshape(4, 2)
    dst = np.full((3, 2), -1, np.int16)
    cpugpu.scatter_with_indices(src, dst, [2, -1, 0, -3], policy="negative_skip")
    same(dst, np.array([[4, 5], [-1, -1], [0, 1]], np.int16))
    with pytest.raises(cpugpu.IndexOutOfBoundsError, match="scatter_rows: indices\\[1\\] = -1"):
        cpugpu.scatter_with_indices(src, dst, [0, -1])
    before = dst.copy()
    with pytest.raises(cpugpu.IndexOutOfBoundsError):
        cpugpu.scatter_with_indices(src, dst, [0, 1, 2, 3])
    same(dst, before)  # nothing written


# --- pad_to_multiple ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", SIZES)
def test_pad_to_multiple_matches_numpy(rng, dtype, n):
    arr = data(rng, (n, 3), dtype)
    for multiple, axis in ((8, 0), (4, 1), (1, 0), (5, -1), (3, -2)):
        pad_value = True if np.dtype(dtype) == np.bool_ else 7
        want = ref_pad_to_multiple(arr, multiple, axis, pad_value)
        got = cpugpu.pad_to_multiple(arr, multiple, axis, pad_value)
        same(got, want)
        if want is arr:
            assert got is arr  # already a multiple: the input itself, no copy
        else:
            assert not np.shares_memory(got, arr)


def test_pad_to_multiple_defaults_and_large(rng):
    arr = data(rng, (LARGE_ROWS - 3, 16), np.float32)
    same(cpugpu.pad_to_multiple(arr, 64), ref_pad_to_multiple(arr, 64))
    ids = np.array([5, 6, 7], np.int64)
    same(cpugpu.pad_to_multiple(ids, 8, pad_value=-1), np.array([5, 6, 7] + [-1] * 5))
    same(cpugpu.pad_to_multiple(np.ones(3, np.float32), 2, pad_value=0.5), np.array([1, 1, 1, 0.5], np.float32))


def test_pad_to_multiple_errors(rng):
    arr = np.zeros((3, 2), np.float32)
    with pytest.raises(cpugpu.InvalidArgumentError, match="multiple = 0: must be at least 1"):
        cpugpu.pad_to_multiple(arr, 0)
    with pytest.raises(ValueError):
        cpugpu.pad_to_multiple(arr, -4)
    with pytest.raises(cpugpu.ShapeError, match="axis 2 is out of range for 2 dimensions"):
        cpugpu.pad_to_multiple(arr, 4, axis=2)
    with pytest.raises(cpugpu.ShapeError, match="axis -3 is out of range"):
        cpugpu.pad_to_multiple(arr, 4, axis=-3)
    with pytest.raises(OverflowError):  # numpy's own conversion rule for the pad value
        cpugpu.pad_to_multiple(np.zeros(3, np.uint8), 4, pad_value=-1)
    with pytest.raises(cpugpu.InvalidArgumentError, match="pad_value must be a scalar"):
        cpugpu.pad_to_multiple(arr, 4, pad_value=[1, 2])


# --- compute_cumsum_offsets -----------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES + [LARGE_ROWS * 4])
def test_compute_cumsum_offsets_matches_numpy(rng, n):
    lengths = rng.integers(0, 600, size=n)
    for ldt in (np.int64, np.int32):
        got = cpugpu.compute_cumsum_offsets(lengths.astype(ldt))
        same(got, ref_cumsum_offsets(lengths.astype(ldt)))
    got32 = cpugpu.compute_cumsum_offsets(lengths, dtype=np.int32)
    same(got32, ref_cumsum_offsets(lengths).astype(np.int32))
    same(cpugpu.compute_cumsum_offsets(list(map(int, lengths))), ref_cumsum_offsets(lengths))


def test_compute_cumsum_offsets_errors():
    with pytest.raises(cpugpu.OffsetsError, match=r"lengths\[2\] = -1 is negative") as e:
        cpugpu.compute_cumsum_offsets(np.array([3, 1, -1, 4]))
    assert isinstance(e.value, ValueError) and (e.value.position, e.value.value) == (2, -1)
    with pytest.raises(cpugpu.OffsetsError, match="exceeds 2147483647") as e:
        cpugpu.compute_cumsum_offsets(np.array([2**31 - 1, 1], np.int64), dtype=np.int32)
    assert e.value.position == 1
    with pytest.raises(cpugpu.DtypeError, match="int32 or int64, got int16"):
        cpugpu.compute_cumsum_offsets(np.array([1, 2], np.int16))
    with pytest.raises(cpugpu.DtypeError, match="dtype must be int32 or int64, got float32"):
        cpugpu.compute_cumsum_offsets([1, 2], dtype=np.float32)
    with pytest.raises(cpugpu.ShapeError, match="one-dimensional"):
        cpugpu.compute_cumsum_offsets(np.ones((2, 2), np.int64))


# --- flatten_with_offsets -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", SIZES)
def test_flatten_with_offsets_matches_numpy(rng, dtype, n):
    arrays = [data(rng, (int(k),), dtype) for k in rng.integers(0, 40, size=n)]
    flat, offsets = cpugpu.flatten_with_offsets(arrays)
    want_flat, want_offsets = ref_flatten_with_offsets(arrays)
    same(offsets, want_offsets)
    if n:
        same(flat, want_flat)
        for a in arrays:
            assert not np.shares_memory(flat, a)
    else:
        same(flat, np.array([], np.float32))  # the original's choice for an empty list


def test_flatten_with_offsets_nd_large_tuple_and_options(rng):
    arrays = tuple(data(rng, (int(k), 4, 2), np.float32) for k in rng.integers(0, 3000, size=40))
    flat, offsets = cpugpu.flatten_with_offsets(arrays)
    want_flat, want_offsets = ref_flatten_with_offsets(list(arrays))
    same(flat, want_flat)  # rows along axis 0, as np.concatenate
    same(offsets, want_offsets)  # in rows
    flat32, off32 = cpugpu.flatten_with_offsets(arrays, offsets_dtype=np.int32)
    same(off32, want_offsets.astype(np.int32))
    empty, off = cpugpu.flatten_with_offsets([], dtype=np.int16)
    same(empty, np.array([], np.int16))
    same(off, np.array([0]))
    same(cpugpu.flatten_with_offsets(iter([np.arange(2), np.arange(3)]))[0], np.array([0, 1, 0, 1, 2]))


def test_flatten_with_offsets_errors():
    with pytest.raises(cpugpu.DtypeError, match=r"arrays\[1\] has dtype int32, arrays\[0\] is int64"):
        cpugpu.flatten_with_offsets([np.arange(3, dtype=np.int64), np.arange(2, dtype=np.int32)])
    with pytest.raises(cpugpu.DtypeError, match=r"arrays\[0\] has dtype float64, dtype is int8"):
        cpugpu.flatten_with_offsets([np.zeros(2)], dtype=np.int8)
    with pytest.raises(cpugpu.ShapeError):
        cpugpu.flatten_with_offsets([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(cpugpu.ShapeError, match=r"arrays\[1\] is zero-dimensional"):
        cpugpu.flatten_with_offsets([np.zeros(2), np.array(1.0)])
    with pytest.raises(cpugpu.LayoutError, match=r"arrays\[1\] is not C-contiguous"):
        cpugpu.flatten_with_offsets([np.zeros(2), np.zeros(8)[::2]])


# --- split_by_offsets -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", SIZES)
def test_split_by_offsets_matches_numpy_as_views(rng, dtype, n):
    lens = rng.integers(0, 30, size=n)
    arr = data(rng, (int(lens.sum()) + 3,), dtype)
    offsets = np.concatenate(([1], 1 + np.cumsum(lens))).astype(np.int64)  # starts past 0
    for odt in (np.int64, np.int32):
        got = cpugpu.split_by_offsets(arr, offsets.astype(odt))
        want = ref_split_by_offsets(arr, offsets)
        assert isinstance(got, list) and len(got) == len(want) == n
        for g, w in zip(got, want):
            same(g, w)
            assert g.size == 0 or np.shares_memory(g, arr)  # views, not copies
    if n and lens[0]:
        got[0][0] = arr[0]  # writes through a view land in arr
        assert arr[1].tobytes() == arr[0].tobytes()


def test_split_by_offsets_nd_and_readonly(rng):
    arr = data(rng, (10, 3), np.int32)
    parts = cpugpu.split_by_offsets(arr, [0, 4, 4, 10])
    for g, w in zip(parts, ref_split_by_offsets(arr, [0, 4, 4, 10])):
        same(g, w)
    ro = arr.copy()
    ro.flags.writeable = False
    assert not cpugpu.split_by_offsets(ro, [0, 2])[0].flags.writeable
    zero_rows = np.zeros((5, 0), np.float32)  # rows of zero bytes
    assert [p.shape for p in cpugpu.split_by_offsets(zero_rows, [0, 2, 5])] == [(2, 0), (3, 0)]


def test_split_views_keep_the_array_alive(rng):
    arr = data(rng, (1000,), np.float64)
    want = arr.copy()
    parts = cpugpu.split_by_offsets(arr, [0, 500, 1000])
    del arr
    import gc

    gc.collect()
    junk = [np.full(1000, 7.0) for _ in range(50)]  # would reuse freed memory
    same(np.concatenate(parts), want)
    del junk


def test_split_by_offsets_errors():
    arr = np.arange(5)
    with pytest.raises(cpugpu.OffsetsError, match=r"offsets\[2\] = 1 is smaller than the offset before it, 3"):
        cpugpu.split_by_offsets(arr, [0, 3, 1])
    with pytest.raises(cpugpu.OffsetsError, match=r"offsets\[1\] = 6 is outside 0..=5"):
        cpugpu.split_by_offsets(arr, [0, 6])
    with pytest.raises(cpugpu.OffsetsError, match=r"offsets\[0\] = -1"):
        cpugpu.split_by_offsets(arr, [-1, 2])
    with pytest.raises(cpugpu.Error):
        cpugpu.split_by_offsets(arr, np.array([], np.int64))
    with pytest.raises(cpugpu.ShapeError, match="zero-dimensional"):
        cpugpu.split_by_offsets(np.array(1.0, np.float32), [0, 1])


# --- what the operations refuse, for every one of them ----------------------------------------


def test_non_contiguous_inputs_are_refused_not_copied(rng):
    src = data(rng, (8, 4), np.float32)
    strided = src[::2]
    dst = np.zeros((4, 4), np.float32)
    with pytest.raises(cpugpu.LayoutError, match="src is not C-contiguous .*np.ascontiguousarray"):
        cpugpu.copy_with_indices(strided, dst, [0])
    with pytest.raises(cpugpu.LayoutError, match="dst is not C-contiguous"):
        cpugpu.copy_with_indices(src, np.zeros((8, 8), np.float32)[:, ::2], [0])
    with pytest.raises(cpugpu.LayoutError, match="indices is not C-contiguous"):
        cpugpu.copy_with_indices(src, dst, np.arange(8)[::2])
    with pytest.raises(cpugpu.LayoutError):
        cpugpu.scatter_with_indices(strided, dst, [0])
    with pytest.raises(cpugpu.LayoutError):
        cpugpu.pad_to_multiple(src.T, 3)
    with pytest.raises(cpugpu.LayoutError):
        cpugpu.compute_cumsum_offsets(np.arange(8)[::2])
    with pytest.raises(cpugpu.LayoutError):
        cpugpu.split_by_offsets(src.T, [0, 1])
    with pytest.raises(cpugpu.LayoutError, match="not aligned"):
        raw = np.zeros(17, np.uint8)[1:].view(np.float32)  # misaligned by one byte
        cpugpu.pad_to_multiple(raw, 3)


def test_outputs_must_be_writeable_and_not_overlap_inputs(rng):
    src = data(rng, (6, 2), np.int64)
    ro = np.zeros((6, 2), np.int64)
    ro.flags.writeable = False
    with pytest.raises(cpugpu.LayoutError, match="dst is read-only"):
        cpugpu.copy_with_indices(src, ro, [0])
    with pytest.raises(cpugpu.LayoutError, match="dst overlaps src"):
        cpugpu.copy_with_indices(src, src, [1, 0])
    with pytest.raises(cpugpu.LayoutError, match="dst overlaps src"):
        cpugpu.scatter_with_indices(src[:3], src[2:], [0, 1, 2])
    idx = np.zeros((3, 2), np.int64)
    with pytest.raises(cpugpu.LayoutError, match="dst overlaps indices"):
        cpugpu.copy_with_indices(src, idx, idx[0])


def test_dtypes_are_checked(rng):
    src = np.zeros((3, 2), np.float32)
    with pytest.raises(cpugpu.DtypeError, match="src has dtype float32 and dst has dtype int32"):
        cpugpu.copy_with_indices(src, np.zeros((3, 2), np.int32), [0])
    with pytest.raises(TypeError, match="indices must be int32 or int64, got uint8"):
        cpugpu.copy_with_indices(src, src.copy(), np.array([0], np.uint8))
    for bad in (np.zeros(3, np.complex64), np.zeros(3, object), np.zeros(3, "U2"), np.zeros(3, np.longdouble)):
        with pytest.raises(cpugpu.DtypeError, match="cpugpu moves bool, int8"):
            cpugpu.pad_to_multiple(bad, 2)
    with pytest.raises(cpugpu.DtypeError, match="byte-swapped"):
        cpugpu.pad_to_multiple(np.zeros(3, ">f4"), 2)
    with pytest.raises(cpugpu.DtypeError, match="must be a numpy array .* got list"):
        cpugpu.pad_to_multiple([1, 2, 3], 2)
    with pytest.raises(cpugpu.InvalidArgumentError, match="policy=\"wrap\""):
        cpugpu.copy_with_indices(src, src.copy(), [0], policy="wrap")
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.scatter_with_indices(src, src.copy(), [0], policy="negative_fill")


def test_shapes_are_checked(rng):
    src = np.zeros((3, 2), np.float32)
    with pytest.raises(cpugpu.ShapeError, match=r"dst's shape .* is \[3, 3\], expected \[2, 2\]") as e:
        cpugpu.copy_with_indices(src, np.zeros((3, 3), np.float32), [0, 1])
    assert e.value.expected == (2, 2) and e.value.actual == (3, 3)
    with pytest.raises(cpugpu.ShapeError, match="expected \\[4, 2\\]"):
        cpugpu.copy_with_indices(src, np.zeros((3, 2), np.float32), [0, 1, 2, 0])
    with pytest.raises(cpugpu.ShapeError, match="src's shape"):
        cpugpu.scatter_with_indices(src, np.zeros((5, 2), np.float32), [0, 1, 2, 3])
    with pytest.raises(cpugpu.ShapeError, match="one-dimensional"):
        cpugpu.copy_with_indices(src, src.copy(), np.zeros((1, 1), np.int64))
    with pytest.raises(cpugpu.ShapeError, match="zero-dimensional"):
        cpugpu.copy_with_indices(np.array(1, np.float32), src.copy(), [0])


def test_dlpack_inputs_are_used_in_place(rng):
    # A DLPack exporter that is not an ndarray (a cpugpu.DeviceArray; a PyTorch CPU tensor
    # goes the same way) is read and written in place.
    buf = cpugpu.CpuGpuBuffer.allocate("dst", (4, 2), np.float32)
    src = data(rng, (3, 2), np.float32)
    cpugpu.copy_with_indices(src, buf.device_array("cpu"), [2, 1, 0, 2])
    same(buf.cpu, src[[2, 1, 0, 2]])
    parts = cpugpu.split_by_offsets(buf.device_array("cpu"), [0, 1, 4])
    assert np.shares_memory(parts[1], buf.cpu)


def test_index_sequences_must_be_integers():
    src = np.arange(6, dtype=np.float32).reshape(3, 2)
    dst = np.zeros((2, 2), np.float32)
    cpugpu.copy_with_indices(src, dst, [2, 0])  # Python ints: converted to int64
    same(dst, src[[2, 0]])
    with pytest.raises(cpugpu.DtypeError, match="indices must be integers, got a sequence numpy reads as float64"):
        cpugpu.copy_with_indices(src, dst, [1.5, 0])
    with pytest.raises(cpugpu.DtypeError, match="must be integers"):
        cpugpu.split_by_offsets(src, [True, False])
    same(cpugpu.compute_cumsum_offsets([]), np.array([0]))
