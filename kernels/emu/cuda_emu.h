// cuda_emu.h: the device side of cpugpu's emulated GPU, in C++20: enough of CUDA C++ for the
// kernels in kernels/*.cu to compile unchanged with g++ and run on CPU threads.
//
// Used only when the kernels are compiled by g++ (cargo feature `emulator`); nvcc never sees it.
// The emulated driver (driver.cpp) launches kernels through the block executor (executor.cpp);
// docs/EMULATOR.md says what is and is not modelled. In short:
// - Each CUDA thread is a fiber (its own stack, switched in user space), so a block of 1,024
//   threads costs no OS threads and a barrier costs a few context switches. A block's fibers
//   run on one OS thread until each finishes or blocks at a barrier or warp collective; the
//   executor runs a few blocks at a time on a few OS threads, in a seeded order.
// - Under ThreadSanitizer every fiber is a TSan thread of its own, switched without implied
//   synchronisation: barriers and warp collectives are the only happens-before edges between the
//   threads of a block, and nothing orders two blocks of a launch but the kernel's own atomics.
// - `__shared__` is not spelled here: kernels declare shared memory with CPUGPU_SHARED (static
//   size) and CPUGPU_DYNAMIC_SHARED (the launch's dynamic size), kernels/common.cuh. Each block
//   gets fresh shared memory, filled with garbage (0xA5) before it starts.
// - Everything that reads or writes the emulator's own per-thread state is an out-of-line
//   function of executor.cpp, built without TSan instrumentation, so the scheduler rewriting that
//   state between fibers is not mistaken for a race in a kernel.
#ifndef CPUGPU_CUDA_EMU_H
#define CPUGPU_CUDA_EMU_H

#include <cstdint>
#include <cstring>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)
#define __forceinline__ inline __attribute__((always_inline))
// Static shared memory must be per block, which a C++ `static` cannot be: use CPUGPU_SHARED.
#define __shared__ CPUGPU_EMU_ERROR_declare_shared_memory_with_CPUGPU_SHARED
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

constexpr int warpSize = 32;

namespace cuda_emu {

// A CPUGPU_SHARED declaration site: its bytes and alignment. Each block maps each site to its own
// memory, the same for every thread of the block.
struct SharedSite {
    unsigned long bytes;
    unsigned long align;
};

// The running thread's built-in variables.
uint3 thread_idx() noexcept;
uint3 block_idx() noexcept;
dim3 block_dim() noexcept;
dim3 grid_dim() noexcept;

// Block-wide barrier; returns the number of threads whose predicate was non-zero. Every thread of
// the block must arrive: one that left the kernel while others wait is a divergent barrier, which
// aborts the process with a message naming both threads (a GPU would hang or misbehave).
int block_sync(int predicate);

// Warp collectives. Every lane of the warp must take part and the mask must name every lane of
// the warp (a partial mask aborts with a message: the kernels use full masks only).
enum class Shfl : int { Idx = 0, Up = 1, Down = 2, Xor = 3 };
unsigned long long warp_shfl(unsigned mask, unsigned long long bits, Shfl mode, int arg, int width);
unsigned warp_ballot(unsigned mask, int predicate);
void warp_sync(unsigned mask);
unsigned active_mask() noexcept;

// This block's memory for a CPUGPU_SHARED site, and its dynamic shared memory.
void* block_shared(const SharedSite& site);
void* dynamic_shared() noexcept;

// Lets the other threads of this block run before this one continues (a spin-wait's pause).
void yield_thread();

// Acquire/release accesses for inter-block protocols (flags published by one block and read by
// another), visible as such to ThreadSanitizer.
template <class T>
inline T load_acquire(const T* p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
template <class T>
inline void store_release(T* p, T v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
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

// ---- built-in variables (read through the executor: each fiber has its own) ----
#define threadIdx (::cuda_emu::thread_idx())
#define blockIdx (::cuda_emu::block_idx())
#define blockDim (::cuda_emu::block_dim())
#define gridDim (::cuda_emu::grid_dim())

// ---- synchronisation ----
inline void __syncthreads() { cuda_emu::block_sync(0); }
inline int __syncthreads_count(int p) { return cuda_emu::block_sync(p != 0); }
inline int __syncthreads_or(int p) { return cuda_emu::block_sync(p != 0) != 0; }
inline int __syncthreads_and(int p) {
    const dim3 b = cuda_emu::block_dim();
    return cuda_emu::block_sync(p != 0) == static_cast<int>(b.x * b.y * b.z);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { cuda_emu::warp_sync(mask); }
// Fences order nothing ThreadSanitizer can see: kernels publish inter-block data with
// cpugpu::store_release / load_acquire (kernels/common.cuh) instead.
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) { cuda_emu::yield_thread(); }

// ---- warp shuffles and votes ----
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return cuda_emu::from_bits<T>(cuda_emu::warp_shfl(mask, cuda_emu::to_bits(v), cuda_emu::Shfl::Idx, src, width));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return cuda_emu::from_bits<T>(
        cuda_emu::warp_shfl(mask, cuda_emu::to_bits(v), cuda_emu::Shfl::Up, static_cast<int>(delta), width));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return cuda_emu::from_bits<T>(
        cuda_emu::warp_shfl(mask, cuda_emu::to_bits(v), cuda_emu::Shfl::Down, static_cast<int>(delta), width));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return cuda_emu::from_bits<T>(cuda_emu::warp_shfl(mask, cuda_emu::to_bits(v), cuda_emu::Shfl::Xor, lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return cuda_emu::warp_ballot(mask, pred); }
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline unsigned __activemask() { return cuda_emu::active_mask(); }
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
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }
// hi:lo shifted right by (shift & 31) bits, the low 32 bits: CUDA's funnel shift.
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    return static_cast<unsigned>(((static_cast<unsigned long long>(hi) << 32) | lo) >> (shift & 31));
}

#endif  // CPUGPU_CUDA_EMU_H
