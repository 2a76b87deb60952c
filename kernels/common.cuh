// Shared device helpers of cpugpu's kernels. The one place that picks real CUDA or the CPU
// emulator: everything below the #ifdef is the same source for nvcc and for g++.
#ifndef CPUGPU_COMMON_CUH
#define CPUGPU_COMMON_CUH

// Shared memory is declared with two macros, so that the emulator can give every block its own:
// CPUGPU_SHARED(T, name, N) is `__shared__ T name[N]`, CPUGPU_DYNAMIC_SHARED(T, name) the
// launch's dynamic shared memory (16-byte aligned) as a `T*`.
#ifdef __CUDACC__
#include <stdint.h>
#define CPUGPU_SHARED(T, name, N) __shared__ T name[N]
#define CPUGPU_DYNAMIC_SHARED(T, name)                                  \
    extern __shared__ __align__(16) unsigned char cpugpu_dyn_smem_[];   \
    T* name = reinterpret_cast<T*>(cpugpu_dyn_smem_)
#else
#include "emu/cuda_emu.h"
// A C++ `static` would be one object for every block: each declaration site is mapped to this
// block's memory instead (kernels/emu/cuda_emu.h).
#define CPUGPU_SHARED(T, name, N)                                                                        \
    static constexpr ::cuda_emu::SharedSite cpugpu_shared_site_##name{sizeof(T) * (N), alignof(T)};      \
    T* name = static_cast<T*>(::cuda_emu::block_shared(cpugpu_shared_site_##name))
#define CPUGPU_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::cuda_emu::dynamic_shared())
#endif

#include "cpugpu_abi.h"

namespace cpugpu {

constexpr unsigned FULL_MASK = 0xffffffffu;

// The type a thread moves per access for an access width of V bytes. 16 bytes is uint4, so the
// 16-byte paths compile to 128-bit loads and stores (LDG.E.128 / STG.E.128).
template <int V> struct Unit;
template <> struct Unit<1> { using type = unsigned char; };
template <> struct Unit<2> { using type = unsigned short; };
template <> struct Unit<4> { using type = unsigned int; };
template <> struct Unit<8> { using type = uint2; };
template <> struct Unit<16> { using type = uint4; };

// 64-bit thread numbering: grids are capped and every loop is grid-stride over int64 counts.
__device__ __forceinline__ long long global_thread() {
    return static_cast<long long>(blockIdx.x) * static_cast<long long>(blockDim.x) +
           static_cast<long long>(threadIdx.x);
}
__device__ __forceinline__ long long total_threads() {
    return static_cast<long long>(gridDim.x) * static_cast<long long>(blockDim.x);
}

// The V-byte unit number `unit` of a row filled with the fill element. `fill` holds the element
// repeated over 16 bytes; rows start on element boundaries and the element width divides 16, so
// the unit's bytes are the pattern's bytes at (unit * V) mod 16.
template <int V>
__device__ __forceinline__ typename Unit<V>::type fill_unit(const uint64_t* fill, long long unit) {
    typename Unit<V>::type u;
    const uint64_t lo = fill[0];
    const uint64_t hi = fill[1];
    if constexpr (V == 16) {
        const uint64_t both[2] = {lo, hi};
        memcpy(&u, both, 16);
    } else {
        const unsigned off = static_cast<unsigned>((unit * V) & 15);
        const uint64_t word = (off < 8 ? lo : hi) >> ((off & 7) * 8);
        memcpy(&u, &word, V);
    }
    return u;
}

// Saturating add for non-negative running offsets: a, b <= cap, result min(a + b, cap).
__device__ __forceinline__ unsigned long long sat_add(unsigned long long a, unsigned long long b,
                                                      unsigned long long cap) {
    return b >= cap - a ? cap : a + b;
}

// Block-wide exclusive scan (saturating at cap) of one value per thread; *total gets the
// block's saturated sum. Every thread of the block must call it; blockDim.x must be a multiple
// of 32 (at most 1024). Warp scans use __shfl_up_sync, warp totals go through shared memory.
__device__ __forceinline__ unsigned long long block_exclusive_scan(unsigned long long v,
                                                                   unsigned long long cap,
                                                                   unsigned long long* total) {
    CPUGPU_SHARED(unsigned long long, warp_inclusive, 32);
    const unsigned lane = threadIdx.x % 32;
    const unsigned warp = threadIdx.x / 32;
    const unsigned warps = blockDim.x / 32;
    unsigned long long inc = v;
    for (unsigned d = 1; d < 32; d <<= 1) {
        unsigned long long other = __shfl_up_sync(FULL_MASK, inc, d);
        if (lane >= d) inc = sat_add(other, inc, cap);
    }
    unsigned long long excl = __shfl_up_sync(FULL_MASK, inc, 1);
    if (lane == 0) excl = 0;
    if (lane == 31) warp_inclusive[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        unsigned long long w = lane < warps ? warp_inclusive[lane] : 0;
        for (unsigned d = 1; d < 32; d <<= 1) {
            unsigned long long other = __shfl_up_sync(FULL_MASK, w, d);
            if (lane >= d) w = sat_add(other, w, cap);
        }
        if (lane < warps) warp_inclusive[lane] = w;
    }
    __syncthreads();
    const unsigned long long warp_prefix = warp == 0 ? 0 : warp_inclusive[warp - 1];
    *total = warp_inclusive[warps - 1];
    __syncthreads();  // warp_inclusive may be reused by the next call
    return sat_add(warp_prefix, excl, cap);
}

// A relaxed read of a word other threads update atomically (the error word, scatter's winners):
// lets a thread skip an atomic that cannot change the word.
__device__ __forceinline__ unsigned long long load_relaxed(const unsigned long long* p) {
#ifdef __CUDACC__
    return *static_cast<const volatile unsigned long long*>(p);
#else
    return __atomic_load_n(p, __ATOMIC_RELAXED);
#endif
}
__device__ __forceinline__ long long load_relaxed(const long long* p) {
#ifdef __CUDACC__
    return *static_cast<const volatile long long*>(p);
#else
    return __atomic_load_n(p, __ATOMIC_RELAXED);
#endif
}

// True when index v is outside 0..bound (negatives allowed when allow_negative). The bound is
// unsigned: a non-negative index is compared as unsigned, so no row count is clamped.
__device__ __forceinline__ bool index_is_bad(long long v, unsigned long long bound, bool allow_negative) {
    return v < 0 ? !allow_negative : static_cast<unsigned long long>(v) >= bound;
}

// Records position i in the error word when `bad`, for a grid-stride loop whose iterations every
// lane of the warp takes together: the warp agrees on its first bad lane (one vote), and that lane
// alone updates the word, only when the word does not already hold an earlier position. Millions
// of bad indices cost one atomic per warp with a bad one, not one per index.
__device__ __forceinline__ void report_first_bad(unsigned long long* error, long long i, bool bad) {
    const unsigned votes = __ballot_sync(FULL_MASK, bad);
    if (votes == 0) return;
    const unsigned lane = threadIdx.x % 32;
    if (lane == static_cast<unsigned>(__ffs(votes) - 1) &&
        load_relaxed(error) > static_cast<unsigned long long>(i)) {
        atomicMin(error, static_cast<unsigned long long>(i));
    }
}

// Index i of an index array of type I, widened.
template <class I>
__device__ __forceinline__ long long load_index(const void* indices, long long i) {
    return static_cast<long long>(__ldg(static_cast<const I*>(indices) + i));
}

}  // namespace cpugpu

#endif  // CPUGPU_COMMON_CUH
