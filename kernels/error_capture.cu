// The device error word's read-out: after a checked operation (gather's validation, scatter's
// winners pass, the prefix sum), one thread copies the first bad position and the offending
// element into mapped pinned host memory and re-arms the word. Stream order puts it after the
// operation's kernels and before anything that could free their input.
#include "common.cuh"

extern "C" __global__ void capture_error(const CpugpuErrorCaptureParams p) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const uint64_t pos = *p.error;
    uint64_t value = 0;
    if (pos != CPUGPU_NO_ERROR && pos < static_cast<uint64_t>(p.n)) {
        if (p.elem_bytes == 8) {
            value = static_cast<const uint64_t*>(p.data)[pos];
        } else {
            value = static_cast<const uint32_t*>(p.data)[pos];
        }
    }
    p.out[0] = pos;
    p.out[1] = value;
    *p.error = CPUGPU_NO_ERROR;
}
