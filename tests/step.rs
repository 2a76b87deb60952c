//! The fused step, `Device::prepare_step`: identical to vLLM's numpy formulation
//! (`benches/step_reference.py`) on the committed golden cases and, when numpy is there, on
//! fresh ones; against a per-token oracle on random steps (prefills and decodes mixed, block
//! tables from a shuffled free list, several KV-cache groups, the pool reused step after step);
//! boundary sizes (0 requests, 1 token, <= 8 tokens, a request at the maximum model length);
//! three launches on the GPU; and every error, with nothing written.

mod common;

use std::collections::HashMap;

use common::prep::*;
use common::rng;
use cpugpu::{
    cuda_graph_sizes, BackendKind, Device, Error, KvCacheGroup, Op, StepOutputs, StepPadding,
    StepPlan, StepRequests, StepState, UvaBufferPool,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;

const POISON: i64 = -7;

/// A step's inputs and the persistent state, on the host.
#[derive(Clone, Debug, Default)]
struct Step {
    rows: usize,
    max_model_len: usize,
    max_reqs: usize,
    max_tokens: usize,
    block_sizes: Vec<usize>,
    state_index: Vec<i32>,
    num_computed: Vec<i32>,
    num_scheduled: Vec<i32>,
    token_ids: Vec<i32>,
    tables: Vec<Vec<i32>>,
    num_blocks: Vec<Vec<i32>>,
}

/// The six outputs, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outs {
    qsl: Vec<i32>,
    seq_lens: Vec<i32>,
    positions: Vec<i64>,
    input_ids: Vec<i32>,
    slots: Vec<i64>,
    logits: Vec<i64>,
}

fn max_blocks(s: &Step, g: usize) -> usize {
    s.max_model_len.div_ceil(s.block_sizes[g])
}

/// Runs the step on `dev` with outputs poisoned to -7; returns the plan (or error) and outputs.
fn run(
    dev: &Device,
    pool: &UvaBufferPool,
    s: &Step,
    padding: StepPadding<'_>,
) -> (cpugpu::Result<StepPlan>, Outs) {
    let tok = up(dev, &s.token_ids, &[s.rows, s.max_model_len]);
    let bufs: Vec<_> = (0..s.block_sizes.len())
        .map(|g| {
            (
                up(dev, &s.tables[g], &[s.rows, max_blocks(s, g)]),
                up(dev, &s.num_blocks[g], &[s.rows]),
            )
        })
        .collect();
    let groups: Vec<KvCacheGroup<'_, i32>> = bufs
        .iter()
        .zip(&s.block_sizes)
        .map(|((t, n), &bs)| KvCacheGroup {
            block_table: t.view(),
            num_blocks: n.view(),
            block_size: bs,
        })
        .collect();
    let g = groups.len();
    let p32 = POISON as i32;
    let mut qsl = up(dev, &vec![p32; s.max_reqs + 1], &[s.max_reqs + 1]);
    let mut seq = up(dev, &vec![p32; s.max_reqs], &[s.max_reqs]);
    let mut logits = up(dev, &vec![POISON; s.max_reqs], &[s.max_reqs]);
    let mut pos = up(dev, &vec![POISON; s.max_tokens], &[s.max_tokens]);
    let mut ids = up(dev, &vec![p32; s.max_tokens], &[s.max_tokens]);
    let mut slots = up(dev, &vec![POISON; g * s.max_tokens], &[g, s.max_tokens]);
    let req = StepRequests {
        state_index: &s.state_index,
        num_computed: &s.num_computed,
        num_scheduled: &s.num_scheduled,
    };
    let state = StepState {
        token_ids: tok.view(),
        kv_groups: &groups,
    };
    let out = StepOutputs {
        query_start_loc: qsl.view_mut(),
        seq_lens: seq.view_mut(),
        positions: pos.view_mut(),
        input_ids: ids.view_mut(),
        slot_mapping: slots.view_mut(),
        logits_indices: logits.view_mut(),
    };
    let plan = settled(dev, dev.prepare_step(pool, &req, &state, padding, out));
    let outs = Outs {
        qsl: read(&qsl),
        seq_lens: read(&seq),
        positions: read(&pos),
        input_ids: read(&ids),
        slots: read(&slots),
        logits: read(&logits),
    };
    (plan, outs)
}

