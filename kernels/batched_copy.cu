// Batched copy of many segments in one launch: flatten (segments -> one flat buffer, plus the
// offsets) and split's copying form (one flat buffer -> separate buffers).
//
// Every segment moves as bytes, whatever its element size: a head, a body of 16-byte accesses and
// a tail. The body is aligned on the destination; where the source's alignment differs (by any
// number of bytes, as when f32 segments of odd lengths are packed into one buffer), each
// destination unit is assembled from the two aligned 16-byte source words around it with funnel
// shifts, so loads and stores stay 128-bit (the second load of a unit is the first of the next,
// served by L1). Only the head and the tail, fewer than 48 bytes, move byte by byte, and the body
// never reads outside the segment's own bytes.
//
// Work is assigned by size tier (CUB's DeviceMemcpy::Batched is the reference design), sorted on
// the host when it builds the launch's metadata: small segments (under 256 bytes) get a thread
// each, medium ones (under 16 KiB) a warp each, and large ones are cut into chunks of chunk_bytes
// (16 KiB, one block iteration of 256 threads x 4 units of 16 bytes) that blocks take grid-stride.
// A chunk finds its segment by one binary search over the large segments, per chunk, not per
// unit; chunk boundaries fall on 16-byte destination addresses, so only a segment's first chunk
// has a head and its last a tail. Every thread keeps 4 units (the shifted path: 8 loads) in flight
// before storing. Sources may be device pointers or pinned/UVA host pointers: the kernel only
// dereferences what it is given.
#include "common.cuh"

