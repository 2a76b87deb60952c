//! Windowed row gather against an independent oracle, on every backend: ragged and row
//! layouts, every element width, both index types, starts or none, boundary sizes and every
//! error.

mod common;

use common::prep::*;
use common::{poisoned, random_vec, rng};
use cpugpu::{host, Device, Element, Error, Index, Op, WindowLayout};
use rand::rngs::SmallRng;
use rand::Rng;

fn cast<I: Index>(v: &[i64]) -> Vec<I> {
    v.iter().map(|&x| I::from_i64(x).unwrap()).collect()
}

struct Case {
    rows: Vec<i64>,
    starts: Option<Vec<i64>>,
    lens: Vec<i64>,
}

fn random_case(
    rng: &mut SmallRng,
    n: usize,
    table_rows: usize,
    cols: usize,
    with_starts: bool,
) -> Case {
    let mut c = Case {
        rows: vec![],
        starts: with_starts.then(Vec::new),
        lens: vec![],
    };
    for _ in 0..n {
        c.rows.push(rng.gen_range(0..table_rows) as i64);
        let start = if with_starts {
            rng.gen_range(0..=cols)
        } else {
            0
        };
        if let Some(s) = c.starts.as_mut() {
            s.push(start as i64);
        }
        let len = if rng.gen_bool(0.15) {
            0
        } else {
            rng.gen_range(0..=cols - start)
        };
        c.lens.push(len as i64);
    }
    c
}

/// The oracle: out as poisoned, with each window copied in.
fn oracle<T: Element>(
    table: &[T],
    cols: usize,
    c: &Case,
    ragged_base: i64,
    width: usize,
    out_len: usize,
) -> Vec<T> {
    let mut out = poisoned::<T>(out_len);
    let mut at = ragged_base as usize;
    for r in 0..c.rows.len() {
        let s = c.starts.as_ref().map_or(0, |s| s[r]) as usize;
        let len = c.lens[r] as usize;
        let src = &table[c.rows[r] as usize * cols + s..][..len];
        let dst = if width == 0 { at } else { r * width };
        out[dst..dst + len].copy_from_slice(src);
        at += len;
    }
    out
}

fn run<T: Element, I: Index>(
    dev: &Device,
    table: &[T],
    shape: [usize; 2],
    c: &Case,
    ragged: Option<i64>,
    out_len: usize,
) -> cpugpu::Result<Vec<T>> {
    let t = up(dev, table, &shape);
    let r = up(dev, &cast::<I>(&c.rows), &[c.rows.len()]);
    let s = c
        .starts
        .as_ref()
        .map(|s| up(dev, &cast::<I>(s), &[s.len()]));
    let ext: Vec<i64> = match ragged {
        Some(base) => {
            let mut o = vec![base];
            for &l in &c.lens {
                o.push(o[o.len() - 1] + l);
            }
            o
        }
        None => c.lens.clone(),
    };
    let e = up(dev, &cast::<I>(&ext), &[ext.len()]);
    let n = c.rows.len();
    let out_shape = match ragged {
        Some(_) => vec![out_len],
        None if n > 0 => vec![n, out_len / n],
        None => vec![0],
    };
    let mut out = up(dev, &poisoned::<T>(out_len), &out_shape);
    let layout = match ragged {
        Some(_) => WindowLayout::Ragged { offsets: e.view() },
        None => WindowLayout::Rows { lens: e.view() },
    };
    let res = settled(
        dev,
        dev.gather_windows_into(
            t.view(),
            r.view(),
            s.as_ref().map(|s| s.view()),
            layout,
            out.view_mut(),
        ),
    );
    let got = read(&out);
    // The host reference on slices must say the same.
    let mut h = poisoned::<T>(out_len);
    let ext_i: Vec<I> = cast(&ext);
    let starts_i: Option<Vec<I>> = c.starts.as_deref().map(cast);
    let hl = match ragged {
        Some(_) => WindowLayout::Ragged {
            offsets: &ext_i[..],
        },
        None => WindowLayout::Rows { lens: &ext_i[..] },
    };
    let hr = host::gather_windows_into(
        table,
        &shape,
        &cast::<I>(&c.rows),
        starts_i.as_deref(),
        hl,
        &mut h,
    );
    assert_eq!(
        hr,
        res.as_ref().map(|_| ()).map_err(Clone::clone),
        "host reference agrees"
    );
    match res {
        Ok(()) => {
            common::assert_bits_eq(&h, &got, "host reference output");
            Ok(got)
        }
        Err(e) => {
            common::assert_bits_eq(&got, &poisoned::<T>(out_len), "nothing written");
            Err(e)
        }
    }
}

