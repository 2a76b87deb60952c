#!/usr/bin/env bash
# Compiles every kernel source with nvcc 13.0 (sm_80 and sm_90 SASS + compute_90 PTX, warnings
# as errors) and checks the SASS: every 16-byte kernel (`*_w16*`) must load and store with
# 128-bit instructions (LDG.E.128 / STG.E.128). No GPU needed. The toolchain comes from PyPI
# into a private venv, pinned as in shared/CUDA-TOOLCHAIN.md (13.0 compiler, 13.2 cuobjdump).
#
# Usage: kernels/check_nvcc.sh            (venv in $CPUGPU_CUDA_VENV, default target/cuda-venv)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CPUGPU_CUDA_VENV:-target/cuda-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
cu13() { echo "$venv"/lib/python3*/site-packages/nvidia/cu13; }
if [ ! -x "$(cu13)/bin/nvcc" ] || [ ! -x "$(cu13)/bin/cuobjdump" ]; then
  "$venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 \
    nvidia-cuda-cuobjdump==13.2.51 nvidia-cuda-nvdisasm==13.2.51
fi
export PATH="$(cu13)/bin:$PATH"

out=target/kernels-nvcc
mkdir -p "$out"
status=0
for src in kernels/*.cu; do
  name=$(basename "$src" .cu)
  nvcc -std=c++17 -I kernels --fatbin \
    -gencode arch=compute_80,code=sm_80 -gencode 'arch=compute_90,code=[sm_90,compute_90]' \
    -Werror all-warnings -Xptxas -Werror "$src" -o "$out/$name.fatbin"
  cuobjdump --dump-sass -arch sm_90 "$out/$name.fatbin" > "$out/$name.sm_90.sass"
  echo "compiled $src"
done
# Every kernel of kernels/kernel_list.h must be in the fatbins (the test-only canaries are
# emulator-only), and every 16-byte-unit kernel must use 128-bit global loads and stores.
python3 - "$out" <<'PY' || status=1
import glob, re, sys
bad = 0
listed = re.findall(r"^CPUGPU_KERNEL\((\w+),", open("kernels/kernel_list.h").read(), re.M)
built = set()
for f in glob.glob(sys.argv[1] + "/*.sm_90.sass"):
    built |= set(re.findall(r"Function : (\S+)", open(f).read()))
for name in listed:
    if name not in built:
        print(f"BAD {name}: listed in kernel_list.h but not built")
        bad += 1
print(f"{len(listed)} listed kernels, {len(built)} built")
for f in sorted(glob.glob(sys.argv[1] + "/*.sm_90.sass")):
    text = open(f).read()
    for m in re.finditer(r"Function : (\S+)\n(.*?)(?=Function : |\Z)", text, re.S):
        name, body = m.group(1), m.group(2)
        if "_w16" not in name:
            continue
        ok = "LDG.E.128" in body and "STG.E.128" in body
        print(f"{'ok ' if ok else 'BAD'} {name}: 128-bit loads and stores")
        bad += not ok
sys.exit(1 if bad else 0)
PY
exit $status
