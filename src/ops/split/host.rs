//! Host split: one buffer plus offsets to zero-copy segment views.
//!
//! Nothing is copied: segment `i` is `&data[offsets[i]..offsets[i + 1]]`. The offsets are
//! validated once, up front: a branch-free pass checks that they are non-decreasing (in parallel
//! over the thread pool when the offsets are above [`crate::ops::PAR_MIN_BYTES`]) and that the
//! first is at least 0 and the last at most `data.len()`, which together put every offset in
//! `0..=data.len()`. Only when that fails does a second, sequential pass find the first bad
//! position for the error. After that, taking a segment is two loads and a slice.
use std::fmt;
use std::iter::FusedIterator;

use rayon::prelude::*;

use crate::element::width_of;
use crate::ops::{chunk_elems, use_par};
use crate::{Element, Error, Offset, Op, Result};

const OP: Op = Op::Split;

/// Whether `o` is non-decreasing; branch-free so that it vectorises.
#[inline]
fn non_decreasing<O: Offset>(o: &[O]) -> bool {
    o.iter()
        .zip(o.iter().skip(1))
        .fold(true, |ok, (a, b)| ok & (a <= b))
}

/// The first bad offset as an error: out of `0..=len`, or smaller than its predecessor. At one
/// position, out of range is reported before non-monotonic.
fn first_bad_offset<O: Offset>(offsets: &[O], len: usize) -> Option<Error> {
    let limit = i64::try_from(len).unwrap_or(i64::MAX);
    let mut previous: Option<i64> = None;
    for (position, &o) in offsets.iter().enumerate() {
        let value = o.to_i64();
        if !(0..=limit).contains(&value) {
            return Some(Error::OffsetOutOfRange {
                op: OP,
                position,
                value,
                len,
            });
        }
        if let Some(previous) = previous.filter(|&p| value < p) {
            return Some(Error::OffsetsNotMonotonic {
                op: OP,
                position,
                previous,
                value,
            });
        }
        previous = Some(value);
    }
    None
}

/// Checks that `offsets` is not empty, non-decreasing and within `0..=len`.
pub(crate) fn validate<O: Offset>(offsets: &[O], len: usize) -> Result<()> {
    let (Some(first), Some(last)) = (offsets.first(), offsets.last()) else {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "offsets.len()",
            expected: 1,
            actual: 0,
        });
    };
    let limit = i64::try_from(len).unwrap_or(i64::MAX);
    let monotonic = if use_par(std::mem::size_of_val(offsets)) {
        // Chunk k checks offsets[k*c - 1 ..= (k+1)*c - 1]: overlapping by one, so every adjacent
        // pair is checked by some chunk.
        let c = chunk_elems::<O>();
        let n = offsets.len();
        (0..n.div_ceil(c))
            .into_par_iter()
            .all(|k| non_decreasing(&offsets[(k * c).saturating_sub(1)..((k + 1) * c).min(n)]))
    } else {
        non_decreasing(offsets)
    };
    if monotonic && first.to_i64() >= 0 && last.to_i64() <= limit {
        return Ok(());
    }
    Err(first_bad_offset(offsets, len).expect("the fast check found a bad offset"))
}

/// A validated offset as a position in the buffer.
#[inline(always)]
fn pos<O: Offset>(o: O) -> usize {
    usize::try_from(o.to_i64()).expect("validated: offsets are non-negative")
}

/// `data[s..e]` for validated offsets `0 <= s <= e <= data.len()`.
#[inline(always)]
pub(crate) fn segment<T, O: Offset>(data: &[T], s: O, e: O) -> &[T] {
    &data[pos(s)..pos(e)]
}

/// Validated zero-copy segments of a buffer: segment `i` is `data[offsets[i]..offsets[i + 1]]`.
///
/// Built by [`split`], which checks the offsets once; indexing and iterating afterwards do not
/// check them again. There are `offsets.len() - 1` segments; when the first offset is above 0
/// the elements before it belong to no segment, and likewise the elements after the last.
///
/// # Example
/// ```
/// use cpugpu::host::split;
/// let data = [1u8, 2, 3, 4, 5, 6];
/// let segs = split(&data, &[1i32, 3, 3, 6]).unwrap();
/// assert_eq!(segs.len(), 3);
/// assert_eq!(segs.get(0), Some(&[2u8, 3][..]));
/// assert_eq!(segs.get(1), Some(&[][..]));
/// assert_eq!(segs.get(3), None);
/// let lens: Vec<usize> = segs.iter().map(|s| s.len()).collect();
/// assert_eq!(lens, [2, 0, 3]);
/// ```
pub struct Segments<'a, T, O> {
    /// The whole buffer.
    data: &'a [T],
    /// Validated: at least one, non-decreasing, within `0..=data.len()`.
    offsets: &'a [O],
}

