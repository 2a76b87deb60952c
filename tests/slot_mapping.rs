//! Slot mapping through block tables against an independent oracle, on every backend: one and
//! several KV-cache groups, every index type of rows, positions, block numbers and slots,
//! block tables filled from a shuffled free list, the pad tail, boundary sizes and every error.

mod common;

use common::prep::*;
use common::{poisoned, rng};
use cpugpu::{host, Device, Error, Index, KvCacheGroup, Op, PAD_SLOT_ID};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// A group's table: `rows` rows of `cols` blocks from a shuffled free list, `num_blocks[r]`
/// valid, the rest -1.
struct Table {
    table: Vec<i64>,
    num_blocks: Vec<i64>,
    cols: usize,
    bs: usize,
}

fn random_table(rng: &mut SmallRng, rows: usize, cols: usize, bs: usize) -> Table {
    let mut free: Vec<i64> = (0..(rows * cols) as i64).collect();
    free.shuffle(rng);
    let mut table = vec![-1i64; rows * cols];
    let mut num_blocks = vec![0i64; rows];
    for r in 0..rows {
        let nb = rng.gen_range(1..=cols);
        num_blocks[r] = nb as i64;
        for b in 0..nb {
            table[r * cols + b] = free.pop().unwrap();
        }
    }
    Table {
        table,
        num_blocks,
        cols,
        bs,
    }
}

fn cast<I: Index>(v: &[i64]) -> Vec<I> {
    v.iter().map(|&x| I::from_i64(x).unwrap()).collect()
}

fn oracle(rows: &[i64], pos: &[i64], tables: &[Table], stride: usize) -> Vec<i64> {
    let mut out = vec![PAD_SLOT_ID; tables.len() * stride];
    for (g, t) in tables.iter().enumerate() {
        for i in 0..rows.len() {
            let b = pos[i] as usize / t.bs;
            out[g * stride + i] =
                t.table[rows[i] as usize * t.cols + b] * t.bs as i64 + pos[i] % t.bs as i64;
        }
    }
    out
}

/// Random tokens whose positions lie inside their rows' valid blocks in every group.
fn random_tokens(rng: &mut SmallRng, n: usize, tables: &[Table]) -> (Vec<i64>, Vec<i64>) {
    let rows_n = tables[0].num_blocks.len();
    let (mut rows, mut pos) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let r = rng.gen_range(0..rows_n);
        let limit = tables
            .iter()
            .map(|t| t.num_blocks[r] as usize * t.bs)
            .min()
            .unwrap();
        rows.push(r as i64);
        pos.push(rng.gen_range(0..limit) as i64);
    }
    (rows, pos)
}

fn run<I: Index, P: Index, B: Index, O: Index>(
    dev: &Device,
    rows: &[i64],
    pos: &[i64],
    tables: &[Table],
    stride: usize,
) -> cpugpu::Result<Vec<O>> {
    let r = up(dev, &cast::<I>(rows), &[rows.len()]);
    let p = up(dev, &cast::<P>(pos), &[pos.len()]);
    let bufs: Vec<_> = tables
        .iter()
        .map(|t| {
            (
                up(dev, &cast::<B>(&t.table), &[t.num_blocks.len(), t.cols]),
                up(dev, &cast::<B>(&t.num_blocks), &[t.num_blocks.len()]),
            )
        })
        .collect();
    let groups: Vec<KvCacheGroup<'_, B>> = bufs
        .iter()
        .zip(tables)
        .map(|((tb, nb), t)| KvCacheGroup {
            block_table: tb.view(),
            num_blocks: nb.view(),
            block_size: t.bs,
        })
        .collect();
    let mut out = up(
        dev,
        &poisoned::<O>(tables.len() * stride),
        &[tables.len(), stride],
    );
    let pad = O::from_i64(PAD_SLOT_ID).unwrap();
    let r = settled(
        dev,
        dev.slot_mapping_into(r.view(), p.view(), &groups, pad, out.view_mut()),
    );
    let got = read(&out);
    match r {
        Ok(()) => Ok(got),
        Err(e) => {
            assert_eq!(
                got,
                poisoned::<O>(tables.len() * stride),
                "{e}: nothing written"
            );
            Err(e)
        }
    }
}

