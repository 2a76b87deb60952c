#!/usr/bin/env python3
"""Markdown report of one GPU suite run: cpugpu's CUDA bench against PyTorch on the same GPU.

    python3 benches/gpu_summary.py [CPUGPU_JSONL [TORCH_JSONL]] > SUMMARY.md

Inputs: the JSON lines of benches/cuda.rs (suite "cpugpu"; bandwidth lines carry memcpy_gbps and
pct_memcpy measured in the same run) and of benches/torch_baseline.py (suite "torch", plus
op "memcpy" lines). Both have op, case, bytes, median_us, gbps, device. Lines are joined on
(op, case); torch's latency case cumsum_i32_n{n} is cpugpu's offsets_i32_n{n}.

Targets: pad, flatten of the skewed 256 MiB case, split_copy, gather_rows and scatter_rows with
rows of at least 64 bytes reach >= 85% of memcpy; offsets >= 75% of memcpy; every op takes no
longer than torch's (>= 1.0x); flatten of 1,024 small i32 segments is >= 3x faster than torch.
A missing file, line or key never stops the report: it says what is missing. Exit status 0.
"""

import json
import math
import os
import re
import sys

BANDWIDTH_OPS = ["gather_rows", "scatter_rows", "pad", "offsets", "flatten", "split_copy"]
# The input-preparation rows of benches/prep/cuda_prep.rs: latency only, no torch counterpart.
PREP_OPS = ["prepare_step", "expand_segments", "slot_mapping", "gather_windows", "staged_write"]
# The full-size cases of benches/cuda.rs, listed as "not run" when a run has no line for them.
EXPECTED = {
    "gather_rows": ["f32x16_rows4194304_n4194304_i64", "f32x64_rows1048576_n1048576_i64"],
    "scatter_rows": ["f32x16_rows4194304_n4194304_i64", "f32x64_rows1048576_n1048576_i64"],
    "pad": ["f32_4194301x16_axis0_mult64"],
    "offsets": ["i32_n67108864"],
    "flatten": ["i32_1024segs_small", "f32_256segs_skewed_256MiB"],
    "split_copy": ["f32_256segs_skewed_256MiB"],
}
LATENCY_N = [1, 16, 256, 1024, 4096, 4097, 16384]
LATENCY_NAMES = ("gather_f32x16", "scatter_f32x16", "scatter_kv1M_f32x16", "offsets_i32")
UPLOAD_CASES = ["pinned_64MiB", "pageable_64MiB"]


def num(rec, key):
    """rec[key] as a finite float, or None."""
    if not isinstance(rec, dict):
        return None
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def load(path, suite, problems):
    """The JSON objects of one JSONL file (problems appended to `problems`)."""
    recs = []
    if not path:
        problems.append(f"{suite}: no file given")
        return recs
    if not os.path.exists(path):
        problems.append(f"{suite}: {path} does not exist (step not run or failed early)")
        return recs
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError as e:
        problems.append(f"{suite}: cannot read {path}: {e}")
        return recs
    bad = 0
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            if bad <= 3:
                problems.append(f"{suite}: {path}:{n} is not JSON: {line[:80]!r}")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{suite}: {path}:{n} is not a JSON object")
            continue
        missing = [k for k in ("op", "case", "median_us") if k not in rec]
        if missing:
            problems.append(f"{suite}: {path}:{n} lacks {', '.join(missing)}: {line[:80]!r}")
            if "op" not in rec or "case" not in rec:
                continue
        recs.append(rec)
    if bad > 3:
        problems.append(f"{suite}: {path}: {bad} lines in all are not JSON")
    if not recs:
        problems.append(f"{suite}: {path} has no usable lines")
    return recs


def torch_key(rec):
    op, case = str(rec.get("op")), str(rec.get("case"))
    if op == "launch_latency" and case.startswith("cumsum_"):
        case = "offsets_" + case[len("cumsum_"):]
    return op, case


def gbps(rec):
    g = num(rec, "gbps")
    if g is not None:
        return g
    b, us = num(rec, "bytes"), num(rec, "median_us")
    return b / us / 1e3 if b is not None and us else None


