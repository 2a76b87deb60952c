//! Host gather: `dst[i, ..] = src[indices[i], ..]`.
//!
//! Validation (shape, lengths, every index) happens before anything is written. The copy is a
//! `copy_from_slice` of one whole row per index; above [`crate::ops::PAR_MIN_BYTES`] moved it is
//! split into chunks of consecutive destination rows (about [`crate::ops::PAR_CHUNK_BYTES`]
//! each), one rayon task per chunk, so it spreads over any number of threads once the output is
//! a few chunks per thread. Each task writes only its own destination rows and reads the source,
//! so there is no data race for any input. Outputs of
//! [`STREAM_MIN_BYTES`](crate::par::STREAM_MIN_BYTES) or more with rows of a multiple of 16
//! bytes take [`gather_rows_stream`]: the source row some 2 KiB ahead is prefetched, so the
//! random reads overlap, and rows are written with streaming stores.
use rayon::prelude::*;

use super::{check_args, GatherArgs};
use crate::element::width_of;
use crate::ops::{first_bad_index, use_par, PAR_CHUNK_BYTES};
use crate::par::{prefetch_span, stream_copy, stream_fence, use_stream, Stores, PREFETCH_BYTES};
use crate::{Element, Error, GatherPolicy, Index, Op, Result};

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
    let GatherArgs {
        rows,
        row_len,
        dst_len,
    } = check_args(src.len(), src_shape, indices.len())?;
    let allow_negative = matches!(policy, GatherPolicy::NegativeFill(_));
    if let Some((position, index)) = first_bad_index(indices, rows, allow_negative) {
        return Err(Error::IndexOutOfBounds {
            op: OP,
            position,
            index,
            bound: rows,
        });
    }
    Ok(Plan { row_len, dst_len })
}

/// Writes `dst` (whole rows, `indices.len() == dst.len() / row_len`) from validated indices.
///
/// Rows of 4 to 256 bytes (a power of two) are moved as fixed-size byte arrays, which compile to
/// a few vector moves instead of a `memcpy` call per row, with no bounds check: 4,096 rows of
/// 64 bytes took 12.4 us with per-row `copy_from_slice`, 10.9 us as checked fixed-size copies
/// and 9.4 us unchecked (`host_bench --op gather_small`, 2-core x86-64; numpy `np.take` 9.8 us).
///
/// # Safety
/// Every non-negative index must be below `src.len() / row_len` (what `plan` validates).
#[inline]
unsafe fn gather_rows_seq<T: Element, I: Index>(
    src: &[T],
    row_len: usize,
    indices: &[I],
    dst: &mut [T],
    fill: T,
) {
    let (s, d): (&[u8], &mut [u8]) = (bytemuck::cast_slice(src), bytemuck::cast_slice_mut(dst));
    // SAFETY (all arms): the caller guarantees every non-negative index is below the row count,
    // and `s` holds exactly that many rows of `row_len * size_of::<T>()` = N bytes.
    match row_len * std::mem::size_of::<T>() {
        4 => unsafe { gather_fixed::<4, T, I>(s, indices, d, fill) },
        8 => unsafe { gather_fixed::<8, T, I>(s, indices, d, fill) },
        16 => unsafe { gather_fixed::<16, T, I>(s, indices, d, fill) },
        32 => unsafe { gather_fixed::<32, T, I>(s, indices, d, fill) },
        64 => unsafe { gather_fixed::<64, T, I>(s, indices, d, fill) },
        128 => unsafe { gather_fixed::<128, T, I>(s, indices, d, fill) },
        256 => unsafe { gather_fixed::<256, T, I>(s, indices, d, fill) },
        _ => {
            for (d, &idx) in dst.chunks_exact_mut(row_len).zip(indices) {
                // Validated: a non-negative index is < rows, so the row is inside `src`.
                match usize::try_from(idx.to_i64()) {
                    Ok(r) => d.copy_from_slice(&src[r * row_len..][..row_len]),
                    // Only reachable under `NegativeFill` (validation rejects negatives otherwise).
                    Err(_) => d.fill(fill),
                }
            }
        }
    }
}