// ---- the golden cases of benches/step_reference.py ----

fn parse_golden(text: &str) -> Vec<(String, Step, Vec<usize>, Outs)> {
    let mut cases = Vec::new();
    let mut fields: HashMap<String, Vec<i64>> = HashMap::new();
    let mut name = String::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let mut it = line.split(' ');
        let key = it.next().unwrap();
        match key {
            "case" => {
                name = it.next().unwrap().to_string();
                fields.clear();
            }
            "end" => {
                let f = |k: &str| fields[k].clone();
                let i32s = |k: &str| f(k).into_iter().map(|v| v as i32).collect::<Vec<i32>>();
                let d = f("dims");
                let bss: Vec<usize> = f("block_sizes").into_iter().map(|v| v as usize).collect();
                let step = Step {
                    rows: d[0] as usize,
                    max_model_len: d[1] as usize,
                    max_reqs: d[2] as usize,
                    max_tokens: d[3] as usize,
                    state_index: i32s("state_index"),
                    num_computed: i32s("num_computed"),
                    num_scheduled: i32s("num_scheduled"),
                    token_ids: i32s("token_ids"),
                    tables: (0..bss.len())
                        .map(|g| i32s(&format!("block_table{g}")))
                        .collect(),
                    num_blocks: (0..bss.len())
                        .map(|g| i32s(&format!("num_blocks{g}")))
                        .collect(),
                    block_sizes: bss,
                };
                let outs = Outs {
                    qsl: i32s("out_query_start_loc"),
                    seq_lens: i32s("out_seq_lens"),
                    positions: f("out_positions"),
                    input_ids: i32s("out_input_ids"),
                    slots: f("out_slot_mapping"),
                    logits: f("out_logits_indices"),
                };
                cases.push((name.clone(), step, vec![d[4] as usize, d[5] as usize], outs));
            }
            _ => {
                let v: Vec<i64> = it
                    .filter(|x| !x.is_empty())
                    .map(|x| x.parse().unwrap())
                    .collect();
                fields.insert(key.to_string(), v);
            }
        }
    }
    cases
}

fn check_golden(text: &str, what: &str) -> usize {
    let cases = parse_golden(text);
    let sizes = cuda_graph_sizes(512);
    for dev in backends() {
        let pool = UvaBufferPool::new(&dev, 2);
        for (name, step, dims, want) in &cases {
            let (plan, got) = run(&dev, &pool, step, StepPadding::Buckets(&sizes));
            let plan = plan.unwrap_or_else(|e| panic!("{what} {name} on {}: {e}", dev.kind()));
            assert_eq!(
                (plan.num_tokens, plan.padded_tokens),
                (dims[0], dims[1]),
                "{what} {name}"
            );
            assert_eq!(
                &got,
                want,
                "{what} {name} on {}: identical to numpy",
                dev.kind()
            );
        }
    }
    cases.len()
}

#[test]
fn identical_to_vllms_numpy_formulation_on_the_golden_cases() {
    let text = include_str!("data/step_golden.txt");
    assert_eq!(check_golden(text, "golden"), 6);
}

