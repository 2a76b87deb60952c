//! The CUDA kernels, run on the CPU by the emulator (`--features emulator`, tests only).
//!
//! Every function mirrors its host counterpart in [`crate::host`] (same signature, same errors
//! for the same bad input, same output) but does the work by launching the crate's CUDA kernels,
//! compiled as C++ against `kernels/emu/cuda_emu.h`, with the launch configuration and parameter
//! structs of `src/kernels/launch.rs`, the code a GPU launch uses. "Device memory" is the caller's
//! host memory. Bounds, negative lengths and overflow are found by the kernels (the error word)
//! and turned into [`Error`] values here, after the launches, as the CUDA backend does at its
//! next synchronisation.
//!
//! A green run here is not a GPU run: see `docs/EMULATOR.md` for what the emulator does not
//! model.
//!
//! ```
//! let table = [10u32, 11, 20, 21, 30, 31];
//! let mut out = [0u32; 4];
//! cpugpu::emu::gather_rows_into(&table, &[3, 2], &[2i64, 0], &mut out, Default::default())?;
//! assert_eq!(out, [30, 31, 10, 11]);
//! # Ok::<(), cpugpu::Error>(())
//! ```

use std::borrow::Cow;
use std::ffi::{c_char, c_void, CStr};

use super::abi::{self, *};
use super::launch::{self, i64_of, LaunchConfig, ScanPlan};
use super::Kernel;
use crate::element::width_of;
use crate::ops::gather::{self, GatherArgs};
use crate::ops::pad;
use crate::ops::scatter::{self, ScatterArgs};
use crate::{Element, Error, GatherPolicy, Index, Offset, Op, Result, ScatterPolicy, Shape};

pub use crate::host::Padded;

extern "C" {
    fn cpugpu_emu_launch(
        kernel: u32,
        grid: u32,
        block: u32,
        shared_bytes: u32,
        params: *const c_void,
    ) -> i32;
    fn cpugpu_emu_kernel_count() -> u32;
    fn cpugpu_emu_kernel_name(kernel: u32) -> *const c_char;
    fn cpugpu_emu_abi_layout(s: *const c_char, f: *const c_char) -> i64;
}

/// Runs `kernel` on the emulator and waits for it.
///
/// # Safety
/// 1. Every pointer in `params` is valid for every access the kernel makes under `cfg`: reads
///    of the inputs, writes of the outputs, for the counts `params` states.
/// 2. No memory the kernel writes is read or written by anything else during the call.
unsafe fn launch<P>(kernel: Kernel<P>, cfg: LaunchConfig, params: &P) {
    LAUNCH_LOG.with(|log| log.borrow_mut().push(kernel.name()));
    // SAFETY: the caller guarantees 1 and 2; `params` points at a live `P`, the struct the
    // kernel's typed handle names, and the launcher copies it before the kernel runs.
    let rc = unsafe {
        cpugpu_emu_launch(
            kernel.id(),
            cfg.grid,
            cfg.block,
            cfg.shared_bytes,
            (params as *const P).cast(),
        )
    };
    // Only a bug in this crate's launch math can get here: configurations come from `launch`.
    assert_eq!(rc, 0, "emulator refused {} with {cfg:?}", kernel.name());
}