def fmt(v, digits=1, suffix=""):
    return "-" if v is None else f"{v:.{digits}f}{suffix}"


def speedup(cp, tp):
    """torch time / cpugpu time (> 1: cpugpu faster), or None."""
    c, t = num(cp, "median_us"), num(tp, "median_us")
    return t / c if c and t else None


def targets(op, case):
    """[(kind, threshold, text)]: kind 'pct' (% of memcpy) or 'speedup' (torch us / cpugpu us)."""
    out = []
    if op in ("gather_rows", "scatter_rows"):
        m = re.match(r"^[a-z]+?(\d+)?x(\d+)_", case)
        elem_bits = int(m.group(1)) if m and m.group(1) else 32
        row_bytes = int(m.group(2)) * elem_bits // 8 if m else None
        if row_bytes is None or row_bytes >= 64:
            out.append(("pct", 85.0, ">= 85% memcpy"))
    elif op in ("pad", "split_copy"):
        out.append(("pct", 85.0, ">= 85% memcpy"))
    elif op == "flatten" and "skewed" in case:
        out.append(("pct", 85.0, ">= 85% memcpy"))
    elif op == "offsets":
        out.append(("pct", 75.0, ">= 75% memcpy"))
    if op == "flatten" and "small" in case:
        out.append(("speedup", 3.0, ">= 3x torch"))
    else:
        out.append(("speedup", 1.0, ">= 1.0x torch"))
    return out


def verdict(checks):
    """checks: [(ok: bool|None, text, missing_side)] -> the 'met' cell, and a tally key."""
    fails = [t for ok, t, _ in checks if ok is False]
    missing = sorted({m for ok, _, m in checks if ok is None})
    if fails:
        return "**NO**: " + "; ".join(fails), "no"
    if missing:
        return "not run (" + ", ".join(missing) + ")", "not run"
    return "yes", "yes"


