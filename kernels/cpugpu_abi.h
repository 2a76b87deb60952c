/* The kernel ABI of cpugpu: constants, error-word convention and the parameter struct of every
 * kernel. C, so that bindgen (issue 3) and the C++ emulator read the same text.
 *
 * Rules that keep the Rust mirror (src/kernels/abi.rs) trivially #[repr(C)]-compatible:
 * - fields are pointers, int64_t or uint64_t only (no int, no bool, no padding);
 * - one struct per kernel family, written as `typedef struct Name { ...; } Name;` with one field
 *   per line: build.rs parses this file to generate the layout cross-check.
 * Sizes and counts are 64-bit everywhere. */
#ifndef CPUGPU_ABI_H
#define CPUGPU_ABI_H

#include <stdint.h>

/* The error word: the host sets it to CPUGPU_NO_ERROR; a kernel that finds bad input atomicMin()s
 * the first bad *position* into it and never dereferences the bad value. The host derives the
 * error kind and value by re-reading the input at that position. */
#define CPUGPU_NO_ERROR UINT64_MAX

/* Items per thread of the prefix-sum kernels; a tile is blockDim.x * this many lengths. */
#define CPUGPU_SCAN_ITEMS_PER_THREAD 16
/* Threads per block of the prefix-sum kernels (the tile size depends on it). */
#define CPUGPU_SCAN_BLOCK 256

/* validate_indices_<idx>: every index must be in 0..bound (negatives allowed when
 * allow_negative != 0). Row counts are unsigned: with rows of zero elements there may be more
 * than INT64_MAX of them. */
typedef struct CpugpuValidateParams {
    const void* indices;
    uint64_t* error;
    int64_t n;
    uint64_t bound;
    int64_t allow_negative;
} CpugpuValidateParams;

/* gather_rows_w<V>_<idx>: dst[i, :] = src[indices[i], :], moved in V-byte units.
 * Row sizes are in units of V bytes. A negative index writes the fill pattern (16 bytes holding
 * the fill element repeated). Does nothing when *error != CPUGPU_NO_ERROR. */
typedef struct CpugpuGatherRowsParams {
    const void* src;
    void* dst;
    const void* indices;
    const uint64_t* error;
    int64_t n_indices;
    uint64_t src_rows;
    int64_t row_units;
    int64_t lanes_per_row;
    uint64_t fill[2];
} CpugpuGatherRowsParams;

/* scatter_winners_<idx>: pass 1 of scatter. Validates every index (first bad position into
 * *error) and records winners[indices[i]] = max i (atomicMax), so pass 2 can apply last-wins.
 * winners holds one int64 per destination row, initialised to -1 by the host. */
typedef struct CpugpuScatterWinnersParams {
    const void* indices;
    int64_t* winners;
    uint64_t* error;
    int64_t n;
    uint64_t dst_rows;
    int64_t allow_negative;
} CpugpuScatterWinnersParams;

/* scatter_rows_w<V>_<idx>: pass 2 of scatter. Row i is copied to dst[indices[i]] only when it won
 * (winners[indices[i]] == i). Does nothing when *error != CPUGPU_NO_ERROR. */
typedef struct CpugpuScatterRowsParams {
    const void* src;
    void* dst;
    const void* indices;
    const int64_t* winners;
    const uint64_t* error;
    int64_t n_indices;
    uint64_t dst_rows;
    int64_t row_units;
    int64_t lanes_per_row;
} CpugpuScatterRowsParams;

/* pad_w<V>: dst is `outer` rows of dst_row_units; each row starts with the src row
 * (src_row_units) and ends with the fill pattern. One kernel copies and fills. */
typedef struct CpugpuPadParams {
    const void* src;
    void* dst;
    int64_t outer;
    int64_t src_row_units;
    int64_t dst_row_units;
    uint64_t fill[2];
} CpugpuPadParams;

