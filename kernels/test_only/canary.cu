// Deliberately broken kernels, compiled only into emulator builds, that prove the sanitizers are
// live (tests/emu_canary.rs runs each in a child process and asserts the sanitizer reports it).
#include "../common.cuh"

// Reads one element past the end of src (n elements): AddressSanitizer must report a
// heap-buffer-overflow.
extern "C" __global__ void canary_read_past_end(const CpugpuCanaryParams p) {
    if (threadIdx.x == 0 && blockIdx.x == 0) p.dst[0] = p.src[p.n];
}

// Thread 0 writes shared memory that thread 1 reads with no __syncthreads in between:
// ThreadSanitizer must report a data race.
extern "C" __global__ void canary_shared_race(const CpugpuCanaryParams p) {
    CPUGPU_SHARED(uint64_t, cell, 1);
    if (threadIdx.x == 0) cell[0] = p.src[0];
    if (threadIdx.x == 1) p.dst[0] = cell[0];
}

// Thread 0 leaves before the __syncthreads the others wait at: a divergent barrier, undefined
// on a GPU. The emulator must abort with a message (no sanitizer needed).
extern "C" __global__ void canary_divergent_barrier(const CpugpuCanaryParams p) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    if (threadIdx.x == 1) p.dst[0] = p.src[0];
}

// The same race between two barriers (a missing __syncthreads in the middle phase of a kernel):
// ThreadSanitizer must report it too, which needs each barrier phase to order only what it
// separates (kernels/emu/executor.cpp).
extern "C" __global__ void canary_shared_race_mid(const CpugpuCanaryParams p) {
    CPUGPU_SHARED(uint64_t, cell, 1);
    __syncthreads();
    if (threadIdx.x == 0) cell[0] = p.src[0];
    if (threadIdx.x == 1) p.dst[0] = cell[0];
    __syncthreads();
}
