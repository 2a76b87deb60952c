// Staged writes (vLLM's StagedWriteTensor): the writes queued on the host between steps, packed
// into one upload, applied by one launch. The host resolves overlaps first (a later write wins),
// so the n writes are disjoint and every unit has one writer: no atomics, any thread order.
// Each thread takes one V-byte unit of the packed values and finds its write by binary search in
// the cumulative lengths, so one long write and many short ones balance.
#include "prep_common.cuh"

namespace cpugpu {

template <int V>
__device__ __forceinline__ void staged_write_body(const CpugpuStagedWriteParams& p) {
    using U = typename Unit<V>::type;
    const U* values = static_cast<const U*>(p.values);
    U* dst = static_cast<U*>(p.dst);
    prep_copy_units<V>(values, dst, p.total, [&](long long u, long long& src) {
        const long long s = prep_segment_of(p.cu, true, 0, p.n - 1, u);
        src = u;
        return p.dst_offsets[s] + (u - p.cu[s]);
    });
}

}  // namespace cpugpu

extern "C" __global__ void staged_write_w1(const CpugpuStagedWriteParams p) { cpugpu::staged_write_body<1>(p); }
extern "C" __global__ void staged_write_w2(const CpugpuStagedWriteParams p) { cpugpu::staged_write_body<2>(p); }
extern "C" __global__ void staged_write_w4(const CpugpuStagedWriteParams p) { cpugpu::staged_write_body<4>(p); }
extern "C" __global__ void staged_write_w8(const CpugpuStagedWriteParams p) { cpugpu::staged_write_body<8>(p); }
extern "C" __global__ void staged_write_w16(const CpugpuStagedWriteParams p) { cpugpu::staged_write_body<16>(p); }
