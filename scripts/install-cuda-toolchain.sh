#!/usr/bin/env bash
# Installs the pinned CUDA toolchain of cpugpu from PyPI into a private virtual environment and
# prints the environment to use it. Nothing is installed system-wide, no GPU is needed.
#
#   scripts/install-cuda-toolchain.sh [VENV_DIR]
#   eval "$(scripts/install-cuda-toolchain.sh)"      # export NVCC, CUDA_PATH, PATH
#
# VENV_DIR: the first argument, else $CPUGPU_CUDA_VENV, else .venv-cuda at the repository root.
# $PYTHON picks the interpreter that creates the venv (default python3, >= 3.9).
# Idempotent: when every pinned package is already there at its version, nothing is downloaded.
# Progress goes to stderr; stdout carries only the `export` lines.
#
# Versions (see shared/CUDA-TOOLCHAIN.md): the compiler is pinned to CUDA 13.0, the GPU machines'
# driver version (a 13.x nvvm/cicc newer than the 13.0 ptxas emits PTX it rejects, so all four
# compiler packages move together); cuobjdump/nvdisasm 13.2.51 are the oldest published on PyPI
# and only disassemble.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-${CPUGPU_CUDA_VENV:-$repo/.venv-cuda}}
python=${PYTHON:-python3}

PACKAGES=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cuobjdump==13.2.51
  nvidia-cuda-nvdisasm==13.2.51
)
NVCC_RELEASE="13.0"

log() { echo "install-cuda-toolchain: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  "$python" -m venv "$venv" >&2 || die "'$python -m venv' failed (Debian: apt-get install python3-venv)"
fi
venv=$(cd "$venv" && pwd)
vpy="$venv/bin/python"

# Which pinned packages are missing or at another version? (Reads the venv's metadata only.)
missing=$("$vpy" - "${PACKAGES[@]}" <<'PY'
import sys
from importlib import metadata
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != want:
        print(spec)
PY
)
if [ -n "$missing" ]; then
  log "installing: $(echo $missing)"
  start=$(date +%s)
  # All pins at once, so pip resolves them together (an unpinned nvidia-nvvm would pull 13.x > 13.0).
  "$vpy" -m pip install --disable-pip-version-check --no-input --quiet "${PACKAGES[@]}" >&2 \
    || die "pip install failed"
  log "installed in $(( $(date +%s) - start )) s"
else
  log "all pinned packages already installed in $venv"
fi

site=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cuda="$site/nvidia/cu13"
bin="$cuda/bin"
for tool in nvcc ptxas cuobjdump nvdisasm; do
  [ -x "$bin/$tool" ] || die "$bin/$tool missing after install"
done
[ -f "$cuda/include/cuda.h" ] || die "$cuda/include/cuda.h missing after install"
[ -x "$cuda/nvvm/bin/cicc" ] || die "$cuda/nvvm/bin/cicc missing after install (nvidia-nvvm)"

version=$("$bin/nvcc" --version) || die "nvcc --version failed"
grep -q "release $NVCC_RELEASE," <<<"$version" \
  || die "nvcc is not CUDA $NVCC_RELEASE: $(tail -n 2 <<<"$version" | tr '\n' ' ')"
log "$(grep -o 'release [0-9.]*, V[0-9.]*' <<<"$version"): $bin/nvcc"

# --- issue 3 (not implemented yet): libcuda.so for linking cust without a GPU --------------------
# (Debian non-free libcuda1, `apt-get download` + `dpkg -x` into a private folder, then
#  `export CUDA_LIBRARY_PATH=...` with a lib64/ subfolder), see shared/CUDA-TOOLCHAIN.md.
# --- issue 3 (not implemented yet): libclang for bindgen (apt-get install libclang1-14) ----------
# --------------------------------------------------------------------------------------------------

printf 'export NVCC=%q\n' "$bin/nvcc"
printf 'export CUDA_PATH=%q\n' "$cuda"
printf 'export PATH=%q:"$PATH"\n' "$bin"
