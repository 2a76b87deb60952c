#!/usr/bin/env bash
# Runs the cpugpu GPU suite ON a GPU machine, from inside the bundle that
# scripts/build-gpu-suite.sh made (it is copied there as run.sh; no Rust toolchain needed):
#
#   bash gpu-suite/run.sh [OUT_DIR]        # OUT_DIR: default $OUT if set, else ./gpu-suite-out
#   bash gpu-suite/run.sh --plan           # print the timing plan and exit
#
# One internal deadline (GPU_SUITE_DEADLINE seconds, default 480 = 8 minutes) bounds the whole
# run, so it fits a 15-minute lease (the machine's start and the transfers included) and a
# 10-minute command. The most valuable evidence comes first; every step gets the smaller of its
# own limit and the time left, and a step that would get less than GPU_SUITE_MIN_STEP seconds
# (default 20) is skipped, saying so. In order:
#   1 device           preflight: nvidia-smi (device name, driver version), compute-sanitizer
#                      and torch versions -> device.txt
#   2 test-cuda        tests/cuda unsanitized (--test-threads=4): every kernel against the host
#   3 bench            bin/cuda-bench --json cpugpu.jsonl (bandwidth, latency, uploads)
#   4 torch            python3 torch_baseline.py --json torch.jsonl
#   5 summary          python3 gpu_summary.py -> SUMMARY.md (also printed)
#   6 memcheck-short   compute-sanitizer memcheck on a short list of tests/cuda tests (every
#                      kernel family once)
#   7 racecheck, synccheck: only the tests of the kernels with shared memory or barriers
#                      (gather, scatter, offsets: block checks, block counters, the scans; pad
#                      and the batched copy have neither)
#   then, while time remains: test-<name> for the other test executables, memcheck on all of
#   tests/cuda (leak check), initcheck on the short list.
# Results are written as each step ends: OUT_DIR/<step>.log, steps.txt (the table so far,
# rewritten after every step), device.txt, cpugpu.jsonl, torch.jsonl and SUMMARY.md (made right
# after the torch step, and again at the end), so a run killed midway still leaves them.
# Exit status 1 if any step failed (a skipped step is not a failure).
#
# CPUGPU_REQUIRE_GPU=1 is exported, so a missing or unusable device fails the tests and the bench
# instead of skipping. LD_LIBRARY_PATH is deliberately left alone: the machine's own driver
# (libcuda) must be used, never the link-time stub of the build machine.
# Per-step limits (seconds): GPU_SUITE_TEST_TIMEOUT (test-cuda and each other test executable,
# 120), GPU_SUITE_BENCH_TIMEOUT (120), GPU_SUITE_TORCH_TIMEOUT (120), GPU_SUITE_SANITIZER_TIMEOUT
# (120 per tool); the preflight 30 and the summary 30. The first five add up to 420 s, under the
# default deadline, so the sanitizers always get at least a minute.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
plan_only=0
if [ "${1:-}" = "--plan" ]; then
  plan_only=1
  shift
fi
out=${1:-${OUT:-./gpu-suite-out}}

DEADLINE=${GPU_SUITE_DEADLINE:-480}
MIN_STEP=${GPU_SUITE_MIN_STEP:-20}
T_TEST=${GPU_SUITE_TEST_TIMEOUT:-120}
T_BENCH=${GPU_SUITE_BENCH_TIMEOUT:-120}
T_TORCH=${GPU_SUITE_TORCH_TIMEOUT:-120}
T_SAN=${GPU_SUITE_SANITIZER_TIMEOUT:-120}
T_SUMMARY=30
T_DEVICE=30
T_PREP=${GPU_SUITE_PREP_TIMEOUT:-30}

# The short list for memcheck and initcheck: one test per kernel family (gather, scatter, pad,
# offsets both paths, flatten/split, bounds errors); the shared-memory/barrier list for racecheck
# and synccheck: gather, scatter and offsets (block-wide index checks, block counters, scans).
SHORT_TESTS=(gather_matches_host scatter_matches_host pad_matches_host offsets_match_host
  flatten_and_split_match_host bounds_errors_are_reported)
SHARED_TESTS=(gather_matches_host scatter_matches_host offsets_match_host offsets_errors
  bounds_errors_are_reported)
# The input-preparation kernels (issue 10): their test executables, run unsanitized right after
# tests/cuda, and memcheck and racecheck on one test of each of two (segment expansion's block
# scan at every index type; the fused step's validate / write / capture kernels on the golden
# cases).
PREP_EXES=(expand slot_mapping windows staged pad_to step)
PREP_SAN=(expand:expand_matches_the_oracle_for_every_index_type
  step:identical_to_vllms_numpy_formulation_on_the_golden_cases)

