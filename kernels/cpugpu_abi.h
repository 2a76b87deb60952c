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

/* The most items (access units) a thread of a row or pad kernel has in flight per iteration:
 * the launch policy (src/kernels/launch.rs) picks `items` up to this, per access width. */
#define CPUGPU_MAX_ITEMS_W16 4
#define CPUGPU_MAX_ITEMS 8

/* A queue's control words (src/cuda/queue.rs): armed (all 0) when the queue is made, and left
 * armed by every kernel that uses them, so no operation clears them first.
 * - DONE: blocks of the running kernel that have finished (the last one does the kernel's
 *   closing work: the error read-out, resets) and sets it back to 0;
 * - TILE: the next tile of the look-back scan (each block takes its tile from it);
 * - SUM: the saturating total of the lengths (offsets_check, read by offsets_lookback). */
#define CPUGPU_CTL_DONE 0
#define CPUGPU_CTL_TILE 1
#define CPUGPU_CTL_SUM 2
#define CPUGPU_CTL_WORDS 4

/* Every checked operation's last kernel does the error read-out itself: its last block (or, where
 * the kernel validated everything in each block, block 0) writes `capture[0]` = the first bad
 * position (CPUGPU_NO_ERROR if none) and `capture[1]` = the offending element zero-extended,
 * into the operation's slot of the queue's mapped read-out ring, and re-arms the error word.
 * The host reads the slot after the stream synchronises (src/cuda/error_ring.rs). */

/* validate_indices_<idx>: every index must be in 0..bound (negatives allowed when
 * allow_negative != 0); the first bad position goes to *error. The pass before a large gather
 * (whose copy then writes nothing when it failed). Row counts are unsigned: with rows of zero
 * elements there may be more than INT64_MAX of them. */
typedef struct CpugpuValidateParams {
    const void* indices;
    uint64_t* error;
    int64_t n;
    uint64_t bound;
    int64_t allow_negative;
} CpugpuValidateParams;

/* gather_rows_w<V>_<idx>: dst[i, :] = src[indices[i], :], moved in V-byte units; row sizes in
 * units. A negative index writes the fill pattern (16 bytes holding the fill element repeated).
 * self_check != 0 (batch sizes, one launch): every block first checks every index, so no block
 * writes unless all are good, and block 0 writes the read-out slot; error and ctl are unused.
 * self_check == 0: validate_indices ran before; nothing is written when *error is set, and the
 * last block writes the slot and re-arms *error (ctl[DONE] counts the blocks).
 * Each thread moves up to `items` units per iteration, all loaded before any is stored. */
typedef struct CpugpuGatherRowsParams {
    const void* src;
    void* dst;
    const void* indices;
    uint64_t* error;
    uint64_t* ctl;
    uint64_t* capture;
    int64_t n_indices;
    uint64_t src_rows;
    int64_t row_units;
    int64_t lanes_per_row;
    int64_t items;
    int64_t allow_negative;
    int64_t self_check;
    uint64_t fill[2];
} CpugpuGatherRowsParams;

/* scatter_winners_<idx>: pass 1 of a large scatter. Validates every index (first bad position
 * into *error) and records winners[indices[i]] = max i (atomicMax) for the good ones, so pass 2
 * can apply last-wins. winners is the queue's array: one int64 per destination row, all -1
 * between operations. */
typedef struct CpugpuScatterWinnersParams {
    const void* indices;
    int64_t* winners;
    uint64_t* error;
    int64_t n;
    uint64_t dst_rows;
    int64_t allow_negative;
} CpugpuScatterWinnersParams;

/* scatter_rows_w<V>_<idx>: row i is copied to dst[indices[i]] only when it won
 * (winners[indices[i]] == i), so the last occurrence of a repeated index wins.
 * self_check != 0 (batch sizes, one launch): every block checks every index (block 0 writes the
 * read-out slot); when all are good every block records all winners (atomicMax, idempotent),
 * copies its rows, and the last block returns the entries it used to -1.
 * self_check == 0: scatter_winners ran before; each winner copies its row (nothing when *error
 * is set) and returns its entry to -1; the last block writes the slot and re-arms *error.
 * winners may be null when row_units == 0 (nothing moves; the indices are still checked). */
