//! Launch math: grid, block, dynamic shared memory, kernel choice and parameter structs.
//!
//! Pure functions, shared by the CUDA backend and the emulator, so the emulated tests run the
//! very configuration a GPU launch uses.
//!
//! Policy (no GPU measurements yet, to be tuned on the H100 with the workloads):
//! - 256 threads per block everywhere: a multiple of the warp size that keeps several blocks
//!   resident per SM on every architecture we target (sm_80, sm_90), and CUB's default for
//!   memory-bound kernels of this kind.
//! - Grids are capped at [`MAX_GRID`] blocks and every kernel loops grid-stride over 64-bit
//!   counts, so no size wraps a 32-bit grid dimension.
//! - Data movement accesses memory in units of the widest of 16, 8, 4, 2, 1 bytes that divides
//!   the row size and every base address ([`copy_policy`]): 16-byte (`uint4`) accesses whenever
//!   rows and pointers allow, whatever the element type.
//! - Row kernels (gather, scatter) give each row a group of `lanes_per_row` threads, the next
//!   power of two of the row's unit count, at most a warp ([`rows_launch`]).

use std::cell::Cell;

use super::abi;

/// Threads per block of every kernel.
pub(crate) const BLOCK_THREADS: u32 = 256;
// Whole warps: the index checks vote across every lane of a warp (kernels/common.cuh).
const _: () = assert!(BLOCK_THREADS.is_multiple_of(32));

/// The largest grid a launch uses; kernels are grid-stride, so larger work just loops.
pub(crate) const MAX_GRID: u32 = 65_535;

thread_local! {
    /// Test hook: a lower grid cap for launches planned on this thread (0 = none), so that small
    /// emulated inputs also take the grid-stride loops' second iteration. Any cap gives the same
    /// results. Per thread, so concurrently running tests do not see each other's cap.
    static GRID_CAP: Cell<u32> = const { Cell::new(0) };
}

/// Sets this thread's grid cap for the emulator tests (0 restores [`MAX_GRID`]).
#[cfg_attr(not(feature = "emulator"), allow(dead_code))]
pub(crate) fn set_grid_cap(cap: u32) {
    GRID_CAP.with(|c| c.set(cap));
}

/// A kernel launch's shape: a 1-D grid of 1-D blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaunchConfig {
    /// Blocks in the grid (at least 1).
    pub grid: u32,
    /// Threads per block.
    pub block: u32,
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

/// Blocks for `work` items at `per_block` items per block: at least 1, at most the cap.
pub(crate) fn grid_for(work: u64, per_block: u64) -> u32 {
    let cap = match GRID_CAP.with(Cell::get) {
        0 => MAX_GRID,
        c => c.min(MAX_GRID),
    };
    let blocks = work.div_ceil(per_block.max(1)).clamp(1, u64::from(cap));
    u32::try_from(blocks).unwrap_or(cap)
}

/// `usize` to the kernels' `int64_t`. Slice lengths and byte counts are at most `isize::MAX`,
/// so this never saturates for the values it is given.
pub(crate) fn i64_of(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The access width in bytes: the widest of 16, 8, 4, 2, 1 dividing `bytes` (a row's size, 0 for
/// "any") and every address in `addrs`.
pub(crate) fn access_width(bytes: usize, addrs: &[usize]) -> usize {
    [16usize, 8, 4, 2]
        .into_iter()
        .find(|&v| bytes.is_multiple_of(v) && addrs.iter().all(|a| a % v == 0))
        .unwrap_or(1)
}

/// A flat grid-stride launch over `n` items with `items_per_thread` items each.
pub(crate) fn flat_launch(n: usize, items_per_thread: u32) -> LaunchConfig {
    let per_block = u64::from(BLOCK_THREADS) * u64::from(items_per_thread.max(1));
    LaunchConfig {
        grid: grid_for(n as u64, per_block),
        block: BLOCK_THREADS,
        shared_bytes: 0,
    }
}

/// The launch policy of a data-movement kernel: threads per block, items (access units) per
/// thread, and the access width in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CopyPolicy {
    pub block_threads: u32,
    pub items_per_thread: u32,
    pub access_width: usize,
}

/// The policy for moving elements of `elem_width` bytes in chunks of `chunk_bytes` (a row; a
/// multiple of the element width, 0 for "any") between the addresses `addrs`, on a device of
/// compute capability `cc` (None: unknown, as in the emulator).
///
/// The access width is the widest of 16, 8, 4, 2, 1 bytes dividing the chunk and every address
/// (it may exceed the element width: rows of 16 `u8` move as one `uint4`); items per thread
/// keep about 64 bytes in flight per thread. Not yet measured on a GPU: the same for sm_80 and
/// sm_90 until the H100 benchmarks of issue 3 say otherwise.
pub(crate) fn copy_policy(
    elem_width: usize,
    chunk_bytes: usize,
    addrs: &[usize],
    cc: Option<(u32, u32)>,
) -> CopyPolicy {
    let _ = cc;
    debug_assert!(chunk_bytes.is_multiple_of(elem_width.max(1)));
    let access_width = access_width(chunk_bytes, addrs);
    CopyPolicy {
        block_threads: BLOCK_THREADS,
        items_per_thread: match access_width {
            16 => 4,
            8 => 8,
            _ => 16,
        },
        access_width,
    }
}

/// A row kernel's launch: groups of `lanes_per_row` threads per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowLaunch {
    pub config: LaunchConfig,
    pub lanes_per_row: i64,
}