def main(argv):
    cp_path = argv[1] if len(argv) > 1 else "cpugpu.jsonl"
    tp_path = argv[2] if len(argv) > 2 else "torch.jsonl"
    problems = []
    cp_recs = load(cp_path, "cpugpu", problems)
    tp_recs = load(tp_path, "torch", problems)

    cp, tp, tmem = {}, {}, {}
    order = []
    for r in cp_recs:
        if r.get("suite", "cpugpu") != "cpugpu":
            problems.append(f"cpugpu: line with suite {r.get('suite')!r} ({r.get('op')}/{r.get('case')})")
        key = (str(r.get("op")), str(r.get("case")))
        if key in cp:
            problems.append(f"cpugpu: {key[0]}/{key[1]} appears twice; the last line is used")
        cp[key] = r
        order.append(key)
    for r in tp_recs:
        if r.get("op") == "memcpy":
            tmem[str(r.get("case"))] = r
            continue
        key = torch_key(r)
        if key in tp:
            problems.append(f"torch: {key[0]}/{key[1]} appears twice; the last line is used")
        tp[key] = r
        order.append(key)

    out = []
    w = out.append
    w("# cpugpu GPU suite: cpugpu vs PyTorch")
    w("")
    devs = {}
    for name, recs in (("cpugpu", cp_recs), ("torch", tp_recs)):
        names = sorted({str(r.get("device")) for r in recs if r.get("device")})
        devs[name] = ", ".join(names) if names else "-"
    if devs["cpugpu"] == devs["torch"]:
        w(f"Device: **{devs['cpugpu']}**")
    else:
        w(f"Device: cpugpu run on **{devs['cpugpu']}**, torch run on **{devs['torch']}**")
    tv = sorted({str(r.get("torch")) for r in tp_recs if r.get("torch")})
    w("")
    w(f"Inputs: `{cp_path}` ({len(cp_recs)} lines), `{tp_path}` ({len(tp_recs)} lines)"
      + (f"; torch {', '.join(tv)}" if tv else ""))
    w("")

    # --- bandwidth table ------------------------------------------------------------------
    rows = []
    for op in BANDWIDTH_OPS:
        seen = [k for k in dict.fromkeys(order) if k[0] == op]
        # Full-size cases nobody reported are listed as not run, unless this was a --quick run
        # (its case names carry the halved sizes).
        if all(c in EXPECTED[op] for _, c in seen):
            seen += [(op, c) for c in EXPECTED[op] if (op, c) not in seen]
        rows.extend(seen)
    tally = {"yes": 0, "no": 0, "not run": 0}
    w("## Bandwidth (GB/s of bytes read + written; memcpy: a D2D copy of the same bytes in the same run)")
    w("")
    w("| op | case | cpugpu GB/s | memcpy GB/s | % of memcpy | torch GB/s | cpugpu/torch | target | met |")
    w("|---|---|---:|---:|---:|---:|---:|---|---|")
    notes = []
    for op, case in rows:
        c, t = cp.get((op, case)), tp.get((op, case))
        cg, tg = gbps(c), gbps(t)
        mg = num(c, "memcpy_gbps")
        mem_src = ""
        if mg is None and case in tmem:
            mg = gbps(tmem[case])
            mem_src = " (torch's)"
        pct = num(c, "pct_memcpy")
        if pct is None and cg is not None and mg:
            pct = 100.0 * cg / mg
        sp = speedup(c, t)
        checks = []
        for kind, thr, text in targets(op, case):
            if kind == "pct":
                ok = None if pct is None else pct >= thr
                checks.append((ok, f"{fmt(pct)}% < {thr:.0f}%", "cpugpu" if c is None else "memcpy"))
            else:
                ok = None if sp is None else sp >= thr
                checks.append((ok, f"{fmt(sp, 2)}x < {thr:g}x torch",
                               "cpugpu" if c is None else "torch"))
        met, key = verdict(checks) if c is not None else ("not run", "not run")
        tally[key] += 1
        w(f"| {op} | {case} | {fmt(cg)} | {fmt(mg)}{mem_src} | {fmt(pct, 1, '%')} | {fmt(tg)} | "
          f"{fmt(sp, 2, 'x')} | {', '.join(x[2] for x in targets(op, case))} | {met} |")
        if c is not None and t is not None:
            cb, tb = num(c, "bytes"), num(t, "bytes")
            if cb is not None and tb is not None and cb != tb:
                notes.append(f"{op}/{case}: bytes differ (cpugpu {cb:.0f}, torch {tb:.0f}); "
                             "cpugpu/torch compares times")
        if t is not None and t.get("variant"):
            notes.append(f"{op}/{case}: torch variant `{t['variant']}`")
    w("")
    w("cpugpu/torch = torch median time / cpugpu median time (> 1: cpugpu is faster).")
    for n in notes:
        w(f"- {n}")
    w("")

    # --- latency table ----------------------------------------------------------------------
    w("## Per-call latency (200 back-to-back calls between one event pair, per call)")
    w("")
    w("| op | n | launches | cpugpu us | torch us | cpugpu/torch | met (>= 1.0x) |")
    w("|---|---:|---:|---:|---:|---:|---|")
    lat = {}
    for src, table in (("cpugpu", cp), ("torch", tp)):
        for (op, case), r in table.items():
            if op != "launch_latency":
                continue
            m = re.match(r"^(.*)_n(\d+)$", case)
            if not m:
                problems.append(f"{src}: launch_latency case {case!r} does not end in _n<N>")
                continue
            lat.setdefault((m.group(1), int(m.group(2))), {})[src] = r
    lat_keys = set(lat) | {(name, n) for name in LATENCY_NAMES for n in LATENCY_N}
    for name, n in sorted(lat_keys, key=lambda k: (k[0] != "gather_f32x16", k[0], k[1])):
        d = lat.get((name, n), {})
        c, t = d.get("cpugpu"), d.get("torch")
        sp = speedup(c, t)
        if c is None:
            met, key = "not run", "not run"
        else:
            met, key = verdict([(None if sp is None else sp >= 1.0, f"{fmt(sp, 2)}x", "torch")])
        tally[key] += 1
        label = name + (" (torch: cumsum)" if name.startswith("offsets") else "")
        launches = num(c, "launches")
        w(f"| {label} | {n} | {'-' if launches is None else int(launches)} | "
          f"{fmt(num(c, 'median_us'), 2)} | {fmt(num(t, 'median_us'), 2)} | "
          f"{fmt(sp, 2, 'x')} | {met} |")
    w("")

    # What a launch costs: the floor (a pad of 8 bytes, one launch), and what the second launch
    # of a checked operation past 4,096 indices adds (n = 4,097 against n = 4,096).
    floor = num(lat.get(("pad_u8", 8), {}).get("cpugpu"), "median_us")
    if floor is not None:
        w(f"One launch moving 8 bytes (pad_u8, n = 8): {fmt(floor, 2)} us per call.")
    for name in LATENCY_NAMES:
        one = num(lat.get((name, 4096), {}).get("cpugpu"), "median_us")
        two = num(lat.get((name, 4097), {}).get("cpugpu"), "median_us")
        if one is not None and two is not None:
            w(f"- {name}: n = 4,097 (two launches) costs {fmt(two - one, 2)} us more per call than "
              f"n = 4,096 (one launch).")
    w("")

    # --- uploads ------------------------------------------------------------------------------
    w("## Uploads (host to device, 64 MiB)")
    w("")
    w("| case | cpugpu GB/s | cpugpu us | torch GB/s | torch us | cpugpu/torch | met (>= 1.0x) |")
    w("|---|---:|---:|---:|---:|---:|---|")
    up_cases = list(dict.fromkeys(UPLOAD_CASES + [k[1] for k in order if k[0] == "upload"]))
    for case in up_cases:
        c, t = cp.get(("upload", case)), tp.get(("upload", case))
        sp = speedup(c, t)
        if c is None:
            met, key = "not run", "not run"
        else:
            met, key = verdict([(None if sp is None else sp >= 1.0, f"{fmt(sp, 2)}x", "torch")])
        tally[key] += 1
        w(f"| {case} | {fmt(gbps(c))} | {fmt(num(c, 'median_us'))} | {fmt(gbps(t))} | "
          f"{fmt(num(t, 'median_us'))} | {fmt(sp, 2, 'x')} | {met} |")
    w("")

    # --- input preparation (issue 10): per-call latency, no torch counterpart ----------------
    w("## Input preparation (per call, 200 back-to-back calls between one event pair)")
    w("")
    w("| op | case | cpugpu us |")
    w("|---|---|---:|")
    prep = [k for k in dict.fromkeys(order) if k[0] in PREP_OPS]
    for op in PREP_OPS:
        cases = [k for k in prep if k[0] == op]
        if not cases:
            w(f"| {op} | - | not run |")
        for key in cases:
            w(f"| {op} | {key[1]} | {fmt(num(cp.get(key), 'median_us'), 2)} |")
    w("")

    # --- leftovers and problems ----------------------------------------------------------------
    known_ops = set(BANDWIDTH_OPS) | set(PREP_OPS) | {"launch_latency", "upload"}
    for src, table in (("cpugpu", cp), ("torch", tp)):
        other = sorted(f"{op}/{case}" for op, case in table if op not in known_ops)
        if other:
            problems.append(f"{src}: lines of unknown ops not in the tables: {', '.join(other)}")
    for key in sorted(set(tp) - set(cp)):
        if cp_recs and key[0] in known_ops:
            problems.append(f"torch has {key[0]}/{key[1]} but cpugpu has no line with that op and case")
    for key in sorted(set(cp) - set(tp)):
        if tp_recs and key[0] in known_ops:
            problems.append(f"cpugpu has {key[0]}/{key[1]} but torch has no line with that op and case")
    for (op, case), r in cp.items():
        if op in BANDWIDTH_OPS:
            absent = [k for k in ("bytes", "median_us", "gbps", "memcpy_gbps", "pct_memcpy") if k not in r]
            if absent:
                problems.append(f"cpugpu: {op}/{case} lacks {', '.join(absent)}")

    w(f"Targets: {tally['yes']} met, {tally['no']} not met, {tally['not run']} not run.")
    w("")
    if problems:
        w("## Missing or inconsistent input")
        w("")
        for p in problems:
            w(f"- {p}")
        w("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:
        sys.exit(0)
