#!/usr/bin/env python3
"""One step of vLLM's input preparation written with numpy, the way vLLM's CPU path writes it
(np.repeat for the request index of every token, a cumsum-and-repeat arange for positions, a
flat np.take into the token table and into each block table, slot arithmetic, then the padding
CUDA graphs need). `cpugpu`'s `Device::prepare_step` must give identical results:
`tests/step.rs` compares it with the golden files this script writes (`--golden`), and with a
fresh run of this script when numpy is there.

Usage:
    python benches/step_reference.py --golden tests/data/step_golden.txt   # the committed cases
    python benches/step_reference.py --golden FILE --seeds 11 12 13        # more random cases

`benches/compare_numpy.py` imports `prepare_step_numpy` and `make_step` for the benchmark rows
`prepare_step` and `prepare_step_decode`.
"""

import argparse
import sys

import numpy as np

PAD_SLOT_ID = -1


def cuda_graph_sizes(max_size=512):
    """vLLM's default capture sizes: 1, 2, 4, then multiples of 8."""
    return [1, 2, 4] + list(range(8, max_size + 1, 8))


def bucket(num_tokens, sizes):
    """The smallest capture size that holds the tokens; unpadded above the largest."""
    i = np.searchsorted(sizes, num_tokens)
    return sizes[i] if i < len(sizes) else num_tokens


def prepare_step_numpy(inputs, out):
    """Writes one step into the persistent buffers `out` (dict of numpy arrays) and returns
    (num_tokens, padded_tokens). `inputs`: state_index, num_computed, num_scheduled (int32
    arrays, batch order), token_ids [rows, max_model_len] int32, block_tables (list of [rows,
    max_blocks] int32), block_sizes, sizes (the capture sizes)."""
    state_index = inputs["state_index"]
    num_computed = inputs["num_computed"]
    num_scheduled = inputs["num_scheduled"]
    n = num_scheduled.shape[0]
    cu_num_tokens = np.cumsum(num_scheduled, dtype=np.int64)
    num_tokens = int(cu_num_tokens[-1]) if n else 0
    padded = bucket(num_tokens, inputs["sizes"])

    # The request of every token, and its position: computed + (i - the request's first token).
    req_indices = np.repeat(np.arange(n, dtype=np.int32), num_scheduled)
    arange = np.arange(num_tokens, dtype=np.int64) - np.repeat(cu_num_tokens - num_scheduled, num_scheduled)
    positions = num_computed[req_indices].astype(np.int64) + arange
    states = state_index[req_indices].astype(np.int64)

    token_ids = inputs["token_ids"]
    token_indices = positions + states * token_ids.shape[1]
    np.take(token_ids.ravel(), token_indices, out=out["input_ids"][:num_tokens])
    out["input_ids"][num_tokens:padded] = 0
    out["positions"][:num_tokens] = positions
    out["positions"][num_tokens:padded] = 0

    for g, (table, block_size) in enumerate(zip(inputs["block_tables"], inputs["block_sizes"])):
        block_table_indices = states * table.shape[1] + positions // block_size
        block_numbers = table.ravel()[block_table_indices].astype(np.int64)
        out["slot_mapping"][g, :num_tokens] = block_numbers * block_size + positions % block_size
        out["slot_mapping"][g, num_tokens:] = PAD_SLOT_ID

    qsl = out["query_start_loc"]
    qsl[0] = 0
    qsl[1 : n + 1] = cu_num_tokens
    qsl[n + 1 :] = num_tokens
    out["seq_lens"][:n] = num_computed + num_scheduled
    out["seq_lens"][n:] = 0
    out["logits_indices"][:n] = qsl[1 : n + 1] - 1
    return num_tokens, padded