/// Gather/scatter launch over `rows` rows of `row_units` access units: one thread per row for
/// rows of one unit (a plain grid-stride loop), a sub-warp for rows up to 32 units, a warp
/// looping over the row beyond.
pub(crate) fn rows_launch(rows: usize, row_units: usize) -> RowLaunch {
    let lanes = row_units.clamp(1, 32).next_power_of_two();
    let rows_per_block = u64::from(BLOCK_THREADS) / lanes as u64;
    RowLaunch {
        config: LaunchConfig {
            grid: grid_for(rows as u64, rows_per_block),
            block: BLOCK_THREADS,
            shared_bytes: 0,
        },
        lanes_per_row: lanes as i64,
    }
}

/// Lengths per prefix-sum tile.
pub(crate) const SCAN_TILE: usize = (abi::SCAN_BLOCK * abi::SCAN_ITEMS_PER_THREAD) as usize;

/// How a prefix sum of `n` lengths runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanPlan {
    /// One launch of one block: n fits one tile.
    Single(LaunchConfig),
    /// Reduce, scan the tile sums, downsweep; `tiles` tiles, scratch of `tiles + 2` words.
    Multi {
        tiles: usize,
        reduce: LaunchConfig,
        scan_tiles: LaunchConfig,
        downsweep: LaunchConfig,
    },
}

/// The prefix-sum plan for `n` lengths.
pub(crate) fn scan_plan(n: usize) -> ScanPlan {
    // One u64 per length plus one padding word per 16 (offsets.cu's scan_slot, which keeps the
    // per-thread accesses free of bank conflicts): 34,816 bytes, under the 48 KiB default.
    let tile_bytes = ((SCAN_TILE + SCAN_TILE / 16) * 8) as u32;
    if n <= SCAN_TILE {
        return ScanPlan::Single(LaunchConfig {
            grid: 1,
            block: abi::SCAN_BLOCK,
            shared_bytes: tile_bytes,
        });
    }
    let tiles = n.div_ceil(SCAN_TILE);
    let grid = grid_for(tiles as u64, 1);
    ScanPlan::Multi {
        tiles,
        reduce: LaunchConfig {
            grid,
            block: abi::SCAN_BLOCK,
            shared_bytes: 0,
        },
        scan_tiles: LaunchConfig {
            grid: 1,
            block: abi::SCAN_BLOCK,
            shared_bytes: 0,
        },
        downsweep: LaunchConfig {
            grid,
            block: abi::SCAN_BLOCK,
            shared_bytes: tile_bytes,
        },
    }
}

/// Units per block-tile of the batched copy (flatten, split): 4 units per thread.
pub(crate) const COPY_TILE_UNITS: i64 = BLOCK_THREADS as i64 * 4;

/// The batched copy's launch over `total_units` flat units and `segments` segments (the
/// offsets output of flatten is written grid-stride by the same launch).
pub(crate) fn batched_copy_launch(total_units: usize, segments: usize) -> LaunchConfig {
    let tiles = (total_units as u64).div_ceil(COPY_TILE_UNITS as u64);
    let offsets_blocks = (segments as u64 + 1).div_ceil(u64::from(BLOCK_THREADS));
    LaunchConfig {
        grid: grid_for(tiles.max(offsets_blocks), 1),
        block: BLOCK_THREADS,
        shared_bytes: 0,
    }
}