thread_local! {
    static LAUNCH_LOG: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The kernels this thread launched since the last call, in order (tests use it to prove which
/// vector-width path ran).
pub fn take_launch_log() -> Vec<&'static str> {
    LAUNCH_LOG.with(|log| std::mem::take(&mut *log.borrow_mut()))
}

fn is_i64<I: Index>() -> bool {
    std::mem::size_of::<I>() == 8
}

/// The first bad position recorded in an error word, if any.
fn bad_position(error: u64) -> Option<usize> {
    (error != abi::NO_ERROR).then(|| usize::try_from(error).unwrap_or(usize::MAX))
}

/// Launches index validation alone (used when no copy follows).
fn validate_indices<I: Index>(indices: &[I], bound: usize, allow_negative: bool, error: &mut u64) {
    if indices.is_empty() {
        return;
    }
    let p = CpugpuValidateParams {
        indices: indices.as_ptr().cast(),
        error,
        n: i64_of(indices.len()),
        bound: i64_of(bound),
        allow_negative: i64::from(allow_negative),
    };
    // SAFETY: the kernel reads indices[0..n] and atomically updates *error, both live and
    // exclusively ours for the call.
    unsafe {
        launch(
            launch::validate_kernel(is_i64::<I>()),
            launch::flat_launch(indices.len(), 4),
            &p,
        )
    };
}

fn index_error<I: Index>(op: Op, indices: &[I], position: usize, bound: usize) -> Error {
    Error::IndexOutOfBounds {
        op,
        position,
        index: indices.get(position).map_or(i64::MAX, |i| i.to_i64()),
        bound,
    }
}

/// Emulated [`crate::host::gather_rows_into`]: `validate_indices` then `gather_rows_w<V>`.
pub fn gather_rows_into<T: Element, I: Index>(
    src: &[T],
    src_shape: &[usize],
    indices: &[I],
    dst: &mut [T],
    policy: GatherPolicy<T>,
) -> Result<()> {
    let w = width_of::<T>();
    let op = Op::GatherRows;
    let GatherArgs {
        rows,
        row_len,
        dst_len,
    } = gather::check_args(src.len(), src_shape, indices.len())?;
    let (allow_negative, fill) = match policy {
        GatherPolicy::Checked => (false, T::zeroed()),
        GatherPolicy::NegativeFill(v) => (true, v),
    };
    let mut error = abi::NO_ERROR;
    if dst.len() != dst_len || dst_len == 0 {
        // No copy: validate alone, so a bad index is still reported first, as on the host.
        validate_indices(indices, rows, allow_negative, &mut error);
        if let Some(pos) = bad_position(error) {
            return Err(index_error(op, indices, pos, rows));
        }
        if dst.len() != dst_len {
            return Err(Error::LengthMismatch {
                op,
                what: "dst.len()",
                expected: dst_len,
                actual: dst.len(),
            });
        }
        return Ok(());
    }
    // dst_len > 0, so a row's bytes fit (they are at most dst's).
    let row_bytes = row_len * w;
    let v = launch::copy_policy(
        w,
        row_bytes,
        &[src.as_ptr() as usize, dst.as_ptr() as usize],
        None,
    )
    .access_width;
    let rl = launch::rows_launch(indices.len(), row_bytes / v);
    validate_indices(indices, rows, allow_negative, &mut error);
    let p = CpugpuGatherRowsParams {
        src: src.as_ptr().cast(),
        dst: dst.as_mut_ptr().cast(),
        indices: indices.as_ptr().cast(),
        error: &error,
        n_indices: i64_of(indices.len()),
        src_rows: i64_of(rows),
        row_units: i64_of(row_bytes / v),
        lanes_per_row: rl.lanes_per_row,
        fill: launch::fill_pattern(fill),
    };
    // SAFETY: v divides the row size and both base addresses, so every unit access is in
    // bounds and aligned: src holds rows * row_len elements, dst indices.len() * row_len; the
    // kernel reads src rows only for indices in 0..rows. Nothing else touches dst meanwhile.
    unsafe { launch(launch::gather_kernel(v, is_i64::<I>()), rl.config, &p) };
    match bad_position(error) {
        Some(pos) => Err(index_error(op, indices, pos, rows)),
        None => Ok(()),
    }
}

/// Emulated [`crate::host::gather_rows`].
pub fn gather_rows<T: Element, I: Index>(
    src: &[T],
    src_shape: &[usize],
    indices: &[I],
    policy: GatherPolicy<T>,
) -> Result<Vec<T>> {
    let shape = Shape::for_op(Op::GatherRows, src_shape)?;
    let n = indices
        .len()
        .checked_mul(shape.row_len())
        .ok_or(Error::SizeOverflow {
            op: Op::GatherRows,
            what: "indices.len() * row_len",
        })?;
    let mut dst = crate::memory::zeroed_vec::<T>(Op::GatherRows, n)?;
    gather_rows_into(src, src_shape, indices, &mut dst, policy)?;
    Ok(dst)
}

/// Emulated [`crate::host::scatter_rows_into`]: `scatter_winners` then `scatter_rows_w<V>`
/// (last occurrence wins).
pub fn scatter_rows_into<T: Element, I: Index>(
    src: &[T],
    indices: &[I],
    dst: &mut [T],
    dst_shape: &[usize],
    policy: ScatterPolicy,
) -> Result<()> {
    let w = width_of::<T>();
    let op = Op::ScatterRows;
    let ScatterArgs { rows, row_len } =
        scatter::check_args(src.len(), indices.len(), dst.len(), dst_shape)?;
    let src_len = src.len();
    let allow_negative = matches!(policy, ScatterPolicy::NegativeSkip);
    let mut error = abi::NO_ERROR;
    if src_len == 0 {
        validate_indices(indices, rows, allow_negative, &mut error);
    } else {
        // src_len > 0: rows > 0 is not implied (every index may be bad), but dst rows exist
        // whenever a copy can happen; the winners scratch has one entry per dst row.
        let mut winners = vec![-1i64; rows];
        let row_bytes = row_len * w;
        let v = launch::copy_policy(
            w,
            row_bytes,
            &[src.as_ptr() as usize, dst.as_ptr() as usize],
            None,
        )
        .access_width;
        let rl = launch::rows_launch(indices.len(), row_bytes / v);
        let pw = CpugpuScatterWinnersParams {
            indices: indices.as_ptr().cast(),
            winners: winners.as_mut_ptr(),
            error: &mut error,
            n: i64_of(indices.len()),
            dst_rows: i64_of(rows),
            allow_negative: i64::from(allow_negative),
        };
        // SAFETY: reads indices[0..n]; updates winners[v] only for v in 0..dst_rows, and the
        // error word; all live and exclusively ours.
        unsafe {
            launch(
                launch::scatter_winners_kernel(is_i64::<I>()),
                launch::flat_launch(indices.len(), 4),
                &pw,
            )
        };
        let pr = CpugpuScatterRowsParams {
            src: src.as_ptr().cast(),
            dst: dst.as_mut_ptr().cast(),
            indices: indices.as_ptr().cast(),
            winners: winners.as_ptr(),
            error: &error,
            n_indices: i64_of(indices.len()),
            dst_rows: i64_of(rows),
            row_units: i64_of(row_bytes / v),
            lanes_per_row: rl.lanes_per_row,
        };
        // SAFETY: v divides the row size and both base addresses; src holds n rows, dst `rows`
        // rows and only rows 0..rows are written, each by its single winner.
        unsafe { launch(launch::scatter_kernel(v, is_i64::<I>()), rl.config, &pr) };
    }
    match bad_position(error) {
        Some(pos) => Err(index_error(op, indices, pos, rows)),
        None => Ok(()),
    }
}

/// Emulated [`crate::host::pad_to_multiple_into`]: one `pad_w<V>` launch copies and fills.
pub fn pad_to_multiple_into<T: Element>(
    src: &[T],
    shape: &[usize],
    axis: usize,
    multiple: usize,
    fill: T,
    dst: &mut [T],
) -> Result<Shape> {
    let w = width_of::<T>();
    let (s, padded) = pad::check_args(src.len(), shape, axis, multiple, Some(dst.len()))?;
    if dst.is_empty() {
        return Ok(padded);
    }
    // dst is not empty, so none of these products overflows (they divide its length).
    let dims = s.dims();
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let src_row_bytes = dims[axis] * inner * w;
    let dst_row_bytes = padded.dims()[axis] * inner * w;
    let policy = launch::copy_policy(
        w,
        gcd(src_row_bytes, dst_row_bytes),
        &[src.as_ptr() as usize, dst.as_ptr() as usize],
        None,
    );
    let v = policy.access_width;
    let p = CpugpuPadParams {
        src: src.as_ptr().cast(),
        dst: dst.as_mut_ptr().cast(),
        outer: i64_of(outer),
        src_row_units: i64_of(src_row_bytes / v),
        dst_row_units: i64_of(dst_row_bytes / v),
        fill: launch::fill_pattern(fill),
    };
    let cfg = launch::flat_launch(dst.len() * w / v, policy.items_per_thread);
    // SAFETY: v divides both row sizes and both base addresses; the kernel writes
    // outer * dst_row_units units (all of dst) and reads outer * src_row_units (all of src).
    unsafe { launch(launch::pad_kernel(v), cfg, &p) };
    Ok(padded)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Emulated [`crate::host::pad_to_multiple`]: borrows the input when no padding is needed.
pub fn pad_to_multiple<'a, T: Element>(
    src: &'a [T],
    shape: &[usize],
    axis: usize,
    multiple: usize,
    fill: T,
) -> Result<Padded<'a, T>> {
    width_of::<T>();
    let op = Op::PadToMultiple;
    let (s, padded) = pad::check_args(src.len(), shape, axis, multiple, None)?;
    if padded == s {
        return Ok(Padded {
            data: Cow::Borrowed(src),
            shape: s,
        });
    }
    let mut dst = crate::memory::zeroed_vec::<T>(op, padded.numel())?;
    pad_to_multiple_into(src, shape, axis, multiple, fill, &mut dst)?;
    Ok(Padded {
        data: Cow::Owned(dst),
        shape: padded,
    })
}