plan() {
  cat <<EOF
gpu-suite timing plan: deadline ${DEADLINE}s; a step runs for at most min(its limit, time left),
and is skipped when that is under ${MIN_STEP}s. Limits (s), in order:
  1 device            ${T_DEVICE}
  2 test-cuda         ${T_TEST}     tests/cuda, unsanitized
    test-<prep>       ${T_PREP}      each of ${PREP_EXES[*]}, unsanitized
  3 bench             ${T_BENCH}     bin/cuda-bench
  4 torch             ${T_TORCH}     torch_baseline.py
  5 summary           ${T_SUMMARY}      gpu_summary.py -> SUMMARY.md
  6 memcheck-short    ${T_SAN}     ${SHORT_TESTS[*]}
  7 racecheck         ${T_SAN}     ${SHARED_TESTS[*]}
  8 synccheck         ${T_SAN}     (the same)
  9 memcheck-<exe>, racecheck-<exe>  ${T_PREP} each: ${PREP_SAN[*]}
  then while time remains: test-<other executables> (${T_TEST} each), memcheck-all (${T_SAN}),
  initcheck-short (${T_SAN})
The first five limits add up to $((T_DEVICE + T_TEST + T_BENCH + T_TORCH + T_SUMMARY))s; the bench and the baseline are expected
to take tens of seconds on an H100/H200 (not yet measured).
EOF
}

if [ "$plan_only" = 1 ]; then
  plan
  exit 0
fi

mkdir -p "$out" || { echo "gpu-suite: cannot create output folder $out" >&2; exit 1; }
out=$(cd "$out" && pwd)
cd "$here" || exit 1

export CPUGPU_REQUIRE_GPU=1

names=() rcs=() secs=() notes=()
suite_start=$(date +%s.%N)

stamp() { date -u +%H:%M:%S; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
left() { awk -v a="$suite_start" -v b="$(now)" -v d="$DEADLINE" 'BEGIN { printf "%d", d - (b - a) }'; }

write_steps() { # the table so far -> steps.txt (after every step, so a killed run keeps it)
  {
    printf '%-28s %5s %9s  %s\n' step rc seconds note
    for i in "${!names[@]}"; do
      printf '%-28s %5s %9s  %s\n' "${names[$i]}" "${rcs[$i]}" "${secs[$i]}" "${notes[$i]}"
    done
    printf '%-28s %5s %9s  %s\n' total "" "$(since "$suite_start")" "deadline ${DEADLINE}s, $(left)s left"
  } >"$out/steps.txt.tmp" && mv "$out/steps.txt.tmp" "$out/steps.txt"
}
record() { names+=("$1"); rcs+=("$2"); secs+=("$3"); notes+=("${4:-}"); write_steps; }

skip_step() { # NAME RC NOTE: a step that could not start (RC "-" for a skip that is no failure)
  echo "[$(stamp)] --- $1: $3"
  echo "$3" >"$out/$1.log"
  record "$1" "$2" 0.0 "$3"
}

# run_step NAME LIMIT CMD...: runs CMD under `timeout min(LIMIT, time left)` (a shell function
# runs without timeout, LIMIT then only decides whether there is time) with stdout+stderr in
# $out/NAME.log, or stdout in $STEP_STDOUT when that is set. Records rc and seconds; prints the
# log's tail when the step failed.
run_step() {
  local name=$1 limit=$2 rc note="" t0 s log="$out/$1.log" budget
  shift 2
  budget=$(left)
  [ "$budget" -gt "$limit" ] && budget=$limit
  if [ "$budget" -lt "$MIN_STEP" ]; then
    skip_step "$name" - "skipped: ${budget}s left before the ${DEADLINE}s deadline"
    return 0
  fi
  echo "[$(stamp)] >>> $name (up to ${budget}s): $*"
  printf '$ %s\n\n' "$*" >"$log"
  t0=$(now)
  if [ "$(type -t "$1")" = function ]; then
    if [ -n "${STEP_STDOUT:-}" ]; then "$@" >"$STEP_STDOUT" 2>>"$log" </dev/null; else "$@" >>"$log" 2>&1 </dev/null; fi
  elif [ -n "${STEP_STDOUT:-}" ]; then
    timeout --kill-after=10 "$budget" "$@" >"$STEP_STDOUT" 2>>"$log" </dev/null
  else
    timeout --kill-after=10 "$budget" "$@" >>"$log" 2>&1 </dev/null
  fi
  rc=$?
  s=$(since "$t0")
  case $rc in
    124 | 137) note="timed out after ${budget}s" ;;
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
  echo "[$(stamp)] <<< $name: rc=$rc, ${s}s${note:+ ($note)}, $(left)s left"
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
    timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv \
      || echo "(nvidia-smi --query-gpu failed: rc=$?)"
  else
    echo "nvidia-smi: not found"
  fi
  echo
  if [ -n "$sanitizer" ]; then
    echo "compute-sanitizer: $sanitizer ($(timeout 30 "$sanitizer" --version 2>&1 | grep -i version | tail -n 1))"
  else
    echo "compute-sanitizer: not found"
  fi
  if command -v python3 >/dev/null; then
    echo "python3: $(python3 --version 2>&1)"
    timeout 60 python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")' 2>&1 | tail -n 1
  else
    echo "python3: not found"
  fi
  return 0 # an absent tool is reported, not a failure
}

