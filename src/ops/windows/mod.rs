//! Windowed row gather: one window of a table row per entry, into a ragged or a row layout.

pub(crate) mod host;
#[cfg(cpugpu_cuda)]
pub(crate) mod launch;

use crate::device::{BackendKind, Device};
use crate::element::{width_of, Element, Index};
use crate::error::{Error, Op, Result};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::shape::Shape;

const OP: Op = Op::GatherWindows;

/// Where [`Device::gather_windows_into`] puts each entry's window, and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowLayout<X> {
    /// `n + 1` non-decreasing offsets into the output: entry `r` fills
    /// `out[offsets[r]..offsets[r + 1]]` (its length is the difference). Elements of `out`
    /// outside `offsets[0]..offsets[n]` are untouched. `input_ids` from a token table takes
    /// `query_start_loc` here; FlashInfer's `paged_kv_indices` are block-table windows with
    /// `paged_kv_indptr`.
    Ragged {
        /// The `n + 1` output offsets.
        offsets: X,
    },
    /// `n` lengths: entry `r` fills the first `lens[r]` elements of row `r` of an
    /// `[n, width]` output; the rest of the row is untouched (vLLM's `gather_block_tables`).
    Rows {
        /// The `n` window lengths.
        lens: X,
    },
}

impl<X> WindowLayout<X> {
    /// The offsets or lengths.
    pub fn extents(&self) -> &X {
        match self {
            WindowLayout::Ragged { offsets } => offsets,
            WindowLayout::Rows { lens } => lens,
        }
    }

    /// True for the ragged layout.
    pub fn is_ragged(&self) -> bool {
        matches!(self, WindowLayout::Ragged { .. })
    }
}

/// What the copy needs once the arguments are checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowArgs {
    pub n: usize,
    pub table_rows: usize,
    pub cols: usize,
    /// Elements per output row (the rows layout; 0 for the ragged one).
    pub width: usize,
}

/// The argument checks every backend makes.
pub(crate) fn check_args(
    table_len: usize,
    table_shape: &[usize],
    n: usize,
    starts_len: Option<usize>,
    ragged: bool,
    extents_len: usize,
    out_len: usize,
) -> Result<WindowArgs> {
    let shape = Shape::for_op(OP, table_shape)?;
    if table_len != shape.numel() {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "table.len()",
            expected: shape.numel(),
            actual: table_len,
        });
    }
    if let Some(len) = starts_len.filter(|&l| l != n) {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "starts.len()",
            expected: n,
            actual: len,
        });
    }
    let want = if ragged { n.saturating_add(1) } else { n };
    if extents_len != want {
        return Err(Error::LengthMismatch {
            op: OP,
            what: if ragged {
                "offsets.len() (n + 1)"
            } else {
                "lens.len()"
            },
            expected: want,
            actual: extents_len,
        });
    }
    let width = if ragged || n == 0 { 0 } else { out_len / n };
    if !ragged && width * n != out_len {
        return Err(Error::LengthMismatch {
            op: OP,
            what: "out.len() (n rows of the output width)",
            expected: width * n,
            actual: out_len,
        });
    }
    Ok(WindowArgs {
        n,
        table_rows: shape.rows(),
        cols: shape.row_len(),
        width,
    })
}

impl Device {
    /// Windowed row gather: entry `r` copies `table[rows[r], starts[r]..starts[r] + len_r]`
    /// (`starts` `None`: 0) to the output, placed and sized by `layout`
    /// ([`WindowLayout::Ragged`] offsets or [`WindowLayout::Rows`] lengths). One launch for the
    /// whole batch on CUDA (plus its validation and error capture). `table` is `[rows, cols]`
    /// (rows along axis 0, the rest flattened); in the rows layout `out` is `[n, width]`.
    ///
    /// The prefill tokens of a step are `table` = the token table, `rows` = request states,
    /// `starts` = tokens already computed, `offsets` = `query_start_loc`.
    ///
    /// Errors (first position first; on CUDA the data errors come back from
    /// [`Device::synchronize`], and nothing is written): [`Error::OffsetOutOfRange`] /
    /// [`Error::OffsetsNotMonotonic`] for bad offsets (outside `0..=out.len()`, decreasing),
    /// [`Error::IndexOutOfBounds`] for a row outside the table, [`Error::WindowOutOfRange`] for
    /// a window past its row (or past the output's width); argument errors at once.
    ///
    /// ```
    /// use cpugpu::{Device, WindowLayout};
    /// let dev = Device::auto();
    /// let tokens = dev.upload(&[10i32, 11, 12, 13, 20, 21, 22, 23], &[2, 4])?;
    /// let rows = dev.upload(&[1i32, 0], &[2])?;
    /// let starts = dev.upload(&[1i32, 2], &[2])?;
    /// let qsl = dev.upload(&[0i32, 3, 5], &[3])?;
    /// let mut ids = dev.alloc::<i32>(&[5])?;
    /// dev.gather_windows_into(tokens.view(), rows.view(), Some(starts.view()),
    ///     WindowLayout::Ragged { offsets: qsl.view() }, ids.view_mut())?;
    /// assert_eq!(ids.to_vec()?, [21, 22, 23, 12, 13]);
    /// # Ok::<(), cpugpu::Error>(())
    /// ```
    pub fn gather_windows_into<T: Element, I: Index>(
        &self,
        table: DeviceView<'_, T>,
        rows: DeviceView<'_, I>,
        starts: Option<DeviceView<'_, I>>,
        layout: WindowLayout<DeviceView<'_, I>>,
        out: DeviceViewMut<'_, T>,
    ) -> Result<()> {
        width_of::<T>();
        let args = check_args(
            table.len(),
            table.shape().dims(),
            rows.len(),
            starts.map(|s| s.len()),
            layout.is_ragged(),
            layout.extents().len(),
            out.len(),
        )?;
        if !layout.is_ragged() && out.shape().rows() != args.n && args.n > 0 {
            return Err(Error::ShapeMismatch {
                op: OP,
                what: "out's shape (n rows)",
                expected: Box::new(Shape::for_op(OP, &[args.n, args.width])?),
                actual: Box::new(out.shape()),
            });
        }
        match self.kind() {
            BackendKind::Host => {
                let ext = layout.extents().on_host(OP)?;
                let layout = if layout.is_ragged() {
                    WindowLayout::Ragged { offsets: ext }
                } else {
                    WindowLayout::Rows { lens: ext }
                };
                let (t, shape, r) = (table.on_host(OP)?, table.shape(), rows.on_host(OP)?);
                let s = starts.map(|s| s.on_host(OP)).transpose()?;
                let o = out.into_host(OP)?;
                self.host_run(std::mem::size_of_val(o), || {
                    host::gather_windows_into(t, shape.dims(), r, s, layout, o)
                })
            }
            #[cfg(cpugpu_cuda)]
            BackendKind::Cuda => {
                launch::gather_windows_into(self, table, rows, starts, layout, args, out)
            }
        }
    }
}
