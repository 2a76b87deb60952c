// Scatter rows (dst[indices[i], :] = src[i, :]) with the host path's last-wins rule.
//
// The rule needs, per destination row, the last source row aimed at it: `winners`, the queue's
// persistent array of one int64 per destination row (src/cuda/queue.rs), -1 between operations.
// No operation clears it: every kernel that sets an entry returns it to -1 before the operation
// ends, so no call pays for the destination's size, only for its own rows.
//
// Batch sizes (one launch), scatter_rows_w<V>_<idx> with self_check set: every block checks every
// index (block 0 writes the read-out slot), so a bad index stops every block before anything is
// written. Then every block records every winner (atomicMax; an entry already at its final value
// is only read, so the repeats cost cached reads), copies the rows it owns whose source won, and
// the last block to finish returns the entries to -1.
//
// Large n (two launches): scatter_winners_<idx> checks the indices (first bad position into the
// error word) and records the winners; scatter_rows_w<V>_<idx> copies each winning row (nothing
// when the error word is set) and its winner returns the entry to -1 after its copy, on the error
// path too; its last block writes the read-out slot and re-arms the error word.
//
// Each destination row is written by exactly one thread group, its last occurrence: the host
// path's result, with no write-write race. Rows move as gather's do (kernels/gather.cu): groups of
// lanes_per_row threads, `items` rows (narrow) or units (wide) per thread loaded before any store.
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

// Batch sizes: every block records every winner; `winners` must hold the final maximum for every
// index once this block's own updates are done, whatever the other blocks have done so far.
template <class I>
__device__ __forceinline__ void record_all_winners(const CpugpuScatterRowsParams& p) {
    constexpr int K = 4;
    const long long n = p.n_indices;
    const long long step = static_cast<long long>(blockDim.x);
    for (long long base = threadIdx.x; base < n; base += K * step) {
        long long v[K];
CPUGPU_UNROLL
        for (int k = 0; k < K; ++k) {
            const long long i = base + k * step;
            v[k] = i < n ? load_index<I>(p.indices, i) : -1;
        }
CPUGPU_UNROLL
        for (int k = 0; k < K; ++k) {
            const long long i = base + k * step;
            if (v[k] >= 0) {  // checked in range by block_first_bad; negative: skipped
                long long* w = reinterpret_cast<long long*>(p.winners + v[k]);
                if (load_relaxed(w) < i) atomicMax(w, i);
            }
        }
    }
}

// Batch sizes: the last block returns every entry the operation used to -1.
template <class I>
__device__ __forceinline__ void release_all_winners(const CpugpuScatterRowsParams& p) {
    for (long long i = threadIdx.x; i < p.n_indices; i += blockDim.x) {
        const long long v = load_index<I>(p.indices, i);
        if (v >= 0) store_relaxed(reinterpret_cast<long long*>(p.winners + v), -1ll);
    }
}

// Whether row r, aimed at destination row s, won.
__device__ __forceinline__ bool won(const CpugpuScatterRowsParams& p, long long s, long long r) {
    return s >= 0 && static_cast<unsigned long long>(s) < p.dst_rows &&
           load_relaxed(reinterpret_cast<const long long*>(p.winners + s)) == r;
}

