// Windowed row gather: entry r copies table[rows[r], starts[r] .. starts[r] + len_r] to
//   ragged: out[offsets[r] .. offsets[r + 1]]    (len_r = offsets[r + 1] - offsets[r]), or
//   rows:   out[r * width .. r * width + lens[r]] (the rest of the row untouched).
// Prefill tokens from a token table into input_ids (rows = request states, starts = computed
// tokens, offsets = query_start_loc), or block-table rows with their valid lengths (vLLM's
// gather_block_tables; ragged, it is FlashInfer's paged_kv_indices).
//
// Three launches: gather_windows_validate (one thread per entry and offset), gather_windows_w<V>
// (one thread per V-byte unit of the output, which finds its entry by binary search in the offsets
// in the ragged layout, so skewed windows stay balanced; nothing when the error word is set) and
// gather_windows_capture.
//
// Error codes at position q (an entry, or an offset's index):
//   1 offsets[q] outside 0..=out_len   2 offsets[q] < offsets[q - 1]
//   3 rows[q] outside 0..table_rows    4 the window passes its row (or a negative start or length,
//                                        or, in the rows layout, a length past width)
#include "prep_common.cuh"

namespace cpugpu {

constexpr unsigned WIN_RANGE = 1, WIN_NOT_MONOTONIC = 2, WIN_ROW = 3, WIN_WINDOW = 4;

__device__ __forceinline__ long long win_start(const CpugpuWindowsParams& p, long long r) {
    return p.starts == nullptr ? 0 : prep_load(p.starts, r, p.idx_i64 != 0);
}

// The bound a window (start, len) breaks, or -1 when it fits: cols, or width for a row too long.
__device__ __forceinline__ long long win_bound(const CpugpuWindowsParams& p, long long start, long long len) {
    if (start < 0 || len < 0 || start > p.cols || len > p.cols - start) return p.cols;
    if (p.ragged == 0 && len > p.width) return p.width;
    return -1;
}

// The code of the first error at position q (0 for none), and its values.
__device__ __forceinline__ unsigned win_check(const CpugpuWindowsParams& p, long long q, long long* v) {
    const bool i64 = p.idx_i64 != 0;
    if (p.ragged != 0) {
        const long long o = prep_load(p.extents, q, i64);
        v[0] = o;
        if (o < 0 || o > p.out_len) return WIN_RANGE;
        if (q > 0) {
            v[1] = prep_load(p.extents, q - 1, i64);
            if (o < v[1]) return WIN_NOT_MONOTONIC;
        }
    }
    if (q >= p.n) return 0;
    const long long row = prep_load(p.rows, q, i64);
    if (row < 0 || static_cast<unsigned long long>(row) >= p.table_rows) {
        v[0] = row;
        v[1] = static_cast<long long>(p.table_rows);
        return WIN_ROW;
    }
    const long long start = win_start(p, q);
    long long len;
    if (p.ragged != 0) {
        len = prep_load(p.extents, q + 1, i64) - prep_load(p.extents, q, i64);
        if (len < 0) return 0;  // reported at q + 1 as a decreasing offset
    } else {
        len = prep_load(p.extents, q, i64);
    }
    const long long bound = win_bound(p, start, len);
    if (bound < 0) return 0;
    v[0] = start;
    v[1] = len;
    v[2] = bound;
    return WIN_WINDOW;
}

__device__ __forceinline__ void windows_validate_body(const CpugpuWindowsParams& p) {
    auto* error = reinterpret_cast<unsigned long long*>(p.error);
    const long long items = p.ragged != 0 ? p.n + 1 : p.n;
    for (long long q = global_thread(); q < items; q += total_threads()) {
        long long v[3] = {0, 0, 0};
        const unsigned code = win_check(p, q, v);
        if (code != 0) prep_report(error, q, code);
    }
}

template <int V>
__device__ __forceinline__ void windows_write_body(const CpugpuWindowsParams& p) {
    using U = typename Unit<V>::type;
    if (*p.error != CPUGPU_NO_ERROR) return;  // set by gather_windows_validate
    const bool i64 = p.idx_i64 != 0;
    const long long upe = p.units_per_elem;
    const U* table = static_cast<const U*>(p.table);
    U* out = static_cast<U*>(p.out);
    if (p.ragged != 0) {
        if (p.n == 0) return;
        const long long first = prep_load(p.extents, 0, i64);
        const long long last = prep_load(p.extents, p.n, i64);
        const long long units = (last - first) * upe;
        prep_copy_units<V>(table, out, units, [&](long long u, long long& s) {
            const long long e = first + u / upe;
            const long long r = prep_segment_of(p.extents, i64, 0, p.n - 1, e);
            const long long k = e - prep_load(p.extents, r, i64);
            const long long src = prep_load(p.rows, r, i64) * p.cols + win_start(p, r) + k;
            s = src * upe + u % upe;
            return e * upe + u % upe;
        });
    } else {
        const long long units = p.n * p.width * upe;
        prep_copy_units<V>(table, out, units, [&](long long u, long long& s) -> long long {
            const long long e = u / upe;
            const long long r = e / p.width;
            const long long k = e - r * p.width;
            if (k >= prep_load(p.extents, r, i64)) return -1;
            const long long src = prep_load(p.rows, r, i64) * p.cols + win_start(p, r) + k;
            s = src * upe + u % upe;
            return u;
        });
    }
}

__device__ __forceinline__ void windows_capture_body(const CpugpuWindowsParams& p) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const unsigned long long key = *p.error;
    long long v[3] = {0, 0, 0};
    if (key != CPUGPU_NO_ERROR) win_check(p, static_cast<long long>(key >> CPUGPU_CODE_BITS), v);
    prep_write_report(p.error, p.report, key, v[0], v[1], v[2]);
}

}  // namespace cpugpu

extern "C" __global__ void gather_windows_validate(const CpugpuWindowsParams p) { cpugpu::windows_validate_body(p); }
extern "C" __global__ void gather_windows_w1(const CpugpuWindowsParams p) { cpugpu::windows_write_body<1>(p); }
extern "C" __global__ void gather_windows_w2(const CpugpuWindowsParams p) { cpugpu::windows_write_body<2>(p); }
extern "C" __global__ void gather_windows_w4(const CpugpuWindowsParams p) { cpugpu::windows_write_body<4>(p); }
extern "C" __global__ void gather_windows_w8(const CpugpuWindowsParams p) { cpugpu::windows_write_body<8>(p); }
extern "C" __global__ void gather_windows_w16(const CpugpuWindowsParams p) { cpugpu::windows_write_body<16>(p); }
extern "C" __global__ void gather_windows_capture(const CpugpuWindowsParams p) { cpugpu::windows_capture_body(p); }
