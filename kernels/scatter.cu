// Scatter rows (dst[indices[i], :] = src[i, :]) with the host path's last-wins rule.
//
// Pass 1, scatter_winners_<idx>: validates every index (first bad position into the error word)
// and records winners[indices[i]] = the largest i (atomicMax) in an int64 scratch array of
// dst_rows entries that Rust initialises to -1.
// Pass 2, scatter_rows_w<V>_<idx>: row i is copied only when winners[indices[i]] == i, so each
// destination row is written by exactly one thread group, by the last occurrence: the result is
// the host path's, and there is no write-write race. Nothing is written when the error word is
// set. Rows are moved like gather's (groups of lanes_per_row threads, V-byte units).
#include "common.cuh"

namespace cpugpu {

// As validate_indices: every lane of a warp takes each iteration. A repeated destination row is
// updated only by an index later than the one already recorded, so a row written by millions of
// indices does not serialise them all on one atomic.
template <class I>
__device__ __forceinline__ void scatter_winners_body(const CpugpuScatterWinnersParams& p) {
    const long long lane = threadIdx.x % 32;
    auto* error = reinterpret_cast<unsigned long long*>(p.error);
    for (long long i = global_thread(); i - lane < p.n; i += total_threads()) {
        const long long v = i < p.n ? load_index<I>(p.indices, i) : -1;
        const bool bad = i < p.n && index_is_bad(v, p.dst_rows, p.allow_negative != 0);
        report_first_bad(error, i, bad);
        if (i < p.n && !bad && v >= 0) {
            long long* w = reinterpret_cast<long long*>(p.winners + v);
            if (load_relaxed(w) < i) atomicMax(w, i);
        }
    }
}

template <int V, class I>
__device__ __forceinline__ void scatter_rows_body(const CpugpuScatterRowsParams& p) {
    using U = typename Unit<V>::type;
    if (*p.error != CPUGPU_NO_ERROR) return;  // set by scatter_winners in the previous launch
    const U* src = static_cast<const U*>(p.src);
    U* dst = static_cast<U*>(p.dst);
    const long long lanes = p.lanes_per_row;
    const long long lane = global_thread() % lanes;
    const long long groups = total_threads() / lanes;
    for (long long r = global_thread() / lanes; r < p.n_indices; r += groups) {
        const long long v = load_index<I>(p.indices, r);
        if (v < 0 || static_cast<unsigned long long>(v) >= p.dst_rows || p.winners[v] != r) continue;
        const U* row = src + r * p.row_units;
        U* d = dst + v * p.row_units;
        for (long long c = lane; c < p.row_units; c += lanes) d[c] = row[c];
    }
}

}  // namespace cpugpu

extern "C" __global__ void scatter_winners_i32(const CpugpuScatterWinnersParams p) { cpugpu::scatter_winners_body<int32_t>(p); }
extern "C" __global__ void scatter_winners_i64(const CpugpuScatterWinnersParams p) { cpugpu::scatter_winners_body<int64_t>(p); }

extern "C" __global__ void scatter_rows_w1_i32(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<1, int32_t>(p); }
extern "C" __global__ void scatter_rows_w2_i32(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<2, int32_t>(p); }
extern "C" __global__ void scatter_rows_w4_i32(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<4, int32_t>(p); }
extern "C" __global__ void scatter_rows_w8_i32(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<8, int32_t>(p); }
extern "C" __global__ void scatter_rows_w16_i32(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<16, int32_t>(p); }
extern "C" __global__ void scatter_rows_w1_i64(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<1, int64_t>(p); }
extern "C" __global__ void scatter_rows_w2_i64(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<2, int64_t>(p); }
extern "C" __global__ void scatter_rows_w4_i64(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<4, int64_t>(p); }
extern "C" __global__ void scatter_rows_w8_i64(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<8, int64_t>(p); }
extern "C" __global__ void scatter_rows_w16_i64(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<16, int64_t>(p); }