/* Prefix-sum offsets. `limit` is the offset type's maximum. Negative lengths count as 0 in the
 * sums and their position goes to *error; so does the position after which the running offset
 * first exceeds `limit`. Nothing is written to `offsets` when there is any error.
 * - offsets_single_<L>_<O>: one block, n <= tile: the whole job in one launch.
 * - offsets_reduce_<L>: pass 1, tile_sums[t] = saturating sum of tile t.
 * - offsets_scan_tiles: pass 2 (one block), tile_sums[t] = exclusive prefix, tile_sums[tiles] =
 *   total (all saturated at limit + 1).
 * - offsets_downsweep_<L>_<O>: pass 3, each tile rescans with its prefix and writes. */
typedef struct CpugpuOffsetsParams {
    const void* lengths;
    void* offsets;
    uint64_t* tile_sums;
    uint64_t* error;
    int64_t n;
    int64_t limit;
    int64_t tiles;
} CpugpuOffsetsParams;

/* flatten_w<V>_<O> and split_copy_w<V>: a batched copy of n segments in V-byte units.
 * seg_offsets (n + 1 int64, in units) places segment s at [seg_offsets[s], seg_offsets[s+1]) of
 * the flat side. Flatten: sources are src_ptrs[s], the destination is flat. Split: the source is
 * flat, destinations are dst_ptrs[s]. Work is split by flat position, so skewed segment sizes
 * stay balanced. Flatten also writes offsets_out[s] = seg_offsets[s] / units_per_elem. */
typedef struct CpugpuBatchedCopyParams {
    const void* const* src_ptrs;
    void* const* dst_ptrs;
    void* flat;
    const int64_t* seg_offsets;
    void* offsets_out;
    int64_t n_segments;
    int64_t units_per_elem;
    int64_t tile_units;
} CpugpuBatchedCopyParams;

/* capture_error: one thread, launched after a checked operation on the same stream. Copies the
 * error word into out[0] and, when it holds a position below n, the element of `data` at that
 * position (elem_bytes 4 or 8, zero-extended) into out[1]; then resets the error word to
 * CPUGPU_NO_ERROR for the next operation. `out` is mapped pinned host memory, read by the host
 * after the stream synchronises, so the error can name the offending value even when `data` has
 * been freed by then. */
typedef struct CpugpuErrorCaptureParams {
    uint64_t* error;
    const void* data;
    uint64_t* out;
    int64_t n;
    int64_t elem_bytes;
} CpugpuErrorCaptureParams;

/* Test-only canary kernels (emulator feature only): deliberately wrong, to prove the sanitizers
 * are live. */
typedef struct CpugpuCanaryParams {
    const uint64_t* src;
    uint64_t* dst;
    int64_t n;
} CpugpuCanaryParams;

/* ---- Input preparation (segment expansion, slot mapping, windowed gathers, staged writes and
 * the fused step). Their checks write a *coded* error word: (position << CPUGPU_CODE_BITS) |
 * code, so atomicMin keeps the first position and, at one position, the smallest code. Each
 * family has its own capture kernel, which writes the word and up to three values into the
 * 4-word read-out slot `report` and re-arms the word. Element types of indices, counts and
 * block numbers are given at run time (`*_i64` flags: 1 for int64, 0 for int32). */
#define CPUGPU_CODE_BITS 4

/* One KV-cache group's block table: `table` is [rows, cols] block numbers and `num_blocks`
 * [rows] valid blocks per row, both of the kernel's block-number type. */
typedef struct CpugpuKvGroup {
    const void* table;
    const void* num_blocks;
    uint64_t rows;
    int64_t cols;
    int64_t block_size;
} CpugpuKvGroup;

/* expand_scan (one block: validates the n counts, or n + 1 offsets when is_offsets, and writes
 * the n + 1 offsets into the int64 scratch `offs`), expand_write (seg_ids[i] and positions[i] =
 * starts[s] + i - offs[s] for the `total` elements; nothing when *error is set) and
 * expand_capture. `starts` may be NULL (0); pos_limit is the position type's maximum. */