fn types_case<I: Index, P: Index, B: Index, O: Index>(seed: u64) {
    for dev in backends() {
        let mut rng = rng(seed);
        for &(n, groups, pad_extra) in &[
            (0usize, 1usize, 0usize),
            (0, 2, 8),
            (1, 1, 0),
            (1, 1, 7),
            (7, 2, 1),
            (8, 3, 0),
            (300, 2, 212),
            (5000, 1, 3),
        ] {
            let sizes = [16usize, 32, 1];
            let tables: Vec<Table> = (0..groups)
                .map(|g| random_table(&mut rng, 24, 8, sizes[g % 3]))
                .collect();
            let (rows, pos) = random_tokens(&mut rng, n, &tables);
            let stride = n + pad_extra;
            let case = format!("{}: n={n} groups={groups} stride={stride}", dev.kind());
            launches();
            let got = run::<I, P, B, O>(&dev, &rows, &pos, &tables, stride)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            if dev.kind() != cpugpu::BackendKind::Host && cfg!(feature = "emulator") {
                let l = launches();
                assert_eq!(
                    l.iter().filter(|k| k.starts_with("slot_mapping")).count(),
                    3,
                    "{case}: one launch for all groups, plus validation and capture: {l:?}"
                );
            }
            assert_eq!(
                got,
                cast::<O>(&oracle(&rows, &pos, &tables, stride)),
                "{case}"
            );
        }
    }
}

#[test]
fn slot_mapping_matches_the_oracle_for_every_index_type() {
    types_case::<i32, i64, i32, i64>(1);
    types_case::<i64, i32, i64, i32>(2);
    types_case::<i32, i32, i32, i32>(3);
    types_case::<i64, i64, i64, i64>(4);
}

#[test]
fn a_token_at_max_model_length() {
    // 4,096-token model, blocks of 16: the last position uses the 256th block.
    let t = Table {
        table: (0..256).rev().collect(),
        num_blocks: vec![256],
        cols: 256,
        bs: 16,
    };
    for dev in backends() {
        let got = run::<i32, i64, i32, i64>(&dev, &[0, 0], &[4095, 0], std::slice::from_ref(&t), 4)
            .unwrap();
        assert_eq!(got, [15, 255 * 16, -1, -1]);
    }
}

fn expect<I: Index, P: Index, B: Index, O: Index>(
    rows: &[i64],
    pos: &[i64],
    tables: &[Table],
    want: Error,
) {
    for dev in backends() {
        let got = run::<I, P, B, O>(&dev, rows, pos, tables, rows.len() + 2);
        assert_eq!(got.as_ref().unwrap_err(), &want, "{}", dev.kind());
        assert_names(
            &want,
            Op::SlotMapping,
            Some(match want {
                Error::BlockOutOfRange { position, .. }
                | Error::NegativeBlock { position, .. }
                | Error::ValueOverflow { position, .. }
                | Error::IndexOutOfBounds { position, .. } => position,
                _ => unreachable!(),
            }),
        );
        dev.synchronize().unwrap();
    }
}

