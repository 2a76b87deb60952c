// Prefix-sum offsets: n lengths to n + 1 offsets, offsets[0] = 0, with negative lengths and
// overflow of the offset type detected on the device.
//
// Tiles are CPUGPU_SCAN_BLOCK * CPUGPU_SCAN_ITEMS_PER_THREAD (4,096) lengths.
// - n <= one tile (batch-sized inputs): offsets_single_<L>_<O>, one launch, one block, which
//   also writes the operation's read-out slot.
// - larger n: a single-pass scan with decoupled look-back (Merrill and Garland, "Single-pass
//   Parallel Prefix Scan with Decoupled Look-back", 2016; CUB's DeviceScan):
//   offsets_lookback_<L>_<O> reads each length once, publishes each tile's sum, finds its tile's
//   prefix from the sums and prefixes earlier tiles published, and writes. Before it,
//   offsets_check_<L> reads the lengths once more to learn whether there is any error, because
//   the operation promises to write nothing when there is one and a single pass learns of a late
//   error only after earlier tiles have written: the check costs 4n (i32) of the 16n bytes moved
//   for i32 lengths and i64 offsets, against 4n + 4n + 8n read, written and reread by the old
//   reduce-then-scan plus its one-block middle pass (BENCHMARKS.md, the bandwidth model).
// Sums saturate at limit + 1 (limit = the offset type's maximum), which is associative for
// non-negative values, so an overflow is seen wherever it happens. Negative lengths count as 0
// and their position goes to the error word; so does the position after which the running
// offset first exceeds limit. The smaller wins (atomicMin), which is the first error a
// sequential scan meets. When there is any error nothing is written to offsets, as on the host.
//
// A tile is loaded striped (coalesced) into dynamic shared memory and scanned blocked: each
// thread owns ITEMS consecutive lengths; block_exclusive_scan combines the threads' sums.
#include "common.cuh"