/// Emulated [`crate::host::prefix_sum_offsets_into`]: one launch up to one tile (4,096
/// lengths), reduce / scan-tiles / downsweep beyond.
pub fn prefix_sum_offsets_into<L: Index, O: Offset>(
    lengths: &[L],
    offsets: &mut [O],
) -> Result<()> {
    let op = Op::PrefixSumOffsets;
    let n = lengths.len();
    if offsets.len() != n.saturating_add(1) {
        return Err(Error::LengthMismatch {
            op,
            what: "offsets.len()",
            expected: n.saturating_add(1),
            actual: offsets.len(),
        });
    }
    let kernels = launch::offsets_kernels(is_i64::<L>(), is_i64::<O>());
    let mut error = abi::NO_ERROR;
    let plan = launch::scan_plan(n);
    let tiles = match plan {
        ScanPlan::Single(_) => 0,
        ScanPlan::Multi { tiles, .. } => tiles,
    };
    let mut tile_sums = vec![0u64; tiles + 2];
    let p = CpugpuOffsetsParams {
        lengths: lengths.as_ptr().cast(),
        offsets: offsets.as_mut_ptr().cast(),
        tile_sums: tile_sums.as_mut_ptr(),
        error: &mut error,
        n: i64_of(n),
        limit: O::MAX,
        tiles: i64_of(tiles),
    };
    // SAFETY (all launches): the kernels read lengths[0..n], write offsets[0..=n] (n + 1
    // elements, checked above) only when error-free, use tile_sums[0..tiles + 2] and update the
    // error word; all live and exclusively ours. Shared memory is sized by scan_plan.
    match plan {
        ScanPlan::Single(cfg) => unsafe { launch(kernels.single, cfg, &p) },
        ScanPlan::Multi {
            reduce,
            scan_tiles,
            downsweep,
            ..
        } => unsafe {
            launch(kernels.reduce, reduce, &p);
            launch(kernels.scan_tiles, scan_tiles, &p);
            launch(kernels.downsweep, downsweep, &p);
        },
    }
    match bad_position(error) {
        None => Ok(()),
        Some(position) => {
            let value = lengths.get(position).map_or(0, |l| l.to_i64());
            Err(if value < 0 {
                Error::NegativeLength {
                    op,
                    position,
                    value,
                }
            } else {
                Error::OffsetOverflow {
                    op,
                    position,
                    limit: O::MAX,
                }
            })
        }
    }
}