typedef struct CpugpuExpandParams {
    const void* bounds;
    const void* starts;
    void* seg_ids;
    void* positions;
    int64_t* offs;
    uint64_t* error;
    uint64_t* report;
    int64_t n;
    int64_t total;
    int64_t is_offsets;
    int64_t bounds_i64;
    int64_t seg_i64;
    int64_t pos_i64;
    int64_t pos_limit;
} CpugpuExpandParams;

/* slot_mapping_validate, slot_mapping_write and slot_mapping_capture: for token t and group g,
 * slots[g * stride + t] = table_g[rows[t], positions[t] / bs_g] * bs_g + positions[t] % bs_g, and
 * slots[g * stride + t] = pad for n <= t < stride. slot_limit is the slot type's maximum. */
typedef struct CpugpuSlotMappingParams {
    const void* rows;
    const void* positions;
    const CpugpuKvGroup* groups;
    void* slots;
    uint64_t* error;
    uint64_t* report;
    int64_t n;
    int64_t n_groups;
    int64_t stride;
    int64_t pad;
    int64_t rows_i64;
    int64_t pos_i64;
    int64_t table_i64;
    int64_t slots_i64;
    int64_t slot_limit;
} CpugpuSlotMappingParams;

/* gather_windows_validate, gather_windows_w<V> and gather_windows_capture: entry r copies
 * table[rows[r], starts[r] .. starts[r] + len] (starts NULL: 0) to out[offsets[r] ..] (ragged:
 * extents holds n + 1 offsets, len = offsets[r + 1] - offsets[r]) or to out[r * width ..] (extents
 * holds n lengths). Sizes in elements; each element is units_per_elem units of V bytes. */
typedef struct CpugpuWindowsParams {
    const void* table;
    void* out;
    const void* rows;
    const void* starts;
    const void* extents;
    uint64_t* error;
    uint64_t* report;
    int64_t n;
    uint64_t table_rows;
    int64_t cols;
    int64_t out_len;
    int64_t width;
    int64_t ragged;
    int64_t idx_i64;
    int64_t units_per_elem;
} CpugpuWindowsParams;

/* staged_write_w<V>: one packed upload of n disjoint writes: write s puts values[cu[s] ..
 * cu[s + 1]] at dst[dst_offsets[s] ..]. Offsets in units of V bytes; total = cu[n]. */
typedef struct CpugpuStagedWriteParams {
    void* dst;
    const void* values;
    const int64_t* dst_offsets;
    const int64_t* cu;
    int64_t n;
    int64_t total;
} CpugpuStagedWriteParams;

/* step_validate, step_write and step_capture: the fused input preparation of one step.
 * `inputs` holds query_start_loc (n + 1), num_computed (n) and state_index (n), int32, checked
 * by the host; block tables are int32 and checked here. step_write writes query_start_loc
 * [max_reqs + 1] (tail: num_tokens), seq_lens [max_reqs] (tail 0), positions and input_ids
 * [padded_tokens] (tail 0), slot_mapping [n_groups, max_tokens] (tail pad_slot) and
 * logits_indices [n]; nothing when *error is set. */
typedef struct CpugpuStepParams {
    const int32_t* inputs;
    const CpugpuKvGroup* groups;
    const int32_t* token_ids;
    int32_t* query_start_loc;
    int32_t* seq_lens;
    int64_t* positions;
    int32_t* input_ids;
    int64_t* slot_mapping;
    int64_t* logits_indices;
    uint64_t* error;
    uint64_t* report;
    int64_t n;
    int64_t n_groups;
    int64_t num_tokens;
    int64_t padded_tokens;
    int64_t max_reqs;
    int64_t max_tokens;
    int64_t token_cols;
    int64_t pad_slot;
} CpugpuStepParams;

#endif /* CPUGPU_ABI_H */