namespace cpugpu {

constexpr int SCAN_ITEMS = CPUGPU_SCAN_ITEMS_PER_THREAD;

// Shared-memory slot of tile item i: one padding word after every 16 items. Thread t works on
// items 16t .. 16t + 15; unpadded, a warp's 8-byte accesses to item 16t + k all fall in the same
// bank (a 128-byte stride), a 16- to 32-way conflict. Padded, item 16t + k sits at word
// 17t + k, whose bank pair (17t + k) mod 16 differs across any 16 consecutive threads; the
// coalesced phase (item k * blockDim + t) stays conflict-free too. The tile needs
// tile + tile / 16 words (src/kernels/launch.rs, scan_plan).
static_assert(SCAN_ITEMS == 16, "the padding below assumes 16 items per thread");

// The look-back scan is the bandwidth-bound pass of a large scan: at most 85 registers, 3 blocks
// of 256 threads per SM (shared memory allows 6; 4 blocks, 64 registers, spilled on sm_80 in
// the old downsweep), checked spill-free by .ci/kernel-static-checks.
#define CPUGPU_SCAN_BOUNDS __launch_bounds__(CPUGPU_SCAN_BLOCK, 3)
// With 64-bit lengths the look-back scan needs more registers than 85: 2 blocks per SM (512
// threads, each with 64 bytes of lengths in flight: 32 KiB per SM).
#define CPUGPU_SCAN_BOUNDS_L64 __launch_bounds__(CPUGPU_SCAN_BLOCK, 2)
__device__ __forceinline__ long long scan_slot(long long i) { return i + (i >> 4); }

__device__ __forceinline__ unsigned long long scan_cap(const CpugpuOffsetsParams& p) {
    return static_cast<unsigned long long>(p.limit) + 1ull;
}

__device__ __forceinline__ void report(const CpugpuOffsetsParams& p, long long position) {
    auto* error = reinterpret_cast<unsigned long long*>(p.error);
    if (load_relaxed(error) > static_cast<unsigned long long>(position)) {
        atomicMin(error, static_cast<unsigned long long>(position));
    }
}

// A length clamped into the saturating sums: negatives count as 0 (and are reported by the
// caller), anything at or above cap as cap.
template <class L>
__device__ __forceinline__ unsigned long long clamp_length(L len, unsigned long long cap) {
    if (len < 0) return 0;
    const auto v = static_cast<unsigned long long>(len);
    return v < cap ? v : cap;
}

// Loads the `count` lengths of the tile at `base` striped into smem (16 loads in flight per
// thread), reporting negative ones; returns this thread's saturated sum of its 16 items
// (blocked) and whether any of its loads was negative. Every thread of the block must call it.
template <class L>
__device__ __forceinline__ unsigned long long load_tile(const CpugpuOffsetsParams& p, unsigned long long* smem,
                                                        long long base, long long count, int* negative) {
    const unsigned long long cap = scan_cap(p);
    const L* lengths = static_cast<const L*>(p.lengths) + base;
    // 64 bytes of lengths in flight per thread: 16 i32 or 8 i64 (two rounds), all loaded before
    // any is stored into shared memory.
    constexpr int BATCH = sizeof(L) == 8 ? SCAN_ITEMS / 2 : SCAN_ITEMS;
    int neg = 0;
CPUGPU_UNROLL
    for (int b = 0; b < SCAN_ITEMS; b += BATCH) {
        L v[BATCH];
CPUGPU_UNROLL
        for (int k = 0; k < BATCH; ++k) {
            const long long j = static_cast<long long>(b + k) * blockDim.x + threadIdx.x;
            v[k] = j < count ? __ldg(lengths + j) : L(0);
        }
CPUGPU_UNROLL
        for (int k = 0; k < BATCH; ++k) {
            const long long j = static_cast<long long>(b + k) * blockDim.x + threadIdx.x;
            if (v[k] < 0) {
                neg = 1;
                report(p, base + j);
            }
            smem[scan_slot(j)] = clamp_length(v[k], cap);
        }
    }
    *negative = neg;
    __syncthreads();
    const long long mine = static_cast<long long>(threadIdx.x) * SCAN_ITEMS;
    unsigned long long sum = 0;
CPUGPU_UNROLL
    for (int k = 0; k < SCAN_ITEMS; ++k) sum = sat_add(sum, smem[scan_slot(mine + k)], cap);
    return sum;
}

// Finishes the tile at `base` (`count` lengths, in smem): this thread's items get their running
// offsets from `start` (the saturated sum of every length before them), the first offset past
// the limit is reported, and the offsets are written (striped, coalesced) when `may_write`.
// Every thread of the block must call it.
template <class O>
__device__ __forceinline__ void finish_tile(const CpugpuOffsetsParams& p, unsigned long long* smem, long long base,
                                            long long count, unsigned long long start, bool may_write) {
    const unsigned long long cap = scan_cap(p);
    const auto limit = static_cast<unsigned long long>(p.limit);
    const long long mine = static_cast<long long>(threadIdx.x) * SCAN_ITEMS;
    unsigned long long running = start;
CPUGPU_UNROLL
    for (int k = 0; k < SCAN_ITEMS; ++k) {
        const unsigned long long before = running;
        running = sat_add(running, smem[scan_slot(mine + k)], cap);
        if (mine + k < count && running > limit && before <= limit) {
            report(p, base + mine + k);  // the offset after this length is the first too large
        }
        smem[scan_slot(mine + k)] = running;
    }
    __syncthreads();
    if (may_write) {
        O* offsets = static_cast<O*>(p.offsets) + base;
        if (base == 0 && threadIdx.x == 0) offsets[0] = 0;
CPUGPU_UNROLL
        for (int k = 0; k < SCAN_ITEMS; ++k) {
            const long long j = static_cast<long long>(k) * blockDim.x + threadIdx.x;
            if (j < count) offsets[j + 1] = static_cast<O>(smem[scan_slot(j)]);
        }
    }
    __syncthreads();  // smem is reused by the next tile
}

template <class L, class O>
__device__ __forceinline__ void offsets_single_body(const CpugpuOffsetsParams& p) {
    CPUGPU_DYNAMIC_SHARED(unsigned long long, smem);
    const unsigned long long cap = scan_cap(p);
    int negative = 0;
    const unsigned long long sum = load_tile<L>(p, smem, 0, p.n, &negative);
    const int any_negative = __syncthreads_or(negative);
    unsigned long long total = 0;
    const unsigned long long excl = block_exclusive_scan(sum, cap, &total);
    const bool may_write = !any_negative && total <= static_cast<unsigned long long>(p.limit);
    finish_tile<O>(p, smem, 0, p.n, excl, may_write);
    // Every report of this launch was made before finish_tile's last barrier.
    if (threadIdx.x == 0) capture_and_rearm<L>(p.error, p.capture, p.lengths, p.n);
}

// Pass 1 of a large scan: negative lengths are reported (one atomic per warp that saw one), and
// each block adds its saturated sum into ctl[SUM], so that pass 2 knows before it writes anything
// whether the job has an error (ctl[SUM] > limit, or the error word set).
template <class L>
__device__ __forceinline__ void offsets_check_body(const CpugpuOffsetsParams& p) {
    constexpr int K = 8;
    const unsigned long long cap = scan_cap(p);
    const L* lengths = static_cast<const L*>(p.lengths);
    const long long stride = total_threads();
    unsigned long long sum = 0;
    unsigned long long first_negative = CPUGPU_NO_ERROR;
    for (long long base = global_thread(); base < p.n; base += K * stride) {
        L v[K];
CPUGPU_UNROLL
        for (int k = 0; k < K; ++k) {
            const long long i = base + k * stride;
            v[k] = i < p.n ? __ldg(lengths + i) : L(0);
        }
CPUGPU_UNROLL
        for (int k = 0; k < K; ++k) {
            const long long i = base + k * stride;
            if (v[k] < 0 && first_negative == CPUGPU_NO_ERROR) first_negative = static_cast<unsigned long long>(i);
            sum = sat_add(sum, clamp_length(v[k], cap), cap);
        }
    }
    // The warp's first negative position, reported by one lane.
    for (int d = 16; d > 0; d >>= 1) {
        const unsigned long long other = __shfl_xor_sync(FULL_MASK, first_negative, d);
        first_negative = other < first_negative ? other : first_negative;
    }
    if (threadIdx.x % 32 == 0 && first_negative != CPUGPU_NO_ERROR) report(p, static_cast<long long>(first_negative));
    unsigned long long block_sum = 0;
    block_exclusive_scan(sum, cap, &block_sum);
    if (threadIdx.x == 0 && block_sum > 0) {
        auto* total = reinterpret_cast<unsigned long long*>(p.ctl) + CPUGPU_CTL_SUM;
        unsigned long long old = load_relaxed(total);
        for (;;) {
            const unsigned long long want = sat_add(old, block_sum, cap);
            if (want == old) break;  // already saturated
            const unsigned long long seen = atomicCAS(total, old, want);
            if (seen == old) break;
            old = seen;
        }
    }
}

// The tile's exclusive prefix by decoupled look-back, run by warp 0 of the block that took tile
// `tile` (> 0) after it published the tile's sum: lane l examines tile j - l of a window of 32
// tiles ending at j = tile - 1. The window is waited for until every tile in it has published
// something; the closest tile with a published inclusive prefix ends the search, and the sums
// of the tiles after it (or of the whole window, which then moves 32 tiles back) are added.
// Only tiles that blocks took earlier (ctl[TILE] hands them out in start order) are waited for.
__device__ __forceinline__ unsigned long long look_back(const CpugpuOffsetsParams& p, long long tile) {
    const unsigned long long cap = scan_cap(p);
    const unsigned long long epoch = static_cast<unsigned long long>(p.epoch) << 2;
    auto* state = reinterpret_cast<unsigned long long*>(p.tile_state);
    const long long lane = threadIdx.x % 32;
    unsigned long long prefix = 0;
    for (long long j = tile - 1;; j -= 32) {
        const long long mine = j - lane;
        unsigned long long status = epoch | 2;  // before tile 0: an inclusive prefix of 0
        for (;;) {
            if (mine >= 0) status = load_acquire(state + 3 * mine);
            const bool published = (status & ~3ull) == epoch && (status & 3) != 0;
            if (__all_sync(FULL_MASK, published)) break;
            __nanosleep(64);
        }
        const bool inclusive = (status & 3) == 2;
        const unsigned long long value = mine >= 0 ? load_relaxed(state + 3 * mine + (inclusive ? 2 : 1)) : 0;
        const unsigned found = __ballot_sync(FULL_MASK, inclusive);
        const long long last = found != 0 ? __ffs(found) - 1 : 31;  // lanes 0..last count
        unsigned long long part = lane <= last ? value : 0;
        for (int d = 16; d > 0; d >>= 1) part = sat_add(part, __shfl_xor_sync(FULL_MASK, part, d), cap);
        prefix = sat_add(prefix, part, cap);
        if (found != 0) return prefix;
    }
}

template <class L, class O>
__device__ __forceinline__ void offsets_lookback_body(const CpugpuOffsetsParams& p) {
    CPUGPU_DYNAMIC_SHARED(unsigned long long, smem);
    CPUGPU_SHARED(long long, shared_tile, 1);
    CPUGPU_SHARED(unsigned long long, shared_prefix, 1);
    const unsigned long long cap = scan_cap(p);
    auto* ctl = reinterpret_cast<unsigned long long*>(p.ctl);
    auto* state = reinterpret_cast<unsigned long long*>(p.tile_state);
    const unsigned long long epoch = static_cast<unsigned long long>(p.epoch) << 2;
    const long long tile_items = static_cast<long long>(blockDim.x) * SCAN_ITEMS;
    // Pass 1 has finished: with any error (a negative length reported, or a total past the
    // limit) no block writes. This launch's own reports only repeat errors pass 1 saw, so every
    // block reaches the same verdict.
    const bool may_write = load_relaxed(reinterpret_cast<const unsigned long long*>(p.error)) == CPUGPU_NO_ERROR &&
                           load_relaxed(ctl + CPUGPU_CTL_SUM) <= static_cast<unsigned long long>(p.limit);
    for (;;) {
        if (threadIdx.x == 0) shared_tile[0] = static_cast<long long>(atomicAdd(ctl + CPUGPU_CTL_TILE, 1ull));
        __syncthreads();
        const long long tile = shared_tile[0];
        if (tile >= p.tiles) break;
        const long long base = tile * tile_items;
        const long long count = p.n - base < tile_items ? p.n - base : tile_items;
        int negative = 0;
        const unsigned long long sum = load_tile<L>(p, smem, base, count, &negative);
        unsigned long long tile_sum = 0;
        const unsigned long long excl = block_exclusive_scan(sum, cap, &tile_sum);
        if (threadIdx.x < 32) {
            unsigned long long prefix = 0;
            if (tile > 0) {
                if (threadIdx.x == 0) {
                    state[3 * tile + 1] = tile_sum;
                    store_release(state + 3 * tile, epoch | 1);
                }
                prefix = look_back(p, tile);
            }
            if (threadIdx.x == 0) {
                state[3 * tile + 2] = sat_add(prefix, tile_sum, cap);
                store_release(state + 3 * tile, epoch | 2);
                shared_prefix[0] = prefix;
            }
        }
        __syncthreads();
        finish_tile<O>(p, smem, base, count, sat_add(shared_prefix[0], excl, cap), may_write);
    }
    if (last_block_done(ctl + CPUGPU_CTL_DONE) && threadIdx.x == 0) {
        // Every block has taken its last tile and made its last report.
        capture_and_rearm<L>(p.error, p.capture, p.lengths, p.n);
        store_relaxed(ctl + CPUGPU_CTL_TILE, 0ull);
        store_relaxed(ctl + CPUGPU_CTL_SUM, 0ull);
    }
}

}  // namespace cpugpu

