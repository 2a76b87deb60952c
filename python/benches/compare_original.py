#!/usr/bin/env python3
"""The Python package against the numpy original, on the workloads of examples/host_bench.rs
and benches/compare_numpy.py, plus the per-call overhead at small batches.

The "numpy original" is each operation as the original module (CpuGpuBufferPool.py) runs it:

    copy_with_indices     np.take(src, indices, axis=0, out=dst[:len(indices)])
    scatter_with_indices  dst[indices] = src[:len(indices)]
    pad_to_multiple       np.pad(arr, width, mode="constant", constant_values=v)
    compute_cumsum_offsets  np.zeros(n + 1, int64); offsets[1:] = np.cumsum(lengths)
    flatten_with_offsets  np.concatenate(arrays) + the offsets of their lengths
    split_by_offsets      [arr[int(o[i]):int(o[i + 1])] for i in range(len(o) - 1)]

and cpugpu is the same call through the package (`cpugpu.copy_with_indices(...)`), so both
columns include Python's call overhead. Timing rule as compare_numpy.py: warm-up, then the
median of at least 15 runs and 1 s (`--quick`: 5 runs, 0.2 s). Both sides run in this process,
one after the other, workload by workload.

    python python/benches/compare_original.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

import cpugpu

COLS = 16
ROWS = 1_048_576
PAD_ROWS = 1_048_573
PAD_MULTIPLE = 64
OFFSETS_N = 4_194_304
FLATTEN_N = 8_192
FLATTEN_MAX_LEN = 511
SMALL_ROWS = 4_096
OVERHEAD_SIZES = (8, 64, 512)


# --- the numpy original ---------------------------------------------------------------------


def np_copy_with_indices(src, dst, indices):
    np.take(src, indices, axis=0, out=dst[: len(indices)])


def np_scatter_with_indices(src, dst, indices):
    dst[indices] = src[: len(indices)]


def np_pad_to_multiple(arr, multiple, axis=0, pad_value=0):
    size = arr.shape[axis]
    target = ((size + multiple - 1) // multiple) * multiple
    if target == size:
        return arr
    width = [(0, 0)] * arr.ndim
    width[axis] = (0, target - size)
    return np.pad(arr, width, mode="constant", constant_values=pad_value)


def np_compute_cumsum_offsets(lengths):
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    return offsets


def np_flatten_with_offsets(arrays):
    offsets = np_compute_cumsum_offsets(np.array([len(a) for a in arrays], dtype=np.int64))
    if not arrays:
        return np.array([], dtype=np.float32), offsets
    return np.concatenate(arrays), offsets


def np_split_by_offsets(arr, offsets):
    return [arr[int(offsets[i]) : int(offsets[i + 1])] for i in range(len(offsets) - 1)]


# --- workloads ------------------------------------------------------------------------------


def ragged(rng, n, max_len):
    return [rng.random(int(k), dtype=np.float32) for k in rng.integers(1, max_len, size=n, endpoint=True)]


def workloads():
    """(op, workload, numpy fn, cpugpu fn), data seeded as in compare_numpy.py."""
    out = []
    rng = np.random.default_rng(2)
    src = rng.random((ROWS, COLS), dtype=np.float32)
    idx = rng.permutation(ROWS).astype(np.int64)
    dst = np.empty_like(src)
    out.append(("gather_rows", "1,048,576 x 16 f32, random permutation, i64 indices",
                lambda: np_copy_with_indices(src, dst, idx), lambda: cpugpu.copy_with_indices(src, dst, idx)))
    sdst = np.zeros_like(src)
    out.append(("scatter_rows", "the same",
                lambda: np_scatter_with_indices(src, sdst, idx), lambda: cpugpu.scatter_with_indices(src, sdst, idx)))
    psrc = rng.random((PAD_ROWS, COLS), dtype=np.float32)
    out.append(("pad_to_multiple", "1,048,573 x 16 f32 to a multiple of 64 (allocating, as the original)",
                lambda: np_pad_to_multiple(psrc, PAD_MULTIPLE), lambda: cpugpu.pad_to_multiple(psrc, PAD_MULTIPLE)))
    lengths = rng.integers(1, 511, size=OFFSETS_N, endpoint=True, dtype=np.int64)
    out.append(("offsets", "4,194,304 i64 lengths -> i64 offsets",
                lambda: np_compute_cumsum_offsets(lengths), lambda: cpugpu.compute_cumsum_offsets(lengths)))
    arrays = ragged(np.random.default_rng(6), FLATTEN_N, FLATTEN_MAX_LEN)
    out.append(("flatten", "8,192 f32 arrays of 1..511 elements",
                lambda: np_flatten_with_offsets(arrays), lambda: cpugpu.flatten_with_offsets(arrays)))
    flat, offs = np_flatten_with_offsets(arrays)
    out.append(("split", "the same, into views",
                lambda: np_split_by_offsets(flat, offs), lambda: cpugpu.split_by_offsets(flat, offs)))
    srng = np.random.default_rng(8)
    ssrc = srng.random((SMALL_ROWS, COLS), dtype=np.float32)
    sidx = srng.integers(0, SMALL_ROWS, size=SMALL_ROWS, dtype=np.int64)
    sdst2 = np.empty_like(ssrc)
    out.append(("gather_small", "4,096 x 16 f32, 4,096 random i64 indices",
                lambda: np_copy_with_indices(ssrc, sdst2, sidx), lambda: cpugpu.copy_with_indices(ssrc, sdst2, sidx)))
    return out


def overhead_workloads():
    """Small batches, where the per-call cost dominates: n rows / lengths / arrays."""
    out = []
    for n in OVERHEAD_SIZES:
        rng = np.random.default_rng(n)
        src = rng.random((4 * n, COLS), dtype=np.float32)
        idx = rng.integers(0, 4 * n, size=n, dtype=np.int64)
        dst = np.empty((n, COLS), np.float32)
        out.append((f"gather n={n}", f"{n} rows of 16 f32",
                    lambda s=src, d=dst, i=idx: np_copy_with_indices(s, d, i),
                    lambda s=src, d=dst, i=idx: cpugpu.copy_with_indices(s, d, i)))
        perm = rng.permutation(4 * n)[:n].astype(np.int64)
        big = np.zeros((4 * n, COLS), np.float32)
        rows = src[:n].copy()
        out.append((f"scatter n={n}", f"{n} rows of 16 f32",
                    lambda s=rows, d=big, i=perm: np_scatter_with_indices(s, d, i),
                    lambda s=rows, d=big, i=perm: cpugpu.scatter_with_indices(s, d, i)))
        ids = rng.integers(0, 32000, size=n - 3, dtype=np.int64)
        out.append((f"pad n={n}", f"{n - 3} i64 ids to a multiple of 8",
                    lambda a=ids: np_pad_to_multiple(a, 8), lambda a=ids: cpugpu.pad_to_multiple(a, 8)))
        lens = rng.integers(1, 200, size=n, dtype=np.int64)
        out.append((f"offsets n={n}", f"{n} i64 lengths",
                    lambda l=lens: np_compute_cumsum_offsets(l), lambda l=lens: cpugpu.compute_cumsum_offsets(l)))
        arrs = ragged(rng, n, 16)
        out.append((f"flatten n={n}", f"{n} f32 arrays of 1..16",
                    lambda a=arrs: np_flatten_with_offsets(a), lambda a=arrs: cpugpu.flatten_with_offsets(a)))
        f, o = np_flatten_with_offsets(arrs)
        out.append((f"split n={n}", f"into {n} views",
                    lambda f=f, o=o: np_split_by_offsets(f, o), lambda f=f, o=o: cpugpu.split_by_offsets(f, o)))
    return out


class Config:
    def __init__(self, quick):
        if quick:
            self.warm_runs, self.warm_time, self.min_runs, self.min_time, self.max_time = 1, 0.02, 5, 0.2, 2.0
        else:
            self.warm_runs, self.warm_time, self.min_runs, self.min_time, self.max_time = 3, 0.1, 15, 1.0, 5.0


def time_it(cfg, f):
    """Warm-up, then timed runs; the median (and the number of runs)."""
    start = time.perf_counter()
    n = 0
    while n < cfg.warm_runs or time.perf_counter() - start < cfg.warm_time:
        f()
        n += 1
        if n >= 1000:
            break
    samples = []
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        f()
        samples.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
        if (len(samples) >= cfg.min_runs and elapsed >= cfg.min_time) or (len(samples) >= 5 and elapsed >= cfg.max_time) or len(samples) >= 200_000:
            break
    return float(np.median(samples)), len(samples)


def fmt(s):
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} us"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    ap.add_argument("--json", metavar="FILE", help="save the numbers")
    args = ap.parse_args()
    cfg = Config(args.quick)
    info = cpugpu.backend_info()
    print(f"cpugpu {cpugpu.__version__} ({info['device']}), numpy {np.__version__}, Python {platform.python_version()}")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; load average at start: "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    rows = []
    for title, items in (("Workloads of host_bench / compare_numpy.py", workloads()),
                         ("Per-call overhead at small batches", overhead_workloads())):
        print(f"\n{title}\n")
        print("| op | workload | numpy original | cpugpu (Python) | speedup |")
        print("|---|---|---|---|---|")
        for op, what, np_fn, cg_fn in items:
            t_np, n_np = time_it(cfg, np_fn)
            t_cg, n_cg = time_it(cfg, cg_fn)
            print(f"| {op} | {what} | {fmt(t_np)} | {fmt(t_cg)} | {t_np / t_cg:.2f}x |", flush=True)
            rows.append({"op": op, "workload": what, "numpy_s": t_np, "cpugpu_s": t_cg, "runs": [n_np, n_cg]})
    print("\nload average at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"numpy": np.__version__, "loadavg_end": os.getloadavg(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
