"""The original module's typical use, on cpugpu: the input preparation of an inference engine's
batching steps (the Python twin of examples/batch_step.rs).

Each step schedules prefill requests (many new tokens) and decode requests (one token), then:

1. takes its staging buffers from a round-robin pool (depth 2: step k+1 is prepared while
   step k's copies may still be in flight; a slot stays out of the pool while this step holds
   it);
2. flattens the requests' ragged token lists into ``input_ids`` with ``query_start_loc``;
3. gathers each token's block-table row to build ``slot_mapping``;
4. pads both to a multiple of 8 (CUDA-graph batch sizes), padding slots with -1;
5. fills the pool buffers in place (``buf.cpu`` is the buffer's memory) and uploads only the
   active prefix (``copy_to_gpu(n)``);
6. scatters the step's key rows into a paged KV cache at ``slot_mapping``, skipping the padding;
7. splits ``input_ids`` back into per-request views and checks them.

On the host backend a buffer's ``gpu`` side is a numpy view; on a GPU (``--features cuda``, or the
emulated GPU of ``--features emulator``) it is a ``DeviceArray`` of CUDA memory, and the split
runs on it there (its segments are device views, copied back here only to check them).

    python python/examples/batch_step.py [--requests N] [--steps S] [--seed X]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import cpugpu

BLOCK_SIZE = 16
MAX_BLOCKS_PER_REQ = 128
HEAD_DIM = 64
PAD_MULTIPLE = 8
MAX_TOKENS = 16384


def on_host(a):
    """`a` as a numpy array: itself, or a copy of CUDA memory."""
    return a if isinstance(a, np.ndarray) else a.copy_to_host()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    info = cpugpu.backend_info()
    print(f"cpugpu {cpugpu.__version__}: buffers on {info['device']} ({info['fallback_reason'] or 'requested'})")
    pool = cpugpu.UvaBufferPool("inputs", depth=2)
    num_blocks = args.requests * MAX_BLOCKS_PER_REQ
    kv_cache = np.zeros((num_blocks * BLOCK_SIZE, HEAD_DIM), np.float16)
    # Each request owns a run of physical blocks; its block table maps logical to physical.
    block_table = rng.permutation(num_blocks).astype(np.int32).reshape(args.requests, MAX_BLOCKS_PER_REQ)

    for step in range(args.steps):
        t0 = time.perf_counter()
        stages = []

        def stage(name, start, what):
            stages.append((name, (time.perf_counter() - start) * 1e6, what))

        # Scheduling: 1 in 8 requests is a prefill of up to 200 tokens, the rest decode.
        n_new = np.where(rng.random(args.requests) < 0.125, rng.integers(16, 200, args.requests), 1)
        budget = np.cumsum(n_new) <= MAX_TOKENS - PAD_MULTIPLE
        n_new = n_new[budget]
        reqs = np.flatnonzero(budget)
        tokens = [rng.integers(0, 32000, int(n), dtype=np.int32) for n in n_new]
        past = rng.integers(0, (MAX_BLOCKS_PER_REQ - 13) * BLOCK_SIZE, len(reqs))

        t = time.perf_counter()
        query_start_loc = cpugpu.compute_cumsum_offsets(n_new, dtype=np.int32)
        stage("offsets", t, f"query_start_loc of {len(reqs)} requests")

        t = time.perf_counter()
        input_ids, offsets = cpugpu.flatten_with_offsets(tokens)
        n_tokens = len(input_ids)
        stage("flatten", t, f"{n_tokens} input_ids")

        t = time.perf_counter()
        # Each token's position, and its request's block-table row (a gather by request).
        req_of_token = np.repeat(np.arange(len(reqs), dtype=np.int64), n_new)
        positions = (np.arange(n_tokens) - offsets[req_of_token] + past[req_of_token]).astype(np.int64)
        rows = np.empty((n_tokens, MAX_BLOCKS_PER_REQ), np.int32)
        cpugpu.copy_with_indices(block_table, rows, reqs[req_of_token])
        block = rows[np.arange(n_tokens), positions // BLOCK_SIZE].astype(np.int64)
        slot_mapping = block * BLOCK_SIZE + positions % BLOCK_SIZE
        stage("gather", t, "slot_mapping from the block table")

        t = time.perf_counter()
        ids_padded = cpugpu.pad_to_multiple(input_ids, PAD_MULTIPLE, pad_value=0)
        slots_padded = cpugpu.pad_to_multiple(slot_mapping, PAD_MULTIPLE, pad_value=-1)
        n = len(ids_padded)
        stage("pad", t, f"{n_tokens} -> {n} tokens")

        t = time.perf_counter()
        ids_buf = pool.allocate("input_ids", MAX_TOKENS, np.int32)
        pos_buf = pool.allocate("positions", MAX_TOKENS, np.int64)
        slot_buf = pool.allocate("slot_mapping", MAX_TOKENS, np.int64, placement=cpugpu.MemoryPlacement.UVA)
        ids_buf.cpu[:n] = ids_padded
        pos_buf.cpu[:n_tokens] = positions
        slot_buf.cpu[:n] = slots_padded  # UVA: the device reads this memory, no upload
        ids_buf.copy_to_gpu(n)
        pos_buf.copy_to_gpu(n)
        stage("upload", t, f"slots {ids_buf.slot}/{pos_buf.slot}/{slot_buf.slot} of depth {pool.depth}")

        keys = rng.standard_normal((n, HEAD_DIM)).astype(np.float16)  # this step's key rows
        t = time.perf_counter()
        # The KV cache is host memory here, so the host reads the UVA buffer's host side.
        cpugpu.scatter_with_indices(keys, kv_cache, slot_buf.cpu[:n], policy="negative_skip")
        stage("scatter", t, f"{n_tokens} key rows into the KV cache, {n - n_tokens} padding rows skipped")

        t = time.perf_counter()
        parts = cpugpu.split_by_offsets(ids_buf.gpu[:n_tokens], offsets)  # what was uploaded
        assert all((on_host(p) == tok).all() for p, tok in zip(parts, tokens))
        assert (kv_cache[slot_mapping] == keys[:n_tokens]).all()
        stage("split", t, f"{len(parts)} per-request views, checked")

        print(f"step {step}: {len(reqs)} requests, {n_tokens} tokens, {(time.perf_counter() - t0) * 1e3:.2f} ms")
        for name, us, what in stages:
            print(f"  {name:<8} {us:9.1f} us  {what}")
        # The step ends: dropping the buffers returns their slots once nothing views them.
        del ids_buf, pos_buf, slot_buf, parts
    print(pool.stats()["slots_in_use"], "slots in use after the last step")


if __name__ == "__main__":
    main()