extern "C" __global__ void offsets_single_i32_i32(const CpugpuOffsetsParams p) { cpugpu::offsets_single_body<int32_t, int32_t>(p); }
extern "C" __global__ void offsets_single_i32_i64(const CpugpuOffsetsParams p) { cpugpu::offsets_single_body<int32_t, int64_t>(p); }
extern "C" __global__ void offsets_single_i64_i32(const CpugpuOffsetsParams p) { cpugpu::offsets_single_body<int64_t, int32_t>(p); }
extern "C" __global__ void offsets_single_i64_i64(const CpugpuOffsetsParams p) { cpugpu::offsets_single_body<int64_t, int64_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS offsets_check_i32(const CpugpuOffsetsParams p) { cpugpu::offsets_check_body<int32_t>(p); }
extern "C" __global__ void CPUGPU_MOVE_BOUNDS offsets_check_i64(const CpugpuOffsetsParams p) { cpugpu::offsets_check_body<int64_t>(p); }
extern "C" __global__ void CPUGPU_SCAN_BOUNDS offsets_lookback_i32_i32(const CpugpuOffsetsParams p) { cpugpu::offsets_lookback_body<int32_t, int32_t>(p); }
extern "C" __global__ void CPUGPU_SCAN_BOUNDS offsets_lookback_i32_i64(const CpugpuOffsetsParams p) { cpugpu::offsets_lookback_body<int32_t, int64_t>(p); }
extern "C" __global__ void CPUGPU_SCAN_BOUNDS_L64 offsets_lookback_i64_i32(const CpugpuOffsetsParams p) { cpugpu::offsets_lookback_body<int64_t, int32_t>(p); }
extern "C" __global__ void CPUGPU_SCAN_BOUNDS_L64 offsets_lookback_i64_i64(const CpugpuOffsetsParams p) { cpugpu::offsets_lookback_body<int64_t, int64_t>(p); }