/// [`gather_rows_seq`] for rows of exactly `N` bytes (`N` a multiple of `size_of::<T>()`).
///
/// # Safety
/// Every non-negative index must be below `src.len() / N`.
#[inline]
unsafe fn gather_fixed<const N: usize, T: Element, I: Index>(
    src: &[u8],
    indices: &[I],
    dst: &mut [u8],
    fill: T,
) {
    let (src_rows, _) = src.as_chunks::<N>();
    let (dst_rows, _) = dst.as_chunks_mut::<N>();
    let mut fill_row = [0u8; N];
    for c in fill_row.chunks_exact_mut(std::mem::size_of::<T>()) {
        c.copy_from_slice(bytemuck::bytes_of(&fill));
    }
    for (d, &idx) in dst_rows.iter_mut().zip(indices) {
        *d = match usize::try_from(idx.to_i64()) {
            // SAFETY: the caller guarantees r < src.len() / N, which is src_rows.len().
            Ok(r) => unsafe { *src_rows.get_unchecked(r) },
            Err(_) => fill_row,
        };
    }
}

/// [`gather_rows_seq`] with streaming stores and software prefetch, for large outputs: each row
/// is copied with [`stream_copy`], and the source row [`PREFETCH_BYTES`] ahead (at least two
/// rows) is prefetched, so the random reads overlap. Rows are `row_bytes` bytes, a multiple of
/// 16, and `dst` is 16-byte aligned; `fill_row` is one row of the fill (read only for negative
/// indices).
///
/// # Safety
/// Every non-negative index must be below `src.len() / row_bytes`; `dst.len()` is
/// `indices.len() * row_bytes`.
unsafe fn gather_rows_stream<I: Index>(
    src: &[u8],
    row_bytes: usize,
    indices: &[I],
    dst: &mut [u8],
    fill_row: &[u8],
) {
    // The common row sizes get their own copy of the loop, with the row size a constant.
    // SAFETY (every arm): this function's contract, passed on unchanged.
    unsafe {
        match row_bytes {
            16 => gather_rows_stream_impl(src, 16, indices, dst, fill_row),
            32 => gather_rows_stream_impl(src, 32, indices, dst, fill_row),
            64 => gather_rows_stream_impl(src, 64, indices, dst, fill_row),
            128 => gather_rows_stream_impl(src, 128, indices, dst, fill_row),
            256 => gather_rows_stream_impl(src, 256, indices, dst, fill_row),
            _ => gather_rows_stream_impl(src, row_bytes, indices, dst, fill_row),
        }
    }
    stream_fence();
}

/// The body of [`gather_rows_stream`] (same contract), inlined into each of its arms.
#[inline(always)]
unsafe fn gather_rows_stream_impl<I: Index>(
    src: &[u8],
    row_bytes: usize,
    indices: &[I],
    dst: &mut [u8],
    fill_row: &[u8],
) {
    let ahead = (PREFETCH_BYTES / row_bytes).max(2);
    for (k, (d, &idx)) in dst.chunks_exact_mut(row_bytes).zip(indices).enumerate() {
        if let Some(&next) = indices.get(k + ahead) {
            // A negative index (a fill row) prefetches some address outside `src`: harmless.
            prefetch_span(
                src,
                (next.to_i64() as usize).wrapping_mul(row_bytes),
                row_bytes,
            );
        }
        let from = match usize::try_from(idx.to_i64()) {
            // The caller guarantees r < src.len() / row_bytes: the row lies inside `src`.
            Ok(r) => src[r * row_bytes..][..row_bytes].as_ptr(),
            Err(_) => fill_row.as_ptr(),
        };
        // SAFETY: `from` is a whole row (of `src`, or `fill_row` of row_bytes bytes), `d` is a
        // row of `dst`, which does not overlap `src` (`&` and `&mut` borrows) or `fill_row`
        // (a separate allocation); `d` starts 16-byte aligned (dst is, and row_bytes is a
        // multiple of 16) and row_bytes is a multiple of 16.
        unsafe { stream_copy(d.as_mut_ptr(), from, row_bytes) };
    }
}

