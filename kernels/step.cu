// The fused input preparation of one step (vLLM's prepare_pos_seq_lens, prepare_prefill_inputs,
// compute_slot_mappings and the query_start_loc / logits_indices arithmetic, in three launches).
//
// The host checked and packed its own inputs (query_start_loc computed on the host, where the
// scheduler's counts are, the computed counts and the request-state indices: one upload). On the
// device:
// - step_validate: every (token, KV-cache group) pair's block against the row's valid blocks, and
//   the block number read there (>= 0);
// - step_write: every output, padded for CUDA graphs (query_start_loc's tail num_tokens,
//   seq_lens' tail 0, positions' and input_ids' tail 0 up to the padded token count,
//   slot_mapping's tail pad_slot over its whole row); nothing when the error word is set;
// - step_capture.
// A token finds its request by binary search in query_start_loc, so prefills of hundreds of tokens
// and single-token decodes balance.
//
// Error codes at position t * n_groups + g: 2 the block outside 0..valid, 3 a negative block number
// (the same codes as slot_mapping.cu).
#include "prep_common.cuh"

namespace cpugpu {

constexpr unsigned STEP_BLOCK = 2, STEP_NEGATIVE = 3;

struct StepToken {
    long long state, pos;
};

// Token t's request state and position (t < num_tokens).
__device__ __forceinline__ StepToken step_token(const CpugpuStepParams& p, long long t) {
    const int32_t* qsl = p.inputs;
    const int32_t* computed = p.inputs + p.n + 1;
    const int32_t* state = p.inputs + 2 * p.n + 1;
    long long lo = 0, hi = p.n - 1;
    while (lo < hi) {
        const long long mid = lo + (hi - lo + 1) / 2;
        if (__ldg(qsl + mid) <= t) lo = mid; else hi = mid - 1;
    }
    return StepToken{__ldg(state + lo), __ldg(computed + lo) + (t - __ldg(qsl + lo))};
}

struct StepBlock {
    unsigned code;
    long long block, valid, entry, offset;
};

__device__ __forceinline__ StepBlock step_block(const CpugpuStepParams& p, StepToken tok, long long g) {
    const CpugpuKvGroup grp = p.groups[g];
    StepBlock b{0, tok.pos / grp.block_size, 0, 0, 0};
    b.offset = tok.pos - b.block * grp.block_size;
    const long long nb = __ldg(static_cast<const int32_t*>(grp.num_blocks) + tok.state);
    b.valid = nb < 0 ? 0 : (nb > grp.cols ? grp.cols : nb);
    if (b.block >= b.valid) {
        b.code = STEP_BLOCK;
        return b;
    }
    b.entry = __ldg(static_cast<const int32_t*>(grp.table) + tok.state * grp.cols + b.block);
    if (b.entry < 0) b.code = STEP_NEGATIVE;
    return b;
}

__device__ __forceinline__ void step_validate_body(const CpugpuStepParams& p) {
    auto* error = reinterpret_cast<unsigned long long*>(p.error);
    const long long pairs = p.num_tokens * p.n_groups;
    for (long long k = global_thread(); k < pairs; k += total_threads()) {
        const long long t = k / p.n_groups;
        const StepBlock b = step_block(p, step_token(p, t), k - t * p.n_groups);
        if (b.code != 0) prep_report(error, k, b.code);
    }
}

__device__ __forceinline__ void step_write_body(const CpugpuStepParams& p) {
    if (*p.error != CPUGPU_NO_ERROR) return;  // set by step_validate
    const long long tid = global_thread();
    const long long stride = total_threads();
    const int32_t* qsl = p.inputs;
    const int32_t* computed = p.inputs + p.n + 1;
    for (long long i = tid; i <= p.max_reqs; i += stride) {
        p.query_start_loc[i] = i <= p.n ? __ldg(qsl + i) : static_cast<int32_t>(p.num_tokens);
    }
    for (long long i = tid; i < p.max_reqs; i += stride) {
        p.seq_lens[i] = i < p.n ? __ldg(computed + i) + (__ldg(qsl + i + 1) - __ldg(qsl + i)) : 0;
    }
    for (long long i = tid; i < p.n; i += stride) p.logits_indices[i] = __ldg(qsl + i + 1) - 1;
    for (long long t = tid; t < p.padded_tokens; t += stride) {
        long long pos = 0;
        int32_t id = 0;
        if (t < p.num_tokens) {
            const StepToken tok = step_token(p, t);
            pos = tok.pos;
            id = __ldg(p.token_ids + tok.state * p.token_cols + tok.pos);
        }
        p.positions[t] = pos;
        p.input_ids[t] = id;
    }
    const long long slots = p.n_groups * p.max_tokens;
    for (long long k = tid; k < slots; k += stride) {
        const long long g = k / p.max_tokens;
        const long long t = k - g * p.max_tokens;
        long long slot = p.pad_slot;
        if (t < p.num_tokens) {
            const StepBlock b = step_block(p, step_token(p, t), g);
            slot = b.entry * p.groups[g].block_size + b.offset;
        }
        p.slot_mapping[k] = slot;
    }
}

__device__ __forceinline__ void step_capture_body(const CpugpuStepParams& p) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const unsigned long long key = *p.error;
    long long v0 = 0, v1 = 0;
    if (key != CPUGPU_NO_ERROR) {
        const long long k = static_cast<long long>(key >> CPUGPU_CODE_BITS);
        const long long t = k / p.n_groups;
        const StepBlock b = step_block(p, step_token(p, t), k - t * p.n_groups);
        v0 = b.code == STEP_BLOCK ? b.block : b.entry;
        v1 = b.valid;
    }
    prep_write_report(p.error, p.report, key, v0, v1, 0);
}

}  // namespace cpugpu

extern "C" __global__ void step_validate(const CpugpuStepParams p) { cpugpu::step_validate_body(p); }
extern "C" __global__ void step_write(const CpugpuStepParams p) { cpugpu::step_write_body(p); }
extern "C" __global__ void step_capture(const CpugpuStepParams p) { cpugpu::step_capture_body(p); }
