//! Host gather: `dst[i, ..] = src[indices[i], ..]`.
//!
//! Validation (shape, lengths, every index) happens before anything is written. The copy is a
//! `copy_from_slice` of one whole row per index; above [`crate::ops::PAR_MIN_BYTES`] moved it is
//! split into chunks of consecutive destination rows (about [`crate::ops::PAR_CHUNK_BYTES`]
//! each), one rayon task per chunk. Each task writes only its own destination rows and reads the
//! source, so there is no data race for any input.
use rayon::prelude::*;

use crate::element::width_of;
use crate::ops::{chunk_elems, first_bad_index, use_par, PAR_CHUNK_BYTES};
use crate::{Element, Error, GatherPolicy, Index, Op, Result, Shape};

const OP: Op = Op::GatherRows;

/// What the copy needs once the arguments are validated.
struct Plan {
    /// Elements per row (may be 0).
    row_len: usize,
    /// Elements of the destination: `indices.len() * row_len`.
    dst_len: usize,
}

/// Checks the source shape and length, the destination size and every index.
fn plan<T: Element, I: Index>(
    src: &[T],
    src_shape: &[usize],
    indices: &[I],
    policy: GatherPolicy<T>,
) -> Result<Plan> {
    let shape = Shape::for_op(OP, src_shape)?;
    if src.len() != shape.numel() {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "src.len()",
            expected: shape.numel(),
            actual: src.len(),
        });
    }
    let row_len = shape.row_len();
    let dst_len = indices
        .len()
        .checked_mul(row_len)
        .ok_or(Error::SizeOverflow {
            op: OP,
            what: "indices.len() * row_len",
        })?;
    let allow_negative = matches!(policy, GatherPolicy::NegativeFill(_));
    if let Some((position, index)) = first_bad_index(indices, shape.rows(), allow_negative) {
        return Err(Error::IndexOutOfBounds {
            op: OP,
            position,
            index,
            bound: shape.rows(),
        });
    }
    Ok(Plan { row_len, dst_len })
}

/// Writes `dst` (whole rows, `indices.len() == dst.len() / row_len`) from validated indices.
#[inline]
fn gather_rows_seq<T: Element, I: Index>(
    src: &[T],
    row_len: usize,
    indices: &[I],
    dst: &mut [T],
    fill: T,
) {
    for (d, &idx) in dst.chunks_exact_mut(row_len).zip(indices) {
        // Validated: a non-negative index is < rows, so `r * row_len + row_len <= src.len()`.
        match usize::try_from(idx.to_i64()) {
            Ok(r) => d.copy_from_slice(&src[r * row_len..][..row_len]),
            // Only reachable under `NegativeFill` (validation rejects negatives otherwise).
            Err(_) => d.fill(fill),
        }
    }
}

/// The copy, after validation; `dst.len() == indices.len() * row_len`.
fn gather_validated<T: Element, I: Index>(
    src: &[T],
    row_len: usize,
    indices: &[I],
    dst: &mut [T],
    policy: GatherPolicy<T>,
) {
    if row_len == 0 {
        return;
    }
    let fill = match policy {
        GatherPolicy::NegativeFill(v) => v,
        GatherPolicy::Checked => T::zeroed(),
    };
    if use_par(std::mem::size_of_val(dst)) {
        let row_bytes = row_len.saturating_mul(std::mem::size_of::<T>());
        let rows_per_task = (PAR_CHUNK_BYTES / row_bytes).max(1);
        dst.par_chunks_mut(rows_per_task * row_len)
            .zip(indices.par_chunks(rows_per_task))
            .for_each(|(d, idx)| gather_rows_seq(src, row_len, idx, d, fill));
    } else {
        gather_rows_seq(src, row_len, indices, dst, fill);
    }
}

