#!/usr/bin/env bash
# Runs the cpugpu GPU suite ON a GPU machine, from inside the bundle that
# scripts/build-gpu-suite.sh made (it is copied there as run.sh; no Rust toolchain needed):
#
#   bash gpu-suite/run.sh [OUT_DIR]        # OUT_DIR: default $OUT if set, else ./gpu-suite-out
#
# Steps (each logged with its wall time; stdout+stderr of each in OUT_DIR/<step>.log; a failing
# step does not stop the later ones):
#   device                 nvidia-smi, compute-sanitizer and torch versions -> device.txt
#   test-<name>            every executable in tests/, --test-threads=4
#   sanitizer-<tool>       compute-sanitizer memcheck (leak check), racecheck, synccheck and
#                          initcheck on tests/cuda, --test-threads=1, without the 256 MiB
#                          `large_inputs_match_host` (it runs unsanitized in test-cuda)
#   bench                  bin/cuda-bench --json OUT_DIR/cpugpu.jsonl
#   torch                  python3 torch_baseline.py --json OUT_DIR/torch.jsonl
#   summary                python3 gpu_summary.py ... > OUT_DIR/SUMMARY.md (also printed)
# Then the table step -> rc -> seconds (also OUT_DIR/steps.txt). Exit status 1 if any step failed.
#
# CPUGPU_REQUIRE_GPU=1 is exported, so a missing or unusable device fails the tests and the bench
# instead of skipping. LD_LIBRARY_PATH is deliberately left alone: the machine's own driver
# (libcuda) must be used, never the link-time stub of the build machine.
# Timeouts (seconds) can be changed with GPU_SUITE_TEST_TIMEOUT (300 per test executable),
# GPU_SUITE_SANITIZER_TIMEOUT (420 per tool), GPU_SUITE_BENCH_TIMEOUT (300),
# GPU_SUITE_TORCH_TIMEOUT (300).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${OUT:-./gpu-suite-out}}
mkdir -p "$out" || { echo "gpu-suite: cannot create output folder $out" >&2; exit 1; }
out=$(cd "$out" && pwd)
cd "$here" || exit 1

T_TEST=${GPU_SUITE_TEST_TIMEOUT:-300}
T_SAN=${GPU_SUITE_SANITIZER_TIMEOUT:-420}
T_BENCH=${GPU_SUITE_BENCH_TIMEOUT:-300}
T_TORCH=${GPU_SUITE_TORCH_TIMEOUT:-300}

export CPUGPU_REQUIRE_GPU=1

names=() rcs=() secs=() notes=()
suite_start=$(date +%s.%N)

stamp() { date -u +%H:%M:%S; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
record() { names+=("$1"); rcs+=("$2"); secs+=("$3"); notes+=("${4:-}"); }

# run_step NAME LIMIT CMD...: runs CMD under `timeout LIMIT` (no timeout when LIMIT is 0, which
# also allows a shell function) with stdout+stderr in $out/NAME.log, or stdout in $STEP_STDOUT
# when that is set. Records rc and seconds; prints the log's tail when the step failed.
run_step() {
  local name=$1 limit=$2 rc note="" t0 s log="$out/$1.log"
  shift 2
  echo "[$(stamp)] >>> $name: $*"
  printf '$ %s\n\n' "$*" >"$log"
  t0=$(now)
  if [ "$limit" = 0 ]; then
    if [ -n "${STEP_STDOUT:-}" ]; then "$@" >"$STEP_STDOUT" 2>>"$log" </dev/null; else "$@" >>"$log" 2>&1 </dev/null; fi
  else
    if [ -n "${STEP_STDOUT:-}" ]; then
      timeout --kill-after=30 "$limit" "$@" >"$STEP_STDOUT" 2>>"$log" </dev/null
    else
      timeout --kill-after=30 "$limit" "$@" >>"$log" 2>&1 </dev/null
    fi
  fi
  rc=$?
  s=$(since "$t0")
  case $rc in
    124 | 137) [ "$limit" != 0 ] && note="timed out after ${limit}s" ;;
    126 | 127) note="could not run $1" ;;
  esac
  [ -n "$note" ] && echo "$note" >>"$log"
  record "$name" "$rc" "$s" "$note"
  # The lines worth seeing without opening the log: libtest's verdict, the sanitizer's count.
  grep -E '^test result:|ERROR SUMMARY|^cuda bench: .*results' "$log" | tail -n 3 | sed 's/^/    /'
  if [ "$rc" != 0 ]; then
    echo "    --- last lines of $log ---"
    tail -n 25 "$log" | sed 's/^/    | /'
  fi
  echo "[$(stamp)] <<< $name: rc=$rc, ${s}s${note:+ ($note)}"
}

skip_step() { # NAME RC NOTE: a step that could not start
  echo "[$(stamp)] --- $1: $3"
  echo "$3" >"$out/$1.log"
  record "$1" "$2" 0.0 "$3"
}

