// Test-only kernel checking the emulator's own primitives (emulator builds only): warp shuffles
// and votes exchange the right lanes' values, sub-warp widths, block votes and atomics. Each
// thread writes 8 results to dst[tid * 8 ..]; dst[blockDim.x * 8] collects an atomicAdd of 1
// per thread and dst[blockDim.x * 8 + 1] an atomicMax of the thread index.
// tests/emulated.rs::emulator_primitives_exchange_lane_values computes the expected values.
#include "../common.cuh"

extern "C" __global__ void emu_selftest_warp_ops(const CpugpuCanaryParams p) {
    const unsigned tid = threadIdx.x;
    const unsigned lane = tid % 32;
    const unsigned FULL = 0xffffffffu;
    uint64_t* out = p.dst + static_cast<long long>(tid) * 8;
    out[0] = __shfl_sync(FULL, lane * 10u, static_cast<int>((lane + 1) % 32));
    out[1] = __shfl_up_sync(FULL, static_cast<long long>(lane), 3);
    out[2] = __shfl_down_sync(FULL, lane, 5);
    out[3] = __shfl_xor_sync(FULL, lane, 1);
    out[4] = __ballot_sync(FULL, lane % 3 == 0);
    out[5] = static_cast<uint64_t>(__any_sync(FULL, lane == 7)) + 2u * static_cast<uint64_t>(__all_sync(FULL, lane < 32)) +
             4u * static_cast<uint64_t>(__all_sync(FULL, lane < 31));
    out[6] = __shfl_sync(FULL, lane, 0, 8);  // width 8: each segment's first lane
    out[7] = static_cast<uint64_t>(__syncthreads_count(tid % 2 == 0)) * 1000u +
             static_cast<uint64_t>(__syncthreads_or(tid == 5)) * 10u + static_cast<uint64_t>(__syncthreads_and(tid < 1000));
    atomicAdd(reinterpret_cast<unsigned long long*>(p.dst + static_cast<long long>(blockDim.x) * 8), 1ull);
    atomicMax(reinterpret_cast<unsigned long long*>(p.dst + static_cast<long long>(blockDim.x) * 8 + 1),
              static_cast<unsigned long long>(tid));
    __syncwarp();
}