#[test]
fn slot_mapping_reports_every_error() {
    let op = Op::SlotMapping;
    let mk = |table: Vec<i64>, nb: Vec<i64>, bs| Table {
        table,
        num_blocks: nb,
        cols: 4,
        bs,
    };
    let a = || mk(vec![5, 6, 7, -1, 1, 2, -3, -1], vec![3, 3], 4);
    let b = || mk(vec![9, -1, -1, -1, 8, 0, -1, -1], vec![1, 2], 8);
    // Row outside the table (second token; the first is fine).
    expect::<i32, i64, i32, i64>(
        &[0, 2],
        &[0, 0],
        &[a()],
        Error::IndexOutOfBounds {
            op,
            position: 1,
            index: 2,
            bound: 2,
        },
    );
    // Negative row.
    expect::<i64, i64, i32, i64>(
        &[-1],
        &[0],
        &[a()],
        Error::IndexOutOfBounds {
            op,
            position: 0,
            index: -1,
            bound: 2,
        },
    );
    // Past the valid blocks: position 12 needs block 3 of a row with 3 valid.
    expect::<i32, i64, i32, i64>(
        &[0, 0],
        &[1, 12],
        &[a()],
        Error::BlockOutOfRange {
            op,
            position: 1,
            group: 0,
            block: 3,
            valid: 3,
        },
    );
    // A negative position needs block -1.
    expect::<i32, i32, i32, i64>(
        &[0],
        &[-1],
        &[a()],
        Error::BlockOutOfRange {
            op,
            position: 0,
            group: 0,
            block: -1,
            valid: 3,
        },
    );
    // A negative entry inside the valid blocks (row 1, block 2 is -3).
    expect::<i32, i64, i64, i64>(
        &[1],
        &[9],
        &[a()],
        Error::NegativeBlock {
            op,
            position: 0,
            group: 0,
            value: -3,
        },
    );
    // Second group fails first at token 0 although the first group fails only at token 1.
    expect::<i32, i64, i32, i64>(
        &[0, 1],
        &[9, 9],
        &[a(), b()],
        Error::BlockOutOfRange {
            op,
            position: 0,
            group: 1,
            block: 1,
            valid: 1,
        },
    );
    // A slot past the i32 maximum.
    let big = mk(vec![i64::from(i32::MAX) / 2, 0, 0, 0], vec![1], 4);
    expect::<i32, i64, i64, i32>(
        &[0],
        &[3],
        &[big],
        Error::ValueOverflow {
            op,
            position: 0,
            limit: i64::from(i32::MAX),
        },
    );
}

#[test]
fn slot_mapping_argument_errors() {
    for dev in backends() {
        let table = up(&dev, &[0i32; 8], &[2, 4]);
        let nb = up(&dev, &[1i32, 1], &[2]);
        let rows = up(&dev, &[0i32, 1], &[2]);
        let pos = up(&dev, &[0i64], &[1]);
        let g = KvCacheGroup {
            block_table: table.view(),
            num_blocks: nb.view(),
            block_size: 0,
        };
        let mut out = dev.alloc::<i64>(&[1, 2]).unwrap();
        let e = dev
            .slot_mapping_into(rows.view(), pos.view(), &[g], -1i64, out.view_mut())
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::LengthMismatch {
                    what: "positions.len()",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = dev
            .slot_mapping_into(rows.view(), rows.view(), &[g], -1i64, out.view_mut())
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidArgument {
                    name: "block_size",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = dev
            .slot_mapping_into::<i32, i32, i32, i64>(
                rows.view(),
                rows.view(),
                &[],
                -1,
                out.view_mut(),
            )
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        let mut short = dev.alloc::<i64>(&[1]).unwrap();
        let g = KvCacheGroup { block_size: 4, ..g };
        let e = dev
            .slot_mapping_into(rows.view(), rows.view(), &[g], -1i64, short.view_mut())
            .unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { .. }), "{e:?}");
        dev.synchronize().unwrap();
    }
    // The host reference takes the same arguments on slices.
    let g = host::KvCacheGroup {
        block_table: &[3i32, 4],
        max_blocks: 2,
        num_blocks: &[2],
        block_size: 2,
    };
    let mut out = [0i64; 3];
    host::slot_mapping_into(&[0i32, 0], &[0i64, 3], &[g], -1, &mut out).unwrap();
    assert_eq!(out, [6, 9, -1]);
}
