#!/usr/bin/env bash
# Builds the GPU suite bundle: the crate's test executables and the CUDA bench, built with
# `--features cuda` on a machine WITH the Rust toolchain and WITHOUT a GPU, plus the PyTorch
# baseline, the summary script and the runner, in one small tarball to copy to a GPU machine
# (which has the driver, compute-sanitizer and PyTorch, but no Rust toolchain and no network).
#
#   scripts/build-gpu-suite.sh
#     -> target/gpu-suite/            the bundle (tests/<target>, bin/cuda-bench, run.sh, ...)
#     -> target/gpu-suite.tar.gz      the same, packed (at most 60 MiB; carry this one when the
#                                     folder is larger than that)
#
# On the GPU machine: copy the folder (or the tarball, then `tar -xzf gpu-suite.tar.gz`) and run
#   bash gpu-suite/run.sh [OUT_DIR]
#
# Environment: CARGO_TARGET_DIR (default target/gpu-suite-build, so the usual target/ is not
# rebuilt with other features); everything scripts/install-cuda-toolchain.sh reads.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

MAX_BYTES=$((60 * 1024 * 1024))
bundle=target/gpu-suite
tarball=target/gpu-suite.tar.gz

log() { echo "build-gpu-suite: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v cargo >/dev/null || die "cargo not found: this script needs the Rust toolchain (the GPU machine has none; build here, run there)"
command -v python3 >/dev/null || die "python3 not found (needed to read cargo's JSON messages)"

# The toolchain's exports. (Not `eval "$(...)"` directly: eval of an empty string succeeds, which
# would hide a failed install under set -e; an assignment keeps the substitution's status.)
toolchain_env=$(scripts/install-cuda-toolchain.sh) || die "scripts/install-cuda-toolchain.sh failed"
eval "$toolchain_env"
# CPUGPU_STUB_LIBCUDA is for running on machines without a driver; nothing here runs CUDA code,
# and it must never end up on LD_LIBRARY_PATH of the bundle (run.sh does not set it either).

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/gpu-suite-build}
mkdir -p "$CARGO_TARGET_DIR"
tests_json="$CARGO_TARGET_DIR/gpu-suite-tests.jsonl"
bench_json="$CARGO_TARGET_DIR/gpu-suite-bench.jsonl"

# Reads cargo's --message-format=json lines (argv[2]) and prints "NAME<TAB>PATH" per executable.
#   tests: every compiler-artifact with profile.test and an executable, except benches/examples
#          (the lib's unit tests are named after the lib, `cpugpu`; tests/*.rs after their file)
#   bench: the executable of the bench target named argv[3]
pick_executables() {
  python3 - "$@" <<'PY'
import json, sys
mode, path = sys.argv[1], sys.argv[2]
want = sys.argv[3] if len(sys.argv) > 3 else None
seen = {}
with open(path, encoding="utf-8") as f:
    for line in f:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        target = msg.get("target") or {}
        kinds = target.get("kind") or []
        name = target.get("name") or ""
        if mode == "tests":
            if not (msg.get("profile") or {}).get("test"):
                continue
            if "bench" in kinds or "example" in kinds:
                continue
            if "bin" in kinds:
                name = "bin-" + name  # a bin's unit tests; never clash with the lib's name
        else:
            if "bench" not in kinds or name != want:
                continue
        if not name or "/" in name:
            sys.exit(f"unexpected target name {name!r} in {path}")
        if name in seen and seen[name] != msg["executable"]:
            sys.exit(f"two executables named {name!r}: {seen[name]} and {msg['executable']}")
        seen[name] = msg["executable"]
for name, exe in sorted(seen.items()):
    print(f"{name}\t{exe}")
PY
}

# With --message-format=json, compiler errors reach only the JSON on stdout: show them on failure.
show_errors() {
  python3 - "$1" <<'PY' >&2 || true
import json, sys
shown = 0
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    m = msg.get("message") or {}
    if msg.get("reason") == "compiler-message" and m.get("level") in ("error", "error: internal compiler error"):
        print(m.get("rendered") or m.get("message"))
        shown += 1
        if shown >= 20:
            break
PY
}

log "building test executables (release, --features cuda) into $CARGO_TARGET_DIR"
cargo test --release --locked --features cuda --no-run --message-format=json >"$tests_json" \
  || { show_errors "$tests_json"; die "cargo test --no-run failed (messages in $tests_json)"; }
