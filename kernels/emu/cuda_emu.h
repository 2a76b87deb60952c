// cuda_emu.h: just enough of CUDA, in C++20, to run cpugpu's kernels on CPU threads.
//
// Used only when the kernels are compiled by g++ (cargo feature `emulator`); nvcc never sees it.
// Model (see docs/EMULATOR.md for what is NOT modelled):
// - A launch runs its blocks one after another. Each block's threads are real concurrent
//   std::threads (a pool, reused across launches), so `__syncthreads` is a real barrier
//   (std::barrier) and a missing one is a real data race that ThreadSanitizer can see. A
//   divergent barrier (threads meeting at different barriers) aborts with a message.
// - Warps are groups of 32 consecutive threads of a block. Shuffles and votes exchange values
//   through a per-warp slot array and a per-warp std::barrier: every lane named in the mask
//   must take part (the emulator requires the mask to name every lane of the warp and aborts
//   otherwise). `__syncwarp` is a warp barrier.
// - `__shared__` is `static`: a function-local static array is one object shared by all the
//   threads of the block. That is race-free across blocks because blocks run one after
//   another (the pool's end-of-block barrier orders them) and across launches because launches
//   are serialised by a process-wide mutex. Dynamic shared memory is a heap buffer of exactly
//   the launch's shared_bytes, re-poisoned before every block, reached through
//   CPUGPU_DYNAMIC_SHARED (kernels/common.cuh), since `extern __shared__` has no C++ spelling.
// - Atomics are __atomic builtins (relaxed, like CUDA's), so ThreadSanitizer sees them.
#ifndef CPUGPU_CUDA_EMU_H
#define CPUGPU_CUDA_EMU_H

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#define __global__
#define __device__
#define __launch_bounds__(...)
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __shared__ static
#define __align__(n) alignas(n)
#define __restrict__ __restrict

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

// Vector types: same size and alignment as CUDA's.
struct alignas(2) char2 { signed char x, y; };
struct alignas(2) uchar2 { unsigned char x, y; };
struct alignas(4) uchar4 { unsigned char x, y, z, w; };
struct alignas(4) short2 { short x, y; };
struct alignas(4) ushort2 { unsigned short x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) longlong2 { long long x, y; };
struct alignas(16) ulonglong2 { unsigned long long x, y; };
struct alignas(16) double2 { double x, y; };
static_assert(sizeof(uint4) == 16 && alignof(uint4) == 16, "uint4 layout");
static_assert(sizeof(uint2) == 8 && alignof(uint2) == 8, "uint2 layout");

inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

// Built-in variables: one copy per emulated thread.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace cuda_emu {

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "cuda_emu: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

// Block-wide barrier; its completion step (run by one thread while all wait) reduces the
// per-thread predicates for __syncthreads_count/_or/_and, and checks that every thread arrived
// at the same kind of barrier: a thread that left the kernel (or skipped a __syncthreads) while
// the others wait at one is a divergent barrier, undefined on a GPU and an abort here.
struct BlockState;
struct BlockCompletion {
    BlockState* block;
    void operator()() noexcept;
};

struct WarpState {
    std::barrier<>* barrier = nullptr;
    unsigned lanes = 0;                 // threads in this warp (the last one may be partial)
    unsigned long long slots[2][32] = {};  // double-buffered exchange slots
};

struct BlockState {
    std::barrier<BlockCompletion>* barrier = nullptr;
    int* predicates = nullptr;  // one per thread
    int* kinds = nullptr;       // one per thread: which barrier it arrived at (Barrier)
    unsigned threads = 0;
    int reduced = 0;  // sum of predicates of the last barrier phase
    WarpState* warps = nullptr;
    unsigned char* dynamic_shared = nullptr;
};

// The barriers a block's threads meet at.
enum Barrier : int { kSyncthreads = 0, kBlockStart = 1, kBlockEnd = 2 };

inline void BlockCompletion::operator()() noexcept {
    int sum = 0;
    for (unsigned i = 0; i < block->threads; ++i) {
        sum += block->predicates[i];
        if (block->kinds[i] != block->kinds[0]) {
            std::fprintf(stderr,
                         "cuda_emu: divergent __syncthreads: thread %u is at %s while thread 0 is at %s\n", i,
                         block->kinds[i] == kSyncthreads ? "__syncthreads" : "the kernel's end",
                         block->kinds[0] == kSyncthreads ? "__syncthreads" : "the kernel's end");
            fail("divergent barrier");
        }
    }
    block->reduced = sum;
}

// Per-thread context, set by the launcher before the thread runs any block.
inline thread_local BlockState* tls_block = nullptr;
inline thread_local unsigned tls_linear = 0;       // linear thread index in the block
inline thread_local unsigned tls_warp_calls = 0;   // warp collectives this thread has made

inline unsigned char* dynamic_shared() { return tls_block->dynamic_shared; }

inline int block_sync(int predicate, Barrier kind = kSyncthreads) {
    BlockState* b = tls_block;
    b->predicates[tls_linear] = predicate;
    b->kinds[tls_linear] = kind;
    b->barrier->arrive_and_wait();
    return b->reduced;
}

inline WarpState& my_warp() { return tls_block->warps[tls_linear / 32]; }
inline unsigned lane_id() { return tls_linear % 32; }

