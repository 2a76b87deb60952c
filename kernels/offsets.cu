// Prefix-sum offsets: n lengths to n + 1 offsets, offsets[0] = 0, with negative lengths and
// overflow of the offset type detected on the device.
//
// Algorithm: reduce-then-scan over tiles of CPUGPU_SCAN_BLOCK * CPUGPU_SCAN_ITEMS_PER_THREAD
// (4,096) lengths.
// - n <= one tile (batch-sized inputs): offsets_single_<L>_<O>, one launch, one block.
// - larger n: offsets_reduce_<L> (tile sums), offsets_scan_tiles (one block: exclusive prefixes
//   of the tile sums, the total and an error flag), offsets_downsweep_<L>_<O> (each tile
//   rescans its lengths from its prefix and writes). Three launches, no host synchronisation.
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

// The downsweep is the bandwidth-bound pass of a large scan: ask for at most 80 registers
// (3 blocks of 256 threads per SM instead of 2; 4 blocks, 64 registers, spills on sm_80),
// checked spill-free by .ci/kernel-static-checks.
#define CPUGPU_SCAN_BOUNDS __launch_bounds__(CPUGPU_SCAN_BLOCK, 3)
__device__ __forceinline__ long long scan_slot(long long i) { return i + (i >> 4); }

__device__ __forceinline__ unsigned long long scan_cap(const CpugpuOffsetsParams& p) {
    return static_cast<unsigned long long>(p.limit) + 1ull;
}

__device__ __forceinline__ void report(const CpugpuOffsetsParams& p, long long position) {
    atomicMin(reinterpret_cast<unsigned long long*>(p.error), static_cast<unsigned long long>(position));
}

// Scans tile `tile` starting from `prefix` (the saturated sum of all earlier lengths).
// single: the block is the whole job; it reports negatives itself and decides alone whether to
// write. Otherwise negatives were reported by offsets_reduce and `may_write` says whether the
// whole job is error-free. Every thread of the block must call it.
template <class L, class O>
__device__ __forceinline__ void scan_tile(const CpugpuOffsetsParams& p, unsigned long long* smem, long long tile,
                                          unsigned long long prefix, bool single, bool may_write) {
    const unsigned long long cap = scan_cap(p);
    const long long tile_items = static_cast<long long>(blockDim.x) * SCAN_ITEMS;
    const long long base = tile * tile_items;
    const long long count = p.n - base < tile_items ? p.n - base : tile_items;
    const L* lengths = static_cast<const L*>(p.lengths);

    int negative = 0;
    for (int k = 0; k < SCAN_ITEMS; ++k) {
        const long long j = static_cast<long long>(k) * blockDim.x + threadIdx.x;
        unsigned long long v = 0;
        if (j < count) {
            const long long len = static_cast<long long>(__ldg(lengths + base + j));
            if (len < 0) {
                negative = 1;
                if (single) report(p, base + j);
            } else {
                v = static_cast<unsigned long long>(len) < cap ? static_cast<unsigned long long>(len) : cap;
            }
        }
        smem[scan_slot(j)] = v;
    }
    const int any_negative = __syncthreads_or(negative);

    const long long mine = static_cast<long long>(threadIdx.x) * SCAN_ITEMS;
    unsigned long long sum = 0;
    for (int k = 0; k < SCAN_ITEMS; ++k) sum = sat_add(sum, smem[scan_slot(mine + k)], cap);
    unsigned long long block_total = 0;
    unsigned long long running = sat_add(prefix, block_exclusive_scan(sum, cap, &block_total), cap);
    for (int k = 0; k < SCAN_ITEMS; ++k) {
        const unsigned long long before = running;
        running = sat_add(running, smem[scan_slot(mine + k)], cap);
        if (mine + k < count && running > static_cast<unsigned long long>(p.limit) &&
            before <= static_cast<unsigned long long>(p.limit)) {
            report(p, base + mine + k);  // the offset after this length is the first too large
        }
        smem[scan_slot(mine + k)] = running;
    }
    if (single) {
        may_write = !any_negative && sat_add(prefix, block_total, cap) <= static_cast<unsigned long long>(p.limit);
    }
    __syncthreads();
    if (may_write) {
        O* offsets = static_cast<O*>(p.offsets);
        if (tile == 0 && threadIdx.x == 0) offsets[0] = 0;
        for (int k = 0; k < SCAN_ITEMS; ++k) {
            const long long j = static_cast<long long>(k) * blockDim.x + threadIdx.x;
            if (j < count) offsets[base + j + 1] = static_cast<O>(smem[scan_slot(j)]);
        }
    }
    __syncthreads();  // smem is reused by the next tile
}

template <class L, class O>
__device__ __forceinline__ void offsets_single_body(const CpugpuOffsetsParams& p) {
    CPUGPU_DYNAMIC_SHARED(unsigned long long, smem);
    scan_tile<L, O>(p, smem, 0, 0, true, false);
}