// copy: move the winning rows (false on the large path's error path: only release entries).
// release: each winner returns its entry to -1 after its group has read it (large path).
template <int V, class I>
__device__ __forceinline__ void scatter_move(const CpugpuScatterRowsParams& p, bool copy, bool release) {
    using U = typename Unit<V>::type;
    constexpr int MAX = MaxItems<V>::value;
    const U* __restrict__ src = static_cast<const U*>(p.src);
    U* __restrict__ dst = static_cast<U*>(p.dst);
    const long long n = p.n_indices;
    const long long units = p.row_units;
    const long long lanes = p.lanes_per_row;
    const int items = static_cast<int>(p.items);
    const long long t = global_thread();
    const long long lane = t & (lanes - 1);
    const long long group = t / lanes;
    const long long groups = total_threads() / lanes;  // blocks are a multiple of 32 threads
    if (units <= lanes) {
        // Narrow rows, `items` rows per thread per iteration. The loop runs while the warp's first
        // group is in range, so every lane of the warp takes each iteration (__syncwarp below).
        const long long warp_first = group - (threadIdx.x % 32) / lanes;
        for (long long w0 = warp_first; w0 < n; w0 += groups * items) {
            const long long r0 = w0 + (group - warp_first);
            // s[k]: row k's destination while it is a winner, -1 otherwise.
            long long s[MAX];
            U v[MAX] = {};
CPUGPU_UNROLL
            for (int k = 0; k < MAX; ++k) {
                const long long r = r0 + k * groups;
                s[k] = k < items && r < n ? load_index<I>(p.indices, r) : -1;
            }
CPUGPU_UNROLL
            for (int k = 0; k < MAX; ++k) {
                if (!won(p, s[k], r0 + k * groups)) s[k] = -1;
            }
            if (copy) {
CPUGPU_UNROLL
                for (int k = 0; k < MAX; ++k) {
                    if (s[k] >= 0 && lane < units) v[k] = __ldg(src + (r0 + k * groups) * units + lane);
                }
CPUGPU_UNROLL
                for (int k = 0; k < MAX; ++k) {
                    if (s[k] >= 0 && lane < units) dst[s[k] * units + lane] = v[k];
                }
            }
            if (release) {
                __syncwarp();  // every lane of the group has read the entry
CPUGPU_UNROLL
                for (int k = 0; k < MAX; ++k) {
                    if (s[k] >= 0 && lane == 0) store_relaxed(reinterpret_cast<long long*>(p.winners + s[k]), -1ll);
                }
            }
        }
    } else {
        // Wide rows: a warp per row (group == warp, so the loop is warp-uniform), `items` units
        // per lane in flight, the next row's index read while this one moves.
        long long r = group;
        long long s = r < n ? load_index<I>(p.indices, r) : -1;
        for (; r < n; r += groups) {
            const long long next = r + groups;
            const long long s_next = next < n ? load_index<I>(p.indices, next) : -1;  // read ahead
            const bool win = won(p, s, r);
            if (copy && win) {
                const U* row = src + r * units;
                U* d = dst + s * units;
                for (long long c0 = lane; c0 < units; c0 += lanes * items) {
                    U v[MAX] = {};
CPUGPU_UNROLL
                    for (int k = 0; k < MAX; ++k) {
                        const long long c = c0 + k * lanes;
                        if (k < items && c < units) v[k] = __ldg(row + c);
                    }
CPUGPU_UNROLL
                    for (int k = 0; k < MAX; ++k) {
                        const long long c = c0 + k * lanes;
                        if (k < items && c < units) d[c] = v[k];
                    }
                }
            }
            if (release) {
                __syncwarp();  // every lane has read the entry
                if (win && lane == 0) store_relaxed(reinterpret_cast<long long*>(p.winners + s), -1ll);
            }
            s = s_next;
        }
    }
}

template <int V, class I>
__device__ __forceinline__ void scatter_rows_body(const CpugpuScatterRowsParams& p) {
    const bool moves = p.row_units > 0;  // rows of zero elements: the indices are only checked
    if (p.self_check != 0) {
        const unsigned long long bad = block_first_bad<I>(p.indices, p.n_indices, p.dst_rows, p.allow_negative != 0);
        if (blockIdx.x == 0 && threadIdx.x == 0) write_capture<I>(p.capture, bad, p.indices, p.n_indices);
        // Every block reached the same verdict; with a bad index no block records or writes.
        if (bad == CPUGPU_NO_ERROR && moves) {
            record_all_winners<I>(p);
            __syncthreads();  // this block's updates are done: every entry holds its winner
            scatter_move<V, I>(p, true, false);
            if (last_block_done(reinterpret_cast<unsigned long long*>(p.ctl) + CPUGPU_CTL_DONE)) {
                release_all_winners<I>(p);
            }
        }
    } else {
        // Set by scatter_winners in the launch before; re-armed below only after every block has
        // read it.
        const bool ok = load_relaxed(reinterpret_cast<const unsigned long long*>(p.error)) == CPUGPU_NO_ERROR;
        if (moves) scatter_move<V, I>(p, ok, true);
        if (last_block_done(reinterpret_cast<unsigned long long*>(p.ctl) + CPUGPU_CTL_DONE)) {
            if (threadIdx.x == 0) capture_and_rearm<I>(p.error, p.capture, p.indices, p.n_indices);
        }
    }
}

}  // namespace cpugpu

extern "C" __global__ void scatter_winners_i32(const CpugpuScatterWinnersParams p) { cpugpu::scatter_winners_body<int32_t>(p); }
extern "C" __global__ void scatter_winners_i64(const CpugpuScatterWinnersParams p) { cpugpu::scatter_winners_body<int64_t>(p); }

extern "C" __global__ void CPUGPU_MOVE_BOUNDS scatter_rows_w1_i32(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<1, int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS scatter_rows_w2_i32(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<2, int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS scatter_rows_w4_i32(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<4, int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS scatter_rows_w8_i32(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<8, int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS scatter_rows_w16_i32(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<16, int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS scatter_rows_w1_i64(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<1, int64_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS scatter_rows_w2_i64(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<2, int64_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS scatter_rows_w4_i64(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<4, int64_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS scatter_rows_w8_i64(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<8, int64_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS scatter_rows_w16_i64(const CpugpuScatterRowsParams p) { cpugpu::scatter_rows_body<16, int64_t>(p); }