summary() { # SUMMARY.md from what exists so far
  STEP_STDOUT="$out/SUMMARY.md" run_step "$1" "$T_SUMMARY" python3 gpu_summary.py "$out/cpugpu.jsonl" "$out/torch.jsonl"
}

# sanitize NAME TOOL TESTS...: compute-sanitizer TOOL on tests/cuda, the tests named (substring
# filters; none: all but the 256 MiB large_inputs test, which runs unsanitized in test-cuda).
sanitize() {
  local name=$1 tool=$2
  shift 2
  sanitize_exe "$name" "$tool" "$T_SAN" cuda --skip large_inputs "$@"
}

# sanitize_exe NAME TOOL LIMIT EXE ARGS...: compute-sanitizer TOOL on tests/EXE, one test
# thread, with the test harness's ARGS (filters, --skip).
sanitize_exe() {
  local name=$1 tool=$2 limit=$3 exe=$4 extra=()
  shift 4
  case $tool in
    memcheck) extra=(--leak-check full) ;;
    racecheck) extra=(--racecheck-report all) ;;
  esac
  if [ -z "$sanitizer" ]; then
    skip_step "$name" 127 "compute-sanitizer not found (PATH, /usr/local/cuda*/bin, /usr/local/cuda/compute-sanitizer)"
  elif [ ! -x "tests/$exe" ]; then
    skip_step "$name" 1 "tests/$exe missing from the bundle"
  else
    run_step "$name" "$limit" "$sanitizer" --tool "$tool" "${extra[@]}" --error-exitcode 99 \
      "./tests/$exe" --test-threads=1 "$@"
  fi
}

echo "gpu-suite: bundle $here, output $out"
plan | tee "$out/plan.txt"
[ -f MANIFEST ] && { sed -n '1,6p' MANIFEST; cp MANIFEST "$out/MANIFEST"; }
case ":${LD_LIBRARY_PATH:-}:" in
  *libcuda-stub*) echo "gpu-suite: WARNING: LD_LIBRARY_PATH contains a libcuda stub ($LD_LIBRARY_PATH): the driver's libcuda must be used" ;;
esac
rm -f "$out/cpugpu.jsonl" "$out/torch.jsonl" "$out/SUMMARY.md"

# 1. preflight
STEP_STDOUT="$out/device.txt" run_step device "$T_DEVICE" device_info
sed 's/^/    /' "$out/device.txt"

# 2. the kernels against the host, unsanitized
if [ -x tests/cuda ]; then
  run_step test-cuda "$T_TEST" ./tests/cuda --test-threads=4
else
  skip_step test-cuda 1 "tests/cuda missing from the bundle"
fi
for exe in "${PREP_EXES[@]}"; do
  if [ -x "tests/$exe" ]; then
    run_step "test-$exe" "$T_PREP" "./tests/$exe" --test-threads=4
  else
    skip_step "test-$exe" 1 "tests/$exe missing from the bundle"
  fi
done

# 3. cpugpu benches (the executable writes the JSON lines itself)
if [ -x bin/cuda-bench ]; then
  run_step bench "$T_BENCH" ./bin/cuda-bench --json "$out/cpugpu.jsonl"
else
  skip_step bench 1 "bin/cuda-bench missing from the bundle"
fi

# 4. PyTorch baseline, 5. the summary table
run_step torch "$T_TORCH" python3 torch_baseline.py --json "$out/torch.jsonl"
summary summary

# 6-8. compute-sanitizer, short lists first
sanitize memcheck-short memcheck "${SHORT_TESTS[@]}"
sanitize racecheck racecheck "${SHARED_TESTS[@]}"
sanitize synccheck synccheck "${SHARED_TESTS[@]}"
for entry in "${PREP_SAN[@]}"; do
  exe=${entry%%:*}
  sanitize_exe "memcheck-$exe" memcheck "$T_PREP" "$exe" "${entry#*:}"
  sanitize_exe "racecheck-$exe" racecheck "$T_PREP" "$exe" "${entry#*:}"
done

# The rest, while time remains.
for path in tests/*; do
  exe=$(basename "$path")
  if [ ! -f "$path" ] || [ ! -x "$path" ] || [ "$exe" = cuda ]; then continue; fi
  case " ${PREP_EXES[*]} " in *" $exe "*) continue ;; esac
  run_step "test-$exe" "$T_TEST" "./$path" --test-threads=4
done
sanitize memcheck-all memcheck
sanitize initcheck-short initcheck "${SHORT_TESTS[@]}"

echo
echo "================================ SUMMARY.md ================================"
cat "$out/SUMMARY.md" 2>/dev/null || echo "(no SUMMARY.md)"
echo "============================================================================"
echo

failed=0
for rc in "${rcs[@]}"; do
  case $rc in 0 | -) ;; *) failed=$((failed + 1)) ;; esac
done
write_steps
cat "$out/steps.txt"
echo
if [ "$failed" -gt 0 ]; then
  echo "gpu-suite: $failed of ${#names[@]} steps FAILED; logs in $out"
  exit 1
fi
echo "gpu-suite: all ${#names[@]} steps passed or were skipped for time; logs in $out"
