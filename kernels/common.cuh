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

// Unrolls the loop that follows (a fixed trip count over a register array, so the array stays in
// registers and every load of the loop is issued before the next loop's stores).
#ifdef __CUDACC__
#define CPUGPU_UNROLL _Pragma("unroll")
#else
#define CPUGPU_UNROLL _Pragma("GCC unroll 16")
#endif

// Launch bounds of the data-movement kernels (gather, scatter, pad, flatten, split): 256 threads,
// at least 4 blocks per SM, so at most 64 registers a thread (kernel_list.h lists the same, and
// .ci/kernel-static-checks checks both). Half occupancy keeps 1,024 threads an SM, each with
// 32 to 64 bytes in flight: 32 to 64 KiB per SM, above what an H100/H200 needs in flight to
// reach its memory bandwidth (about 3.4 to 4.8 TB/s x ~0.7 us latency / 132 SMs, 18 to 26 KiB).
#define CPUGPU_MOVE_BOUNDS __launch_bounds__(256, 4)
// The batched copy's shifted body keeps two 16-byte words per unit in flight (8 per thread): at
// most 85 registers, 3 blocks per SM (768 threads, 96 KiB in flight per SM).
#define CPUGPU_COPY_BOUNDS __launch_bounds__(256, 3)

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


// A 16-byte store to global memory through a pointer the compiler cannot prove global (one read
// from memory, as the batched copy's destinations are): STG.E.128, not a generic ST.E.128.
__device__ __forceinline__ void store_global(uint4* p, const uint4& v) {
#ifdef __CUDACC__
    __stwb(p, v);
#else
    *p = v;
#endif
}

// The most units a thread of a row or pad kernel keeps in flight (its register arrays' size);
// the launch policy passes `items` up to this.
template <int V>
struct MaxItems {
    static constexpr int value = V == 16 ? CPUGPU_MAX_ITEMS_W16 : CPUGPU_MAX_ITEMS;
};

// ---- inter-block protocols: acquire/release accesses at GPU scope ----
// A flag published by one block and read by another: the writer's earlier writes are visible to
// a reader that saw the flag. Inline PTX on the GPU; C++ atomics on the emulated GPU (where
// ThreadSanitizer sees the ordering).
__device__ __forceinline__ unsigned long long load_acquire(const unsigned long long* p) {
#ifdef __CUDACC__
    unsigned long long v;
    asm volatile("ld.acquire.gpu.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
#else
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#endif
}
__device__ __forceinline__ void store_release(unsigned long long* p, unsigned long long v) {
#ifdef __CUDACC__
    asm volatile("st.release.gpu.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
#else
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
#endif
}
// fetch-and-add with acquire and release semantics (a block's "I am done" that also lets the
// last one see everything the others did).
__device__ __forceinline__ unsigned long long atomic_add_acq_rel(unsigned long long* p, unsigned long long v) {
#ifdef __CUDACC__
    unsigned long long old;
    asm volatile("atom.acq_rel.gpu.add.u64 %0, [%1], %2;" : "=l"(old) : "l"(p), "l"(v) : "memory");
    return old;
#else
    return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
#endif
}
// A relaxed store to a word other threads read or update atomically (scatter's winners).
__device__ __forceinline__ void store_relaxed(long long* p, long long v) {
#ifdef __CUDACC__
    *static_cast<volatile long long*>(p) = v;
#else
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
#endif
}
__device__ __forceinline__ void store_relaxed(unsigned long long* p, unsigned long long v) {
#ifdef __CUDACC__
    *static_cast<volatile unsigned long long*>(p) = v;
#else
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
#endif
}

// Called once by every thread of every block, at the end of a kernel: true in every thread of
// the block that finished last, which then happens after everything every other block did
// (their writes and their reads). Counts in *done (the queue's ctl[DONE], 0 between kernels) and
// sets it back to 0 for the next kernel.
__device__ __forceinline__ bool last_block_done(unsigned long long* done) {
    CPUGPU_SHARED(int, is_last, 1);
    __syncthreads();  // every thread of this block is done
    if (threadIdx.x == 0) {
        const unsigned long long before = atomic_add_acq_rel(done, 1ull);
        const bool last = before == static_cast<unsigned long long>(gridDim.x) - 1;
        if (last) store_relaxed(done, 0ull);  // no block of this kernel counts again
        is_last[0] = last ? 1 : 0;
    }
    __syncthreads();
    return is_last[0] != 0;
}

// The error read-out (capture_error's job, done by an operation's last kernel): `slot` gets the
// position `pos` (CPUGPU_NO_ERROR if none) and, when pos < n, the element of `data` there,
// zero-extended. One thread.
template <class E>
__device__ __forceinline__ void write_capture(uint64_t* slot, unsigned long long pos, const void* data, long long n) {
    uint64_t value = 0;
    if (pos != CPUGPU_NO_ERROR && pos < static_cast<unsigned long long>(n)) {
        value = sizeof(E) == 8 ? static_cast<uint64_t>(static_cast<const uint64_t*>(data)[pos])
                               : static_cast<uint64_t>(static_cast<const uint32_t*>(data)[pos]);
    }
    slot[0] = pos;
    slot[1] = value;
}

// The read-out of the error word into `slot`, then the word re-armed for the next operation.
// One thread, once no thread of the launch reads or updates the word any more.
template <class E>
__device__ __forceinline__ void capture_and_rearm(uint64_t* error, uint64_t* slot, const void* data, long long n) {
    auto* word = reinterpret_cast<unsigned long long*>(error);
    write_capture<E>(slot, load_relaxed(word), data, n);
    store_relaxed(word, CPUGPU_NO_ERROR);
}

// The first of the n indices outside 0..bound (negatives allowed when allow_negative), or
// CPUGPU_NO_ERROR, found by this block alone (batch sizes: every block checks every index, so
// every block reaches the same verdict with no grid-wide synchronisation). Every thread of the
// block must call it; each gets the answer. Four indices in flight per thread.
template <class I>
__device__ __forceinline__ unsigned long long block_first_bad(const void* indices, long long n,
                                                              unsigned long long bound, bool allow_negative) {
    CPUGPU_SHARED(unsigned long long, first, 1);
    if (threadIdx.x == 0) first[0] = CPUGPU_NO_ERROR;
    __syncthreads();
    constexpr int K = 4;
    const long long step = static_cast<long long>(blockDim.x);
    unsigned long long mine = CPUGPU_NO_ERROR;
    for (long long base = threadIdx.x; base < n && mine == CPUGPU_NO_ERROR; base += K * step) {
        long long v[K];
CPUGPU_UNROLL
        for (int k = 0; k < K; ++k) {
            const long long i = base + k * step;
            v[k] = i < n ? load_index<I>(indices, i) : 0;
        }
CPUGPU_UNROLL
        for (int k = 0; k < K; ++k) {
            const long long i = base + k * step;
            if (mine == CPUGPU_NO_ERROR && i < n && index_is_bad(v[k], bound, allow_negative)) {
                mine = static_cast<unsigned long long>(i);
            }
        }
    }
    if (mine != CPUGPU_NO_ERROR) atomicMin(&first[0], mine);
    __syncthreads();
    return first[0];
}
}  // namespace cpugpu

#endif  // CPUGPU_COMMON_CUH