/// Emulated [`crate::host::prefix_sum_offsets`].
pub fn prefix_sum_offsets<L: Index, O: Offset>(lengths: &[L]) -> Result<Vec<O>> {
    let n = lengths.len().checked_add(1).ok_or(Error::SizeOverflow {
        op: Op::PrefixSumOffsets,
        what: "lengths.len() + 1",
    })?;
    let mut out = crate::memory::zeroed_vec::<O>(Op::PrefixSumOffsets, n)?;
    prefix_sum_offsets_into(lengths, &mut out)?;
    Ok(out)
}

/// Emulated [`crate::host::flatten_into`]: one `flatten_w<V>_<O>` launch copies every array and
/// writes the offsets.
pub fn flatten_into<T: Element, O: Offset, S: AsRef<[T]> + Sync>(
    arrays: &[S],
    dst: &mut [T],
    offsets: &mut [O],
) -> Result<()> {
    let w = width_of::<T>();
    let elem_offsets = crate::ops::flatten::check_args::<O>(
        arrays.iter().map(|a| a.as_ref().len()),
        offsets.len(),
        dst.len(),
    )?;
    let total = dst.len();
    let mut addrs: Vec<usize> = arrays
        .iter()
        .map(AsRef::as_ref)
        .filter(|a| !a.is_empty())
        .map(|a| a.as_ptr() as usize)
        .collect();
    addrs.push(dst.as_ptr() as usize);
    let v = launch::copy_policy(w, w, &addrs, None).access_width;
    let units_per_elem = i64_of(w / v);
    // Cannot overflow: total * w bytes of dst exist in memory.
    let seg_offsets: Vec<i64> = elem_offsets.iter().map(|&o| o * units_per_elem).collect();
    let src_ptrs: Vec<*const c_void> = arrays.iter().map(|a| a.as_ref().as_ptr().cast()).collect();
    let p = CpugpuBatchedCopyParams {
        src_ptrs: src_ptrs.as_ptr(),
        dst_ptrs: std::ptr::null(),
        flat: dst.as_mut_ptr().cast(),
        seg_offsets: seg_offsets.as_ptr(),
        offsets_out: offsets.as_mut_ptr().cast(),
        n_segments: i64_of(arrays.len()),
        units_per_elem: i64_of(w / v),
        tile_units: launch::COPY_TILE_UNITS,
    };
    let cfg = launch::batched_copy_launch(total * w / v, arrays.len());
    // SAFETY: segment s is read at src_ptrs[s][0..len_s * w / v] units (its own length) and
    // written at flat[seg_offsets[s]..seg_offsets[s + 1]], inside dst (total elements); v
    // divides the element width and every pointer. offsets_out has n + 1 elements (checked).
    unsafe { launch(launch::flatten_kernel(v, is_i64::<O>()), cfg, &p) };
    Ok(())
}

