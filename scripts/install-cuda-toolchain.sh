#!/usr/bin/env bash
# Installs the pinned CUDA toolchain of cpugpu from PyPI into a private virtual environment and
# prints the environment to use it. Nothing is installed system-wide, no GPU is needed.
#
#   scripts/install-cuda-toolchain.sh [VENV_DIR]
#   eval "$(scripts/install-cuda-toolchain.sh)"
#     exports NVCC, CUDA_PATH, PATH (nvcc, cuobjdump), CUDA_LIBRARY_PATH (link-time libcuda for
#     cust), LIBCLANG_PATH (bindgen) and CPUGPU_STUB_LIBCUDA (the stub's folder: put it on
#     LD_LIBRARY_PATH only on machines with no NVIDIA driver)
#
# VENV_DIR: the first argument, else $CPUGPU_CUDA_VENV, else .venv-cuda at the repository root.
# $PYTHON picks the interpreter that creates the venv (default python3, >= 3.9).
# Idempotent: when every pinned package is already there at its version, nothing is downloaded.
# Needs root (apt) for libcuda1 (Debian non-free, unpacked, not installed) and libclang1-14.
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

# --- libcuda.so for linking cust on a machine without a GPU driver -----------------------------
# Debian's non-free libcuda1, downloaded and unpacked into the venv (no install, no driver): cust's
# build script wants CUDA_LIBRARY_PATH with a lib64/ holding libcuda.so. At run time, with
# LD_LIBRARY_PATH at that folder, cuInit answers "no device", so the host fallback is testable.
# On a GPU machine do NOT put it on LD_LIBRARY_PATH: the machine's own driver must be used.
stub="$venv/libcuda-stub"
if [ ! -e "$stub/lib64/libcuda.so" ]; then
  command -v apt-get >/dev/null || die "apt-get not found: provide libcuda.so yourself and set CUDA_LIBRARY_PATH (a folder with lib64/libcuda.so)"
  sources=/etc/apt/sources.list.d/cpugpu-non-free.sources
  # (Not `apt-cache ... | grep -q`: with pipefail, grep closing the pipe early fails the test.)
  policy=$(apt-cache policy libcuda1 2>/dev/null || true)
  if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
    [ -w /etc/apt/sources.list.d ] || die "need root to add Debian's non-free component ($sources)"
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    log "adding Debian $codename non-free to $sources"
    cat >"$sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq >&2 || die "apt-get update failed"
  fi
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq libcuda1 >&2) || die "apt-get download libcuda1 failed"
  rm -rf "$stub.tmp" && mkdir -p "$stub.tmp"
  dpkg -x "$tmp"/libcuda1_*.deb "$stub.tmp/root" || die "dpkg -x libcuda1 failed"
  lib=$(dirname "$(find "$stub.tmp/root" -name 'libcuda.so.1' | head -n 1)")
  [ -n "$lib" ] && [ -e "$lib/libcuda.so.1" ] || die "libcuda.so.1 not found in the libcuda1 package"
  mkdir -p "$stub.tmp/lib64"
  cp -L "$lib/libcuda.so.1" "$stub.tmp/lib64/libcuda.so.1"
  ln -sf libcuda.so.1 "$stub.tmp/lib64/libcuda.so"
  # libcuda1's own dependency (libnvidia-ptxjitcompiler etc.) is only loaded on a real driver path.
  rm -rf "$stub.tmp/root" "$tmp" "$stub" && mv "$stub.tmp" "$stub"
  log "libcuda.so (link-time only) in $stub/lib64"
fi

# --- libclang for bindgen (the cuda build regenerates and checks src/kernels/abi_bindings.rs) ----
libclang=$(ls /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* 2>/dev/null | head -n 1 || true)
if [ -z "$libclang" ]; then
  [ -w /var/lib/dpkg ] || die "libclang not found and not root: apt-get install libclang1-14"
  log "installing libclang1-14"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang1-14 >&2 \
    || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang1-14 >&2; } \
    || die "apt-get install libclang1-14 failed"
  libclang=$(ls /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* 2>/dev/null | head -n 1 || true)
  [ -n "$libclang" ] || die "libclang still not found after installing libclang1-14"
fi
log "libclang: $libclang"

printf 'export NVCC=%q\n' "$bin/nvcc"
printf 'export CUDA_PATH=%q\n' "$cuda"
printf 'export PATH=%q:"$PATH"\n' "$bin"
printf 'export CUDA_LIBRARY_PATH=%q\n' "$stub"
printf 'export LIBCLANG_PATH=%q\n' "$(dirname "$libclang")"
# Run-time library path for machines WITHOUT a GPU driver only (cuInit then reports no device):
printf 'export CPUGPU_STUB_LIBCUDA=%q\n' "$stub/lib64"
