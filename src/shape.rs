//! Row-major shapes.
//!
//! A [`Shape`] is stored inline (no heap allocation), so views and buffers that carry one stay
//! cheap to copy. Axis 0 is the row axis: a *row* is the product of the other dimensions.

use std::fmt;

use crate::error::{Error, Op, Result};

/// A row-major shape of up to [`Shape::MAX_DIMS`] dimensions.
///
/// ```
/// use cpugpu::Shape;
/// let s = Shape::new(&[4, 3, 2]).unwrap();
/// assert_eq!(s.rows(), 4);
/// assert_eq!(s.row_len(), 6);
/// assert_eq!(s.numel(), 24);
/// assert_eq!(s.to_string(), "[4, 3, 2]");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; Shape::MAX_DIMS],
    ndim: usize,
    numel: usize,
}

impl Shape {
    /// The most dimensions a shape can have.
    pub const MAX_DIMS: usize = 8;

    /// A shape from its dimensions. Fails when there are more than [`Shape::MAX_DIMS`] of them
    /// or when their product overflows `usize`.
    pub fn new(dims: &[usize]) -> Result<Self> {
        Self::for_op(Op::Allocate, dims)
    }

    /// A one-dimensional shape of `len` elements.
    pub const fn vector(len: usize) -> Self {
        let mut dims = [0; Shape::MAX_DIMS];
        dims[0] = len;
        Shape {
            dims,
            ndim: 1,
            numel: len,
        }
    }

    /// Like [`Shape::new`], with errors attributed to `op`.
    pub(crate) fn for_op(op: Op, dims: &[usize]) -> Result<Self> {
        if dims.len() > Self::MAX_DIMS {
            return Err(Error::TooManyDims {
                op,
                ndim: dims.len(),
                max: Self::MAX_DIMS,
            });
        }
        let numel = checked_numel(dims).ok_or(Error::SizeOverflow {
            op,
            what: "the shape's element count",
        })?;
        // With a zero extent the element count fits even when a row's, or any other sub-product's,
        // does not ([0, 2^40, 2^40]). Requiring the product of the non-zero extents to fit makes
        // every sub-product that an operation computes (row length, blocks around an axis) fit.
        if dims
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .is_none()
        {
            return Err(Error::SizeOverflow {
                op,
                what: "the product of the shape's non-zero extents",
            });
        }
        let mut inline = [0; Self::MAX_DIMS];
        inline[..dims.len()].copy_from_slice(dims);
        Ok(Shape {
            dims: inline,
            ndim: dims.len(),
            numel,
        })
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.ndim]
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.ndim
    }

    /// The number of elements (1 for a zero-dimensional shape).
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// The extent of axis 0 (1 for a zero-dimensional shape).
    pub fn rows(&self) -> usize {
        if self.ndim == 0 {
            1
        } else {
            self.dims[0]
        }
    }

    /// Elements per row: the product of every dimension but the first.
    pub fn row_len(&self) -> usize {
        if self.ndim == 0 {
            1
        } else {
            // Cannot overflow: `Shape::for_op` checked that the non-zero extents' product fits.
            self.dims[1..self.ndim].iter().product()
        }
    }

    /// The same shape with axis 0 set to `rows`.
    pub(crate) fn with_rows(&self, op: Op, rows: usize) -> Result<Self> {
        let mut dims = self.dims;
        if self.ndim == 0 {
            return Shape::for_op(op, &[rows]);
        }
        dims[0] = rows;
        Shape::for_op(op, &dims[..self.ndim])
    }
}

/// The product of `dims`, or `None` when it overflows `usize`.
pub(crate) fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.dims().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl TryFrom<&[usize]> for Shape {
    type Error = Error;
    fn try_from(dims: &[usize]) -> Result<Self> {
        Shape::new(dims)
    }
}

impl<const N: usize> TryFrom<[usize; N]> for Shape {
    type Error = Error;
    fn try_from(dims: [usize; N]) -> Result<Self> {
        Shape::new(&dims)
    }
}

impl From<usize> for Shape {
    fn from(len: usize) -> Self {
        Shape::vector(len)
    }
}