/// Gathers rows of `src` (shape `src_shape`, rows along axis 0) into `dst`, which must hold
/// exactly `indices.len() * row_len` elements. Validates every index before writing anything.
///
/// `row_len` is the product of every dimension of `src_shape` but the first; it may be 0, in
/// which case nothing is copied but the indices are still validated.
///
/// # Errors
/// - [`Error::TooManyDims`] / [`Error::SizeOverflow`] for a bad `src_shape`;
/// - [`Error::LengthMismatch`] when `src.len()` is not the shape's element count
///   (`what: "src.len()"`) or `dst.len()` is not `indices.len() * row_len` (`what: "dst.len()"`);
/// - [`Error::SizeOverflow`] when `indices.len() * row_len` overflows `usize`;
/// - [`Error::IndexOutOfBounds`] for the first index outside `0..rows` (under
///   [`GatherPolicy::NegativeFill`] negative indices are allowed and write a row of the fill).
///
/// On error `dst` is untouched.
///
/// # Example
/// ```
/// use cpugpu::{host::gather_rows_into, GatherPolicy};
/// let src = [0.0f32, 1.0, 10.0, 11.0, 20.0, 21.0]; // 3 rows of 2
/// let mut dst = [0.0f32; 6];
/// gather_rows_into(&src, &[3, 2], &[2i64, 0, -1], &mut dst, GatherPolicy::NegativeFill(-1.0))
///     .unwrap();
/// assert_eq!(dst, [20.0, 21.0, 0.0, 1.0, -1.0, -1.0]);
///
/// let err = gather_rows_into(&src, &[3, 2], &[0i32, 3, 1], &mut dst[..], Default::default());
/// assert_eq!(
///     err,
///     Err(cpugpu::Error::IndexOutOfBounds {
///         op: cpugpu::Op::GatherRows,
///         position: 1,
///         index: 3,
///         bound: 3
///     })
/// );
/// ```
pub fn gather_rows_into<T: Element, I: Index>(
    src: &[T],
    src_shape: &[usize],
    indices: &[I],
    dst: &mut [T],
    policy: GatherPolicy<T>,
) -> Result<()> {
    width_of::<T>();
    let Plan { row_len, dst_len } = plan(src, src_shape, indices, policy)?;
    if dst.len() != dst_len {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "dst.len()",
            expected: dst_len,
            actual: dst.len(),
        });
    }
    gather_validated(src, row_len, indices, dst, policy);
    Ok(())
}

/// Allocating form of [`gather_rows_into`]: returns `indices.len() * row_len` elements.
///
/// Everything is validated before the output is allocated. Besides the errors of
/// [`gather_rows_into`], an allocation the system refuses is an [`Error::OutOfMemory`].
///
/// # Example
/// ```
/// use cpugpu::host::gather_rows;
/// let src = [1u8, 2, 3, 4, 5, 6]; // shape [3, 2]
/// let out = gather_rows(&src, &[3, 2], &[1i32, 1, 0], Default::default()).unwrap();
/// assert_eq!(out, [3, 4, 3, 4, 1, 2]);
/// ```
pub fn gather_rows<T: Element, I: Index>(
    src: &[T],
    src_shape: &[usize],
    indices: &[I],
    policy: GatherPolicy<T>,
) -> Result<Vec<T>> {
    width_of::<T>();
    let Plan { row_len, dst_len } = plan(src, src_shape, indices, policy)?;
    let bytes = dst_len
        .checked_mul(std::mem::size_of::<T>())
        .ok_or(Error::SizeOverflow {
            op: OP,
            what: "the output's size in bytes",
        })?;
    let mut dst = Vec::new();
    dst.try_reserve_exact(dst_len)
        .map_err(|_| Error::OutOfMemory { op: OP, bytes })?;
    // Zero-fill before gathering. Above the threshold the fill runs on the thread pool: a fresh
    // allocation this large is page-faulted in by its first write, and faulting it in from every
    // thread is what makes the fill cheap (about half the single-threaded cost measured for
    // 1,048,576 x 16 f32). The indexed parallel iterator writes straight into the reserved
    // capacity, so nothing reallocates.
    if use_par(bytes) {
        dst.par_extend(
            (0..dst_len)
                .into_par_iter()
                .with_min_len(chunk_elems::<T>())
                .map(|_| T::zeroed()),
        );
    } else {
        dst.resize(dst_len, T::zeroed());
    }
    gather_validated(src, row_len, indices, &mut dst, policy);
    Ok(dst)
}