find_sanitizer() {
  local c
  if c=$(command -v compute-sanitizer); then
    echo "$c"
    return 0
  fi
  for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda*/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer; do
    if [ -f "$c" ] && [ -x "$c" ]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

sanitizer=$(find_sanitizer) || sanitizer=""

device_info() {
  echo "date: $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
  echo "host: $(uname -n) $(uname -srm)"
  echo "bundle: $here"
  echo "LD_LIBRARY_PATH: ${LD_LIBRARY_PATH:-(unset)}"
  echo
  if command -v nvidia-smi >/dev/null; then
    timeout 60 nvidia-smi -L || echo "(nvidia-smi -L failed: rc=$?)"
    timeout 60 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv \
      || echo "(nvidia-smi --query-gpu failed: rc=$?)"
  else
    echo "nvidia-smi: not found"
  fi
  echo
  if [ -n "$sanitizer" ]; then
    echo "compute-sanitizer: $sanitizer ($(timeout 60 "$sanitizer" --version 2>&1 | grep -i version | tail -n 1))"
  else
    echo "compute-sanitizer: not found"
  fi
  if command -v python3 >/dev/null; then
    echo "python3: $(python3 --version 2>&1)"
    timeout 120 python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")' 2>&1 | tail -n 1
  else
    echo "python3: not found"
  fi
  return 0 # an absent tool is reported, not a failure
}

echo "gpu-suite: bundle $here, output $out"
[ -f MANIFEST ] && { sed -n '1,6p' MANIFEST; cp MANIFEST "$out/MANIFEST"; }
case ":${LD_LIBRARY_PATH:-}:" in
  *libcuda-stub*) echo "gpu-suite: WARNING: LD_LIBRARY_PATH contains a libcuda stub ($LD_LIBRARY_PATH): the driver's libcuda must be used" ;;
esac

# a. device
STEP_STDOUT="$out/device.txt" run_step device 0 device_info
sed 's/^/    /' "$out/device.txt"

# b. tests
found_tests=0
for exe in tests/*; do
  if [ ! -f "$exe" ] || [ ! -x "$exe" ]; then continue; fi
  found_tests=1
  run_step "test-$(basename "$exe")" "$T_TEST" "./$exe" --test-threads=4
done
[ "$found_tests" = 1 ] || skip_step tests 1 "no test executables in $here/tests"

# c. compute-sanitizer on the CUDA tests
san_tools=(memcheck racecheck synccheck initcheck)
for tool in "${san_tools[@]}"; do
  case $tool in
    memcheck) extra=(--leak-check full) ;;
    racecheck) extra=(--racecheck-report all) ;;
    *) extra=() ;;
  esac
  if [ -z "$sanitizer" ]; then
    skip_step "sanitizer-$tool" 127 "compute-sanitizer not found (PATH, /usr/local/cuda*/bin, /usr/local/cuda/compute-sanitizer)"
  elif [ ! -x tests/cuda ]; then
    skip_step "sanitizer-$tool" 1 "tests/cuda missing from the bundle"
  else
    run_step "sanitizer-$tool" "$T_SAN" "$sanitizer" --tool "$tool" "${extra[@]}" --error-exitcode 99 \
      ./tests/cuda --test-threads=1 --skip large_inputs
  fi
done

# d. cpugpu benches (the executable writes the JSON lines itself)
rm -f "$out/cpugpu.jsonl" "$out/torch.jsonl"
if [ -x bin/cuda-bench ]; then
  run_step bench "$T_BENCH" ./bin/cuda-bench --json "$out/cpugpu.jsonl"
else
  skip_step bench 1 "bin/cuda-bench missing from the bundle"
fi

# e. PyTorch baseline
run_step torch "$T_TORCH" python3 torch_baseline.py --json "$out/torch.jsonl"

# f. summary
STEP_STDOUT="$out/SUMMARY.md" run_step summary 120 python3 gpu_summary.py "$out/cpugpu.jsonl" "$out/torch.jsonl"
echo
echo "================================ SUMMARY.md ================================"
cat "$out/SUMMARY.md" 2>/dev/null || echo "(no SUMMARY.md)"
echo "============================================================================"
echo

failed=0
{
  printf '%-28s %5s %9s  %s\n' step rc seconds note
  for i in "${!names[@]}"; do
    printf '%-28s %5s %9s  %s\n' "${names[$i]}" "${rcs[$i]}" "${secs[$i]}" "${notes[$i]}"
  done
  printf '%-28s %5s %9s\n' total "" "$(since "$suite_start")"
} >"$out/steps.txt"
for rc in "${rcs[@]}"; do
  [ "$rc" = 0 ] || failed=$((failed + 1))
done
cat "$out/steps.txt"
echo
if [ "$failed" -gt 0 ]; then
  echo "gpu-suite: $failed of ${#names[@]} steps FAILED; logs in $out"
  exit 1
fi
echo "gpu-suite: all ${#names[@]} steps passed; logs in $out"
