#!/usr/bin/env python3
"""PyTorch baseline for cpugpu's CUDA benchmarks (benches/cuda.rs), on the same GPU.

    python3 benches/torch_baseline.py [--json PATH] [--quick] [--device cuda] [--only OP[,OP]]

Each case: 5 warm-up runs, then 50 runs each between a pair of torch.cuda.Event(enable_timing=True)
recorded on the current stream; the median (the upper middle value, as the Rust bench takes it)
in microseconds. Bandwidth cases use inputs well above the H100's 50 MiB L2 and report GB/s of
bytes read + written, next to a device-to-device `dst.copy_(src)` moving the same bytes (an
`op: "memcpy"` line with the same case name, measured once per case name). Latency cases: 200
back-to-back calls between one event pair, per call, the median of 11 such runs.

Output: one JSON object per line on stdout (and in --json PATH), keys suite ("torch"), op, case,
bytes, median_us, gbps, device, torch, and where it applies memcpy_gbps, pct_memcpy, variant.
The (op, case) names are those of benches/cuda.rs, which benches/gpu_summary.py joins on
(torch's latency case `cumsum_i32_n{n}` is cpugpu's `offsets_i32_n{n}`).

--quick halves the sizes (case names follow the sizes, as in the Rust bench's --quick).
--device cpu times with perf_counter instead of events (only to check the script itself).
Exit status: 0, 1 if a case failed (the others still run), 2 without CUDA (or without torch).
"""

import argparse
import json
import sys
import time

WARMUP = 5
RUNS = 50
LATENCY_CALLS = 200
LATENCY_REPEATS = 11
MIB = 1 << 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="also write the JSON lines to PATH")
    p.add_argument("--quick", action="store_true", help="halve the sizes (smoke run)")
    p.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    p.add_argument("--only", default="", help="comma-separated ops to run (default: all)")
    return p.parse_args(argv)


