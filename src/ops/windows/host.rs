//! Host windowed row gather: a sequential validation pass (entries and offsets in position
//! order), then one `copy_from_slice` per entry, entries in parallel above
//! [`crate::ops::PAR_MIN_BYTES`] of output.
use rayon::prelude::*;

use super::{check_args, WindowArgs, WindowLayout};
use crate::element::width_of;
use crate::ops::use_par;
use crate::{Element, Error, Index, Op, Result};

const OP: Op = Op::GatherWindows;

/// The first error at position `q` (an offset's index or an entry), as the kernel checks it.
fn check_at<I: Index>(
    a: &WindowArgs,
    rows: &[I],
    starts: Option<&[I]>,
    layout: WindowLayout<&[I]>,
    out_len: usize,
    q: usize,
) -> Option<Error> {
    if let WindowLayout::Ragged { offsets } = layout {
        let o = offsets[q].to_i64();
        if o < 0 || o as u64 > out_len as u64 {
            return Some(Error::OffsetOutOfRange {
                op: OP,
                position: q,
                value: o,
                len: out_len,
            });
        }
        if q > 0 && o < offsets[q - 1].to_i64() {
            return Some(Error::OffsetsNotMonotonic {
                op: OP,
                position: q,
                previous: offsets[q - 1].to_i64(),
                value: o,
            });
        }
    }
    if q >= a.n {
        return None;
    }
    let row = rows[q].to_i64();
    if row < 0 || row as u64 >= a.table_rows as u64 {
        return Some(Error::IndexOutOfBounds {
            op: OP,
            position: q,
            index: row,
            bound: a.table_rows,
        });
    }
    let start = starts.map_or(0, |s| s[q].to_i64());
    let len = match layout {
        WindowLayout::Ragged { offsets } => {
            let len = offsets[q + 1].to_i64() - offsets[q].to_i64();
            if len < 0 {
                return None; // reported at q + 1 as a decreasing offset
            }
            len
        }
        WindowLayout::Rows { lens } => lens[q].to_i64(),
    };
    let cols = a.cols as i64;
    let bound = if start < 0 || len < 0 || start > cols || len > cols - start {
        a.cols
    } else if !layout.is_ragged() && len as u64 > a.width as u64 {
        a.width
    } else {
        return None;
    };
    Some(Error::WindowOutOfRange {
        op: OP,
        position: q,
        start,
        len,
        cols: bound,
    })
}

/// Windowed row gather on plain slices (`table` of shape `table_shape`, rows along axis 0): see
/// [`Device::gather_windows_into`](crate::Device::gather_windows_into). In the rows layout
/// `out` holds `n` rows of `out.len() / n` elements.
///
/// # Errors
/// The first bad offset or entry in position order; nothing is written then.
///
/// # Example
/// ```
/// use cpugpu::{host, WindowLayout};
/// // Block tables: gather the valid prefix of rows 2 and 0 into a [2, 3] output.
/// let table = [1i32, 2, 3, 4, 5, 6, 7, 8, 9];
/// let mut out = [-1i32; 6];
/// host::gather_windows_into(&table, &[3, 3], &[2i32, 0], None, WindowLayout::Rows { lens: &[3, 1][..] }, &mut out)?;
/// assert_eq!(out, [7, 8, 9, 1, -1, -1]);
/// # Ok::<(), cpugpu::Error>(())
/// ```
pub fn gather_windows_into<T: Element, I: Index>(
    table: &[T],
    table_shape: &[usize],
    rows: &[I],
    starts: Option<&[I]>,
    layout: WindowLayout<&[I]>,
    out: &mut [T],
) -> Result<()> {
    width_of::<T>();
    let a = check_args(
        table.len(),
        table_shape,
        rows.len(),
        starts.map(<[I]>::len),
        layout.is_ragged(),
        layout.extents().len(),
        out.len(),
    )?;
    let items = if layout.is_ragged() { a.n + 1 } else { a.n };
    for q in 0..items {
        if let Some(e) = check_at(&a, rows, starts, layout, out.len(), q) {
            return Err(e);
        }
    }
    // Validated: every window lies inside its table row and its output range.
    let src = |r: usize, len: usize| {
        let start = starts.map_or(0, |s| s[r].to_i64() as usize);
        let base = rows[r].to_i64() as usize * a.cols + start;
        &table[base..base + len]
    };
    match layout {
        WindowLayout::Ragged { offsets } => {
            if a.n == 0 {
                return Ok(());
            }
            let first = offsets[0].to_i64() as usize;
            let last = offsets[a.n].to_i64() as usize;
            let mut pieces: Vec<(usize, &mut [T])> = Vec::with_capacity(a.n);
            let mut rest = &mut out[first..last];
            for r in 0..a.n {
                let len = (offsets[r + 1].to_i64() - offsets[r].to_i64()) as usize;
                let (piece, tail) = std::mem::take(&mut rest).split_at_mut(len);
                pieces.push((r, piece));
                rest = tail;
            }
            if use_par(std::mem::size_of::<T>() * (last - first)) {
                pieces
                    .into_par_iter()
                    .for_each(|(r, d)| d.copy_from_slice(src(r, d.len())));
            } else {
                for (r, d) in pieces {
                    d.copy_from_slice(src(r, d.len()));
                }
            }
        }
        WindowLayout::Rows { lens } => {
            if a.width == 0 {
                return Ok(());
            }
            let one = |(r, d): (usize, &mut [T])| {
                let len = lens[r].to_i64() as usize;
                d[..len].copy_from_slice(src(r, len));
            };
            if use_par(std::mem::size_of_val(out)) {
                out.par_chunks_mut(a.width).enumerate().for_each(one);
            } else {
                out.chunks_mut(a.width).enumerate().for_each(one);
            }
        }
    }
    Ok(())
}