/// A Python with numpy: `CPUGPU_NUMPY_PYTHON` (which must have it: CI sets it), the benchmark
/// venv, or `python3`.
fn numpy_python() -> Option<String> {
    if let Ok(py) = std::env::var("CPUGPU_NUMPY_PYTHON") {
        let ok = std::process::Command::new(&py)
            .args(["-c", "import numpy"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "CPUGPU_NUMPY_PYTHON={py} cannot import numpy");
        return Some(py);
    }
    let candidates = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-bench/bin/python").to_string(),
        "python3".to_string(),
    ];
    candidates.into_iter().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn identical_to_numpy_on_fresh_random_steps() {
    let Some(py) = numpy_python() else {
        eprintln!(
            "skipped: no Python with numpy (set CPUGPU_NUMPY_PYTHON); the golden cases still ran"
        );
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/step_reference.py");
    if !std::path::Path::new(script).exists() && std::env::var_os("CPUGPU_NUMPY_PYTHON").is_none() {
        // A test executable copied away from its checkout (the GPU suite's bundle).
        eprintln!("skipped: {script} is not here; the golden cases still ran");
        return;
    }
    let file = std::env::temp_dir().join(format!("cpugpu-step-{}.txt", std::process::id()));
    let status = std::process::Command::new(&py)
        .arg(script)
        .args([
            "--golden",
            file.to_str().unwrap(),
            "--seeds",
            "11",
            "12",
            "13",
            "14",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(check_golden(&text, "fresh numpy"), 4);
}

// ---- random steps against a per-token oracle ----

fn oracle(s: &Step, padded: usize) -> Outs {
    let n = s.state_index.len();
    let g = s.block_sizes.len();
    let p32 = POISON as i32;
    let mut o = Outs {
        qsl: vec![0; s.max_reqs + 1],
        seq_lens: vec![0; s.max_reqs],
        positions: vec![POISON; s.max_tokens],
        input_ids: vec![p32; s.max_tokens],
        slots: vec![-1; g * s.max_tokens],
        logits: vec![POISON; s.max_reqs],
    };
    let mut t = 0usize;
    for r in 0..n {
        let (st, c, k) = (
            s.state_index[r] as usize,
            s.num_computed[r] as usize,
            s.num_scheduled[r] as usize,
        );
        for j in 0..k {
            let p = c + j;
            o.positions[t] = p as i64;
            o.input_ids[t] = s.token_ids[st * s.max_model_len + p];
            for gi in 0..g {
                let bs = s.block_sizes[gi];
                let b = s.tables[gi][st * max_blocks(s, gi) + p / bs];
                o.slots[gi * s.max_tokens + t] = i64::from(b) * bs as i64 + (p % bs) as i64;
            }
            t += 1;
        }
        o.qsl[r + 1] = t as i32;
        o.seq_lens[r] = (c + k) as i32;
        o.logits[r] = t as i64 - 1;
    }
    for q in o.qsl.iter_mut().skip(n + 1) {
        *q = t as i32;
    }
    for i in t..padded {
        o.positions[i] = 0;
        o.input_ids[i] = 0;
    }
    o
}

/// A random step: `n_prefill` prefills of up to `max_prefill` tokens and `n_decode` decodes in
/// distinct states; every state owns the blocks its sequence needs, from a shuffled free list.
fn random_step(
    rng: &mut SmallRng,
    n_prefill: usize,
    n_decode: usize,
    max_model_len: usize,
    bss: &[usize],
    max_prefill: usize,
) -> Step {
    let n = n_prefill + n_decode;
    let rows = n + 3;
    let mut states: Vec<i32> = (0..rows as i32).collect();
    states.shuffle(rng);
    let mut s = Step {
        rows,
        max_model_len,
        max_reqs: n + rng.gen_range(0..4),
        block_sizes: bss.to_vec(),
        token_ids: (0..rows * max_model_len)
            .map(|_| rng.gen_range(0..50_000))
            .collect(),
        ..Step::default()
    };
    let mut seq = vec![0usize; rows];
    for r in 0..n {
        let k = if r < n_prefill {
            rng.gen_range(1..=max_prefill.min(max_model_len))
        } else {
            1
        };
        let c = if r == 0 {
            max_model_len - k
        } else {
            rng.gen_range(0..=max_model_len - k)
        };
        s.state_index.push(states[r]);
        s.num_computed.push(c as i32);
        s.num_scheduled.push(k as i32);
        seq[states[r] as usize] = c + k;
    }
    // Interleave prefills and decodes.
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    s.state_index = order.iter().map(|&i| s.state_index[i]).collect();
    s.num_computed = order.iter().map(|&i| s.num_computed[i]).collect();
    s.num_scheduled = order.iter().map(|&i| s.num_scheduled[i]).collect();
    for &bs in bss {
        let mb = max_model_len.div_ceil(bs);
        let mut free: Vec<i32> = (0..(rows * mb) as i32).collect();
        free.shuffle(rng);
        let mut table = vec![-1i32; rows * mb];
        let mut nb = vec![0i32; rows];
        for st in 0..rows {
            let need = seq[st].div_ceil(bs);
            for b in 0..need {
                table[st * mb + b] = free.pop().unwrap();
            }
            nb[st] = need as i32;
        }
        s.tables.push(table);
        s.num_blocks.push(nb);
    }
    let tokens: usize = s.num_scheduled.iter().map(|&k| k as usize).sum();
    s.max_tokens = tokens.max(1).next_multiple_of(512) + 8;
    s
}

#[test]
fn random_steps_match_the_oracle_with_the_pool_reused() {
    let sizes = cuda_graph_sizes(512);
    for dev in backends() {
        let pool = UvaBufferPool::new(&dev, 2);
        let mut rng = rng(21);
        // (prefills, decodes, max model len, block sizes, longest prefill)
        let shapes: [(usize, usize, usize, &[usize], usize); 8] = [
            (0, 0, 64, &[16], 1),
            (0, 1, 64, &[16], 1),
            (1, 0, 64, &[16, 32], 1),
            (2, 3, 64, &[8], 3),
            (4, 60, 4096, &[16], 480),
            (32, 224, 4096, &[16], 480),
            (0, 700, 2048, &[16, 64], 1),
            (40, 0, 8192, &[16], 4000), // past the parallel threshold on the host
        ];
        for (k, &(npf, ndc, mml, bss, maxp)) in shapes.iter().enumerate() {
            let s = random_step(&mut rng, npf, ndc, mml, bss, maxp);
            for padding in [StepPadding::None, StepPadding::Buckets(&sizes)] {
                launches();
                let (plan, got) = run(&dev, &pool, &s, padding);
                let plan = plan.unwrap_or_else(|e| panic!("{} shape {k}: {e}", dev.kind()));
                if dev.kind() != BackendKind::Host && cfg!(feature = "emulator") {
                    assert_eq!(
                        launches()[..3],
                        ["step_validate", "step_write", "step_capture"],
                        "three launches"
                    );
                }
                assert_eq!(
                    got,
                    oracle(&s, plan.padded_tokens),
                    "{} shape {k} {padding:?}",
                    dev.kind()
                );
                let tokens: usize = s.num_scheduled.iter().map(|&x| x as usize).sum();
                assert_eq!(plan.num_tokens, tokens);
                assert_eq!(
                    plan.max_query_len,
                    s.num_scheduled
                        .iter()
                        .map(|&x| x as usize)
                        .max()
                        .unwrap_or(0)
                );
                if matches!(padding, StepPadding::Buckets(_)) {
                    let want = cpugpu::bucket_for(tokens, &sizes).unwrap_or(tokens);
                    assert_eq!(plan.padded_tokens, want);
                }
            }
        }
    }
}

// ---- errors ----

fn small() -> Step {
    // 3 states of a 16-token model, one group of 4-token blocks.
    let mut s = Step {
        rows: 3,
        max_model_len: 16,
        max_reqs: 4,
        max_tokens: 16,
        block_sizes: vec![4],
        state_index: vec![0, 2],
        num_computed: vec![3, 0],
        num_scheduled: vec![2, 4],
        token_ids: (0..48).collect(),
        tables: vec![vec![5, 6, -1, -1, 9, 9, 9, 9, 1, -1, -1, -1]],
        num_blocks: vec![vec![2, 4, 1]],
    };
    s.max_tokens = 16;
    s
}

fn expect(s: &Step, padding: StepPadding<'_>, want: Error) {
    for dev in backends() {
        let pool = UvaBufferPool::new(&dev, 2);
        let (plan, got) = run(&dev, &pool, s, padding);
        assert_eq!(plan.as_ref().unwrap_err(), &want, "{}", dev.kind());
        assert_names(&want, Op::PrepareStep, None);
        let g = s.block_sizes.len();
        let p32 = POISON as i32;
        assert_eq!(
            got,
            Outs {
                qsl: vec![p32; s.max_reqs + 1],
                seq_lens: vec![p32; s.max_reqs],
                positions: vec![POISON; s.max_tokens],
                input_ids: vec![p32; s.max_tokens],
                slots: vec![POISON; g * s.max_tokens],
                logits: vec![POISON; s.max_reqs],
            },
            "{}: nothing written",
            dev.kind()
        );
        dev.synchronize().unwrap();
    }
}

#[test]
fn the_small_step_is_valid() {
    for dev in backends() {
        let pool = UvaBufferPool::new(&dev, 2);
        let s = small();
        let (plan, got) = run(&dev, &pool, &s, StepPadding::Exact(8));
        assert_eq!(plan.unwrap().padded_tokens, 8);
        assert_eq!(got, oracle(&s, 8));
    }
}

#[test]
fn prepare_step_reports_every_error() {
    let op = Op::PrepareStep;
    // Device-side (block tables): token 5 (request 1's 4th token, position 3) is fine, but
    // request 1's state 2 has one valid block; give it position 4 instead.
    let mut s = small();
    s.num_scheduled[1] = 5; // positions 0..4: position 4 needs block 1 of 1 valid
    expect(
        &s,
        StepPadding::None,
        Error::BlockOutOfRange {
            op,
            position: 6,
            group: 0,
            block: 1,
            valid: 1,
        },
    );
    let mut s = small();
    s.tables[0][1] = -4; // state 0, block 1: request 0's second token (position 4)
    expect(
        &s,
        StepPadding::None,
        Error::NegativeBlock {
            op,
            position: 1,
            group: 0,
            value: -4,
        },
    );
    // Host-side (the requests).
    let mut s = small();
    s.state_index[1] = 3;
    expect(
        &s,
        StepPadding::None,
        Error::IndexOutOfBounds {
            op,
            position: 1,
            index: 3,
            bound: 3,
        },
    );
    let mut s = small();
    s.num_scheduled[0] = -1;
    expect(
        &s,
        StepPadding::None,
        Error::NegativeLength {
            op,
            position: 0,
            value: -1,
        },
    );
    let mut s = small();
    s.num_computed[1] = 13; // 13 + 4 > 16
    expect(
        &s,
        StepPadding::None,
        Error::WindowOutOfRange {
            op,
            position: 1,
            start: 13,
            len: 4,
            cols: 16,
        },
    );
    let mut s = small();
    s.max_reqs = 1;
    expect(
        &s,
        StepPadding::None,
        Error::InvalidArgument {
            op,
            name: "the request count",
            value: 2,
            reason: "more requests than query_start_loc has room for",
        },
    );
    let s = small();
    expect(
        &s,
        StepPadding::Exact(5),
        Error::InvalidArgument {
            op,
            name: "the padded token count",
            value: 5,
            reason: "fewer than the step's tokens",
        },
    );
    expect(
        &s,
        StepPadding::Exact(17),
        Error::LengthMismatch {
            op,
            what: "positions.len() (max tokens, at least the padded token count)",
            expected: 17,
            actual: 16,
        },
    );
    let mut s = small();
    s.num_computed.pop();
    expect(
        &s,
        StepPadding::None,
        Error::LengthMismatch {
            op,
            what: "num_computed.len()",
            expected: 2,
            actual: 1,
        },
    );
}