/// The copy, after validation; `dst.len() == indices.len() * row_len`.
///
/// # Safety
/// Every non-negative index must be below `src.len() / row_len` (what `plan` validates).
unsafe fn gather_validated<T: Element, I: Index>(
    src: &[T],
    row_len: usize,
    indices: &[I],
    dst: &mut [T],
    policy: GatherPolicy<T>,
    stores: Stores,
) {
    if row_len == 0 || indices.is_empty() {
        return; // nothing to copy (and row_len * size_of::<T>() may not even fit)
    }
    let fill = match policy {
        GatherPolicy::NegativeFill(v) => v,
        GatherPolicy::Checked => T::zeroed(),
    };
    let row_bytes = row_len.saturating_mul(std::mem::size_of::<T>());
    if stores == Stores::Auto
        && use_stream(std::mem::size_of_val(dst))
        && row_bytes.is_multiple_of(16)
        && (dst.as_ptr() as usize).is_multiple_of(16)
    {
        let (s, d): (&[u8], &mut [u8]) = (bytemuck::cast_slice(src), bytemuck::cast_slice_mut(dst));
        let fill_row: Vec<u8> = match policy {
            GatherPolicy::NegativeFill(v) => bytemuck::bytes_of(&v).repeat(row_len),
            GatherPolicy::Checked => Vec::new(), // never read: no index is negative
        };
        let rows_per_task = (PAR_CHUNK_BYTES / row_bytes).max(1);
        let task = |(d, idx): (&mut [u8], &[I])| {
            // SAFETY: this function's own contract, for a sub-slice of the indices and the
            // matching rows of dst (16-byte aligned: dst is, and row_bytes is a multiple of 16).
            unsafe { gather_rows_stream(s, row_bytes, idx, d, &fill_row) }
        };
        if use_par(d.len()) {
            d.par_chunks_mut(rows_per_task * row_bytes)
                .zip(indices.par_chunks(rows_per_task))
                .for_each(task);
        } else {
            task((d, indices));
        }
        return;
    }
    if use_par(std::mem::size_of_val(dst)) {
        let rows_per_task = (PAR_CHUNK_BYTES / row_bytes).max(1);
        dst.par_chunks_mut(rows_per_task * row_len)
            .zip(indices.par_chunks(rows_per_task))
            // SAFETY: this function's own contract, passed on for a sub-slice of the indices.
            .for_each(|(d, idx)| unsafe { gather_rows_seq(src, row_len, idx, d, fill) });
    } else {
        // SAFETY: this function's own contract.
        unsafe { gather_rows_seq(src, row_len, indices, dst, fill) };
    }
}

/// Gathers rows of `src` (shape `src_shape`, rows along axis 0) into `dst`, which must hold
/// exactly `indices.len() * row_len` elements. Validates every index before writing anything.
///
/// `row_len` is the product of every dimension of `src_shape` but the first; it may be 0, in
/// which case nothing is copied but the indices are still validated.
///
/// # Errors
/// - [`Error::TooManyDims`](crate::Error::TooManyDims) / [`Error::SizeOverflow`](crate::Error::SizeOverflow) for a bad `src_shape`;
/// - [`Error::LengthMismatch`](crate::Error::LengthMismatch) when `src.len()` is not the shape's element count
///   (`what: "src.len()"`) or `dst.len()` is not `indices.len() * row_len` (`what: "dst.len()"`);
/// - [`Error::SizeOverflow`](crate::Error::SizeOverflow) when `indices.len() * row_len` overflows `usize`;
/// - [`Error::IndexOutOfBounds`](crate::Error::IndexOutOfBounds) for the first index outside `0..rows` (under
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
    // SAFETY: `plan` checked every index against the rows of `src` (`src.len() / row_len`).
    unsafe { gather_validated(src, row_len, indices, dst, policy, Stores::Auto) };
    Ok(())
}

/// Allocating form of [`gather_rows_into`]: returns `indices.len() * row_len` elements.
///
/// Everything is validated before the output is allocated. Besides the errors of
/// [`gather_rows_into`], an allocation the system refuses is an [`Error::OutOfMemory`](crate::Error::OutOfMemory).
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
    // Zeroed by the allocator (fresh pages, advised onto huge pages when large), so the gather
    // is the first write to them.
    let mut dst = crate::memory::zeroed_vec(OP, dst_len)?;
    // SAFETY: `plan` checked every index against the rows of `src` (`src.len() / row_len`).
    unsafe { gather_validated(src, row_len, indices, &mut dst, policy, Stores::Cached) };
    Ok(dst)
}
