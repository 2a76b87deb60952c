// Pad to a multiple along one axis: copy and fill in one kernel.
//
// Rust views the arrays as `outer` rows: each destination row (dst_row_units V-byte units) is
// the source row (src_row_units units, the part of the array from the padded axis inwards)
// followed by fill. One grid-stride loop over the destination's units either copies or fills, so
// a single launch writes the whole output exactly once. Each thread takes `items` units per
// iteration, striped by the grid's thread count (so each of its loads is coalesced across the
// warp), loads every source unit of the iteration into registers, then stores them all (CUB's
// BlockLoad/BlockStore order: `items` loads in flight per thread).
#include "common.cuh"

namespace cpugpu {

template <int V>
__device__ __forceinline__ void pad_body(const CpugpuPadParams& p) {
    using U = typename Unit<V>::type;
    constexpr int MAX = MaxItems<V>::value;
    const U* __restrict__ src = static_cast<const U*>(p.src);
    U* __restrict__ dst = static_cast<U*>(p.dst);
    const long long width = p.dst_row_units;
    const long long copied = p.src_row_units;
    const long long total = p.outer * width;  // Rust checked it fits
    const long long stride = total_threads();
    const int items = static_cast<int>(p.items);
    // Row and column of a unit, advanced incrementally by `stride` units: one 64-bit division
    // per thread, not one per unit.
    const long long stride_rows = stride / width;
    const long long stride_cols = stride - stride_rows * width;
    long long e = global_thread();
    long long row = e / width;
    long long col = e - row * width;
    for (; e < total; e += stride * items) {
        long long rk[MAX];
        long long ck[MAX];
        U v[MAX] = {};
CPUGPU_UNROLL
        for (int k = 0; k < MAX; ++k) {
            rk[k] = row;
            ck[k] = col;
            if (k < items) {  // after the loop: the unit `items` strides on, the next iteration's
                row += stride_rows;
                col += stride_cols;
                if (col >= width) {
                    col -= width;
                    ++row;
                }
            }
        }
CPUGPU_UNROLL
        for (int k = 0; k < MAX; ++k) {
            if (k < items && e + k * stride < total) {
                v[k] = ck[k] < copied ? __ldg(src + rk[k] * copied + ck[k]) : fill_unit<V>(p.fill, ck[k]);
            }
        }
CPUGPU_UNROLL
        for (int k = 0; k < MAX; ++k) {
            if (k < items && e + k * stride < total) dst[e + k * stride] = v[k];
        }
    }
}

}  // namespace cpugpu

extern "C" __global__ void CPUGPU_MOVE_BOUNDS pad_w1(const CpugpuPadParams p) { cpugpu::pad_body<1>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS pad_w2(const CpugpuPadParams p) { cpugpu::pad_body<2>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS pad_w4(const CpugpuPadParams p) { cpugpu::pad_body<4>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS pad_w8(const CpugpuPadParams p) { cpugpu::pad_body<8>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS pad_w16(const CpugpuPadParams p) { cpugpu::pad_body<16>(p); }
