// Slot mapping through block tables, for one or several KV-cache groups in one launch:
//   slots[g, t] = table_g[rows[t], positions[t] / bs_g] * bs_g + positions[t] % bs_g
// for the n tokens, and the pad id for t in n .. stride (vLLM's PAD_SLOT_ID tail for CUDA graphs).
//
// Three launches: slot_mapping_validate (every (token, group) pair: the row, the block against
// the row's valid blocks, the block number, the slot against the slot type), slot_mapping_write
// (nothing when the error word is set) and slot_mapping_capture. No block-table entry is read
// outside a row's valid blocks, so a bad position is an error, not a wild read.
//
// Error codes at position t * n_groups + g:
//   1 rows[t] outside 0..rows_g      2 the block outside 0..valid (valid = num_blocks clamped to cols)
//   3 a negative block number         4 the slot passes slot_limit
#include "prep_common.cuh"

namespace cpugpu {

constexpr unsigned SLOT_ROW = 1, SLOT_BLOCK = 2, SLOT_NEGATIVE = 3, SLOT_OVERFLOW = 4;

// What one (token, group) pair resolves to; `code` is 0 when it is valid.
struct SlotLookup {
    unsigned code;
    long long row, block, valid, entry, offset;
};

__device__ __forceinline__ SlotLookup slot_lookup(const CpugpuSlotMappingParams& p, long long t, long long g) {
    const CpugpuKvGroup grp = p.groups[g];
    const bool t64 = p.table_i64 != 0;
    SlotLookup r{0, prep_load(p.rows, t, p.rows_i64 != 0), 0, 0, 0, 0};
    if (r.row < 0 || static_cast<unsigned long long>(r.row) >= grp.rows) {
        r.code = SLOT_ROW;
        return r;
    }
    const long long pos = prep_load(p.positions, t, p.pos_i64 != 0);
    r.block = prep_floor_div(pos, grp.block_size);
    r.offset = pos - r.block * grp.block_size;
    const long long nb = prep_load(grp.num_blocks, r.row, t64);
    r.valid = nb < 0 ? 0 : (nb > grp.cols ? grp.cols : nb);
    if (r.block < 0 || r.block >= r.valid) {
        r.code = SLOT_BLOCK;
        return r;
    }
    r.entry = prep_load(grp.table, r.row * grp.cols + r.block, t64);
    if (r.entry < 0) {
        r.code = SLOT_NEGATIVE;
    } else if (r.entry > (p.slot_limit - r.offset) / grp.block_size) {
        r.code = SLOT_OVERFLOW;
    }
    return r;
}

__device__ __forceinline__ void slot_mapping_validate_body(const CpugpuSlotMappingParams& p) {
    auto* error = reinterpret_cast<unsigned long long*>(p.error);
    const long long pairs = p.n * p.n_groups;
    for (long long k = global_thread(); k < pairs; k += total_threads()) {
        const SlotLookup r = slot_lookup(p, k / p.n_groups, k % p.n_groups);
        if (r.code != 0) prep_report(error, k, r.code);
    }
}

// Group-major, so consecutive threads write consecutive slots.
__device__ __forceinline__ void slot_mapping_write_body(const CpugpuSlotMappingParams& p) {
    if (*p.error != CPUGPU_NO_ERROR) return;  // set by slot_mapping_validate
    const bool o64 = p.slots_i64 != 0;
    const long long all = p.n_groups * p.stride;
    for (long long k = global_thread(); k < all; k += total_threads()) {
        const long long g = k / p.stride;
        const long long t = k - g * p.stride;
        long long slot = p.pad;
        if (t < p.n) {
            const SlotLookup r = slot_lookup(p, t, g);
            slot = r.entry * p.groups[g].block_size + r.offset;
        }
        prep_store(p.slots, k, slot, o64);
    }
}

__device__ __forceinline__ void slot_mapping_capture_body(const CpugpuSlotMappingParams& p) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const unsigned long long key = *p.error;
    long long v0 = 0, v1 = 0;
    if (key != CPUGPU_NO_ERROR) {
        const long long k = static_cast<long long>(key >> CPUGPU_CODE_BITS);
        const long long g = k % p.n_groups;
        const SlotLookup r = slot_lookup(p, k / p.n_groups, g);
        switch (r.code) {
            case SLOT_ROW: v0 = r.row; v1 = static_cast<long long>(p.groups[g].rows); break;
            case SLOT_BLOCK: v0 = r.block; v1 = r.valid; break;
            case SLOT_NEGATIVE: v0 = r.entry; break;
            default: break;
        }
    }
    prep_write_report(p.error, p.report, key, v0, v1, 0);
}

}  // namespace cpugpu

extern "C" __global__ void slot_mapping_validate(const CpugpuSlotMappingParams p) { cpugpu::slot_mapping_validate_body(p); }
extern "C" __global__ void slot_mapping_write(const CpugpuSlotMappingParams p) { cpugpu::slot_mapping_write_body(p); }
extern "C" __global__ void slot_mapping_capture(const CpugpuSlotMappingParams p) { cpugpu::slot_mapping_capture_body(p); }