/// Emulated [`crate::host::flatten`].
pub fn flatten<T: Element, O: Offset, S: AsRef<[T]> + Sync>(
    arrays: &[S],
) -> Result<(Vec<T>, Vec<O>)> {
    let total = arrays
        .iter()
        .try_fold(0usize, |acc, a| acc.checked_add(a.as_ref().len()))
        .ok_or(Error::SizeOverflow {
            op: Op::Flatten,
            what: "the total length",
        })?;
    let mut data = crate::memory::zeroed_vec::<T>(Op::Flatten, total)?;
    let mut offsets = crate::memory::zeroed_vec::<O>(Op::Flatten, arrays.len().saturating_add(1))?;
    flatten_into(arrays, &mut data, &mut offsets)?;
    Ok((data, offsets))
}

/// Validates split offsets as the host path does: not empty, each in `0..=len` (reported
/// before non-monotonic at one position), non-decreasing; the first bad one is the error.
fn check_split_offsets<O: Offset>(offsets: &[O], len: usize) -> Result<()> {
    let op = Op::Split;
    if offsets.is_empty() {
        return Err(Error::LengthMismatch {
            op,
            what: "offsets.len()",
            expected: 1,
            actual: 0,
        });
    }
    let limit = i64_of(len);
    let mut previous: Option<i64> = None;
    for (position, &o) in offsets.iter().enumerate() {
        let value = o.to_i64();
        if !(0..=limit).contains(&value) {
            return Err(Error::OffsetOutOfRange {
                op,
                position,
                value,
                len,
            });
        }
        if let Some(previous) = previous.filter(|&p| value < p) {
            return Err(Error::OffsetsNotMonotonic {
                op,
                position,
                previous,
                value,
            });
        }
        previous = Some(value);
    }
    Ok(())
}

/// Split into zero-copy views: no kernel (a view is a pointer and a length); the offsets are
/// validated as by [`crate::host::split_into`].
pub fn split_into<'a, T: Element, O: Offset>(
    data: &'a [T],
    offsets: &[O],
    out: &mut Vec<&'a [T]>,
) -> Result<()> {
    width_of::<T>();
    out.clear();
    check_split_offsets(offsets, data.len())?;
    // Validated: every offset is in 0..=data.len() and they do not decrease.
    let at = |o: O| usize::try_from(o.to_i64()).unwrap_or(0);
    out.extend(offsets.windows(2).map(|w| &data[at(w[0])..at(w[1])]));
    Ok(())
}

