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
    const long long stride = total_threads();
    // Row and column of e, advanced incrementally: one 64-bit division per thread, not one
    // per unit.
    const long long stride_rows = stride / p.dst_row_units;
    const long long stride_cols = stride - stride_rows * p.dst_row_units;
    long long e = global_thread();
    long long row = e / p.dst_row_units;
    long long c = e - row * p.dst_row_units;
    for (; e < total; e += stride) {
        dst[e] = c < p.src_row_units ? src[row * p.src_row_units + c] : fill_unit<V>(p.fill, c);
        row += stride_rows;
        c += stride_cols;
        if (c >= p.dst_row_units) {
            c -= p.dst_row_units;
            ++row;
        }
    }
}

}  // namespace cpugpu

extern "C" __global__ void pad_w1(const CpugpuPadParams p) { cpugpu::pad_body<1>(p); }
extern "C" __global__ void pad_w2(const CpugpuPadParams p) { cpugpu::pad_body<2>(p); }
extern "C" __global__ void pad_w4(const CpugpuPadParams p) { cpugpu::pad_body<4>(p); }
extern "C" __global__ void pad_w8(const CpugpuPadParams p) { cpugpu::pad_body<8>(p); }
extern "C" __global__ void pad_w16(const CpugpuPadParams p) { cpugpu::pad_body<16>(p); }