fn width_case<T: Element, I: Index>(seed: u64) {
    for dev in backends() {
        let mut rng = rng(seed);
        for &(n, table_rows, cols) in &[
            (0usize, 3usize, 5usize),
            (1, 1, 1),
            (3, 4, 8),
            (8, 5, 3),
            (40, 17, 64),
            (600, 50, 300),
        ] {
            let table: Vec<T> = random_vec(&mut rng, table_rows * cols);
            for with_starts in [false, true] {
                let c = random_case(&mut rng, n, table_rows, cols, with_starts);
                let total: i64 = c.lens.iter().sum();
                let case = format!(
                    "{}: {} {} n={n} cols={cols} starts={with_starts}",
                    dev.kind(),
                    std::any::type_name::<T>(),
                    I::NAME
                );
                // Ragged, with a non-zero base and room after the end.
                let base = rng.gen_range(0..3);
                let out_len = (base + total) as usize + 5;
                launches();
                let got = run::<T, I>(&dev, &table, [table_rows, cols], &c, Some(base), out_len)
                    .unwrap_or_else(|e| panic!("{case}: {e}"));
                if dev.kind() != cpugpu::BackendKind::Host && cfg!(feature = "emulator") {
                    let l = launches();
                    assert_eq!(l.len(), 3, "{case}: validate, copy, capture: {l:?}");
                    assert!(l[1].starts_with("gather_windows_w"), "{l:?}");
                }
                common::assert_bits_eq(&got, &oracle(&table, cols, &c, base, 0, out_len), &case);
                // Rows of `cols + 1` elements.
                let width = cols + 1;
                let got = run::<T, I>(&dev, &table, [table_rows, cols], &c, None, n * width)
                    .unwrap_or_else(|e| panic!("{case}: {e}"));
                common::assert_bits_eq(&got, &oracle(&table, cols, &c, 0, width, n * width), &case);
            }
        }
    }
}

#[test]
fn windows_match_the_oracle_for_every_width_and_index_type() {
    width_case::<u8, i32>(1);
    width_case::<half::f16, i64>(2);
    width_case::<f32, i32>(3);
    width_case::<i32, i64>(4);
    width_case::<f64, i64>(5);
    width_case::<u128, i32>(6);
    width_case::<[u32; 4], i64>(7);
}

#[test]
fn prefill_tokens_at_max_model_length() {
    // A 4,096-token row copied whole, next to a one-token decode window at the end of a row.
    let mut rng = rng(11);
    let table: Vec<i32> = random_vec(&mut rng, 2 * 4096);
    let c = Case {
        rows: vec![1, 0],
        starts: Some(vec![0, 4095]),
        lens: vec![4096, 1],
    };
    for dev in backends() {
        let got = run::<i32, i32>(&dev, &table, [2, 4096], &c, Some(0), 4097).unwrap();
        assert_eq!(&got[..4096], &table[4096..]);
        assert_eq!(got[4096], table[4095]);
    }
}

