// Device helpers of the input-preparation kernels (expand.cu, slot_mapping.cu, windows.cu,
// staged_write.cu, step.cu): run-time integer widths, coded error words and binary searches.
// Names carry a `prep_` prefix: nvcc builds every kernels/*.cu as one translation unit.
#ifndef CPUGPU_PREP_COMMON_CUH
#define CPUGPU_PREP_COMMON_CUH

#include "common.cuh"

namespace cpugpu {

// Element i of an int32 (is64 false) or int64 array, widened. These kernels read metadata (counts,
// indices, block numbers), where one uniform branch costs nothing next to the load, and picking
// the width at run time keeps the kernel list to one entry per family instead of one per type
// combination.
__device__ __forceinline__ long long prep_load(const void* p, long long i, bool is64) {
    if (is64) return __ldg(static_cast<const long long*>(p) + i);
    return static_cast<long long>(__ldg(static_cast<const int*>(p) + i));
}

// Stores v as int32 or int64 (v fits: the callers checked it).
__device__ __forceinline__ void prep_store(void* p, long long i, long long v, bool is64) {
    if (is64) {
        static_cast<long long*>(p)[i] = v;
    } else {
        static_cast<int*>(p)[i] = static_cast<int>(v);
    }
}

// Records the coded error (position, code) in the error word unless an earlier one is there. Any
// thread may call it on its own (no warp vote): bad inputs are rare, and the word's relaxed
// pre-check keeps a flood of them to few atomics.
__device__ __forceinline__ void prep_report(unsigned long long* error, long long position, unsigned code) {
    const unsigned long long key = (static_cast<unsigned long long>(position) << CPUGPU_CODE_BITS) | code;
    if (load_relaxed(error) > key) atomicMin(error, key);
}

// True when start + count - 1 > limit for count >= 1 (the last value of a run of `count`
// consecutive values from `start` passes the type's maximum), without overflowing.
__device__ __forceinline__ bool prep_run_overflows(long long start, unsigned long long count, long long limit) {
    if (start > limit) return true;
    const unsigned long long headroom =
        static_cast<unsigned long long>(limit) - static_cast<unsigned long long>(start);
    return count - 1 > headroom;
}

// The last s in [lo, hi] with offsets[s] <= u (offsets non-decreasing, offsets[lo] <= u); the
// offsets are int64 (is64) or int32.
__device__ __forceinline__ long long prep_segment_of(const void* offsets, bool is64, long long lo, long long hi,
                                                     long long u) {
    while (lo < hi) {
        const long long mid = lo + (hi - lo + 1) / 2;
        if (prep_load(offsets, mid, is64) <= u) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// floor(a / b) for b > 0.
// A grid-stride copy of `units` V-byte units in rounds of CPUGPU_MAX_ITEMS_W16 per thread:
// `locate(u, s)` returns unit u's destination index (negative: nothing to copy) and sets s to
// its source index. A round loads every unit it copies before storing any, so each thread keeps
// that many loads in flight (the launches size the grid for 4 units per thread). Thread t copies
// the units u = t (mod total threads), each once.
template <int V, class Locate>
__device__ __forceinline__ void prep_copy_units(const typename Unit<V>::type* src, typename Unit<V>::type* dst,
                                                long long units, Locate locate) {
    using U = typename Unit<V>::type;
    constexpr int N = CPUGPU_MAX_ITEMS_W16;
    const long long stride = total_threads();
    for (long long base = global_thread(); base < units; base += N * stride) {
        long long d[N];
        U v[N] = {};
CPUGPU_UNROLL
        for (int k = 0; k < N; ++k) {
            const long long u = base + k * stride;
            d[k] = -1;
            if (u < units) {
                long long s = 0;
                d[k] = locate(u, s);
                if (d[k] >= 0) v[k] = src[s];
            }
        }
CPUGPU_UNROLL
        for (int k = 0; k < N; ++k) {
            if (d[k] >= 0) dst[d[k]] = v[k];
        }
    }
}

__device__ __forceinline__ long long prep_floor_div(long long a, long long b) {
    const long long q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

// Writes the capture slot: the error word (or "no error") and three values, then re-arms the word.
__device__ __forceinline__ void prep_write_report(uint64_t* error, uint64_t* report, unsigned long long key,
                                                  long long v0, long long v1, long long v2) {
    report[0] = key;
    report[1] = static_cast<uint64_t>(v0);
    report[2] = static_cast<uint64_t>(v1);
    report[3] = static_cast<uint64_t>(v2);
    *error = CPUGPU_NO_ERROR;
}

}  // namespace cpugpu

#endif  // CPUGPU_PREP_COMMON_CUH