/// The flat-side offsets of `lens` in units of `units_per_elem`, or the first position whose
/// offset (in elements) exceeds `limit`.
pub(crate) fn flat_offsets(
    lens: impl Iterator<Item = usize>,
    limit: i64,
    units_per_elem: usize,
) -> std::result::Result<Vec<i64>, usize> {
    let mut out = vec![0i64];
    let mut total: i64 = 0;
    for (i, len) in lens.enumerate() {
        total = i64::try_from(len)
            .ok()
            .and_then(|l| total.checked_add(l))
            .filter(|&t| t <= limit)
            .ok_or(i)?;
        // In units: total * units_per_elem bytes-ish counts fit, as the data exists in memory.
        out.push(total.saturating_mul(i64_of(units_per_elem)));
    }
    Ok(out)
}

/// The 16-byte fill pattern of the gather and pad kernels: `fill`'s bytes repeated.
pub(crate) fn fill_pattern<T: bytemuck::Pod>(fill: T) -> [u64; 2] {
    let bytes = bytemuck::bytes_of(&fill);
    let mut pattern = [0u8; 16];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = bytes[i % bytes.len()];
    }
    [
        u64::from_ne_bytes(pattern[..8].try_into().unwrap_or([0; 8])),
        u64::from_ne_bytes(pattern[8..].try_into().unwrap_or([0; 8])),
    ]
}

// ---- kernel choice: one match per family; a name missing from the list does not compile ----

use super::list as k;
use super::Kernel;
use abi::*;

/// `validate_indices_<idx>`.
pub(crate) fn validate_kernel(idx64: bool) -> Kernel<CpugpuValidateParams> {
    if idx64 {
        k::validate_indices_i64
    } else {
        k::validate_indices_i32
    }
}

/// `gather_rows_w<V>_<idx>`.
pub(crate) fn gather_kernel(v: usize, idx64: bool) -> Kernel<CpugpuGatherRowsParams> {
    match (v, idx64) {
        (16, false) => k::gather_rows_w16_i32,
        (8, false) => k::gather_rows_w8_i32,
        (4, false) => k::gather_rows_w4_i32,
        (2, false) => k::gather_rows_w2_i32,
        (_, false) => k::gather_rows_w1_i32,
        (16, true) => k::gather_rows_w16_i64,
        (8, true) => k::gather_rows_w8_i64,
        (4, true) => k::gather_rows_w4_i64,
        (2, true) => k::gather_rows_w2_i64,
        (_, true) => k::gather_rows_w1_i64,
    }
}

/// `scatter_winners_<idx>`.
pub(crate) fn scatter_winners_kernel(idx64: bool) -> Kernel<CpugpuScatterWinnersParams> {
    if idx64 {
        k::scatter_winners_i64
    } else {
        k::scatter_winners_i32
    }
}

/// `scatter_rows_w<V>_<idx>`.
pub(crate) fn scatter_kernel(v: usize, idx64: bool) -> Kernel<CpugpuScatterRowsParams> {
    match (v, idx64) {
        (16, false) => k::scatter_rows_w16_i32,
        (8, false) => k::scatter_rows_w8_i32,
        (4, false) => k::scatter_rows_w4_i32,
        (2, false) => k::scatter_rows_w2_i32,
        (_, false) => k::scatter_rows_w1_i32,
        (16, true) => k::scatter_rows_w16_i64,
        (8, true) => k::scatter_rows_w8_i64,
        (4, true) => k::scatter_rows_w4_i64,
        (2, true) => k::scatter_rows_w2_i64,
        (_, true) => k::scatter_rows_w1_i64,
    }
}

/// `pad_w<V>`.
pub(crate) fn pad_kernel(v: usize) -> Kernel<CpugpuPadParams> {
    match v {
        16 => k::pad_w16,
        8 => k::pad_w8,
        4 => k::pad_w4,
        2 => k::pad_w2,
        _ => k::pad_w1,
    }
}

/// The three or four prefix-sum kernels for lengths `l64` and offsets `o64`.
pub(crate) struct OffsetsKernels {
    pub single: Kernel<CpugpuOffsetsParams>,
    pub reduce: Kernel<CpugpuOffsetsParams>,
    pub scan_tiles: Kernel<CpugpuOffsetsParams>,
    pub downsweep: Kernel<CpugpuOffsetsParams>,
}