fn expect<I: Index>(c: &Case, ragged: Option<Vec<i64>>, out_len: usize, want: Error) {
    for dev in backends() {
        let table: Vec<i32> = (0..12).collect(); // [3, 4]
        let t = up(&dev, &table, &[3, 4]);
        let r = up(&dev, &cast::<I>(&c.rows), &[c.rows.len()]);
        let s = c
            .starts
            .as_ref()
            .map(|s| up(&dev, &cast::<I>(s), &[s.len()]));
        let ext = ragged.clone().unwrap_or_else(|| c.lens.clone());
        let e = up(&dev, &cast::<I>(&ext), &[ext.len()]);
        let shape = if ragged.is_some() {
            vec![out_len]
        } else {
            vec![c.rows.len(), out_len / c.rows.len()]
        };
        let mut out = up(&dev, &poisoned::<i32>(out_len), &shape);
        let layout = if ragged.is_some() {
            WindowLayout::Ragged { offsets: e.view() }
        } else {
            WindowLayout::Rows { lens: e.view() }
        };
        let got = settled(
            &dev,
            dev.gather_windows_into(
                t.view(),
                r.view(),
                s.as_ref().map(|s| s.view()),
                layout,
                out.view_mut(),
            ),
        );
        assert_eq!(got.as_ref().unwrap_err(), &want, "{}", dev.kind());
        assert_eq!(
            read(&out),
            poisoned::<i32>(out_len),
            "{}: untouched",
            dev.kind()
        );
        assert_names(&want, Op::GatherWindows, None);
        dev.synchronize().unwrap();
    }
}

#[test]
fn windows_report_every_error() {
    let op = Op::GatherWindows;
    let c = |rows: Vec<i64>, starts: Option<Vec<i64>>, lens: Vec<i64>| Case { rows, starts, lens };
    // Row outside the table.
    expect::<i32>(
        &c(vec![0, 3], None, vec![1, 1]),
        Some(vec![0, 1, 2]),
        4,
        Error::IndexOutOfBounds {
            op,
            position: 1,
            index: 3,
            bound: 3,
        },
    );
    expect::<i64>(
        &c(vec![-2], None, vec![1]),
        None,
        4,
        Error::IndexOutOfBounds {
            op,
            position: 0,
            index: -2,
            bound: 3,
        },
    );
    // Windows past the row, negative starts, negative lengths, longer than the output row.
    expect::<i32>(
        &c(vec![0, 1], Some(vec![0, 3]), vec![1, 2]),
        Some(vec![0, 1, 3]),
        4,
        Error::WindowOutOfRange {
            op,
            position: 1,
            start: 3,
            len: 2,
            cols: 4,
        },
    );
    expect::<i64>(
        &c(vec![0], Some(vec![-1]), vec![1]),
        None,
        4,
        Error::WindowOutOfRange {
            op,
            position: 0,
            start: -1,
            len: 1,
            cols: 4,
        },
    );
    expect::<i32>(
        &c(vec![0], None, vec![-1]),
        None,
        4,
        Error::WindowOutOfRange {
            op,
            position: 0,
            start: 0,
            len: -1,
            cols: 4,
        },
    );
    expect::<i32>(
        &c(vec![0, 0], None, vec![1, 3]),
        None,
        4,
        Error::WindowOutOfRange {
            op,
            position: 1,
            start: 0,
            len: 3,
            cols: 2,
        },
    );
    // Offsets: outside the output, negative, decreasing (before the window they would make).
    expect::<i32>(
        &c(vec![0], None, vec![3]),
        Some(vec![0, 3]),
        2,
        Error::OffsetOutOfRange {
            op,
            position: 1,
            value: 3,
            len: 2,
        },
    );
    expect::<i64>(
        &c(vec![0], None, vec![2]),
        Some(vec![-1, 1]),
        4,
        Error::OffsetOutOfRange {
            op,
            position: 0,
            value: -1,
            len: 4,
        },
    );
    expect::<i32>(
        &c(vec![0, 0], None, vec![2, 0]),
        Some(vec![0, 2, 1]),
        4,
        Error::OffsetsNotMonotonic {
            op,
            position: 2,
            previous: 2,
            value: 1,
        },
    );
}