inline void check_mask(unsigned mask, const char* op) {
    WarpState& w = my_warp();
    unsigned full = w.lanes == 32 ? 0xffffffffu : ((1u << w.lanes) - 1u);
    if ((mask & full) != full) {
        std::fprintf(stderr, "cuda_emu: %s with mask %08x: the emulator needs every lane of the warp\n",
                     op, mask);
        fail("partial-warp collective");
    }
    if (!(mask & (1u << lane_id()))) fail("warp collective called by a lane not in its mask");
}

// Every lane publishes `v`; after the warp barrier each lane can read any lane's value from the
// returned slot row. The row is not reused until two collectives later, by which time every
// lane has passed the next barrier and so finished reading.
inline const unsigned long long* warp_exchange(unsigned long long v) {
    WarpState& w = my_warp();
    unsigned buf = tls_warp_calls++ & 1u;
    w.slots[buf][lane_id()] = v;
    w.barrier->arrive_and_wait();
    return w.slots[buf];
}

template <class T>
inline unsigned long long to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type over 8 bytes");
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(unsigned long long b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

template <class T>
inline T atomic_min(T* p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <class T>
inline T atomic_max(T* p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

}  // namespace cuda_emu

// ---- synchronisation ----
inline void __syncthreads() { cuda_emu::block_sync(0); }
inline int __syncthreads_count(int p) { return cuda_emu::block_sync(p != 0); }
inline int __syncthreads_or(int p) { return cuda_emu::block_sync(p != 0) != 0; }
inline int __syncthreads_and(int p) {
    return cuda_emu::block_sync(p != 0) == static_cast<int>(cuda_emu::tls_block->threads);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    cuda_emu::check_mask(mask, "__syncwarp");
    cuda_emu::my_warp().barrier->arrive_and_wait();
}
// Not used by the kernels (ThreadSanitizer does not model fences); kept for completeness.
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- warp shuffles and votes ----
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    cuda_emu::check_mask(mask, "__shfl_sync");
    const unsigned long long* s = cuda_emu::warp_exchange(cuda_emu::to_bits(v));
    unsigned lane = cuda_emu::lane_id();
    unsigned base = lane - lane % static_cast<unsigned>(width);
    return cuda_emu::from_bits<T>(s[base + static_cast<unsigned>(src) % static_cast<unsigned>(width)]);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    cuda_emu::check_mask(mask, "__shfl_up_sync");
    const unsigned long long* s = cuda_emu::warp_exchange(cuda_emu::to_bits(v));
    unsigned lane = cuda_emu::lane_id();
    unsigned in_seg = lane % static_cast<unsigned>(width);
    return in_seg >= delta ? cuda_emu::from_bits<T>(s[lane - delta]) : v;
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    cuda_emu::check_mask(mask, "__shfl_down_sync");
    const unsigned long long* s = cuda_emu::warp_exchange(cuda_emu::to_bits(v));
    unsigned lane = cuda_emu::lane_id();
    unsigned in_seg = lane % static_cast<unsigned>(width);
    bool ok = in_seg + delta < static_cast<unsigned>(width) && lane + delta < cuda_emu::my_warp().lanes;
    return ok ? cuda_emu::from_bits<T>(s[lane + delta]) : v;
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    cuda_emu::check_mask(mask, "__shfl_xor_sync");
    const unsigned long long* s = cuda_emu::warp_exchange(cuda_emu::to_bits(v));
    unsigned lane = cuda_emu::lane_id();
    unsigned other = lane ^ static_cast<unsigned>(lane_mask);
    unsigned base = lane - lane % static_cast<unsigned>(width);
    bool ok = other >= base && other < base + static_cast<unsigned>(width) && other < cuda_emu::my_warp().lanes;
    return ok ? cuda_emu::from_bits<T>(s[other]) : v;
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    cuda_emu::check_mask(mask, "__ballot_sync");
    const unsigned long long* s = cuda_emu::warp_exchange(pred != 0);
    unsigned bits = 0;
    for (unsigned i = 0; i < cuda_emu::my_warp().lanes; ++i)
        if (s[i]) bits |= 1u << i;
    return bits & mask;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline unsigned __activemask() {
    unsigned lanes = cuda_emu::my_warp().lanes;
    return lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
}
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == (mask & __activemask()); }

// ---- atomics (relaxed, returning the old value, as in CUDA) ----
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) { return cuda_emu::atomic_min(p, v); }
inline long long atomicMin(long long* p, long long v) { return cuda_emu::atomic_min(p, v); }
inline int atomicMin(int* p, int v) { return cuda_emu::atomic_min(p, v); }
inline unsigned atomicMin(unsigned* p, unsigned v) { return cuda_emu::atomic_min(p, v); }
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) { return cuda_emu::atomic_max(p, v); }
inline long long atomicMax(long long* p, long long v) { return cuda_emu::atomic_max(p, v); }
inline int atomicMax(int* p, int v) { return cuda_emu::atomic_max(p, v); }
inline unsigned atomicMax(unsigned* p, unsigned v) { return cuda_emu::atomic_max(p, v); }
template <class T>
inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
template <class T>
inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
template <class T>
inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
template <class T>
inline T atomicCAS(T* p, T expected, T desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return expected;
}

// ---- loads ----
template <class T>
inline T __ldg(const T* p) { return *p; }

// ---- integer intrinsics used by the kernels ----
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }

#endif  // CPUGPU_CUDA_EMU_H