impl<T, O> Clone for Segments<'_, T, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, O> Copy for Segments<'_, T, O> {}

impl<T, O: fmt::Debug> fmt::Debug for Segments<'_, T, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segments")
            .field("data_len", &self.data.len())
            .field("offsets", &self.offsets)
            .finish()
    }
}

impl<'a, T, O: Offset> Segments<'a, T, O> {
    /// The number of segments, `offsets.len() - 1`.
    ///
    /// ```
    /// let segs = cpugpu::host::split(&[7u16; 4], &[0i64, 4]).unwrap();
    /// assert_eq!(segs.len(), 1);
    /// ```
    #[inline]
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there is no segment (a single offset).
    ///
    /// ```
    /// let segs = cpugpu::host::split(&[7u16; 4], &[2i64]).unwrap();
    /// assert!(segs.is_empty());
    /// ```
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.offsets.len() == 1
    }

    /// Segment `i`, or `None` when `i >= self.len()`.
    ///
    /// ```
    /// let segs = cpugpu::host::split(&[1i32, 2, 3], &[0i32, 1, 3]).unwrap();
    /// assert_eq!(segs.get(1), Some(&[2, 3][..]));
    /// assert_eq!(segs.get(2), None);
    /// ```
    #[inline]
    pub fn get(&self, i: usize) -> Option<&'a [T]> {
        match self.offsets.get(i..)? {
            [s, e, ..] => Some(segment(self.data, *s, *e)),
            _ => None,
        }
    }

    /// An iterator over the segments, front to back (double-ended, exact size).
    ///
    /// ```
    /// let segs = cpugpu::host::split(&[1u8, 2, 3], &[0i64, 1, 1, 3]).unwrap();
    /// let last_first: Vec<&[u8]> = segs.iter().rev().collect();
    /// assert_eq!(last_first, [&[2u8, 3][..], &[], &[1]]);
    /// ```
    #[inline]
    pub fn iter(&self) -> SegmentsIter<'a, T, O> {
        SegmentsIter {
            data: self.data,
            offsets: self.offsets,
        }
    }

    /// The validated offsets (`self.len() + 1` of them).
    ///
    /// ```
    /// let offsets = [0i32, 2, 3];
    /// let segs = cpugpu::host::split(&[9u8; 3], &offsets).unwrap();
    /// assert_eq!(segs.offsets(), &offsets);
    /// ```
    #[inline]
    pub fn offsets(&self) -> &'a [O] {
        self.offsets
    }

    /// The whole buffer, including any elements before the first offset or after the last.
    ///
    /// ```
    /// let data = [1u8, 2, 3];
    /// let segs = cpugpu::host::split(&data, &[1i32, 2]).unwrap();
    /// assert_eq!(segs.data(), &data);
    /// ```
    #[inline]
    pub fn data(&self) -> &'a [T] {
        self.data
    }
}

impl<'a, T, O: Offset> IntoIterator for Segments<'a, T, O> {
    type Item = &'a [T];
    type IntoIter = SegmentsIter<'a, T, O>;

    /// ```
    /// let segs = cpugpu::host::split(&[1u8, 2, 3], &[0i32, 2, 3]).unwrap();
    /// let mut total = 0;
    /// for s in segs {
    ///     total += s.len();
    /// }
    /// assert_eq!(total, 3);
    /// ```
    #[inline]
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T, O: Offset> IntoIterator for &Segments<'a, T, O> {
    type Item = &'a [T];
    type IntoIter = SegmentsIter<'a, T, O>;

    /// ```
    /// let segs = cpugpu::host::split(&[1u8, 2, 3], &[0i32, 2, 3]).unwrap();
    /// assert_eq!((&segs).into_iter().count(), 2);
    /// ```
    #[inline]
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`Segments`], from [`Segments::iter`] or `into_iter`.
///
/// ```
/// let segs = cpugpu::host::split(&[1u8, 2, 3, 4], &[0i32, 1, 3, 4]).unwrap();
/// let mut it = segs.iter();
/// assert_eq!(it.len(), 3);
/// assert_eq!(it.next(), Some(&[1u8][..]));
/// assert_eq!(it.next_back(), Some(&[4u8][..]));
/// assert_eq!(it.next(), Some(&[2u8, 3][..]));
/// assert_eq!(it.next(), None);
/// ```
pub struct SegmentsIter<'a, T, O> {
    data: &'a [T],
    /// The boundaries of the segments not yet taken (validated; at least one).
    offsets: &'a [O],
}

impl<T, O> Clone for SegmentsIter<'_, T, O> {
    fn clone(&self) -> Self {
        SegmentsIter {
            data: self.data,
            offsets: self.offsets,
        }
    }
}