/// Split's copying form: segment `i` of `data` (at `offsets`, validated as by
/// [`split_into`]) is copied into `outs[i]`, which must have its length. One
/// `split_copy_w<V>` launch (flatten's batched copy, the other way round).
pub fn split_copy_into<T: Element, O: Offset>(
    data: &[T],
    offsets: &[O],
    outs: &mut [&mut [T]],
) -> Result<()> {
    let w = width_of::<T>();
    let op = Op::Split;
    let mut views = Vec::new();
    split_into(data, offsets, &mut views)?;
    if outs.len() != views.len() {
        return Err(Error::LengthMismatch {
            op,
            what: "outs.len()",
            expected: views.len(),
            actual: outs.len(),
        });
    }
    for (o, v) in outs.iter().zip(&views) {
        if o.len() != v.len() {
            return Err(Error::LengthMismatch {
                op,
                what: "outs[i].len()",
                expected: v.len(),
                actual: o.len(),
            });
        }
    }
    let Some(first) = views.first() else {
        return Ok(());
    };
    // The flat side starts at the first segment (offsets[0] may be above 0).
    let base = first.as_ptr();
    let mut addrs: Vec<usize> = outs
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| o.as_ptr() as usize)
        .collect();
    addrs.push(base as usize);
    let v = launch::copy_policy(w, w, &addrs, None).access_width;
    let seg_offsets = launch::flat_offsets(views.iter().map(|s| s.len()), i64::MAX, w / v)
        .map_err(|position| Error::OffsetOverflow {
            op,
            position,
            limit: i64::MAX,
        })?;
    let dst_ptrs: Vec<*mut c_void> = outs.iter_mut().map(|o| o.as_mut_ptr().cast()).collect();
    let total: usize = views.iter().map(|s| s.len()).sum();
    let p = CpugpuBatchedCopyParams {
        src_ptrs: std::ptr::null(),
        dst_ptrs: dst_ptrs.as_ptr(),
        // The kernel only reads through `flat` in split mode.
        flat: base.cast_mut().cast(),
        seg_offsets: seg_offsets.as_ptr(),
        offsets_out: std::ptr::null_mut(),
        n_segments: i64_of(views.len()),
        units_per_elem: i64_of(w / v),
        tile_units: launch::COPY_TILE_UNITS,
    };
    let cfg = launch::batched_copy_launch(total * w / v, views.len());
    // SAFETY: the segments are consecutive in data from `base` (validated offsets), so flat
    // units 0..total * w / v are inside data and only read; outs[s] has exactly segment s's
    // length and is written at 0..len_s units; v divides the width and every pointer.
    unsafe { launch(launch::split_copy_kernel(v), cfg, &p) };
    Ok(())
}

/// Test hook: caps the grid of every launch made from this thread at `cap` blocks (0 restores
/// the default), so that small inputs also run the kernels' grid-stride loops more than once.
/// Results must not depend on it.
pub fn set_grid_cap(cap: u32) {
    launch::set_grid_cap(cap);
}

/// Checks the emulator's kernel table and the ABI header against the Rust side: the generated
/// kernel list must match the C++ table name for name, and every struct size and field offset
/// of `kernels/cpugpu_abi.h` must match `src/kernels/abi.rs`. Returns the mismatches.
pub fn self_check() -> Vec<String> {
    let mut problems = Vec::new();
    // SAFETY: plain queries of static tables.
    let count = unsafe { cpugpu_emu_kernel_count() };
    if usize::try_from(count).ok() != Some(super::list::KERNEL_NAMES.len()) {
        problems.push(format!(
            "kernel table has {count} entries, the Rust list {}",
            super::list::KERNEL_NAMES.len()
        ));
    }
    for (i, (name, _)) in super::list::KERNEL_NAMES.iter().enumerate() {
        let id = u32::try_from(i).unwrap_or(u32::MAX);
        // SAFETY: returns null or a pointer to a static NUL-terminated string.
        let c = unsafe { cpugpu_emu_kernel_name(id) };
        // SAFETY: checked non-null; the table's strings are static.
        let cname =
            (!c.is_null()).then(|| unsafe { CStr::from_ptr(c) }.to_string_lossy().into_owned());
        if cname.as_deref() != Some(*name) {
            problems.push(format!("kernel {i}: C++ {cname:?}, Rust {name}"));
        }
    }
    for &(s, f, rust) in super::layout::ABI_LAYOUT {
        let (Ok(cs), Ok(cf)) = (std::ffi::CString::new(s), std::ffi::CString::new(f)) else {
            continue;
        };
        // SAFETY: two valid NUL-terminated strings; the function only reads them.
        let c = unsafe { cpugpu_emu_abi_layout(cs.as_ptr(), cf.as_ptr()) };
        if usize::try_from(c).ok() != Some(rust) {
            problems.push(format!("{s}.{f}: C {c}, Rust {rust}"));
        }
    }
    problems
}