template <class L>
__device__ __forceinline__ void offsets_reduce_body(const CpugpuOffsetsParams& p) {
    const unsigned long long cap = scan_cap(p);
    const long long tile_items = static_cast<long long>(blockDim.x) * SCAN_ITEMS;
    const L* lengths = static_cast<const L*>(p.lengths);
    for (long long tile = blockIdx.x; tile < p.tiles; tile += gridDim.x) {
        const long long base = tile * tile_items;
        const long long end = p.n - base < tile_items ? p.n : base + tile_items;
        unsigned long long sum = 0;
        for (long long i = base + threadIdx.x; i < end; i += blockDim.x) {
            const long long len = static_cast<long long>(__ldg(lengths + i));
            if (len < 0) {
                report(p, i);
            } else {
                sum = sat_add(sum, static_cast<unsigned long long>(len) < cap ? static_cast<unsigned long long>(len) : cap, cap);
            }
        }
        unsigned long long total = 0;
        block_exclusive_scan(sum, cap, &total);
        if (threadIdx.x == 0) p.tile_sums[tile] = total;
    }
}

// One block. tile_sums[t] becomes the exclusive prefix of tile t; tile_sums[tiles] the total;
// tile_sums[tiles + 1] is 1 when the job has an error (a negative length was reported by the
// reduce pass, or the total exceeds limit), so the downsweep knows without reading the error
// word it may itself be updating.
__device__ __forceinline__ void offsets_scan_tiles_body(const CpugpuOffsetsParams& p) {
    const unsigned long long cap = scan_cap(p);
    unsigned long long carry = 0;
    for (long long base = 0; base < p.tiles; base += blockDim.x) {
        const long long t = base + threadIdx.x;
        const unsigned long long v = t < p.tiles ? p.tile_sums[t] : 0;
        unsigned long long chunk_total = 0;
        const unsigned long long excl = block_exclusive_scan(v, cap, &chunk_total);
        if (t < p.tiles) p.tile_sums[t] = sat_add(carry, excl, cap);
        carry = sat_add(carry, chunk_total, cap);
    }
    if (threadIdx.x == 0) {
        p.tile_sums[p.tiles] = carry;
        const bool error = *p.error != CPUGPU_NO_ERROR || carry > static_cast<unsigned long long>(p.limit);
        p.tile_sums[p.tiles + 1] = error ? 1 : 0;
    }
}

template <class L, class O>
__device__ __forceinline__ void offsets_downsweep_body(const CpugpuOffsetsParams& p) {
    CPUGPU_DYNAMIC_SHARED(unsigned long long, smem);
    const bool may_write = p.tile_sums[p.tiles + 1] == 0;
    for (long long tile = blockIdx.x; tile < p.tiles; tile += gridDim.x) {
        scan_tile<L, O>(p, smem, tile, p.tile_sums[tile], false, may_write);
    }
}

}  // namespace cpugpu

extern "C" __global__ void offsets_single_i32_i32(const CpugpuOffsetsParams p) { cpugpu::offsets_single_body<int32_t, int32_t>(p); }
extern "C" __global__ void offsets_single_i32_i64(const CpugpuOffsetsParams p) { cpugpu::offsets_single_body<int32_t, int64_t>(p); }
extern "C" __global__ void offsets_single_i64_i32(const CpugpuOffsetsParams p) { cpugpu::offsets_single_body<int64_t, int32_t>(p); }
extern "C" __global__ void offsets_single_i64_i64(const CpugpuOffsetsParams p) { cpugpu::offsets_single_body<int64_t, int64_t>(p); }
extern "C" __global__ void offsets_reduce_i32(const CpugpuOffsetsParams p) { cpugpu::offsets_reduce_body<int32_t>(p); }
extern "C" __global__ void offsets_reduce_i64(const CpugpuOffsetsParams p) { cpugpu::offsets_reduce_body<int64_t>(p); }
extern "C" __global__ void offsets_scan_tiles(const CpugpuOffsetsParams p) { cpugpu::offsets_scan_tiles_body(p); }
extern "C" __global__ void CPUGPU_SCAN_BOUNDS offsets_downsweep_i32_i32(const CpugpuOffsetsParams p) { cpugpu::offsets_downsweep_body<int32_t, int32_t>(p); }
extern "C" __global__ void CPUGPU_SCAN_BOUNDS offsets_downsweep_i32_i64(const CpugpuOffsetsParams p) { cpugpu::offsets_downsweep_body<int32_t, int64_t>(p); }
extern "C" __global__ void CPUGPU_SCAN_BOUNDS offsets_downsweep_i64_i32(const CpugpuOffsetsParams p) { cpugpu::offsets_downsweep_body<int64_t, int32_t>(p); }
extern "C" __global__ void CPUGPU_SCAN_BOUNDS offsets_downsweep_i64_i64(const CpugpuOffsetsParams p) { cpugpu::offsets_downsweep_body<int64_t, int64_t>(p); }
