// Batched copy of many segments in one launch: flatten (segments -> one flat buffer, plus the
// offsets) and split's copying form (one flat buffer -> separate buffers).
//
// Balance: work is divided by *flat position*, not by segment: block-tile t covers flat units
// [t * tile_units, (t + 1) * tile_units). Thread 0 finds the segments at the tile's two ends by
// binary search in seg_offsets; each thread then finds its unit's segment by binary search
// inside that range. A 100,000-unit segment next to many 1-unit ones costs the same per unit,
// which is what CUB's batched memcpy gets from sorting buffers into size tiers. Sources may be
// device pointers or pinned/UVA host pointers: the kernel only dereferences what it is given.
#include "common.cuh"

namespace cpugpu {

// The last s in [lo, hi] with offsets[s] <= u (offsets non-decreasing, offsets[lo] <= u).
__device__ __forceinline__ long long segment_of(const int64_t* offsets, long long lo, long long hi, long long u) {
    while (lo < hi) {
        const long long mid = lo + (hi - lo + 1) / 2;
        if (offsets[mid] <= u) lo = mid; else hi = mid - 1;
    }
    return lo;
}

template <int V, class O, bool FLATTEN>
__device__ __forceinline__ void batched_copy_body(const CpugpuBatchedCopyParams& p) {
    using U = typename Unit<V>::type;
    CPUGPU_SHARED(long long, range, 2);
    const int64_t* offs = p.seg_offsets;
    const long long n = p.n_segments;
    const long long total = offs[n];
    const long long tiles = (total + p.tile_units - 1) / p.tile_units;
    U* flat = static_cast<U*>(p.flat);
    for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const long long t0 = tile * p.tile_units;
        const long long t1 = total - t0 < p.tile_units ? total : t0 + p.tile_units;
        if (threadIdx.x == 0) {
            range[0] = segment_of(offs, 0, n - 1, t0);
            range[1] = segment_of(offs, range[0], n - 1, t1 - 1);
        }
        __syncthreads();
        const long long lo = range[0];
        const long long hi = range[1];
        for (long long u = t0 + threadIdx.x; u < t1; u += blockDim.x) {
            const long long s = segment_of(offs, lo, hi, u);
            const long long k = u - offs[s];
            if (FLATTEN) {
                flat[u] = static_cast<const U*>(p.src_ptrs[s])[k];
            } else {
                static_cast<U*>(p.dst_ptrs[s])[k] = flat[u];
            }
        }
        __syncthreads();  // range is rewritten for the next tile
    }
    if (FLATTEN) {
        O* out = static_cast<O*>(p.offsets_out);
        for (long long i = global_thread(); i <= n; i += total_threads()) {
            out[i] = static_cast<O>(offs[i] / p.units_per_elem);
        }
    }
}

}  // namespace cpugpu

extern "C" __global__ void flatten_w1_i32(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<1, int32_t, true>(p); }
extern "C" __global__ void flatten_w2_i32(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<2, int32_t, true>(p); }
extern "C" __global__ void flatten_w4_i32(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<4, int32_t, true>(p); }
extern "C" __global__ void flatten_w8_i32(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<8, int32_t, true>(p); }
extern "C" __global__ void flatten_w16_i32(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<16, int32_t, true>(p); }
extern "C" __global__ void flatten_w1_i64(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<1, int64_t, true>(p); }
extern "C" __global__ void flatten_w2_i64(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<2, int64_t, true>(p); }
extern "C" __global__ void flatten_w4_i64(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<4, int64_t, true>(p); }
extern "C" __global__ void flatten_w8_i64(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<8, int64_t, true>(p); }
extern "C" __global__ void flatten_w16_i64(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<16, int64_t, true>(p); }
extern "C" __global__ void split_copy_w1(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<1, int64_t, false>(p); }
extern "C" __global__ void split_copy_w2(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<2, int64_t, false>(p); }
extern "C" __global__ void split_copy_w4(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<4, int64_t, false>(p); }
extern "C" __global__ void split_copy_w8(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<8, int64_t, false>(p); }
extern "C" __global__ void split_copy_w16(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<16, int64_t, false>(p); }
