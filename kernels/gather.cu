// Gather rows (dst[i, :] = src[indices[i], :]) and the index validation shared with scatter.
//
// Batch sizes (n up to CPUGPU's small-batch threshold, src/kernels/launch.rs): one launch,
// gather_rows_w<V>_<idx> with self_check set. Every block checks every index itself (a few
// thousand cached loads), so either all blocks move their rows or none does, with no grid-wide
// synchronisation; block 0 writes the operation's read-out slot.
//
// Large n: validate_indices_<idx> records the first bad position in the queue's error word; then
// gather_rows_w<V>_<idx> moves the rows only when the word is clear, and its last block (counted
// in ctl[DONE]) writes the read-out slot and re-arms the word. Two launches, no host
// synchronisation. The copy never dereferences an index outside 0..src_rows either way.
//
// Layout of the copy: a group of lanes_per_row consecutive threads (1, 2, ..., 32, a power of
// two picked by Rust from the row size) handles a row. Narrow rows (at most lanes_per_row units):
// each thread takes `items` rows per iteration, reads all their indices, then loads all their
// units into registers, then stores them (CUB's BlockLoad/BlockStore order: `items` loads in
// flight per thread). Wide rows (a warp per row): each lane loads `items` units of the row before
// storing any, and the next row's index is read while this one moves. Every access is a V-byte
// unit (uint4 for V = 16).
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
__device__ __forceinline__ void gather_move(const CpugpuGatherRowsParams& p) {
    using U = typename Unit<V>::type;
    constexpr int MAX = MaxItems<V>::value;
    const U* __restrict__ src = static_cast<const U*>(p.src);
    U* __restrict__ dst = static_cast<U*>(p.dst);
    const long long n = p.n_indices;
    const long long units = p.row_units;
    const long long lanes = p.lanes_per_row;
    const unsigned long long rows = p.src_rows;
    const int items = static_cast<int>(p.items);
    const long long t = global_thread();
    const long long lane = t & (lanes - 1);
    const long long groups = total_threads() / lanes;  // blocks are a multiple of 32 threads
    if (units <= lanes) {
        // Narrow rows: `items` rows per thread per iteration.
        for (long long r0 = t / lanes; r0 < n; r0 += groups * items) {
            long long s[MAX];
            U v[MAX] = {};
CPUGPU_UNROLL
            for (int k = 0; k < MAX; ++k) {
                const long long r = r0 + k * groups;
                s[k] = k < items && r < n ? load_index<I>(p.indices, r) : 0;
            }
CPUGPU_UNROLL
            for (int k = 0; k < MAX; ++k) {
                const long long r = r0 + k * groups;
                if (k < items && r < n && lane < units) {
                    v[k] = s[k] >= 0 && static_cast<unsigned long long>(s[k]) < rows ? __ldg(src + s[k] * units + lane)
                                                                                    : fill_unit<V>(p.fill, lane);
                }
            }
CPUGPU_UNROLL
            for (int k = 0; k < MAX; ++k) {
                const long long r = r0 + k * groups;
                // A negative index writes the fill (NegativeFill; Checked rejected negatives); an
                // index past the rows cannot get here (validated) and writes nothing.
                if (k < items && r < n && lane < units && (s[k] < 0 || static_cast<unsigned long long>(s[k]) < rows)) {
                    dst[r * units + lane] = v[k];
                }
            }
        }
    } else {
        // Wide rows: a warp per row, `items` units per lane in flight.
        long long r = t / lanes;
        long long s = r < n ? load_index<I>(p.indices, r) : 0;
        for (; r < n; r += groups) {
            const long long next = r + groups;
            const long long s_next = next < n ? load_index<I>(p.indices, next) : 0;  // read ahead
            const bool copy = s >= 0 && static_cast<unsigned long long>(s) < rows;
            const bool write = copy || s < 0;
            const U* row = src + (copy ? s : 0) * units;
            U* d = dst + r * units;
            for (long long c0 = lane; c0 < units; c0 += lanes * items) {
                U v[MAX] = {};
CPUGPU_UNROLL
                for (int k = 0; k < MAX; ++k) {
                    const long long c = c0 + k * lanes;
                    if (k < items && c < units) v[k] = copy ? __ldg(row + c) : fill_unit<V>(p.fill, c);
                }
CPUGPU_UNROLL
                for (int k = 0; k < MAX; ++k) {
                    const long long c = c0 + k * lanes;
                    if (k < items && c < units && write) d[c] = v[k];
                }
            }
            s = s_next;
        }
    }
}

template <int V, class I>
__device__ __forceinline__ void gather_rows_body(const CpugpuGatherRowsParams& p) {
    bool ok;
    if (p.self_check != 0) {
        const unsigned long long bad = block_first_bad<I>(p.indices, p.n_indices, p.src_rows, p.allow_negative != 0);
        if (blockIdx.x == 0 && threadIdx.x == 0) write_capture<I>(p.capture, bad, p.indices, p.n_indices);
        ok = bad == CPUGPU_NO_ERROR;
    } else {
        // Set by validate_indices in the launch before; re-armed below only after every block
        // has read it.
        ok = load_relaxed(reinterpret_cast<const unsigned long long*>(p.error)) == CPUGPU_NO_ERROR;
    }
    if (ok && p.row_units > 0) gather_move<V, I>(p);
    if (p.self_check == 0 && last_block_done(reinterpret_cast<unsigned long long*>(p.ctl) + CPUGPU_CTL_DONE)) {
        if (threadIdx.x == 0) capture_and_rearm<I>(p.error, p.capture, p.indices, p.n_indices);
    }
}

}  // namespace cpugpu

extern "C" __global__ void validate_indices_i32(const CpugpuValidateParams p) { cpugpu::validate_indices_body<int32_t>(p); }
extern "C" __global__ void validate_indices_i64(const CpugpuValidateParams p) { cpugpu::validate_indices_body<int64_t>(p); }

extern "C" __global__ void CPUGPU_MOVE_BOUNDS gather_rows_w1_i32(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<1, int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS gather_rows_w2_i32(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<2, int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS gather_rows_w4_i32(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<4, int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS gather_rows_w8_i32(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<8, int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS gather_rows_w16_i32(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<16, int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS gather_rows_w1_i64(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<1, int64_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS gather_rows_w2_i64(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<2, int64_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS gather_rows_w4_i64(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<4, int64_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS gather_rows_w8_i64(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<8, int64_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS gather_rows_w16_i64(const CpugpuGatherRowsParams p) { cpugpu::gather_rows_body<16, int64_t>(p); }
