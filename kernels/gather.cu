// Gather rows (dst[i, :] = src[indices[i], :]) and the index validation shared with scatter.
//
// Two launches: validate_indices_<idx> records the first bad position in the error word; then
// gather_rows_w<V>_<idx> copies, and does nothing at all when the error word is set, so a bad
// index leaves dst untouched, as on the host path, with no host synchronisation in between.
// The copy kernel never dereferences an index outside 0..src_rows either way.
//
// Layout of the copy: a group of lanes_per_row consecutive threads (1, 2, ..., 32, a power of
// two picked by Rust from the row size) handles one row; groups walk the rows grid-stride. Narrow
// rows get one thread each (a plain grid-stride loop), wide rows a sub-warp or a whole warp
// looping over the row. Every access is a V-byte unit (uint4 for V = 16).
#include "common.cuh"

namespace cpugpu {

// Blocks are whole warps, and the loop runs while the warp's first lane is in range, so every
// lane of a warp takes each iteration (report_first_bad votes across the warp).
template <class I>
__device__ __forceinline__ void validate_indices_body(const CpugpuValidateParams& p) {
    const long long lane = threadIdx.x % 32;
    auto* error = reinterpret_cast<unsigned long long*>(p.error);
    for (long long i = global_thread(); i - lane < p.n; i += total_threads()) {
        const bool bad = i < p.n && index_is_bad(load_index<I>(p.indices, i), p.bound, p.allow_negative != 0);
        report_first_bad(error, i, bad);
    }
}

template <int V, class I>
__device__ __forceinline__ void gather_rows_body(const CpugpuGatherRowsParams& p) {
    using U = typename Unit<V>::type;
    if (*p.error != CPUGPU_NO_ERROR) return;  // set by validate_indices in an earlier launch
    const U* src = static_cast<const U*>(p.src);
    U* dst = static_cast<U*>(p.dst);
    const long long lanes = p.lanes_per_row;
    const long long lane = global_thread() % lanes;
    const long long groups = total_threads() / lanes;
    for (long long r = global_thread() / lanes; r < p.n_indices; r += groups) {
        const long long s = load_index<I>(p.indices, r);
        U* d = dst + r * p.row_units;
        if (s >= 0 && static_cast<unsigned long long>(s) < p.src_rows) {
            const U* row = src + s * p.row_units;
            for (long long c = lane; c < p.row_units; c += lanes) d[c] = row[c];
        } else if (s < 0) {  // NegativeFill (Checked rejected negatives in validation)
            for (long long c = lane; c < p.row_units; c += lanes) d[c] = fill_unit<V>(p.fill, c);
        }
    }
}

}  // namespace cpugpu

extern "C" __global__ void validate_indices_i32(const CpugpuValidateParams p) { cpugpu::validate_indices_body<int32_t>(p); }
extern "C" __global__ void validate_indices_i64(const CpugpuValidateParams p) { cpugpu::validate_indices_body<int64_t>(p); }

extern "C" __global__ void gather_rows_w1_i32(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<1, int32_t>(p); }
extern "C" __global__ void gather_rows_w2_i32(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<2, int32_t>(p); }
extern "C" __global__ void gather_rows_w4_i32(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<4, int32_t>(p); }
extern "C" __global__ void gather_rows_w8_i32(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<8, int32_t>(p); }
extern "C" __global__ void gather_rows_w16_i32(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<16, int32_t>(p); }
extern "C" __global__ void gather_rows_w1_i64(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<1, int64_t>(p); }
extern "C" __global__ void gather_rows_w2_i64(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<2, int64_t>(p); }
extern "C" __global__ void gather_rows_w4_i64(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<4, int64_t>(p); }
extern "C" __global__ void gather_rows_w8_i64(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<8, int64_t>(p); }
extern "C" __global__ void gather_rows_w16_i64(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<16, int64_t>(p); }
