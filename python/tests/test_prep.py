"""The input-preparation operations (expand_segments, slot_mapping, gather_windows, StagedWrites,
pad_to_length, pad_to_bucket, bucket_for, cuda_graph_sizes, prepare_step) against numpy oracles
written here, and prepare_step against vLLM's numpy formulation in benches/step_reference.py:
seeded data, both index dtypes, boundary sizes, poisoned outputs, and every error class."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import cpugpu
from conftest import ticks_while

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("step_reference", ROOT / "benches" / "step_reference.py")
step_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(step_reference)

IDX = [np.int32, np.int64]
POISON = -7
# 0 requests, 1, a few, a vector-width boundary, and enough tokens for the parallel paths and
# the GIL release.
NREQ = [0, 1, 2, 33, 1000]


def poisoned(shape, dtype):
    """An output filled with POISON (wrapped for unsigned dtypes) before the call."""
    return np.full(shape, POISON, np.int64).astype(dtype)


class CudaTensor:
    """What a PyTorch or CuPy tensor on a GPU presents."""

    __cuda_array_interface__ = {"shape": (4,), "typestr": "<i4", "data": (1 << 40, False), "version": 3}


# --- numpy oracles ----------------------------------------------------------------------------


def ref_expand(counts, starts=None):
    counts = np.asarray(counts, np.int64)
    n = len(counts)
    total = int(counts.sum())
    seg = np.repeat(np.arange(n, dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    pos = np.arange(total, dtype=np.int64) - np.repeat(first, counts)
    if starts is not None:
        pos = pos + np.asarray(starts, np.int64)[seg]
    return seg, pos


def ref_slots(rows, positions, tables, sizes, t_cap, pad=-1):
    rows = np.asarray(rows, np.int64)
    positions = np.asarray(positions, np.int64)
    out = np.full((len(tables), t_cap), pad, np.int64)
    for g, (table, bs) in enumerate(zip(tables, sizes)):
        blocks = table[rows, positions // bs].astype(np.int64)
        out[g, : len(rows)] = blocks * bs + positions % bs
    return out


def ref_windows_ragged(table, rows, starts, offsets, out):
    flat = table.reshape(table.shape[0], -1)
    for r in range(len(rows)):
        a, b = int(offsets[r]), int(offsets[r + 1])
        s = 0 if starts is None else int(starts[r])
        out[a:b] = flat[int(rows[r]), s : s + (b - a)]
    return out


def ref_windows_rows(table, rows, starts, lens, out):
    flat = table.reshape(table.shape[0], -1)
    for r in range(len(rows)):
        s = 0 if starts is None else int(starts[r])
        out[r, : int(lens[r])] = flat[int(rows[r]), s : s + int(lens[r])]
    return out


def ref_pad(arr, length, axis, value):
    width = [(0, 0)] * arr.ndim
    width[axis] = (0, length - arr.shape[axis])
    return np.pad(arr, width, mode="constant", constant_values=value)


# --- expand_segments --------------------------------------------------------------------------


@pytest.mark.parametrize("idx", IDX)
@pytest.mark.parametrize("n", NREQ)
@pytest.mark.parametrize("with_starts", [False, True])
def test_expand_segments_counts(idx, n, with_starts):
    rng = np.random.default_rng(n * 7 + with_starts)
    counts = rng.integers(0, 6, size=n).astype(idx)
    if n == 1:
        counts[0] = 300_000  # one long prefill: the parallel path and the GIL release
    starts = rng.integers(0, 4096, size=n).astype(idx) if with_starts else None
    seg, pos = cpugpu.expand_segments(counts, starts)
    want_seg, want_pos = ref_expand(counts, starts)
    assert seg.dtype == np.int32 and pos.dtype == (idx if with_starts else np.int64)
    np.testing.assert_array_equal(seg, want_seg)
    np.testing.assert_array_equal(pos, want_pos)


@pytest.mark.parametrize("idx", IDX)
@pytest.mark.parametrize("n", NREQ)
def test_expand_segments_offsets_into_poisoned_out(idx, n):
    rng = np.random.default_rng(100 + n)
    counts = rng.integers(0, 6, size=n)
    o0 = 5  # a slice of a larger CSR array
    offsets = np.concatenate([[o0], o0 + np.cumsum(counts)]).astype(idx)
    starts = rng.integers(0, 100, size=n).astype(np.int64)
    total = int(counts.sum())
    seg_out = np.full(total, POISON, idx)
    pos_out = np.full(total, POISON, np.int64)
    seg, pos = cpugpu.expand_segments(offsets=offsets, starts=starts, out=(seg_out, pos_out))
    assert seg is seg_out and pos is pos_out
    want_seg, want_pos = ref_expand(counts, starts)
    np.testing.assert_array_equal(seg_out, want_seg)
    np.testing.assert_array_equal(pos_out, want_pos)


def test_expand_segments_dtypes_and_widening():
    counts = np.array([3, 1, 2], np.int32)
    computed = np.array([10, 0, 7], np.int32)  # vLLM's int32 num_computed, int64 positions
    seg, pos = cpugpu.expand_segments(counts, computed, ids_dtype=np.int64, positions_dtype=np.int64)
    assert (seg.dtype, pos.dtype) == (np.int64, np.int64)
    assert seg.tolist() == [0, 0, 0, 1, 2, 2]
    assert pos.tolist() == [10, 11, 12, 0, 7, 8]
    seg, pos = cpugpu.expand_segments([3, 1, 2])  # lists are converted
    assert pos.tolist() == [0, 1, 2, 0, 0, 1]
    seg, pos = cpugpu.expand_segments(np.array([], np.int32))
    assert seg.shape == pos.shape == (0,)
    seg, pos = cpugpu.expand_segments(offsets=[0])  # zero segments
    assert seg.shape == (0,)


def test_expand_segments_errors():
    with pytest.raises(cpugpu.OffsetsError, match=r"expand_segments.*lengths\[1\] = -2") as e:
        cpugpu.expand_segments(np.array([1, -2, 3], np.int32))
    assert (e.value.op, e.value.position, e.value.value) == ("expand_segments", 1, -2)
    with pytest.raises(cpugpu.OffsetsError) as e:
        cpugpu.expand_segments(offsets=np.array([0, 3, 2, 5]))
    assert (e.value.position, e.value.previous, e.value.value) == (2, 3, 2)
    with pytest.raises(cpugpu.OffsetsError) as e:
        cpugpu.expand_segments(offsets=np.array([-1, 3]))
    assert e.value.position == 0
    # A position past the int32 maximum: raised, not wrapped.
    with pytest.raises(cpugpu.OffsetsError) as e:
        cpugpu.expand_segments(np.array([1, 3], np.int32), np.array([0, 2**31 - 2], np.int32))
    assert (e.value.position, e.value.limit) == (1, 2**31 - 1)
    # out= of the wrong length: ShapeError, nothing written.
    seg_out, pos_out = np.full(4, POISON, np.int32), np.full(4, POISON, np.int64)
    with pytest.raises(cpugpu.ShapeError) as e:
        cpugpu.expand_segments(np.array([3, 2]), out=(seg_out, pos_out))
    assert (e.value.expected, e.value.actual) == (4, 5)
    assert (seg_out == POISON).all() and (pos_out == POISON).all()
    with pytest.raises(cpugpu.ShapeError):
        cpugpu.expand_segments(np.array([3, 2]), np.array([0, 0, 0]))  # starts length
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.expand_segments(np.array([1]), offsets=np.array([0, 1]))
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.expand_segments()
    with pytest.raises(cpugpu.DtypeError):
        cpugpu.expand_segments(np.array([1.0, 2.0]))
    with pytest.raises(cpugpu.DtypeError, match="narrow"):
        cpugpu.expand_segments(np.array([1]), np.array([0], np.int64), positions_dtype=np.int32)
    buf = np.zeros(8, np.int64)
    with pytest.raises(cpugpu.LayoutError, match="overlaps"):
        cpugpu.expand_segments(np.array([2, 2]), out=(buf[:4], buf[2:6]))
    ro = np.zeros(3, np.int32)
    ro.flags.writeable = False
    with pytest.raises(cpugpu.LayoutError, match="read-only"):
        cpugpu.expand_segments(np.array([3]), out=(ro, np.zeros(3, np.int64)))


# --- slot_mapping -----------------------------------------------------------------------------


def make_tables(rng, rows, max_model_len, sizes, idx=np.int32):
    """Block tables in which every row owns the blocks of its first `seq[row]` tokens."""
    seq = rng.integers(1, max_model_len + 1, size=rows)
    seq[0] = max_model_len  # a request at the maximum model length
    tables, nbs = [], []
    for bs in sizes:
        max_blocks = -(-max_model_len // bs)
        table = np.full((rows, max_blocks), -1, idx)
        nb = np.zeros(rows, idx)
        free = rng.permutation(rows * max_blocks).astype(idx)
        at = 0
        for s in range(rows):
            need = -(-int(seq[s]) // bs)
            table[s, :need] = free[at : at + need]
            nb[s] = need
            at += need
        tables.append(table)
        nbs.append(nb)
    return seq, tables, nbs


def make_tokens(rng, seq, n):
    rows = rng.integers(0, len(seq), size=n)
    rows[: min(n, 1)] = 0
    positions = (rng.random(n) * seq[rows]).astype(np.int64)
    positions[: min(n, 1)] = seq[0] - 1  # the last position of a max-length request
    return rows, positions


@pytest.mark.parametrize("idx", IDX)
@pytest.mark.parametrize("n", NREQ + [200_000])
def test_slot_mapping_one_group(idx, n):
    rng = np.random.default_rng(n + 3)
    seq, tables, nbs = make_tables(rng, 16, 256, [16], idx)
    rows, positions = make_tokens(rng, seq, n)
    rows, positions = rows.astype(idx), positions.astype(idx)
    slots = cpugpu.slot_mapping(rows, positions, tables[0], nbs[0], 16)
    assert slots.shape == (n,) and slots.dtype == np.int64
    np.testing.assert_array_equal(slots, ref_slots(rows, positions, tables, [16], n)[0])


@pytest.mark.parametrize("idx", IDX)
@pytest.mark.parametrize("out_dtype", IDX)
@pytest.mark.parametrize("n", [0, 1, 33, 1000])
def test_slot_mapping_groups_into_poisoned_out(idx, out_dtype, n):
    rng = np.random.default_rng(n + 11)
    sizes = [16, 8]
    seq, tables, nbs = make_tables(rng, 24, 128, sizes, idx)
    rows, positions = make_tokens(rng, seq, n)
    t_cap = n + 5  # padded for a CUDA graph: the tail is PAD_SLOT_ID
    out = np.full((2, t_cap), POISON, out_dtype)
    got = cpugpu.slot_mapping(rows.astype(np.int32), positions, tables, nbs, sizes, out=out)
    assert got is out
    np.testing.assert_array_equal(out, ref_slots(rows, positions, tables, sizes, t_cap))
    new = cpugpu.slot_mapping(rows, positions, tables, nbs, sizes, dtype=out_dtype, pad_id=cpugpu.PAD_SLOT_ID)
    assert new.shape == (2, n) and new.dtype == out_dtype
    np.testing.assert_array_equal(new, out[:, :n])


def test_slot_mapping_errors():
    table = np.array([[7, 2], [5, -1]], np.int32)
    nb = np.array([2, 1], np.int32)
    assert cpugpu.slot_mapping([0, 0, 1], [3, 4, 1], table, nb, 4).tolist() == [31, 8, 21]
    out = np.full(4, POISON, np.int64)
    # Position 4 of row 1 needs block 1, past its one valid block (the table holds -1 there).
    with pytest.raises(cpugpu.IndexOutOfBoundsError, match="slot_mapping") as e:
        cpugpu.slot_mapping([0, 1], [3, 4], table, nb, 4, out=out)
    assert (e.value.op, e.value.position, e.value.group, e.value.block, e.value.valid) == ("slot_mapping", 1, 0, 1, 1)
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:
        cpugpu.slot_mapping([1], [4], table, np.array([2, 2], np.int32), 4, out=out[:1])
    assert (e.value.position, e.value.value) == (0, -1)  # a negative block number
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:
        cpugpu.slot_mapping([0, 2], [0, 0], table, nb, 4, out=out)
    assert (e.value.position, e.value.index, e.value.bound) == (1, 2, 2)
    assert (out == POISON).all()
    with pytest.raises(cpugpu.OffsetsError) as e:  # a slot past the int32 maximum
        cpugpu.slot_mapping([0], [0], np.array([[2**30]], np.int32), np.array([1], np.int32), 4, dtype=np.int32)
    assert e.value.limit == 2**31 - 1
    with pytest.raises(cpugpu.InvalidArgumentError, match="block_size"):
        cpugpu.slot_mapping([0], [0], table, nb, 0)
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.slot_mapping([0], [0], table, nb, -4)
    with pytest.raises(cpugpu.InvalidArgumentError, match="pad_id"):
        cpugpu.slot_mapping([0], [0], table, nb, 4, pad_id=2**40, dtype=np.int32)
    # num_blocks not one per row: the crate takes the row count from num_blocks, so it reports
    # the block table's length (2 rows x 2 blocks) against the 1 row num_blocks implies.
    with pytest.raises(cpugpu.ShapeError, match="block table") as e:
        cpugpu.slot_mapping([0], [0], table, nb[:1], 4)
    assert (e.value.op, e.value.expected, e.value.actual) == ("slot_mapping", 2, 4)
    with pytest.raises(cpugpu.ShapeError):  # positions of another length
        cpugpu.slot_mapping([0, 0], [0], table, nb, 4)
    with pytest.raises(cpugpu.ShapeError):  # out shorter than the tokens
        cpugpu.slot_mapping([0, 0], [0, 1], table, nb, 4, out=np.zeros(1, np.int64))
    with pytest.raises(cpugpu.ShapeError):  # [T, groups] instead of [groups, T]
        cpugpu.slot_mapping([0], [0], [table, table], [nb, nb], [4, 4], out=np.zeros((3, 2), np.int64))
    with pytest.raises(cpugpu.ShapeError):
        cpugpu.slot_mapping([0], [0], [table, table], [nb], [4, 4])
    with pytest.raises(cpugpu.DtypeError):
        cpugpu.slot_mapping([0], [0], table, nb.astype(np.int64), 4)
    with pytest.raises(cpugpu.DtypeError):
        cpugpu.slot_mapping([0], [0], table.astype(np.float32), nb, 4)
    with pytest.raises(cpugpu.DtypeError):
        cpugpu.slot_mapping([0], [0], table, nb, 4, out=np.zeros(1, np.float64))
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.slot_mapping([0], [0], [], [], [])


# --- gather_windows ---------------------------------------------------------------------------


@pytest.mark.parametrize("idx", IDX)
@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.int64, np.uint8, np.float16])
@pytest.mark.parametrize("n", NREQ)
def test_gather_windows_ragged(idx, dtype, n):
    rng = np.random.default_rng(n + 21)
    rows_t, cols = 40, 256
    table = rng.integers(0, 100, size=(rows_t, cols)).astype(dtype)
    rows = rng.integers(0, rows_t, size=n).astype(idx)
    lens = rng.integers(0, 40, size=n)
    if n:
        lens[0] = cols  # a whole row (a request at the maximum length)
    starts = (rng.random(n) * (cols - lens + 1)).astype(idx)
    offsets = np.concatenate([[3], 3 + np.cumsum(lens)]).astype(idx)
    out = poisoned(int(offsets[-1]) + 4, dtype)
    got = cpugpu.gather_windows(table, rows, starts, offsets=offsets, out=out)
    assert got is out
    want = ref_windows_ragged(table, rows, starts, offsets, poisoned(out.shape, dtype))
    np.testing.assert_array_equal(out, want)  # untouched outside the windows
    new = cpugpu.gather_windows(table, rows, starts, offsets=offsets)
    assert new.shape == (int(offsets[-1]),)
    np.testing.assert_array_equal(new[3:], want[3 : int(offsets[-1])])
    assert (new[:3] == 0).all()


@pytest.mark.parametrize("idx", IDX)
@pytest.mark.parametrize("n", NREQ)
def test_gather_windows_rows(idx, n):
    rng = np.random.default_rng(n + 31)
    table = rng.integers(0, 1000, size=(50, 64)).astype(np.int32)  # block tables
    rows = rng.integers(0, 50, size=n).astype(idx)
    lens = rng.integers(0, 65, size=n).astype(idx)
    out = np.full((n, 64), POISON, np.int32)
    assert cpugpu.gather_windows(table, rows, lens=lens, out=out) is out
    np.testing.assert_array_equal(out, ref_windows_rows(table, rows, None, lens, np.full_like(out, POISON)))
    new = cpugpu.gather_windows(table, rows, lens=lens, width=64)
    assert new.shape == (n, 64)
    np.testing.assert_array_equal(new, ref_windows_rows(table, rows, None, lens, np.zeros_like(out)))


def test_gather_windows_errors():
    tokens = np.array([[10, 11, 12, 13], [20, 21, 22, 23]], np.int32)
    assert cpugpu.gather_windows(tokens, [1, 0], [1, 2], offsets=[0, 3, 5]).tolist() == [21, 22, 23, 12, 13]
    out = np.full(5, POISON, np.int32)
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:
        cpugpu.gather_windows(tokens, [1, 2], offsets=[0, 3, 5], out=out)
    assert (e.value.op, e.value.position, e.value.index, e.value.bound) == ("gather_windows", 1, 2, 2)
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:  # window past its row
        cpugpu.gather_windows(tokens, [1, 0], [1, 3], offsets=[0, 3, 5], out=out)
    assert (e.value.position, e.value.start, e.value.len, e.value.cols) == (1, 3, 2, 4)
    with pytest.raises(cpugpu.OffsetsError) as e:
        cpugpu.gather_windows(tokens, [1, 0], offsets=[0, 3, 2], out=out)
    assert e.value.position == 2
    with pytest.raises(cpugpu.OffsetsError):  # past the output
        cpugpu.gather_windows(tokens, [1, 0], offsets=[0, 3, 6], out=out)
    assert (out == POISON).all()
    with pytest.raises(cpugpu.IndexOutOfBoundsError):  # wider than the output rows
        cpugpu.gather_windows(tokens, [0], lens=[4], out=np.zeros((1, 3), np.int32))
    with pytest.raises(cpugpu.DtypeError):
        cpugpu.gather_windows(tokens, np.array([0], np.int32), offsets=np.array([0, 1], np.int64))
    with pytest.raises(cpugpu.DtypeError):
        cpugpu.gather_windows(tokens, [0], lens=[1], out=np.zeros((1, 4), np.float32))
    with pytest.raises(cpugpu.ShapeError):
        cpugpu.gather_windows(tokens, [0, 1], lens=[1])
    with pytest.raises(cpugpu.ShapeError):
        cpugpu.gather_windows(tokens, [0, 1], lens=[1, 1], out=np.zeros((3, 4), np.int32))
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.gather_windows(tokens, [0], lens=[1], offsets=[0, 1])
    with pytest.raises(cpugpu.LayoutError):
        cpugpu.gather_windows(tokens, [0], offsets=[0, 2], out=tokens.ravel()[4:])


# --- pad_to_length, pad_to_bucket, bucket_for, cuda_graph_sizes -------------------------------


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.uint8])
@pytest.mark.parametrize("size", [0, 1, 5, 33])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_pad_to_length_and_bucket(dtype, size, axis):
    rng = np.random.default_rng(size)
    arr = rng.integers(0, 100, size=(size, 3) if axis == 0 else (3, size)).astype(dtype)
    ax = axis % 2
    length = size + 3
    got = cpugpu.pad_to_length(arr, length, axis, 9)
    np.testing.assert_array_equal(got, ref_pad(arr, length, ax, 9))
    assert got.dtype == dtype
    assert cpugpu.pad_to_length(arr, size, axis) is arr  # no copy
    out = poisoned(got.shape, dtype)
    assert cpugpu.pad_to_length(arr, length, axis, 9, out=out) is out
    np.testing.assert_array_equal(out, got)
    sizes = cpugpu.cuda_graph_sizes(64)
    target = step_reference.bucket(size, sizes)
    got = cpugpu.pad_to_bucket(arr, sizes, axis, 9)
    np.testing.assert_array_equal(got, ref_pad(arr, target, ax, 9))
    if target == size:
        assert got is arr
    out = poisoned(got.shape, dtype)
    assert cpugpu.pad_to_bucket(arr, sizes, axis, 9, out=out) is out
    np.testing.assert_array_equal(out, got)


def test_pad_large_pads():
    arr = np.arange(300_000, dtype=np.int64)
    got = cpugpu.pad_to_bucket(arr, [1 << 18, 1 << 19], pad_value=-1)
    assert got.shape == (1 << 19,) and (got[:300_000] == arr).all() and (got[300_000:] == -1).all()


def test_pad_large_releases_the_gil():
    arr = np.ones((1 << 21, 16), np.float32)  # 128 MiB: a copy of tens of milliseconds
    out = np.empty((arr.shape[0] + 8, 16), np.float32)
    during, took = ticks_while(lambda: cpugpu.pad_to_length(arr, arr.shape[0] + 8, pad_value=-1, out=out))
    assert len(during) >= 3, f"{len(during)} ticks while the {took:.3f} s pad ran"
    assert (out[-8:] == -1).all() and (out[:-8] == 1).all()


def test_bucket_for_and_cuda_graph_sizes():
    for m in [0, 1, 4, 7, 8, 24, 512, 513]:
        assert cpugpu.cuda_graph_sizes(m) == [s for s in step_reference.cuda_graph_sizes(m) if s <= m]
    sizes = cpugpu.cuda_graph_sizes(512)
    assert sizes == step_reference.cuda_graph_sizes(512)
    for n in [0, 1, 3, 4, 5, 9, 511, 512]:
        assert cpugpu.bucket_for(n, sizes) == step_reference.bucket(n, sizes)
    assert cpugpu.bucket_for(7, np.array([4, 8])) == 8
    with pytest.raises(cpugpu.InvalidArgumentError) as e:
        cpugpu.bucket_for(513, sizes)  # vLLM runs it unpadded: the caller decides
    assert (e.value.op, e.value.value, e.value.largest) == ("pad_to_bucket", 513, 512)
    with pytest.raises(cpugpu.InvalidArgumentError, match="ascending"):
        cpugpu.bucket_for(1, [4, 2])
    with pytest.raises(cpugpu.InvalidArgumentError, match="empty"):
        cpugpu.bucket_for(1, [])
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.bucket_for(-1, [1])
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.cuda_graph_sizes(-1)


def test_pad_errors():
    arr = np.arange(6, dtype=np.int32).reshape(2, 3)
    with pytest.raises(cpugpu.InvalidArgumentError, match="never truncates") as e:
        cpugpu.pad_to_length(arr, 1)
    assert e.value.op == "pad_to_length"
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.pad_to_length(arr, -1)
    with pytest.raises(cpugpu.ShapeError):
        cpugpu.pad_to_length(arr, 4, axis=2)
    with pytest.raises(cpugpu.ShapeError):
        cpugpu.pad_to_length(arr, 4, axis=-3)
    with pytest.raises(cpugpu.InvalidArgumentError) as e:
        cpugpu.pad_to_bucket(arr, [1])
    assert (e.value.value, e.value.largest) == (2, 1)
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.pad_to_bucket(arr, [4, 4])
    out = np.full((3, 3), POISON, np.int32)
    with pytest.raises(cpugpu.ShapeError):
        cpugpu.pad_to_length(arr, 4, out=out)
    with pytest.raises(cpugpu.ShapeError):
        cpugpu.pad_to_bucket(arr, [4], out=out)
    assert (out == POISON).all()
    with pytest.raises(cpugpu.DtypeError):
        cpugpu.pad_to_length(arr, 3, out=np.zeros((3, 3), np.int64))
    with pytest.raises(cpugpu.LayoutError):
        cpugpu.pad_to_length(arr[:, :2], 3)  # not C-contiguous


# --- prepare_step -----------------------------------------------------------------------------


def run_reference(inp, max_reqs, max_tokens):
    out = step_reference.new_outputs(max_reqs, max_tokens, len(inp["block_sizes"]))
    num_tokens, padded = step_reference.prepare_step_numpy(inp, out)
    return out, num_tokens, padded


def run_cpugpu(inp, max_reqs, max_tokens, padding="buckets"):
    out = step_reference.new_outputs(max_reqs, max_tokens, len(inp["block_sizes"]))
    res, plan = cpugpu.prepare_step(
        inp["state_index"],
        inp["num_computed"],
        inp["num_scheduled"],
        inp["token_ids"],
        inp["block_tables"],
        inp["num_blocks"],
        inp["block_sizes"],
        padding=inp["sizes"] if padding == "buckets" else padding,
        out=out,
    )
    assert all(res[k] is out[k] for k in out)
    return out, plan


STEP_CASES = dict(step_reference.CASES)
for _seed in (11, 12, 13, 14):
    STEP_CASES[f"seed{_seed}"] = (_seed, 5, 20, 512, (16, 32), 40, 300, 32, 4096)
STEP_CASES["large"] = (21, 40, 200, 2048, (16,), 256, 2000, 256, 65536)  # the parallel path


@pytest.mark.parametrize("name", list(STEP_CASES))
def test_prepare_step_matches_step_reference(name):
    seed, npf, ndc, mml, bss, rows, maxp, max_reqs, max_tokens = STEP_CASES[name]
    inp = step_reference.make_step(seed, npf, ndc, mml, bss, rows, maxp)
    want, num_tokens, padded = run_reference(inp, max_reqs, max_tokens)
    got, plan = run_cpugpu(inp, max_reqs, max_tokens)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    n = len(inp["num_scheduled"])
    assert plan == {
        "num_reqs": n,
        "num_tokens": num_tokens,
        "padded_tokens": padded,
        "max_query_len": int(inp["num_scheduled"].max()) if n else 0,
        "max_seq_len": int((inp["num_computed"] + inp["num_scheduled"]).max()) if n else 0,
    }


def test_prepare_step_allocating_and_exact_padding():
    inp = step_reference.make_step(5, 2, 3, 64, (16,), 8, 3)
    want, num_tokens, padded = run_reference(inp, 5, 64)
    res, plan = cpugpu.prepare_step(
        inp["state_index"], inp["num_computed"], inp["num_scheduled"], inp["token_ids"],
        inp["block_tables"][0], inp["num_blocks"][0], inp["block_sizes"][0], padding=inp["sizes"],
    )
    assert plan["padded_tokens"] == padded and res["positions"].shape == (padded,)
    assert res["slot_mapping"].shape == (padded,)  # one group given as arrays: a vector
    for k in want:
        np.testing.assert_array_equal(res[k].reshape(-1)[: padded if k in ("positions", "input_ids", "slot_mapping") else None],
                                      want[k].reshape(-1)[: len(res[k].reshape(-1))], err_msg=k)
    # Exact padding and none.
    got, plan = run_cpugpu(inp, 5, 64, padding=num_tokens + 3)
    assert plan["padded_tokens"] == num_tokens + 3
    assert (got["positions"][num_tokens : num_tokens + 3] == 0).all() and (got["positions"][num_tokens + 3 :] == POISON).all()
    got, plan = run_cpugpu(inp, 5, 64, padding=None)
    assert plan["padded_tokens"] == num_tokens and (got["input_ids"][num_tokens:] == POISON).all()
    # Lists in, no requests.
    res, plan = cpugpu.prepare_step([], [], [], inp["token_ids"], inp["block_tables"], inp["num_blocks"], inp["block_sizes"])
    assert plan["num_tokens"] == 0 and res["query_start_loc"].tolist() == [0]
    assert res["slot_mapping"].shape == (1, 0)


def small_step():
    inp = step_reference.make_step(4, 2, 3, 64, (16,), 8, 3)
    return inp, step_reference.new_outputs(8, 16, 1)


def call_step(inp, out, **kw):
    args = dict(inp)
    args.update(kw)
    return cpugpu.prepare_step(
        args["state_index"], args["num_computed"], args["num_scheduled"], args["token_ids"],
        args["block_tables"], args["num_blocks"], args["block_sizes"], padding=args.get("padding"), out=out,
    )


def assert_poisoned(out):
    for k, v in out.items():
        assert (v == POISON).all(), k


def test_prepare_step_errors_write_nothing():
    inp, out = small_step()
    bad = inp["state_index"].copy()
    bad[2] = 8
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:
        call_step(inp, out, state_index=bad)
    assert (e.value.op, e.value.position, e.value.index, e.value.bound) == ("prepare_step", 2, 8, 8)
    neg = inp["num_scheduled"].copy()
    neg[1] = -1
    with pytest.raises(cpugpu.OffsetsError) as e:
        call_step(inp, out, num_scheduled=neg)
    assert (e.value.position, e.value.value) == (1, -1)
    far = inp["num_computed"].copy()
    far[0] = 64
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:  # past max_model_len
        call_step(inp, out, num_computed=far)
    assert (e.value.position, e.value.cols) == (0, 64)
    nb = [inp["num_blocks"][0].copy()]
    nb[0][inp["state_index"][0]] = 0  # request 0's blocks are not valid any more
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:
        call_step(inp, out, num_blocks=nb)
    assert (e.value.position, e.value.group, e.value.valid) == (0, 0, 0)
    table = [inp["block_tables"][0].copy()]
    table[0][inp["state_index"][0], :] = -3
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:
        call_step(inp, out, block_tables=table)
    assert (e.value.position, e.value.value) == (0, -3)
    with pytest.raises(cpugpu.ShapeError):  # fewer token slots than the padded count
        call_step(inp, out, padding=17)
    with pytest.raises(cpugpu.InvalidArgumentError):
        call_step(inp, out, padding=1)  # fewer than the step's tokens
    assert_poisoned(out)
    with pytest.raises(cpugpu.DtypeError, match="int32"):
        call_step(inp, out, state_index=inp["state_index"].astype(np.int64))
    with pytest.raises(cpugpu.DtypeError):
        call_step(inp, dict(out, positions=out["positions"].astype(np.int32)))
    with pytest.raises(cpugpu.InvalidArgumentError, match="lacks"):
        call_step(inp, {k: v for k, v in out.items() if k != "seq_lens"})
    with pytest.raises(cpugpu.InvalidArgumentError, match="unknown key"):
        call_step(inp, dict(out, slots=out["slot_mapping"]))
    with pytest.raises(cpugpu.ShapeError):
        call_step(inp, dict(out, slot_mapping=np.full((16, 1), POISON, np.int64)))
    with pytest.raises(cpugpu.ShapeError):
        call_step(inp, out, num_blocks=[inp["num_blocks"][0], inp["num_blocks"][0]])
    with pytest.raises(cpugpu.LayoutError, match="overlaps"):
        call_step(inp, dict(out, seq_lens=out["query_start_loc"][1:]))
    assert_poisoned(out)


# --- StagedWrites -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.uint8])
@pytest.mark.parametrize("n", [0, 1, 33, 500])
def test_staged_writes_match_sequential_numpy(dtype, n):
    rng = np.random.default_rng(n)
    rows, cols = 20, 32
    table = rng.integers(0, 50, size=(rows, cols)).astype(dtype)
    want = table.copy()
    w = cpugpu.StagedWrites(rows, cols, dtype)
    assert w.shape == (rows, cols) and w.dtype == dtype
    queued = 0
    for _ in range(n):  # overlapping writes: the later one wins, as applied in order
        r = int(rng.integers(0, rows))
        s = int(rng.integers(0, cols + 1))
        vals = rng.integers(0, 100, size=int(rng.integers(0, cols - s + 1))).astype(dtype)
        w.stage(r, s, vals if rng.random() < 0.5 else vals.tolist())
        want[r, s : s + len(vals)] = vals
        queued += len(vals) > 0
    assert len(w) == queued
    w.apply(table)
    np.testing.assert_array_equal(table, want)
    assert len(w) == 0 and w.staged_values == 0


def test_staged_writes_errors():
    w = cpugpu.StagedWrites(4, 8)
    w.stage(2, 0, [17, 3, 9])
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:
        w.stage(4, 0, [1])
    assert (e.value.op, e.value.position, e.value.index, e.value.bound) == ("staged_write", 1, 4, 4)
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:
        w.stage(-1, 0, [1])
    assert e.value.index == -1
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:
        w.stage(0, 6, [1, 2, 3])
    assert (e.value.position, e.value.start, e.value.len, e.value.cols) == (1, 6, 3, 8)
    with pytest.raises(cpugpu.IndexOutOfBoundsError):
        w.stage(0, -1, [1])
    with pytest.raises(cpugpu.DtypeError):
        w.stage(0, 0, np.array([1], np.int64))
    with pytest.raises(cpugpu.ShapeError):
        w.stage(0, 0, np.zeros((1, 1), np.int32))
    assert len(w) == 1 and w.staged_values == 3  # the refused writes queued nothing
    with pytest.raises(cpugpu.ShapeError):
        w.apply(np.zeros((4, 7), np.int32))
    with pytest.raises(cpugpu.DtypeError):
        w.apply(np.zeros((4, 8), np.int64))
    table = np.zeros((4, 8), np.int32)
    w.apply(table)
    assert table[2, :3].tolist() == [17, 3, 9] and table.sum() == 29
    w.stage(0, 0, [5])
    w.clear()
    w.apply(table)
    assert table[0, 0] == 0
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.StagedWrites(-1, 8)
    assert "StagedWrites(rows=4" in repr(w)


# --- huge sizes, list conversion, argument conversion, aliasing ------------------------------


def overcommit_refuses_terabytes():
    """Whether the kernel refuses a multi-terabyte allocation at once (Linux overcommit modes 0
    and 2); under mode 1 it would grant it and the test would really touch the memory."""
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() in ("0", "2")
    except OSError:
        return False


def test_huge_sizes_raise_typed_errors_before_allocating():
    # No test here allocates more than a few bytes: each size is refused by a check first.
    table = np.zeros((1, 4), np.int64)
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:  # the window runs past its row
        cpugpu.gather_windows(table, [0], offsets=[0, 2**40])
    assert (e.value.op, e.value.position, e.value.start, e.value.len, e.value.cols) == ("gather_windows", 0, 0, 2**40, 4)
    with pytest.raises(cpugpu.OffsetsError) as e:  # negative: found before allocating 2**40
        cpugpu.gather_windows(table, [0], offsets=[-1, 2**40])
    assert (e.value.op, e.value.position, e.value.value) == ("gather_windows", 0, -1)
    with pytest.raises(cpugpu.ShapeError) as e:  # offsets of another length than rows + 1
        cpugpu.gather_windows(table, [0, 0], offsets=[0, 2**40])
    assert e.value.op == "gather_windows"
    with pytest.raises(cpugpu.ShapeError, match="overflows") as e:  # 2**62 x 8 bytes
        cpugpu.gather_windows(table, [0], lens=[1], width=2**62)
    assert e.value.op == "gather_windows"
    with pytest.raises(cpugpu.IndexOutOfBoundsError) as e:  # a length past the row, huge width
        cpugpu.gather_windows(table, [0], lens=[5], width=2**40)
    assert (e.value.position, e.value.len, e.value.cols) == (0, 5, 4)
    inp, _ = small_step()
    with pytest.raises(cpugpu.ShapeError, match="overflows") as e:
        call_step(inp, None, padding=2**62)
    assert e.value.op == "prepare_step"
    with pytest.raises(cpugpu.ShapeError, match="overflows"):
        call_step(inp, None, padding=2**61, block_tables=inp["block_tables"] * 3,
                  num_blocks=inp["num_blocks"] * 3, block_sizes=inp["block_sizes"] * 3)
    with pytest.raises(cpugpu.InvalidArgumentError) as e:
        cpugpu.cuda_graph_sizes(2**62)
    assert (e.value.op, e.value.name) == ("pad_to_bucket", "max_size")
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.cuda_graph_sizes(2**20 + 1)
    sizes = cpugpu.cuda_graph_sizes(2**20)  # the documented limit itself is fine
    assert len(sizes) == 3 + 2**17 and sizes[-1] == 2**20
    with pytest.raises(cpugpu.ShapeError) as e:
        cpugpu.pad_to_length(np.zeros(3), 2**62)
    assert e.value.op == "pad_to_length"


@pytest.mark.skipif(not overcommit_refuses_terabytes(), reason="the kernel would grant terabytes lazily")
def test_huge_valid_sizes_raise_out_of_memory():
    # Valid arguments whose output needs terabytes: the allocator refuses, and that is a
    # cpugpu.OutOfMemoryError (a MemoryError), not an abort of the interpreter.
    inp, _ = small_step()
    with pytest.raises(cpugpu.OutOfMemoryError) as e:
        call_step(inp, None, padding=2**40)
    assert e.value.op == "prepare_step" and e.value.bytes >= 2**40
    with pytest.raises(MemoryError) as e:  # windows inside the row, an output of 2**40 + 1
        cpugpu.gather_windows(np.zeros((1, 4), np.int64), [0], offsets=[2**40, 2**40 + 1])
    assert isinstance(e.value, cpugpu.OutOfMemoryError) and e.value.op == "gather_windows"


def test_lists_of_floats_and_out_of_range_values_are_refused():
    inp, out = small_step()
    with pytest.raises(cpugpu.DtypeError, match="integers") as e:  # not truncated to [1], [0], [2]
        call_step(inp, out, state_index=[1.9], num_computed=[0.5], num_scheduled=[2.7])
    assert e.value.op == "prepare_step"
    with pytest.raises(cpugpu.DtypeError):
        call_step(inp, out, state_index=[True, False])
    with pytest.raises(cpugpu.InvalidArgumentError) as e:  # not an OverflowError, not wrapped
        call_step(inp, out, state_index=[0], num_computed=[0], num_scheduled=[2**40])
    assert (e.value.op, e.value.position, e.value.value) == ("prepare_step", 0, 2**40)
    with pytest.raises(cpugpu.InvalidArgumentError) as e:
        call_step(inp, out, state_index=[0, 0], num_computed=[0, -(2**31) - 1], num_scheduled=[1, 1])
    assert (e.value.position, e.value.value) == (1, -(2**31) - 1)
    assert_poisoned(out)
    res, plan = call_step(inp, None, state_index=[0], num_computed=[1], num_scheduled=[2])  # ints: fine
    assert plan["num_tokens"] == 2 and res["positions"].tolist() == [1, 2]

    w = cpugpu.StagedWrites(4, 8)
    with pytest.raises(cpugpu.DtypeError) as e:  # was written as [1, 2]
        w.stage(0, 0, [1.7, 2.9])
    assert e.value.op == "staged_write"
    with pytest.raises(cpugpu.DtypeError):
        w.stage(0, 0, [True])
    with pytest.raises(cpugpu.InvalidArgumentError) as e:
        w.stage(0, 0, [1, 2**31])
    assert (e.value.position, e.value.value) == (1, 2**31)
    assert len(w) == 0
    u8 = cpugpu.StagedWrites(2, 4, np.uint8)
    for bad in ([-1], [256]):
        with pytest.raises(cpugpu.InvalidArgumentError) as e:  # was an OverflowError
            u8.stage(0, 0, bad)
        assert (e.value.op, e.value.value) == ("staged_write", bad[0])
    u8.stage(0, 0, [0, 255])
    f16 = cpugpu.StagedWrites(2, 4, np.float16)
    f16.stage(1, 0, [1.5, -2.25])  # a float table takes floats
    table = np.zeros((2, 4), np.float16)
    f16.apply(table)
    assert table[1, :2].tolist() == [1.5, -2.25]

    with pytest.raises(cpugpu.DtypeError):
        cpugpu.expand_segments([1.5])
    with pytest.raises(cpugpu.DtypeError, match="sequence of integers"):
        cpugpu.expand_segments([[1], [1, 2]])  # numpy's ValueError (ragged), typed


def test_argument_conversion_errors_are_typed():
    table = np.array([[7, 2], [5, -1]], np.int32)
    nb = np.array([2, 1], np.int32)
    inp, out = small_step()
    cases = {
        "slot_mapping": lambda: cpugpu.slot_mapping([0], [0], table, nb, 4, pad_id=2**70),
        "pad_to_length": lambda: cpugpu.pad_to_length(np.zeros(3), 2**70),
        "pad_to_bucket": lambda: cpugpu.bucket_for("x", [1]),
        "gather_windows": lambda: cpugpu.gather_windows(table, [0], lens=[1], width=2**70),
        "staged_write": lambda: cpugpu.StagedWrites(4, 8).stage(2**70, 0, [1]),
        "prepare_step": lambda: call_step(inp, out, padding=2**70),
    }
    for op, call in cases.items():
        with pytest.raises(cpugpu.InvalidArgumentError) as e:  # were OverflowError / TypeError
            call()
        assert e.value.op == op and str(e.value).startswith(op + ":"), (op, str(e.value))
    for bad in (2**70, "x", 1.5):
        with pytest.raises(cpugpu.InvalidArgumentError):
            cpugpu.pad_to_length(np.zeros(3), 4, axis=bad)
        with pytest.raises(cpugpu.InvalidArgumentError):
            cpugpu.cuda_graph_sizes(bad)
        with pytest.raises(cpugpu.InvalidArgumentError):
            cpugpu.StagedWrites(4, bad)
        with pytest.raises(cpugpu.InvalidArgumentError):
            cpugpu.StagedWrites(4, 8).stage(0, bad, [1])
    assert cpugpu.pad_to_length(np.zeros(3), np.int64(4), axis=np.int32(0)).shape == (4,)
    with pytest.raises(cpugpu.InvalidArgumentError, match="dict") as e:  # was a TypeError
        call_step(inp, list(out.values()))
    assert e.value.op == "prepare_step"
    with pytest.raises(cpugpu.InvalidArgumentError, match="unknown key"):  # a non-str key
        call_step(inp, {**out, 1: out["positions"]})
    assert_poisoned(out)


def test_helper_errors_name_the_operation():
    table = np.array([[7, 2], [5, -1]], np.int32)
    nb = np.array([2, 1], np.int32)
    cases = [
        ("expand_segments", cpugpu.DtypeError, lambda: cpugpu.expand_segments(np.array([1.0]))),
        ("expand_segments", cpugpu.ShapeError, lambda: cpugpu.expand_segments(np.zeros((1, 1), np.int64))),
        ("slot_mapping", cpugpu.DtypeError, lambda: cpugpu.slot_mapping([0.5], [0], table, nb, 4)),
        ("slot_mapping", cpugpu.LayoutError, lambda: cpugpu.slot_mapping([0], [0], table, nb, 4, out=np.zeros((2, 2), np.int64)[:, 0])),
        ("gather_windows", cpugpu.DtypeError, lambda: cpugpu.gather_windows(table, [0], lens=[1], out=np.zeros((1, 2)))),
        ("pad_to_length", cpugpu.LayoutError, lambda: cpugpu.pad_to_length(table[:, :1], 3)),
        ("pad_to_bucket", cpugpu.InvalidArgumentError, lambda: cpugpu.pad_to_bucket(table, [4], pad_value="x")),
        ("pad_to_length", cpugpu.InvalidArgumentError, lambda: cpugpu.pad_to_length(table, 4, pad_value=2**70)),
        ("pad_to_length", cpugpu.InvalidArgumentError, lambda: cpugpu.pad_to_length(table.astype(np.uint8), 4, pad_value=-1)),
        ("staged_write", cpugpu.DtypeError, lambda: cpugpu.StagedWrites(2, 2).apply(np.zeros((2, 2)))),
    ]
    for op, cls, call in cases:
        with pytest.raises(cls) as e:
            call()
        assert e.value.op == op and str(e.value).startswith(op), (op, str(e.value))
        assert not str(e.value).startswith(f"{op}: {op}"), str(e.value)  # named once


def test_index_lists_past_int64_are_refused_not_wrapped():
    for starts in ([2**63], [2**64], [-1, 2**63][1:], [2**70]):
        with pytest.raises(cpugpu.InvalidArgumentError) as e:  # was position -2**63
            cpugpu.expand_segments([1], starts)
        assert (e.value.op, e.value.position, e.value.value) == ("expand_segments", 0, starts[0])
    with pytest.raises(cpugpu.InvalidArgumentError) as e:  # int64 and uint64 range mixed
        cpugpu.expand_segments([1, 1], [-1, 2**63])
    assert (e.value.position, e.value.value) == (1, 2**63)
    with pytest.raises(cpugpu.InvalidArgumentError):
        cpugpu.expand_segments([2**63])
    _, pos = cpugpu.expand_segments([1], [2**63 - 1])  # the largest int64 itself is fine
    assert pos.tolist() == [2**63 - 1]


def test_negative_axis_is_reported_as_given():
    arr = np.zeros((2, 3), np.int32)
    with pytest.raises(cpugpu.ShapeError, match=r"pad_to_length: axis -5 is out of range for 2 dimensions") as e:
        cpugpu.pad_to_length(arr, 4, axis=-5)
    assert (e.value.op, e.value.axis, e.value.ndim) == ("pad_to_length", -5, 2)
    with pytest.raises(cpugpu.ShapeError, match="axis -3") as e:
        cpugpu.pad_to_bucket(arr, [4], axis=-3)
    assert e.value.axis == -3
    with pytest.raises(cpugpu.ShapeError, match="axis 2 ") as e:
        cpugpu.pad_to_length(arr, 4, axis=2)
    assert e.value.axis == 2


def test_data_errors_with_out_write_nothing():
    seg_out, pos_out = np.full(4, POISON, np.int32), np.full(4, POISON, np.int32)
    with pytest.raises(cpugpu.OffsetsError) as e:  # the last position is past int32
        cpugpu.expand_segments(np.array([1, 3], np.int32), np.array([0, 2**31 - 2], np.int32), out=(seg_out, pos_out))
    assert (e.value.position, e.value.limit) == (1, 2**31 - 1)
    with pytest.raises(cpugpu.OffsetsError):  # decreasing offsets
        cpugpu.expand_segments(offsets=[0, 3, 2, 4], out=(seg_out, pos_out))
    assert (seg_out == POISON).all() and (pos_out == POISON).all()
    arr = np.arange(6, dtype=np.int32).reshape(2, 3)
    out = np.full((2, 3), POISON, np.int32)
    with pytest.raises(cpugpu.InvalidArgumentError, match="never truncates"):
        cpugpu.pad_to_length(arr, 1, axis=1, out=out)
    with pytest.raises(cpugpu.InvalidArgumentError, match="ascending"):
        cpugpu.pad_to_bucket(arr, [4, 2], out=out)
    assert (out == POISON).all()


def test_outputs_aliasing_inputs_are_refused():
    table = np.array([[7, 2], [5, -1]], np.int64)
    nb = np.array([2, 1], np.int64)
    buf = np.array([0, 1, POISON, POISON], np.int64)
    before = buf.copy()
    with pytest.raises(cpugpu.LayoutError, match="overlaps") as e:  # out is rows
        cpugpu.slot_mapping(buf[:2], np.array([0, 1], np.int64), table, nb, 4, out=buf[:2])
    assert e.value.op == "slot_mapping"
    with pytest.raises(cpugpu.LayoutError, match="overlaps"):  # out shares rows' last element
        cpugpu.slot_mapping(buf[:2], np.array([0, 1], np.int64), table, nb, 4, out=buf[1:3])
    assert (buf == before).all()
    tab_before = table.copy()
    with pytest.raises(cpugpu.LayoutError, match="overlaps"):  # out is the block table's memory
        cpugpu.slot_mapping([0, 0], [0, 1], table, nb, 4, out=table.reshape(-1)[:2])
    assert (table == tab_before).all()
    big = np.array([1, 2, 3, 4, POISON, POISON, POISON, POISON], np.int32)
    before = big.copy()
    with pytest.raises(cpugpu.LayoutError, match="overlaps") as e:
        cpugpu.pad_to_length(big[:4], 6, pad_value=0, out=big[2:8])
    assert e.value.op == "pad_to_length"
    with pytest.raises(cpugpu.LayoutError, match="overlaps"):
        cpugpu.pad_to_bucket(big[:4], [6], out=big[:6])
    assert (big == before).all()


# --- CUDA memory ------------------------------------------------------------------------------


def test_cuda_memory_is_refused():
    cuda = CudaTensor()
    table = np.zeros((2, 4), np.int32)
    nb = np.zeros(2, np.int32)
    calls = {
        "expand_segments": lambda: cpugpu.expand_segments(cuda),
        "slot_mapping": lambda: cpugpu.slot_mapping(cuda, [0], table, nb, 4),
        "gather_windows": lambda: cpugpu.gather_windows(cuda, [0], offsets=[0, 1]),
        "pad_to_length": lambda: cpugpu.pad_to_length(cuda, 8),
        "pad_to_bucket": lambda: cpugpu.pad_to_bucket(cuda, [8]),
        "prepare_step": lambda: cpugpu.prepare_step([0], [0], [1], table, table, cuda, 4),
        "staged_write": lambda: cpugpu.StagedWrites(2, 4).apply(cuda),
    }
    for op, call in calls.items():
        with pytest.raises(cpugpu.DeviceError, match=f"{op}: CUDA memory .* host memory only"):
            call()