impl<T, O: fmt::Debug> fmt::Debug for SegmentsIter<'_, T, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentsIter")
            .field("data_len", &self.data.len())
            .field("offsets", &self.offsets)
            .finish()
    }
}

impl<'a, T, O: Offset> Iterator for SegmentsIter<'a, T, O> {
    type Item = &'a [T];

    #[inline]
    fn next(&mut self) -> Option<&'a [T]> {
        match self.offsets {
            [s, rest @ ..] if !rest.is_empty() => {
                self.offsets = rest;
                Some(segment(self.data, *s, rest[0]))
            }
            _ => None,
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len();
        (n, Some(n))
    }

    #[inline]
    fn nth(&mut self, n: usize) -> Option<&'a [T]> {
        // Keep at least the last boundary so that `len()` stays well defined.
        let skip = n.min(self.len());
        self.offsets = &self.offsets[skip..];
        self.next()
    }
}

impl<T, O: Offset> DoubleEndedIterator for SegmentsIter<'_, T, O> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        match self.offsets {
            [rest @ .., e] if !rest.is_empty() => {
                self.offsets = &self.offsets[..rest.len()];
                Some(segment(self.data, rest[rest.len() - 1], *e))
            }
            _ => None,
        }
    }
}

impl<T, O: Offset> ExactSizeIterator for SegmentsIter<'_, T, O> {
    #[inline]
    fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
}

impl<T, O: Offset> FusedIterator for SegmentsIter<'_, T, O> {}

/// Splits `data` at `offsets` into zero-copy [`Segments`]: segment `i` is
/// `data[offsets[i]..offsets[i + 1]]`.
///
/// The offsets are validated once, here; there must be at least one, they must be
/// non-decreasing, and each must lie in `0..=data.len()`. The first offset may be above 0 and the
/// last below `data.len()`.
///
/// # Errors
/// - [`Error::LengthMismatch`](crate::Error::LengthMismatch) (`what: "offsets.len()"`, `expected: 1`, `actual: 0`) for an
///   empty `offsets`;
/// - [`Error::OffsetOutOfRange`](crate::Error::OffsetOutOfRange) for the first offset that is negative or above `data.len()`;
/// - [`Error::OffsetsNotMonotonic`](crate::Error::OffsetsNotMonotonic) for the first offset smaller than its predecessor.
///
/// The offsets are checked in order and the first bad position is reported; at one position, out
/// of range is reported before non-monotonic.
///
/// # Example
/// ```
/// use cpugpu::host::split;
/// use cpugpu::{Error, Op};
/// let input_ids = [101u32, 7592, 2088, 101, 101, 2129];
/// let segs = split(&input_ids, &[0i64, 3, 4, 4, 6]).unwrap();
/// assert_eq!(segs.get(0), Some(&[101u32, 7592, 2088][..]));
/// assert_eq!(segs.iter().map(<[u32]>::len).collect::<Vec<_>>(), [3, 1, 0, 2]);
///
/// let err = split(&input_ids, &[0i32, 4, 3]).unwrap_err();
/// assert_eq!(
///     err,
///     Error::OffsetsNotMonotonic { op: Op::Split, position: 2, previous: 4, value: 3 }
/// );
/// ```
pub fn split<'a, T: Element, O: Offset>(
    data: &'a [T],
    offsets: &'a [O],
) -> Result<Segments<'a, T, O>> {
    width_of::<T>();
    validate(offsets, data.len())?;
    Ok(Segments { data, offsets })
}

/// Allocation-free form of [`split`]: clears `out` and pushes one view per segment
/// (`offsets.len() - 1` of them). `out` allocates only when its capacity is too small.
///
/// # Errors
/// Those of [`split`]. On error `out` is untouched.
///
/// # Example
/// ```
/// use cpugpu::host::split_into;
/// let data = [1.0f32, 2.0, 3.0, 4.0];
/// let mut views = Vec::with_capacity(8);
/// split_into(&data, &[0i32, 1, 4], &mut views).unwrap();
/// assert_eq!(views, [&[1.0f32][..], &[2.0, 3.0, 4.0]]);
///
/// let err = split_into(&data, &[0i64, 5], &mut views).unwrap_err();
/// assert_eq!(
///     err,
///     cpugpu::Error::OffsetOutOfRange { op: cpugpu::Op::Split, position: 1, value: 5, len: 4 }
/// );
/// assert_eq!(views.len(), 2, "untouched on error");
/// ```
pub fn split_into<'a, T: Element, O: Offset>(
    data: &'a [T],
    offsets: &[O],
    out: &mut Vec<&'a [T]>,
) -> Result<()> {
    width_of::<T>();
    validate(offsets, data.len())?;
    out.clear();
    out.extend(
        offsets
            .iter()
            .zip(&offsets[1..])
            .map(|(&s, &e)| segment(data, s, e)),
    );
    Ok(())
}