namespace cpugpu {

template <int Q>
__device__ __forceinline__ uint4 shifted_unit(const uint4& lo, const uint4& hi, unsigned bits) {
    const unsigned w[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    uint4 out;
    out.x = __funnelshift_r(w[Q], w[Q + 1], bits);
    out.y = __funnelshift_r(w[Q + 1], w[Q + 2], bits);
    out.z = __funnelshift_r(w[Q + 2], w[Q + 3], bits);
    out.w = __funnelshift_r(w[Q + 3], w[Q + 4], bits);
    return out;
}

// The body of `units` 16-byte destination units at d (aligned) from source bytes at s, which are
// `a` bytes past an aligned address (a in 1..15): the unit at d + 16u is bytes a .. a + 15 of
// the aligned words at s - a + 16u and s - a + 16u + 16.
template <int Q, int ITEMS>
__device__ __forceinline__ void shifted_body(uint4* __restrict__ d, const uint4* __restrict__ aligned, long long units,
                                             unsigned bits, long long lane, long long lanes) {
    for (long long u0 = lane; u0 < units; u0 += lanes * ITEMS) {
        uint4 lo[ITEMS] = {};
        uint4 hi[ITEMS] = {};
CPUGPU_UNROLL
        for (int k = 0; k < ITEMS; ++k) {
            const long long u = u0 + k * lanes;
            if (u < units) {
                lo[k] = __ldg(aligned + u);
                hi[k] = __ldg(aligned + u + 1);
            }
        }
CPUGPU_UNROLL
        for (int k = 0; k < ITEMS; ++k) {
            const long long u = u0 + k * lanes;
            if (u < units) store_global(d + u, shifted_unit<Q>(lo[k], hi[k], bits));
        }
    }
}

template <int ITEMS>
__device__ __forceinline__ void aligned_body(uint4* __restrict__ d, const uint4* __restrict__ s, long long units,
                                             long long lane, long long lanes) {
    for (long long u0 = lane; u0 < units; u0 += lanes * ITEMS) {
        uint4 v[ITEMS] = {};
CPUGPU_UNROLL
        for (int k = 0; k < ITEMS; ++k) {
            const long long u = u0 + k * lanes;
            if (u < units) v[k] = __ldg(s + u);
        }
CPUGPU_UNROLL
        for (int k = 0; k < ITEMS; ++k) {
            const long long u = u0 + k * lanes;
            if (u < units) store_global(d + u, v[k]);
        }
    }
}

// Copies bytes [b0, b1) of a segment of `bytes` bytes from src to dst, as a group of `lanes`
// threads (this one is `lane`). Reads stay inside src[0, bytes).
template <int ITEMS>
__device__ __forceinline__ void copy_range(unsigned char* dst, const unsigned char* src, long long bytes, long long b0,
                                           long long b1, long long lane, long long lanes) {
    const auto daddr = reinterpret_cast<unsigned long long>(dst);
    const auto saddr = reinterpret_cast<unsigned long long>(src);
    const long long dmis = static_cast<long long>((16 - (daddr & 15)) & 15);  // dst + dmis is aligned
    const unsigned a = static_cast<unsigned>((saddr - daddr) & 15);  // source offset of an aligned unit
    // The body: units at offsets o = lo + 16u, o >= b0, o + 16 <= b1, and for a shifted source
    // o >= a and o - a + 32 <= bytes (both aligned source words inside the segment).
    long long lo = b0 > dmis ? b0 : dmis;
    lo = dmis + ((lo - dmis + 15) & ~15ll);
    if (a != 0 && lo < static_cast<long long>(a)) lo += (static_cast<long long>(a) - lo + 15) & ~15ll;
    long long last = b1 - 16;  // the last offset a unit may start at
    if (a != 0 && bytes + static_cast<long long>(a) - 32 < last) last = bytes + static_cast<long long>(a) - 32;
    long long units = last >= lo ? (last - lo) / 16 + 1 : 0;
    if (units == 0) lo = b0;  // everything moves byte by byte
    const long long body_end = lo + 16 * units;
    for (long long o = b0 + lane; o < lo; o += lanes) dst[o] = src[o];
    if (units > 0) {
        auto* d = reinterpret_cast<uint4*>(dst + lo);
        if (a == 0) {
            aligned_body<ITEMS>(d, reinterpret_cast<const uint4*>(src + lo), units, lane, lanes);
        } else {
            const auto* aligned = reinterpret_cast<const uint4*>(src + lo - a);
            const unsigned bits = (a & 3) * 8;
            switch (a >> 2) {
                case 0: shifted_body<0, ITEMS>(d, aligned, units, bits, lane, lanes); break;
                case 1: shifted_body<1, ITEMS>(d, aligned, units, bits, lane, lanes); break;
                case 2: shifted_body<2, ITEMS>(d, aligned, units, bits, lane, lanes); break;
                default: shifted_body<3, ITEMS>(d, aligned, units, bits, lane, lanes); break;
            }
        }
    }
    for (long long o = body_end + lane; o < b1; o += lanes) dst[o] = src[o];
}

// Segment s's two sides and length in bytes.
template <bool FLATTEN>
__device__ __forceinline__ void segment(const CpugpuBatchedCopyParams& p, long long s, unsigned char** dst,
                                        const unsigned char** src, long long* bytes) {
    const long long off = p.seg_offsets[s];
    unsigned char* flat = static_cast<unsigned char*>(p.flat) + off;
    *bytes = p.seg_offsets[s + 1] - off;
    if (FLATTEN) {
        *dst = flat;
        *src = static_cast<const unsigned char*>(p.src_ptrs[s]);
    } else {
        *dst = static_cast<unsigned char*>(p.dst_ptrs[s]);
        *src = flat;
    }
}

template <bool FLATTEN, class O>
__device__ __forceinline__ void batched_copy_body(const CpugpuBatchedCopyParams& p) {
    constexpr int ITEMS = 4;
    const long long n_large = p.n_large;
    const long long chunks = n_large > 0 ? p.large_chunks[n_large] : 0;
    const long long cb = p.chunk_bytes;
    // Large segments: one chunk per block iteration.
    for (long long c = blockIdx.x; c < chunks; c += gridDim.x) {
        long long lo = 0;  // the last j with large_chunks[j] <= c
        long long hi = n_large - 1;
        while (lo < hi) {
            const long long mid = lo + (hi - lo + 1) / 2;
            if (p.large_chunks[mid] <= c) lo = mid; else hi = mid - 1;
        }
        const long long k = c - p.large_chunks[lo];
        const long long nk = p.large_chunks[lo + 1] - p.large_chunks[lo];
        unsigned char* dst;
        const unsigned char* src;
        long long bytes;
        segment<FLATTEN>(p, p.large[lo], &dst, &src, &bytes);
        // Chunk boundaries on 16-byte destination addresses.
        const auto base = reinterpret_cast<unsigned long long>(dst);
        const auto edge = [&](long long i) -> long long {
            if (i == 0) return 0;
            if (i >= nk) return bytes;
            return static_cast<long long>(((base + static_cast<unsigned long long>(i * cb)) & ~15ull) - base);
        };
        copy_range<ITEMS>(dst, src, bytes, edge(k), edge(k + 1), threadIdx.x, blockDim.x);
    }
    // Medium segments: a warp each.
    const long long lane = threadIdx.x % 32;
    for (long long m = global_thread() / 32; m < p.n_medium; m += total_threads() / 32) {
        unsigned char* dst;
        const unsigned char* src;
        long long bytes;
        segment<FLATTEN>(p, p.medium[m], &dst, &src, &bytes);
        copy_range<ITEMS>(dst, src, bytes, 0, bytes, lane, 32);
    }
    // Small segments: a thread each.
    for (long long i = global_thread(); i < p.n_small; i += total_threads()) {
        unsigned char* dst;
        const unsigned char* src;
        long long bytes;
        segment<FLATTEN>(p, p.small[i], &dst, &src, &bytes);
        copy_range<2>(dst, src, bytes, 0, bytes, 0, 1);
    }
    if (FLATTEN) {
        O* out = static_cast<O*>(p.offsets_out);
        for (long long i = global_thread(); i <= p.n_segments; i += total_threads()) {
            out[i] = static_cast<O>(p.seg_offsets[i] / p.elem_bytes);
        }
    }
}

}  // namespace cpugpu

extern "C" __global__ void CPUGPU_COPY_BOUNDS flatten_w16_i32(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<true, int32_t>(p); }
extern "C" __global__ void CPUGPU_COPY_BOUNDS flatten_w16_i64(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<true, int64_t>(p); }
extern "C" __global__ void CPUGPU_COPY_BOUNDS split_copy_w16(const CpugpuBatchedCopyParams p) { cpugpu::batched_copy_body<false, int64_t>(p); }
