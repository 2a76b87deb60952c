//! What the operations move: plain-old-data elements, and the integer types of indices and
//! offsets.

use std::fmt::Debug;

/// An element the operations can move: any [`bytemuck::Pod`] type of 1, 2, 4, 8 or 16 bytes.
///
/// That covers `u8`, `i16`, [`half::f16`], [`half::bf16`], `f32`, `i32`, `f64`, `i64`, `u128`,
/// `[f32; 4]` and user `#[repr(C)]` structs deriving `Pod`. The data-movement kernels care about
/// the element's *size*, not its type, and are built for exactly these widths.
///
/// Every type that is `Pod + Send + Sync` implements `Element`; the width is checked at compile
/// time when an operation is instantiated, so a 3-byte element fails to build:
///
/// ```compile_fail
/// let src = [[0u8; 3]; 4];
/// let mut dst = [[0u8; 3]; 2];
/// cpugpu::host::gather_rows_into(&src, &[4, 1][..], &[0i32, 1], &mut dst, Default::default())
///     .unwrap();
/// ```
pub trait Element: bytemuck::Pod + Send + Sync + 'static {}

impl<T: bytemuck::Pod + Send + Sync + 'static> Element for T {}

/// The byte width of `T`, rejected at compile time unless it is 1, 2, 4, 8 or 16.
#[inline(always)]
pub(crate) const fn width_of<T: Element>() -> usize {
    const {
        let w = std::mem::size_of::<T>();
        assert!(
            w == 1 || w == 2 || w == 4 || w == 8 || w == 16,
            "cpugpu elements must be 1, 2, 4, 8 or 16 bytes wide"
        );
        w
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
}

/// The integer type of indices and offsets: `i32` or `i64`.
///
/// Signed, because a negative index means "padding" under
/// [`GatherPolicy::NegativeFill`](crate::GatherPolicy::NegativeFill) and
/// [`ScatterPolicy::NegativeSkip`](crate::ScatterPolicy::NegativeSkip), as in vLLM's slot
/// mapping. Sealed: the kernels are built for these two types only.
pub trait Index:
    bytemuck::Pod + Copy + Default + Debug + PartialOrd + Send + Sync + 'static + sealed::Sealed
{
    /// `"i32"` or `"i64"`.
    const NAME: &'static str;
    /// The largest value of the type, as `i64`.
    const MAX: i64;
    /// Widens to `i64` (lossless).
    fn to_i64(self) -> i64;
    /// Narrows from `i64`, or `None` when `v` does not fit.
    fn from_i64(v: i64) -> Option<Self>;
}

impl Index for i32 {
    const NAME: &'static str = "i32";
    const MAX: i64 = i32::MAX as i64;
    #[inline(always)]
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    #[inline(always)]
    fn from_i64(v: i64) -> Option<Self> {
        i32::try_from(v).ok()
    }
}

impl Index for i64 {
    const NAME: &'static str = "i64";
    const MAX: i64 = i64::MAX;
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self
    }
    #[inline(always)]
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
}

/// Offsets use the same two integer types as indices.
pub use self::Index as Offset;