tests_list=$(pick_executables tests "$tests_json") || die "could not read $tests_json"
[ -n "$tests_list" ] || die "no test executables found in $tests_json"
grep -q $'^cuda\t' <<<"$tests_list" || die "no test executable for tests/cuda.rs in $tests_json (run.sh's sanitizer steps need tests/cuda)"

log "building the CUDA bench (bench profile, --features cuda)"
cargo bench --locked --features cuda --no-run --bench cuda --message-format=json >"$bench_json" \
  || { show_errors "$bench_json"; die "cargo bench --no-run failed (messages in $bench_json)"; }
bench_list=$(pick_executables bench "$bench_json" cuda) || die "could not read $bench_json"
[ "$(grep -c . <<<"$bench_list")" = 1 ] || die "expected one executable for bench 'cuda' in $bench_json, found: ${bench_list:-none}"

log "assembling $bundle"
rm -rf "$bundle" "$tarball"
mkdir -p "$bundle/tests" "$bundle/bin"
kept=0
while IFS=$'\t' read -r name exe; do
  [ -x "$exe" ] || die "$exe (test $name) is missing or not executable"
  # Test files for the emulated GPU only (#![cfg(feature = "emulator")]) hold no test in a cuda
  # build. Listing runs no test and needs no GPU, only a libcuda to load: the link-time stub,
  # for this command alone. An executable that cannot be listed is kept.
  if listing=$(LD_LIBRARY_PATH="${CPUGPU_STUB_LIBCUDA:-}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      "$exe" --list 2>/dev/null) && ! grep ': test$' <<<"$listing" >/dev/null; then
    log "leaving out tests/$name: no test in a cuda build"
    continue
  fi
  cp "$exe" "$bundle/tests/$name"
  kept=$((kept + 1))
done <<<"$tests_list"
bench_exe=$(cut -f2 <<<"$bench_list")
[ -x "$bench_exe" ] || die "$bench_exe (bench cuda) is missing or not executable"
cp "$bench_exe" "$bundle/bin/cuda-bench"
cp benches/torch_baseline.py benches/gpu_summary.py "$bundle/"
cp scripts/gpu-suite-run.sh "$bundle/run.sh"
chmod +x "$bundle/run.sh" "$bundle/bin/cuda-bench" "$bundle"/tests/*

rev=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null || true)" ]; then
  rev="$rev (with uncommitted changes)"
fi
{
  echo "cpugpu GPU suite"
  echo "commit: $rev"
  echo "built: $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
  echo "rustc: $(rustc -V)"
  echo "nvcc: $("$NVCC" --version | tail -n 1)"
  echo "features: cuda; tests: release profile; bench: bench profile"
  echo "files (bytes, path):"
  (cd "$bundle" && find . -type f ! -name MANIFEST -printf '%s\t%P\n' | sort -t$'\t' -k2)
} >"$bundle/MANIFEST"

tar -czf "$tarball" -C target gpu-suite
size=$(stat -c %s "$tarball")
unpacked=$(du -sb "$bundle" | cut -f1)
log "bundle: $bundle ($((unpacked / 1024 / 1024)) MiB unpacked), $tarball: $size bytes ($((size / 1024 / 1024)) MiB)"
if [ "$size" -gt "$MAX_BYTES" ]; then
  die "$tarball is $size bytes, over the 60 MiB limit ($MAX_BYTES bytes)"
fi
# A device machine takes at most 64 MiB of carried files: the folder may travel unpacked only
# when it is small enough, the tarball always.
if [ "$unpacked" -gt "$MAX_BYTES" ]; then
  log "note: $bundle is $unpacked bytes unpacked, over 60 MiB: carry the tarball, not the folder"
fi

cat <<EOF

GPU suite built: $repo/$bundle ($kept test executables + bin/cuda-bench)
                 $repo/$tarball ($size bytes)
On the GPU machine (driver 580 / CUDA 13.0, compute-sanitizer, python3 + PyTorch; no Rust needed):
  copy the folder gpu-suite/ there (or the tarball, then: tar -xzf gpu-suite.tar.gz), then
  bash gpu-suite/run.sh [OUT_DIR]      # OUT_DIR defaults to \$OUT if set, else ./gpu-suite-out
  bash gpu-suite/run.sh --plan         # the timing plan (8-minute deadline by default)
It writes per-step logs, cpugpu.jsonl, torch.jsonl, SUMMARY.md and steps.txt into OUT_DIR as
each step ends, and exits non-zero if any step failed.
EOF