typedef struct CpugpuScatterRowsParams {
    const void* src;
    void* dst;
    const void* indices;
    int64_t* winners;
    uint64_t* error;
    uint64_t* ctl;
    uint64_t* capture;
    int64_t n_indices;
    uint64_t dst_rows;
    int64_t row_units;
    int64_t lanes_per_row;
    int64_t items;
    int64_t allow_negative;
    int64_t self_check;
} CpugpuScatterRowsParams;

/* pad_w<V>: dst is `outer` rows of dst_row_units; each row starts with the src row
 * (src_row_units) and ends with the fill pattern. One kernel copies and fills, up to `items`
 * units per thread per iteration, all loaded before any is stored. */
typedef struct CpugpuPadParams {
    const void* src;
    void* dst;
    int64_t outer;
    int64_t src_row_units;
    int64_t dst_row_units;
    int64_t items;
    uint64_t fill[2];
} CpugpuPadParams;

/* Prefix-sum offsets. `limit` is the offset type's maximum. Negative lengths count as 0 in the
 * sums and their position goes to *error; so does the position after which the running offset
 * first exceeds `limit`. Nothing is written to `offsets` when there is any error.
 * - offsets_single_<L>_<O>: one block, n <= one tile: the whole job and the read-out in one
 *   launch.
 * - offsets_check_<L>: pass 1 of a large scan, the check that keeps "nothing written on error":
 *   reports negative lengths and adds the saturated total into ctl[SUM].
 * - offsets_lookback_<L>_<O>: pass 2, a single-pass scan with decoupled look-back: each block
 *   takes its tiles from ctl[TILE] in start order, publishes the tile's sum, looks back over the
 *   published sums and prefixes of earlier tiles for its own prefix, reports negatives and the
 *   overflow position, and writes its offsets unless pass 1 saw an error. tile_state holds
 *   3 words per tile (status = epoch << 2 | 1 for the sum, | 2 for the inclusive prefix; sum;
 *   prefix): the queue's array, valid for this operation only where the epoch matches, so it is
 *   never cleared. The last block writes the read-out slot and re-arms error and ctl. */
typedef struct CpugpuOffsetsParams {
    const void* lengths;
    void* offsets;
    uint64_t* tile_state;
    uint64_t* error;
    uint64_t* ctl;
    uint64_t* capture;
    int64_t n;
    int64_t limit;
    int64_t tiles;
    uint64_t epoch;
} CpugpuOffsetsParams;

/* flatten_w16_<O> and split_copy_w16: a batched copy of n segments of bytes. Segment s is
 * seg_offsets[s] .. seg_offsets[s + 1] (bytes) of `flat`; its other side is src_ptrs[s]
 * (flatten) or dst_ptrs[s] (split). Every segment moves as a head, a body of 16-byte accesses
 * aligned on the destination (source words shifted into place where the two alignments differ)
 * and a tail, whatever the element size. Segments are sorted by size on the host into tiers:
 * `small` (one thread each), `medium` (one warp each) and `large` (split into chunks of
 * chunk_bytes, one block each); large_chunks[j] is the first chunk of large segment j
 * (n_large + 1 entries, the last one the chunk count). Flatten also writes
 * offsets_out[s] = seg_offsets[s] / elem_bytes. */
typedef struct CpugpuBatchedCopyParams {
    const void* const* src_ptrs;
    void* const* dst_ptrs;
    void* flat;
    const int64_t* seg_offsets;
    const int64_t* small;
    const int64_t* medium;
    const int64_t* large;
    const int64_t* large_chunks;
    void* offsets_out;
    int64_t n_segments;
    int64_t elem_bytes;
    int64_t n_small;
    int64_t n_medium;
    int64_t n_large;
    int64_t chunk_bytes;
} CpugpuBatchedCopyParams;

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
