// Pad to a multiple along one axis: copy and fill in one kernel.
//
// Rust views the arrays as `outer` rows: each destination row (dst_row_units V-byte units) is
// the source row (src_row_units units, the part of the array from the padded axis inwards)
// followed by fill. One grid-stride loop over every destination unit either copies or fills, so
// a single launch writes the whole output exactly once.
#include "common.cuh"

namespace cpugpu {

template <int V>
__device__ __forceinline__ void pad_body(const CpugpuPadParams& p) {
    using U = typename Unit<V>::type;
    const U* src = static_cast<const U*>(p.src);
    U* dst = static_cast<U*>(p.dst);
    const long long total = p.outer * p.dst_row_units;  // Rust checked it fits
    for (long long e = global_thread(); e < total; e += total_threads()) {
        const long long row = e / p.dst_row_units;
        const long long c = e - row * p.dst_row_units;
        dst[e] = c < p.src_row_units ? src[row * p.src_row_units + c] : fill_unit<V>(p.fill, c);
    }
}

}  // namespace cpugpu

extern "C" __global__ void pad_w1(const CpugpuPadParams p) { cpugpu::pad_body<1>(p); }
extern "C" __global__ void pad_w2(const CpugpuPadParams p) { cpugpu::pad_body<2>(p); }
extern "C" __global__ void pad_w4(const CpugpuPadParams p) { cpugpu::pad_body<4>(p); }
extern "C" __global__ void pad_w8(const CpugpuPadParams p) { cpugpu::pad_body<8>(p); }
extern "C" __global__ void pad_w16(const CpugpuPadParams p) { cpugpu::pad_body<16>(p); }