/// `offsets_*_<L>_<O>`.
pub(crate) fn offsets_kernels(l64: bool, o64: bool) -> OffsetsKernels {
    let (single, downsweep) = match (l64, o64) {
        (false, false) => (k::offsets_single_i32_i32, k::offsets_downsweep_i32_i32),
        (false, true) => (k::offsets_single_i32_i64, k::offsets_downsweep_i32_i64),
        (true, false) => (k::offsets_single_i64_i32, k::offsets_downsweep_i64_i32),
        (true, true) => (k::offsets_single_i64_i64, k::offsets_downsweep_i64_i64),
    };
    OffsetsKernels {
        single,
        reduce: if l64 {
            k::offsets_reduce_i64
        } else {
            k::offsets_reduce_i32
        },
        scan_tiles: k::offsets_scan_tiles,
        downsweep,
    }
}

/// `flatten_w<V>_<O>`.
pub(crate) fn flatten_kernel(v: usize, o64: bool) -> Kernel<CpugpuBatchedCopyParams> {
    match (v, o64) {
        (16, false) => k::flatten_w16_i32,
        (8, false) => k::flatten_w8_i32,
        (4, false) => k::flatten_w4_i32,
        (2, false) => k::flatten_w2_i32,
        (_, false) => k::flatten_w1_i32,
        (16, true) => k::flatten_w16_i64,
        (8, true) => k::flatten_w8_i64,
        (4, true) => k::flatten_w4_i64,
        (2, true) => k::flatten_w2_i64,
        (_, true) => k::flatten_w1_i64,
    }
}

/// `split_copy_w<V>`.
pub(crate) fn split_copy_kernel(v: usize) -> Kernel<CpugpuBatchedCopyParams> {
    match v {
        16 => k::split_copy_w16,
        8 => k::split_copy_w8,
        4 => k::split_copy_w4,
        2 => k::split_copy_w2,
        _ => k::split_copy_w1,
    }
}

/// `gather_windows_w<V>`.
pub(crate) fn windows_kernel(v: usize) -> Kernel<CpugpuWindowsParams> {
    match v {
        16 => k::gather_windows_w16,
        8 => k::gather_windows_w8,
        4 => k::gather_windows_w4,
        2 => k::gather_windows_w2,
        _ => k::gather_windows_w1,
    }
}

/// `staged_write_w<V>`.
pub(crate) fn staged_write_kernel(v: usize) -> Kernel<CpugpuStagedWriteParams> {
    match v {
        16 => k::staged_write_w16,
        8 => k::staged_write_w8,
        4 => k::staged_write_w4,
        2 => k::staged_write_w2,
        _ => k::staged_write_w1,
    }
}

/// The one-block launch of a kernel that walks a short list (the segments of an expansion).
pub(crate) fn one_block() -> LaunchConfig {
    LaunchConfig {
        grid: 1,
        block: BLOCK_THREADS,
        shared_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_width_follows_size_and_alignment() {
        assert_eq!(access_width(64, &[0x1000, 0x2000]), 16);
        assert_eq!(access_width(24, &[0x1000, 0x2000]), 8);
        assert_eq!(access_width(64, &[0x1004, 0x2000]), 4);
        assert_eq!(access_width(3, &[0x1000]), 1);
    }

    #[test]
    fn copy_policy_keeps_64_bytes_in_flight() {
        let p = copy_policy(1, 32, &[0x1000, 0x3000], None);
        assert_eq!(
            (p.access_width, p.items_per_thread, p.block_threads),
            (16, 4, 256)
        );
        let p = copy_policy(8, 24, &[0x1000, 0x3000], Some((9, 0)));
        assert_eq!((p.access_width, p.items_per_thread), (8, 8));
        let p = copy_policy(2, 6, &[0x1000], None);
        assert_eq!((p.access_width, p.items_per_thread), (2, 16));
    }

    #[test]
    fn rows_launch_groups_lanes_by_row_size() {
        assert_eq!(rows_launch(1000, 1).lanes_per_row, 1);
        assert_eq!(rows_launch(1000, 1).config.grid, 4);
        assert_eq!(rows_launch(1000, 5).lanes_per_row, 8);
        assert_eq!(rows_launch(1000, 500).lanes_per_row, 32);
        assert_eq!(rows_launch(0, 1).config.grid, 1);
    }

    #[test]
    fn scan_plan_switches_at_one_tile() {
        assert!(matches!(scan_plan(SCAN_TILE), ScanPlan::Single(_)));
        assert!(matches!(
            scan_plan(SCAN_TILE + 1),
            ScanPlan::Multi { tiles: 2, .. }
        ));
    }

    #[test]
    fn fill_pattern_repeats_the_element() {
        let p = fill_pattern(0x0102u16);
        assert_eq!(p[0], p[1]);
        assert_eq!(p[0] & 0xffff, 0x0102);
    }
}
