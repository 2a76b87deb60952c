// Segment expansion (CSR to COO): from n per-segment counts (or n + 1 offsets) and optional
// per-segment start values, every element i of the `total` outputs gets its segment s and the
// position starts[s] + (i - offsets[s]). vLLM's request index and position of every token, and
// repeat_interleave.
//
// Three launches, no host synchronisation:
// - expand_scan: one block walks the n segments in tiles of blockDim.x: validates them and writes
//   the n + 1 offsets (0-based, int64) into a scratch array. n is a request count (hundreds to a
//   few thousand), so one block is enough; the element-wide work is in expand_write.
// - expand_write: one thread per output element, which finds its segment by binary search in the
//   scratch offsets (balanced whatever the segment sizes); writes nothing when the error word is set.
// - expand_capture: the first error's position, code and values into the read-out slot.
//
// Error codes, by position (the segment, or the offsets' index in the offsets form):
//   1 a negative count (counts) / a negative offsets[0] (offsets)
//   2 offsets[q] < offsets[q - 1] (offsets)
//   3 the segment's last position passes pos_limit (counts: at s, offsets: at q = s + 1)
//   4 the segments' total is not `total` (at n in the counts form, n + 1 in the offsets form)
#include "prep_common.cuh"

namespace cpugpu {

constexpr unsigned EXPAND_NEGATIVE = 1, EXPAND_NOT_MONOTONIC = 2, EXPAND_OVERFLOW = 3, EXPAND_TOTAL = 4;

__device__ __forceinline__ long long expand_start(const CpugpuExpandParams& p, long long s) {
    return p.starts == nullptr ? 0 : prep_load(p.starts, s, p.pos_i64 != 0);
}

__device__ __forceinline__ void expand_scan_body(const CpugpuExpandParams& p) {
    auto* error = reinterpret_cast<unsigned long long*>(p.error);
    const bool b64 = p.bounds_i64 != 0;
    const long long n = p.n;
    if (p.is_offsets != 0) {
        const long long o0 = prep_load(p.bounds, 0, b64);
        for (long long q = threadIdx.x; q <= n; q += blockDim.x) {
            const long long o = prep_load(p.bounds, q, b64);
            if (q == 0) {
                if (o < 0) prep_report(error, 0, EXPAND_NEGATIVE);
            } else {
                const long long prev = prep_load(p.bounds, q - 1, b64);
                if (o < prev) {
                    prep_report(error, q, EXPAND_NOT_MONOTONIC);
                } else if (o > prev) {
                    const unsigned long long count =
                        static_cast<unsigned long long>(o) - static_cast<unsigned long long>(prev);
                    if (prep_run_overflows(expand_start(p, q - 1), count, p.pos_limit)) {
                        prep_report(error, q, EXPAND_OVERFLOW);
                    }
                }
            }
            // Wrapping subtraction: garbage only where an error is reported (and nothing is written).
            p.offs[q] = static_cast<long long>(static_cast<unsigned long long>(o) - static_cast<unsigned long long>(o0));
        }
        if (threadIdx.x == 0 && o0 >= 0) {
            const unsigned long long total =
                static_cast<unsigned long long>(prep_load(p.bounds, n, b64)) - static_cast<unsigned long long>(o0);
            if (total != static_cast<unsigned long long>(p.total)) prep_report(error, n + 1, EXPAND_TOTAL);
        }
        return;
    }
    // Counts: a block-wide scan per tile, sums saturating at INT64_MAX (a total that large is a
    // mismatch anyway), negative counts taken as 0 after being reported.
    const unsigned long long cap = 0x7fffffffffffffffull;
    unsigned long long carry = 0;  // the same in every thread: the tiles' totals so far
    if (threadIdx.x == 0) p.offs[0] = 0;
    for (long long base = 0; base < n; base += blockDim.x) {
        const long long i = base + threadIdx.x;
        long long c = 0;
        if (i < n) {
            c = prep_load(p.bounds, i, b64);
            if (c < 0) {
                prep_report(error, i, EXPAND_NEGATIVE);
            } else if (c > 0 && prep_run_overflows(expand_start(p, i), static_cast<unsigned long long>(c), p.pos_limit)) {
                prep_report(error, i, EXPAND_OVERFLOW);
            }
        }
        const unsigned long long v = c < 0 ? 0 : static_cast<unsigned long long>(c);
        unsigned long long tile_total = 0;
        const unsigned long long excl = block_exclusive_scan(v, cap, &tile_total);
        if (i < n) p.offs[i + 1] = static_cast<long long>(sat_add(carry, sat_add(excl, v, cap), cap));
        carry = sat_add(carry, tile_total, cap);
    }
    if (threadIdx.x == 0 && carry != static_cast<unsigned long long>(p.total)) prep_report(error, n, EXPAND_TOTAL);
}

__device__ __forceinline__ void expand_write_body(const CpugpuExpandParams& p) {
    if (*p.error != CPUGPU_NO_ERROR) return;  // set by expand_scan
    const bool s64 = p.seg_i64 != 0;
    const bool p64 = p.pos_i64 != 0;
    for (long long i = global_thread(); i < p.total; i += total_threads()) {
        const long long s = prep_segment_of(p.offs, true, 0, p.n - 1, i);
        prep_store(p.seg_ids, i, s, s64);
        prep_store(p.positions, i, expand_start(p, s) + (i - p.offs[s]), p64);
    }
}

__device__ __forceinline__ void expand_capture_body(const CpugpuExpandParams& p) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const unsigned long long key = *p.error;
    long long v0 = 0, v1 = 0;
    if (key != CPUGPU_NO_ERROR) {
        const long long pos = static_cast<long long>(key >> CPUGPU_CODE_BITS);
        const unsigned code = static_cast<unsigned>(key & ((1u << CPUGPU_CODE_BITS) - 1));
        const bool b64 = p.bounds_i64 != 0;
        if (code == EXPAND_NEGATIVE) {
            v0 = prep_load(p.bounds, pos, b64);
        } else if (code == EXPAND_NOT_MONOTONIC) {
            v0 = prep_load(p.bounds, pos, b64);
            v1 = prep_load(p.bounds, pos - 1, b64);
        } else if (code == EXPAND_TOTAL) {
            v0 = p.is_offsets != 0 ? static_cast<long long>(static_cast<unsigned long long>(prep_load(p.bounds, p.n, b64)) -
                                                            static_cast<unsigned long long>(prep_load(p.bounds, 0, b64)))
                                   : p.offs[p.n];
        }
    }
    prep_write_report(p.error, p.report, key, v0, v1, 0);
}

}  // namespace cpugpu

extern "C" __global__ void expand_scan(const CpugpuExpandParams p) { cpugpu::expand_scan_body(p); }
extern "C" __global__ void expand_write(const CpugpuExpandParams p) { cpugpu::expand_write_body(p); }
extern "C" __global__ void expand_capture(const CpugpuExpandParams p) { cpugpu::expand_capture_body(p); }