def make_step(seed, n_prefill, n_decode, max_model_len, block_sizes, rows, max_prefill):
    """A random step: `rows` request states with block tables filled from a shuffled free list
    (each state owns the blocks its tokens need); n_prefill requests scheduling 1..max_prefill
    new tokens and n_decode decoding one, in random states; one prefill reaches max_model_len."""
    rng = np.random.default_rng(seed)
    n = n_prefill + n_decode
    assert n <= rows
    token_ids = rng.integers(0, 50_000, size=(rows, max_model_len), dtype=np.int32)
    state_index = rng.permutation(rows)[:n].astype(np.int32)
    num_scheduled = np.ones(n, dtype=np.int32)
    num_computed = np.zeros(n, dtype=np.int32)
    for r in range(n):
        if r < n_prefill:
            k = int(rng.integers(1, max_prefill + 1))
            c = int(rng.integers(0, max_model_len - k + 1))
            if r == 0:
                c = max_model_len - k  # a request at the maximum model length
        else:
            k = 1
            c = int(rng.integers(0, max_model_len))
        num_scheduled[r], num_computed[r] = k, c
    order = rng.permutation(n)  # prefills and decodes interleaved
    state_index, num_computed, num_scheduled = state_index[order], num_computed[order], num_scheduled[order]
    seq_len = np.zeros(rows, dtype=np.int64)
    seq_len[state_index] = num_computed.astype(np.int64) + num_scheduled
    block_tables, num_blocks = [], []
    for bs in block_sizes:
        max_blocks = -(-max_model_len // bs)
        table = np.full((rows, max_blocks), -1, dtype=np.int32)
        nb = np.zeros(rows, dtype=np.int32)
        free = rng.permutation(rows * max_blocks).astype(np.int32)
        at = 0
        for s in range(rows):
            need = int(-(-seq_len[s] // bs)) if seq_len[s] else int(rng.integers(0, max_blocks + 1))
            table[s, :need] = free[at : at + need]
            nb[s] = need
            at += need
        block_tables.append(table)
        num_blocks.append(nb)
    return {
        "state_index": state_index,
        "num_computed": num_computed,
        "num_scheduled": num_scheduled,
        "token_ids": token_ids,
        "block_tables": block_tables,
        "num_blocks": num_blocks,
        "block_sizes": list(block_sizes),
        "sizes": cuda_graph_sizes(512),
    }


def new_outputs(max_reqs, max_tokens, groups, poison=True):
    fill = -7 if poison else 0
    return {
        "query_start_loc": np.full(max_reqs + 1, fill, dtype=np.int32),
        "seq_lens": np.full(max_reqs, fill, dtype=np.int32),
        "positions": np.full(max_tokens, fill, dtype=np.int64),
        "input_ids": np.full(max_tokens, fill, dtype=np.int32),
        "slot_mapping": np.full((groups, max_tokens), fill, dtype=np.int64),
        "logits_indices": np.full(max_reqs, fill, dtype=np.int64),
    }


CASES = {
    # name: (seed, prefills, decodes, max_model_len, block sizes, rows, max prefill, max_reqs, max_tokens)
    "mixed": (1, 3, 7, 256, (16, 32), 24, 200, 16, 1024),
    "decode": (2, 0, 40, 128, (16,), 48, 1, 48, 64),
    "one_token": (3, 0, 1, 64, (16, 8), 4, 1, 4, 8),
    "few_tokens": (4, 2, 3, 64, (16,), 8, 3, 8, 16),
    "no_requests": (5, 0, 0, 64, (16,), 4, 1, 4, 8),
    "above_largest_bucket": (6, 2, 1, 1024, (16,), 4, 400, 4, 1024),
}


def write_case(f, name, params):
    seed, npf, ndc, mml, bss, rows, maxp, max_reqs, max_tokens = params
    inp = make_step(seed, npf, ndc, mml, bss, rows, maxp)
    out = new_outputs(max_reqs, max_tokens, len(bss))
    num_tokens, padded = prepare_step_numpy(inp, out)
    line = lambda key, arr: f.write(key + " " + " ".join(str(int(x)) for x in np.asarray(arr).ravel()) + "\n")
    f.write(f"case {name}\n")
    line("dims", [rows, mml, max_reqs, max_tokens, num_tokens, padded])
    line("block_sizes", bss)
    for key in ("state_index", "num_computed", "num_scheduled", "token_ids"):
        line(key, inp[key])
    for g in range(len(bss)):
        line(f"block_table{g}", inp["block_tables"][g])
        line(f"num_blocks{g}", inp["num_blocks"][g])
    for key in ("query_start_loc", "seq_lens", "positions", "input_ids", "slot_mapping", "logits_indices"):
        line("out_" + key, out[key])
    f.write("end\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--golden", required=True, help="file to write the cases to")
    ap.add_argument("--seeds", type=int, nargs="*", help="random mixed cases with these seeds instead of the fixed ones")
    args = ap.parse_args()
    with open(args.golden, "w") as f:
        f.write(f"# Written by benches/step_reference.py (numpy {np.__version__}); outputs poisoned with -7 before the step.\n")
        if args.seeds:
            for s in args.seeds:
                write_case(f, f"seed{s}", (s, 5, 20, 512, (16, 32), 40, 300, 32, 4096))
        else:
            for name, params in CASES.items():
                write_case(f, name, params)
    print(f"wrote {args.golden}", file=sys.stderr)


if __name__ == "__main__":
    main()
