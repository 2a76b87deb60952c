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

#endif /* CPUGPU_ABI_H */