class Bench:
    def __init__(self, torch, device, json_file):
        self.torch = torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self.device_name = torch.cuda.get_device_name(self.device)
        else:
            self.device_name = f"{self.device.type} (not a GPU)"
        self.json_file = json_file
        self.memcpy_us = {}  # case -> median us of the same-bytes D2D copy
        self.failures = []
        self.lines = 0

    # --- timing -------------------------------------------------------------------------
    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def time(self, fn):
        """Median microseconds of fn(), each run between its own pair of events."""
        for _ in range(WARMUP):
            fn()
        self.sync()
        times = []
        if self.cuda:
            ev = self.torch.cuda.Event
            pairs = [(ev(enable_timing=True), ev(enable_timing=True)) for _ in range(RUNS)]
            for a, b in pairs:
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) * 1e3)
        else:
            for _ in range(RUNS):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e6)
        self.sync()
        times.sort()
        return times[len(times) // 2]

    def time_per_call(self, fn, calls=LATENCY_CALLS):
        """Median over LATENCY_REPEATS of (time of `calls` back-to-back calls) / calls, in us."""
        for _ in range(WARMUP):
            fn()
        self.sync()
        times = []
        for _ in range(LATENCY_REPEATS):
            if self.cuda:
                a = self.torch.cuda.Event(enable_timing=True)
                b = self.torch.cuda.Event(enable_timing=True)
                a.record()
                for _ in range(calls):
                    fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) * 1e3 / calls)
            else:
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                times.append((time.perf_counter() - t0) * 1e6 / calls)
        self.sync()
        times.sort()
        return times[len(times) // 2]

    # --- output -------------------------------------------------------------------------
    def emit(self, op, case, nbytes, us, memcpy=False, **extra):
        gbps = nbytes / us / 1e3 if us > 0 else 0.0
        rec = {
            "suite": "torch",
            "op": op,
            "case": case,
            "bytes": int(nbytes),
            "median_us": round(us, 3),
            "gbps": round(gbps, 2),
            "device": self.device_name,
            "torch": self.torch.__version__,
        }
        if memcpy:
            mus = self.memcpy(case, nbytes)
            mg = nbytes / mus / 1e3 if mus > 0 else 0.0
            rec["memcpy_gbps"] = round(mg, 2)
            rec["pct_memcpy"] = round(100.0 * gbps / mg, 1) if mg > 0 else 0.0
        rec.update(extra)
        line = json.dumps(rec)
        print(line, flush=True)
        if self.json_file:
            self.json_file.write(line + "\n")
            self.json_file.flush()
        self.lines += 1

    def memcpy(self, case, nbytes):
        """D2D copy of nbytes/2 bytes (so nbytes move); one `memcpy` line per case name."""
        if case in self.memcpy_us:
            return self.memcpy_us[case]
        torch = self.torch
        half = max(1, nbytes // 2)
        src = torch.empty(half, dtype=torch.uint8, device=self.device)
        dst = torch.empty(half, dtype=torch.uint8, device=self.device)
        src.fill_(1)
        us = self.time(lambda: dst.copy_(src))
        del src, dst
        self.memcpy_us[case] = us
        self.emit("memcpy", case, 2 * half, us)
        return us

    def free(self):
        self.sync()
        if self.cuda:
            self.torch.cuda.empty_cache()


# --- the cases (names and sizes mirror benches/cuda.rs) ---------------------------------------


def skewed_lengths(total):
    """256 segments, segment i proportional to (i + 1)^2, summing to `total` (as cuda.rs)."""
    weights = [(i + 1) * (i + 1) for i in range(256)]
    wsum = sum(weights)
    lens = [w * total // wsum for w in weights]
    lens[-1] += total - sum(lens)
    return lens


def gather_scatter(b, scale, rows_full, row_len):
    torch = b.torch
    rows = rows_full // scale
    n = rows
    case = f"f32x{row_len}_rows{rows}_n{n}_i64"
    nbytes = n * row_len * 4 * 2 + n * 8
    src = torch.rand(rows, row_len, dtype=torch.float32, device=b.device)
    dst = torch.empty(n, row_len, dtype=torch.float32, device=b.device)
    if "gather_rows" in b.ops:
        idx = torch.randint(0, rows, (n,), dtype=torch.int64, device=b.device)
        us = b.time(lambda: torch.index_select(src, 0, idx, out=dst))
        b.emit("gather_rows", case, nbytes, us, memcpy=True)
        del idx
    if "scatter_rows" in b.ops:
        perm = torch.randperm(n, dtype=torch.int64, device=b.device)
        us = b.time(lambda: dst.index_copy_(0, perm, src))
        b.emit("scatter_rows", case, nbytes, us, memcpy=True)
        del perm
    del src, dst
    b.free()


def pad(b, scale):
    torch = b.torch
    rows = (1 << 22) // scale - 3
    padded = -(-rows // 64) * 64
    src = torch.rand(rows, 16, dtype=torch.float32, device=b.device)
    nbytes = (rows + padded) * 16 * 4
    fpad = torch.nn.functional.pad
    us = b.time(lambda: fpad(src, (0, 0, 0, padded - rows)))
    b.emit("pad", f"f32_{rows}x16_axis0_mult64", nbytes, us, memcpy=True)
    del src
    b.free()


def cumsum_into(torch, lengths, offs):
    """offs[1:] = cumsum(lengths) as int64, offs[0] = 0 set once; returns (fn, variant)."""
    offs[0] = 0
    tail = offs[1:]
    try:
        torch.cumsum(lengths, 0, dtype=torch.int64, out=tail)
        if tail.data_ptr() != offs.data_ptr() + offs.element_size():
            raise RuntimeError("cumsum(out=offs[1:]) reallocated its output")
        return (lambda: torch.cumsum(lengths, 0, dtype=torch.int64, out=tail)), "cumsum_out_view"
    except RuntimeError:
        return (lambda: tail.copy_(torch.cumsum(lengths, 0, dtype=torch.int64))), "cumsum_then_copy"


def offsets(b, scale):
    torch = b.torch
    n = (1 << 26) // scale
    lengths = torch.randint(0, 16, (n,), dtype=torch.int32, device=b.device)
    offs = torch.empty(n + 1, dtype=torch.int64, device=b.device)
    fn, variant = cumsum_into(torch, lengths, offs)
    us = b.time(fn)
    b.emit("offsets", f"i32_n{n}", 4 * n + 8 * (n + 1), us, memcpy=True, variant=variant)
    del lengths, offs
    b.free()


def flatten_split(b, scale):
    torch = b.torch
    if "flatten" in b.ops:
        lens = [1 + (k * 7919) % 512 for k in range(1024)]  # same formula as benches/cuda.rs
        parts = [torch.randint(0, 1 << 20, (n,), dtype=torch.int32, device=b.device) for n in lens]
        total = sum(lens)
        dst = torch.empty(total, dtype=torch.int32, device=b.device)
        us = b.time(lambda: torch.cat(parts, out=dst))
        b.emit("flatten", "i32_1024segs_small", 2 * total * 4, us, memcpy=True, elements=total)
        del parts, dst
        b.free()

    total = (1 << 26) // scale
    case = f"f32_256segs_skewed_{total * 4 // MIB}MiB"
    lens = skewed_lengths(total)
    nbytes = 2 * total * 4
    if "flatten" in b.ops:
        parts = [torch.rand(n, dtype=torch.float32, device=b.device) for n in lens]
        dst = torch.empty(total, dtype=torch.float32, device=b.device)
        us = b.time(lambda: torch.cat(parts, out=dst))
        b.emit("flatten", case, nbytes, us, memcpy=True)
        del parts, dst
        b.free()
    if "split_copy" in b.ops:
        flat = torch.rand(total, dtype=torch.float32, device=b.device)
        outs = [torch.empty(n, dtype=torch.float32, device=b.device) for n in lens]
        fn, variant = None, "copy_loop"
        if hasattr(torch, "split_with_sizes_copy"):
            try:
                torch.split_with_sizes_copy(flat, lens, dim=0, out=outs)
                fn = lambda: torch.split_with_sizes_copy(flat, lens, dim=0, out=outs)  # noqa: E731
                variant = "split_with_sizes_copy"
            except (RuntimeError, TypeError) as e:
                print(f"torch_baseline: split_with_sizes_copy unusable ({e}); timing a copy_ loop",
                      file=sys.stderr)
        if fn is None:
            def fn():
                for o, part in zip(outs, torch.split(flat, lens)):
                    o.copy_(part)
        us = b.time(fn)
        b.emit("split_copy", case, nbytes, us, memcpy=True, variant=variant)
        del flat, outs
        b.free()


def upload(b, _scale):
    torch = b.torch
    nbytes = 64 * MIB
    host = torch.rand(nbytes // 4, dtype=torch.float32)
    dst = torch.empty(nbytes // 4, dtype=torch.float32, device=b.device)
    for case, src in (("pinned_64MiB", host.pin_memory() if b.cuda else host),
                      ("pageable_64MiB", host)):
        us = b.time(lambda: dst.copy_(src, non_blocking=True))
        b.emit("upload", case, nbytes, us, pinned=bool(src.is_pinned()) if b.cuda else False)
    del host, dst
    b.free()


# The batch sizes of benches/cuda.rs's latency cases (its one-launch limit is 4,096).
LATENCY_N = (1, 16, 256, 1024, 4096, 4097, 16384)


def launch_latency(b, _scale):
    torch = b.torch
    rows = 16384
    table = torch.rand(rows, 16, dtype=torch.float32, device=b.device)
    cache = torch.empty(rows, 16, dtype=torch.float32, device=b.device)
    kv_rows = 1 << 20
    kv = torch.empty(kv_rows, 16, dtype=torch.float32, device=b.device)
    for n in LATENCY_N:
        idx = (torch.arange(n, dtype=torch.int64, device=b.device) * 7919) % rows
        out = torch.empty(n, 16, dtype=torch.float32, device=b.device)
        us = b.time_per_call(lambda: torch.index_select(table, 0, idx, out=out))
        b.emit("launch_latency", f"gather_f32x16_n{n}", 0, us)
        src = torch.rand(n, 16, dtype=torch.float32, device=b.device)
        us = b.time_per_call(lambda: cache.index_copy_(0, idx, src))
        b.emit("launch_latency", f"scatter_f32x16_n{n}", 0, us)
        kv_idx = (torch.arange(n, dtype=torch.int64, device=b.device) * 104729) % kv_rows
        us = b.time_per_call(lambda: kv.index_copy_(0, kv_idx, src))
        b.emit("launch_latency", f"scatter_kv1M_f32x16_n{n}", 0, us)
        lengths = torch.full((n,), 3, dtype=torch.int32, device=b.device)
        offs = torch.empty(n + 1, dtype=torch.int64, device=b.device)
        fn, variant = cumsum_into(torch, lengths, offs)
        us = b.time_per_call(fn)
        b.emit("launch_latency", f"cumsum_i32_n{n}", 0, us, variant=variant)
    tiny = torch.zeros(5, dtype=torch.uint8, device=b.device)
    fpad = torch.nn.functional.pad
    us = b.time_per_call(lambda: fpad(tiny, (0, 3)))
    b.emit("launch_latency", "pad_u8_n8", 0, us)
    del table, cache, kv
    b.free()


ALL_OPS = ["gather_rows", "scatter_rows", "pad", "offsets", "flatten", "split_copy", "upload",
           "launch_latency"]


def main(argv=None):
    args = parse_args(argv)
    ops = [o.strip() for o in args.only.split(",") if o.strip()] or ALL_OPS
    unknown = [o for o in ops if o not in ALL_OPS]
    if unknown:
        print(f"torch_baseline: unknown op(s) {unknown}; known: {ALL_OPS}", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError as e:
        print(f"torch_baseline: cannot import torch ({e}); the baseline needs PyTorch", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"torch_baseline: --device {args.device} but CUDA is not available to torch "
              f"{torch.__version__} (torch.version.cuda={torch.version.cuda}); no GPU baseline",
              file=sys.stderr)
        return 2
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    torch.manual_seed(0)
    scale = 2 if args.quick else 1
    json_file = open(args.json, "w", encoding="utf-8") if args.json else None
    b = Bench(torch, args.device, json_file)
    b.ops = set(ops)
    print(f"torch_baseline: torch {torch.__version__} on {b.device_name}"
          f"{' (quick)' if args.quick else ''}", file=sys.stderr)
    steps = [
        ("gather/scatter 64 B rows", {"gather_rows", "scatter_rows"},
         lambda: gather_scatter(b, scale, 1 << 22, 16)),
        ("gather/scatter 256 B rows", {"gather_rows", "scatter_rows"},
         lambda: gather_scatter(b, scale, 1 << 20, 64)),
        ("pad", {"pad"}, lambda: pad(b, scale)),
        ("offsets", {"offsets"}, lambda: offsets(b, scale)),
        ("flatten/split", {"flatten", "split_copy"}, lambda: flatten_split(b, scale)),
        ("upload", {"upload"}, lambda: upload(b, scale)),
        ("launch_latency", {"launch_latency"}, lambda: launch_latency(b, scale)),
    ]
    t0 = time.perf_counter()
    try:
        for name, needs, step in steps:
            if not (needs & b.ops):
                continue
            try:
                step()
            except Exception as e:  # noqa: BLE001 - report, free, go on with the next case
                b.failures.append(name)
                print(f"torch_baseline: {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
                try:
                    b.free()
                except Exception:  # noqa: BLE001
                    pass
    finally:
        if json_file:
            json_file.close()
    print(f"torch_baseline: {b.lines} results in {time.perf_counter() - t0:.1f} s"
          f"{'; FAILED: ' + ', '.join(b.failures) if b.failures else ''}", file=sys.stderr)
    return 1 if b.failures else 0


if __name__ == "__main__":
    sys.exit(main())