/// The sanitizer the emulated kernels were built with (`CPUGPU_EMU_SANITIZE` at build time):
/// `Some("address")`, `Some("thread")` or `None`.
pub fn sanitizer() -> Option<&'static str> {
    if cfg!(cpugpu_emu_sanitize = "address") {
        Some("address")
    } else if cfg!(cpugpu_emu_sanitize = "thread") {
        Some("thread")
    } else {
        None
    }
}

/// Test-only canaries: deliberately broken kernels that the sanitizer runs must catch.
#[doc(hidden)]
pub mod canary {
    use super::*;

    /// Launches a one-thread canary kernel that reads `src` and writes one word, returned.
    ///
    /// # Safety
    /// None of the canaries is sound: each is wrong on purpose, and only the canary tests call
    /// them, in a child process whose failure they assert.
    unsafe fn one_thread(kernel: Kernel<CpugpuCanaryParams>, src: &[u64]) -> u64 {
        let mut out = [0u64; 1];
        let p = CpugpuCanaryParams {
            src: src.as_ptr(),
            dst: out.as_mut_ptr(),
            n: i64_of(src.len()),
        };
        // SAFETY: the caller's contract.
        unsafe { launch(kernel, launch::flat_launch(1, 1), &p) };
        out[0]
    }

    /// Launches `canary_read_past_end` on `src` (it reads `src[src.len()]`).
    pub fn read_past_end(src: &[u64]) -> u64 {
        // SAFETY: none: this kernel is wrong on purpose (a one-element over-read of a heap
        // buffer), to prove AddressSanitizer reports it. Only the canary test calls it, in a
        // child process.
        unsafe { one_thread(super::super::list::canary_read_past_end, src) }
    }

    /// Launches `emu_selftest_warp_ops` on one block of `threads` threads (a multiple of 32):
    /// 8 results per thread, then the atomicAdd total and the atomicMax.
    pub fn warp_selftest(threads: u32) -> Vec<u64> {
        let n = usize::try_from(threads).unwrap_or(0) * 8 + 2;
        let mut out = vec![0u64; n];
        let p = CpugpuCanaryParams {
            src: std::ptr::null(),
            dst: out.as_mut_ptr(),
            n: i64_of(n),
        };
        let cfg = LaunchConfig {
            grid: 1,
            block: threads,
            shared_bytes: 0,
        };
        // SAFETY: the kernel writes out[0..threads * 8 + 2], which exists, and reads nothing.
        unsafe { launch(super::super::list::emu_selftest_warp_ops, cfg, &p) };
        out
    }

    /// Launches `canary_divergent_barrier` (thread 0 skips a `__syncthreads`): the emulator
    /// aborts the process.
    pub fn divergent_barrier(src: &[u64]) -> u64 {
        // SAFETY: the kernel reads src[0] and writes out[0], both live; its barrier divergence
        // makes the emulator abort the process, on purpose. Only the canary test calls it, in a
        // child process.
        unsafe { one_thread(super::super::list::canary_divergent_barrier, src) }
    }

    /// Launches `canary_shared_race` (threads 0 and 1 race on shared memory).
    pub fn shared_race(src: &[u64]) -> u64 {
        // SAFETY: none in the language sense: the kernel races on purpose (a data race between
        // two emulated threads on a shared-memory word), to prove ThreadSanitizer reports it.
        // Only the canary test calls it, in a child process.
        unsafe { one_thread(super::super::list::canary_shared_race, src) }
    }
}
