//! Launch math: grid, block, dynamic shared memory, kernel choice and parameter structs.
//!
//! Pure functions, shared by the CUDA backend and the emulator, so the emulated tests run the
//! very configuration a GPU launch uses.
//!
//! The launch policy of every data-movement kernel is chosen here, in [`copy_policy`], from the
//! device's compute capability and the element size (through the access width). **No GPU figure
//! exists yet** (no session has had a GPU): every number below is a design choice, derived in its
//! comment, to be replaced by the measured figure that justifies it (as CUB's tuning files do,
//! "P100: 591 GB/s @ 64M 4B items") once the GPU suite has run (`BENCHMARKS.md`).
//! - 256 threads per block everywhere: a multiple of the warp size that keeps several blocks
//!   resident per SM on every architecture we target (sm_80, sm_90), and CUB's default for
//!   memory-bound kernels of this kind. The move kernels are built for 4 resident blocks
//!   (`CPUGPU_MOVE_BOUNDS`, at most 64 registers).
//! - Each thread loads `items` units before it stores any: 4 units of 16 bytes, 8 of 8 or fewer
//!   bytes (64 bytes in flight for 16- and 8-byte units): with 1,024 resident threads an SM keeps
//!   64 KiB in flight, above the 18 to 26 KiB an H100/H200 needs per SM by Little's law
//!   (3.35 to 4.8 TB/s x ~0.7 us / 132 SMs). The same on sm_80 (2 TB/s / 108 SMs: 13 KiB).
//! - Grids: the grid-stride kernels that count their blocks at the end (the checked operations'
//!   read-out) are capped at 4 waves of resident blocks ([`stride_grid_cap`]), so that the count
//!   costs a few thousand atomics at most; others at [`MAX_GRID`]. Every kernel loops
//!   grid-stride over 64-bit counts, so no size wraps a 32-bit grid dimension.
//! - Access width: the widest of 16, 8, 4, 2, 1 bytes dividing the row size and every base
//!   address ([`access_width`]): 16-byte (`uint4`) accesses whenever rows and pointers allow,
//!   whatever the element type. The batched copy (flatten, split) always moves 16-byte units,
//!   shifting where source and destination alignments differ.
//! - Row kernels (gather, scatter) give each row a group of `lanes_per_row` threads, the next
//!   power of two of the row's unit count, at most a warp ([`rows_launch`]).
//! - Batch sizes (at most [`SMALL_BATCH`] indices) take the one-launch path: every block checks
//!   every index, so the grid is capped at one block per SM ([`rows_launch`]).

use std::cell::Cell;

use super::abi;

/// Threads per block of every kernel.
pub(crate) const BLOCK_THREADS: u32 = 256;
// Whole warps: the index checks vote across every lane of a warp (kernels/common.cuh).
const _: () = assert!(BLOCK_THREADS.is_multiple_of(32));

/// Blocks of [`BLOCK_THREADS`] the move kernels are built to keep resident per SM
/// (`CPUGPU_MOVE_BOUNDS` in kernels/common.cuh; kernels/kernel_list.h says the same).
pub(crate) const MOVE_BLOCKS_PER_SM: u32 = 4;

/// Blocks per SM of the look-back scan (`CPUGPU_SCAN_BOUNDS`): its grid is one wave of them.
pub(crate) const SCAN_BLOCKS_PER_SM: u32 = 3;

/// The largest grid a launch uses; kernels are grid-stride, so larger work just loops.
pub(crate) const MAX_GRID: u32 = 65_535;

/// Checked gathers and scatters of at most this many indices run as one launch, every block
/// checking every index (cached loads of at most 32 KiB per block) before it moves anything.
pub(crate) const SMALL_BATCH: usize = 4096;

thread_local! {
    /// Test hook: a lower grid cap for launches planned on this thread (0 = none), so that small
    /// emulated inputs also take the grid-stride loops' second iteration. Any cap gives the same
    /// results. Per thread, so concurrently running tests do not see each other's cap.
    static GRID_CAP: Cell<u32> = const { Cell::new(0) };
}

thread_local! {
    /// Test hook: this thread's batch-path limit instead of [`SMALL_BATCH`] (None: the default).
    static SMALL_BATCH_LIMIT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Sets this thread's batch-path limit for the emulator tests (None restores [`SMALL_BATCH`]).
#[cfg_attr(not(feature = "emulator"), allow(dead_code))]
pub(crate) fn set_small_batch(limit: Option<usize>) {
    SMALL_BATCH_LIMIT.with(|c| c.set(limit));
}

/// Whether a checked gather or scatter of `n` indices takes the one-launch batch path.
pub(crate) fn is_small_batch(n: usize) -> bool {
    n <= SMALL_BATCH_LIMIT.with(Cell::get).unwrap_or(SMALL_BATCH)
}

/// Sets this thread's grid cap for the emulator tests (0 restores [`MAX_GRID`]).
#[cfg_attr(not(feature = "emulator"), allow(dead_code))]
pub(crate) fn set_grid_cap(cap: u32) {
    GRID_CAP.with(|c| c.set(cap));
}

/// What the launch policy knows of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeviceInfo {
    /// Compute capability (major, minor).
    pub cc: (u32, u32),
    /// Streaming multiprocessors.
    pub sms: u32,
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

impl LaunchConfig {
    fn blocks(grid: u32) -> LaunchConfig {
        LaunchConfig {
            grid,
            block: BLOCK_THREADS,
            shared_bytes: 0,
        }
    }
}

/// Blocks for `work` items at `per_block` items per block: at least 1, at most `cap` (and the
/// test hook's cap).
pub(crate) fn grid_within(work: u64, per_block: u64, cap: u32) -> u32 {
    let cap = match GRID_CAP.with(Cell::get) {
        0 => cap,
        c => c.min(cap),
    }
    .clamp(1, MAX_GRID);
    let blocks = work.div_ceil(per_block.max(1)).clamp(1, u64::from(cap));
    u32::try_from(blocks).unwrap_or(cap)
}

/// Blocks for `work` items at `per_block` items per block: at least 1, at most [`MAX_GRID`].
pub(crate) fn grid_for(work: u64, per_block: u64) -> u32 {
    grid_within(work, per_block, MAX_GRID)
}

/// The grid cap of a grid-stride move kernel that counts its blocks: 4 waves of resident blocks.
pub(crate) fn stride_grid_cap(dev: DeviceInfo) -> u32 {
    dev.sms
        .saturating_mul(MOVE_BLOCKS_PER_SM * 4)
        .clamp(1, MAX_GRID)
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
    LaunchConfig::blocks(grid_for(n as u64, per_block))
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
/// multiple of the element width, 0 for "any") between the addresses `addrs`, on `dev`.
///
/// The access width is the widest of 16, 8, 4, 2, 1 bytes dividing the chunk and every address
/// (it may exceed the element width: rows of 16 `u8` move as one `uint4`). Items per thread: 4
/// units of 16 bytes, 8 of anything narrower, the most the kernels' register arrays hold
/// (`CPUGPU_MAX_ITEMS*`): 64 bytes in flight per thread for 16- and 8-byte units. Measured
/// figure: none yet (no GPU has run the suite); the same for sm_80 and sm_90 until one says
/// otherwise (the module comment derives the numbers).
pub(crate) fn copy_policy(
    elem_width: usize,
    chunk_bytes: usize,
    addrs: &[usize],
    dev: DeviceInfo,
) -> CopyPolicy {
    debug_assert!(chunk_bytes.is_multiple_of(elem_width.max(1)));
    let access_width = access_width(chunk_bytes, addrs);
    let items_per_thread = match (dev.cc.0, access_width) {
        // sm_80 and sm_90 alike until a GPU figure says otherwise.
        (_, 16) => abi::MAX_ITEMS_W16,
        (_, _) => abi::MAX_ITEMS,
    };
    CopyPolicy {
        block_threads: BLOCK_THREADS,
        items_per_thread,
        access_width,
    }
}

/// A row kernel's launch: groups of `lanes_per_row` threads per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowLaunch {
    pub config: LaunchConfig,
    pub lanes_per_row: i64,
}

/// Gather/scatter launch over `rows` rows of `row_units` access units, `items` per thread: one
/// thread per row for rows of one unit, a sub-warp for rows up to 32 units, a warp looping over
/// the row beyond. Narrow rows move `items` rows per thread per iteration, wide ones `items`
/// units per lane. `small`: the one-launch batch path, at most one block per SM (each block
/// checks every index first); otherwise at most [`stride_grid_cap`] blocks.
pub(crate) fn rows_launch(
    rows: usize,
    row_units: usize,
    items: u32,
    small: bool,
    dev: DeviceInfo,
) -> RowLaunch {
    let lanes = row_units.clamp(1, 32).next_power_of_two();
    let groups_per_block = u64::from(BLOCK_THREADS) / lanes as u64;
    let rows_per_block = if row_units <= lanes {
        groups_per_block * u64::from(items.max(1))
    } else {
        groups_per_block
    };
    let cap = if small {
        dev.sms.max(1)
    } else {
        stride_grid_cap(dev)
    };
    RowLaunch {
        config: LaunchConfig::blocks(grid_within(rows as u64, rows_per_block, cap)),
        lanes_per_row: lanes as i64,
    }
}

/// A pad launch over `units` destination units, `items` per thread.
pub(crate) fn pad_launch(units: usize, items: u32, dev: DeviceInfo) -> LaunchConfig {
    let per_block = u64::from(BLOCK_THREADS) * u64::from(items.max(1));
    // Pad does not count its blocks; the cap only keeps the grid a few waves deep.
    LaunchConfig::blocks(grid_within(units as u64, per_block, stride_grid_cap(dev)))
}

/// Lengths per prefix-sum tile.
pub(crate) const SCAN_TILE: usize = (abi::SCAN_BLOCK * abi::SCAN_ITEMS_PER_THREAD) as usize;

/// Lengths per thread per iteration of `offsets_check` (its `K`).
const CHECK_ITEMS: u64 = 8;

/// How a prefix sum of `n` lengths runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanPlan {
    /// One launch of one block: n fits one tile.
    Single(LaunchConfig),
    /// `offsets_check` then `offsets_lookback` over `tiles` tiles (3 words of tile state each).
    LookBack {
        tiles: usize,
        check: LaunchConfig,
        lookback: LaunchConfig,
    },
}

/// The prefix-sum plan for `n` lengths.
pub(crate) fn scan_plan(n: usize, dev: DeviceInfo) -> ScanPlan {
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
    // The look-back grid is one wave: each block takes tiles from the queue's counter until
    // none is left, so no block waits for a tile whose block is not running.
    let wave = dev.sms.saturating_mul(SCAN_BLOCKS_PER_SM).max(1);
    ScanPlan::LookBack {
        tiles,
        check: LaunchConfig::blocks(grid_within(
            n as u64,
            u64::from(BLOCK_THREADS) * CHECK_ITEMS,
            stride_grid_cap(dev),
        )),
        lookback: LaunchConfig {
            grid: grid_within(tiles as u64, 1, wave),
            block: abi::SCAN_BLOCK,
            shared_bytes: tile_bytes,
        },
    }
}

/// The batched copy's size tiers (bytes): segments under [`SMALL_SEGMENT`] get a thread, under
/// [`LARGE_SEGMENT`] a warp, the rest chunks of [`COPY_CHUNK`] bytes, one block each.
pub(crate) const SMALL_SEGMENT: usize = 256;
/// See [`SMALL_SEGMENT`].
pub(crate) const LARGE_SEGMENT: usize = 16 * 1024;
/// One block iteration of the batched copy: 256 threads x 4 units of 16 bytes.
pub(crate) const COPY_CHUNK: usize = 16 * 1024;

/// A batched copy's work, sorted by size tier on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CopyTiers {
    /// Segments under [`SMALL_SEGMENT`] bytes (empty ones are left out).
    pub small: Vec<u64>,
    /// Segments under [`LARGE_SEGMENT`] bytes.
    pub medium: Vec<u64>,
    /// The rest.
    pub large: Vec<u64>,
    /// The first chunk of each large segment, then the chunk count (`large.len() + 1` entries).
    pub large_chunks: Vec<u64>,
}

/// Sorts segments of `bytes` into the batched copy's tiers.
pub(crate) fn copy_tiers(bytes: impl Iterator<Item = usize>) -> CopyTiers {
    let mut t = CopyTiers {
        large_chunks: vec![0],
        ..CopyTiers::default()
    };
    let mut chunks = 0u64;
    for (s, b) in bytes.enumerate() {
        let s = s as u64;
        match b {
            0 => {}
            b if b < SMALL_SEGMENT => t.small.push(s),
            b if b < LARGE_SEGMENT => t.medium.push(s),
            b => {
                t.large.push(s);
                chunks += b.div_ceil(COPY_CHUNK) as u64;
                t.large_chunks.push(chunks);
            }
        }
    }
    t
}

/// The batched copy's launch for `t` over `segments` segments (flatten's offsets output, n + 1
/// words, is written grid-stride by the same launch): enough blocks for every chunk, a warp per
/// medium segment and a thread per small one, at most [`stride_grid_cap`].
pub(crate) fn batched_copy_launch(t: &CopyTiers, segments: usize, dev: DeviceInfo) -> LaunchConfig {
    let threads = u64::from(BLOCK_THREADS);
    let chunks = t.large_chunks.last().copied().unwrap_or(0);
    let work = chunks
        .max((t.medium.len() as u64).div_ceil(threads / 32))
        .max((t.small.len() as u64).div_ceil(threads))
        .max((segments as u64 + 1).div_ceil(threads));
    LaunchConfig::blocks(grid_within(work, 1, stride_grid_cap(dev)))
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

/// The prefix-sum kernels for lengths `l64` and offsets `o64`.
pub(crate) struct OffsetsKernels {
    pub single: Kernel<CpugpuOffsetsParams>,
    pub check: Kernel<CpugpuOffsetsParams>,
    pub lookback: Kernel<CpugpuOffsetsParams>,
}

/// `offsets_*_<L>_<O>`.
pub(crate) fn offsets_kernels(l64: bool, o64: bool) -> OffsetsKernels {
    let (single, lookback) = match (l64, o64) {
        (false, false) => (k::offsets_single_i32_i32, k::offsets_lookback_i32_i32),
        (false, true) => (k::offsets_single_i32_i64, k::offsets_lookback_i32_i64),
        (true, false) => (k::offsets_single_i64_i32, k::offsets_lookback_i64_i32),
        (true, true) => (k::offsets_single_i64_i64, k::offsets_lookback_i64_i64),
    };
    OffsetsKernels {
        single,
        check: if l64 {
            k::offsets_check_i64
        } else {
            k::offsets_check_i32
        },
        lookback,
    }
}

/// `flatten_w16_<O>`.
pub(crate) fn flatten_kernel(o64: bool) -> Kernel<CpugpuBatchedCopyParams> {
    if o64 {
        k::flatten_w16_i64
    } else {
        k::flatten_w16_i32
    }
}

/// `split_copy_w16`.
pub(crate) fn split_copy_kernel() -> Kernel<CpugpuBatchedCopyParams> {
    k::split_copy_w16
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

    const H100: DeviceInfo = DeviceInfo {
        cc: (9, 0),
        sms: 132,
    };

    #[test]
    fn access_width_follows_size_and_alignment() {
        assert_eq!(access_width(64, &[0x1000, 0x2000]), 16);
        assert_eq!(access_width(24, &[0x1000, 0x2000]), 8);
        assert_eq!(access_width(64, &[0x1004, 0x2000]), 4);
        assert_eq!(access_width(3, &[0x1000]), 1);
    }

    #[test]
    fn copy_policy_keeps_64_bytes_in_flight_for_wide_units() {
        let p = copy_policy(1, 32, &[0x1000, 0x3000], H100);
        assert_eq!(
            (p.access_width, p.items_per_thread, p.block_threads),
            (16, 4, 256)
        );
        let p = copy_policy(8, 24, &[0x1000, 0x3000], H100);
        assert_eq!((p.access_width, p.items_per_thread), (8, 8));
        let p = copy_policy(
            2,
            6,
            &[0x1000],
            DeviceInfo {
                cc: (8, 0),
                sms: 108,
            },
        );
        assert_eq!((p.access_width, p.items_per_thread), (2, 8));
    }

    #[test]
    fn rows_launch_groups_lanes_by_row_size() {
        assert_eq!(rows_launch(1000, 1, 8, false, H100).lanes_per_row, 1);
        // 256 rows per block-iteration of one-unit rows, 8 per thread: one block.
        assert_eq!(rows_launch(1000, 1, 8, false, H100).config.grid, 1);
        assert_eq!(rows_launch(100_000, 1, 8, false, H100).config.grid, 49);
        assert_eq!(rows_launch(1000, 5, 8, false, H100).lanes_per_row, 8);
        assert_eq!(rows_launch(1000, 500, 4, false, H100).lanes_per_row, 32);
        assert_eq!(rows_launch(1000, 500, 4, false, H100).config.grid, 125);
        assert_eq!(rows_launch(0, 1, 8, false, H100).config.grid, 1);
        // The one-launch path: at most one block per SM.
        assert_eq!(rows_launch(4096, 500, 4, true, H100).config.grid, 132);
        assert_eq!(
            rows_launch(1 << 30, 500, 4, false, H100).config.grid,
            stride_grid_cap(H100)
        );
    }

    #[test]
    fn scan_plan_switches_at_one_tile() {
        assert!(matches!(scan_plan(SCAN_TILE, H100), ScanPlan::Single(_)));
        assert!(matches!(
            scan_plan(SCAN_TILE + 1, H100),
            ScanPlan::LookBack { tiles: 2, .. }
        ));
        let ScanPlan::LookBack { lookback, .. } = scan_plan(1 << 26, H100) else {
            panic!("a large scan looks back");
        };
        assert_eq!(lookback.grid, 132 * SCAN_BLOCKS_PER_SM);
    }

    #[test]
    fn copy_tiers_sort_segments_by_size() {
        let t = copy_tiers([0usize, 10, 255, 256, 16_383, 16_384, 40_000].into_iter());
        assert_eq!(t.small, [1, 2]);
        assert_eq!(t.medium, [3, 4]);
        assert_eq!(t.large, [5, 6]);
        assert_eq!(t.large_chunks, [0, 1, 4]);
        let cfg = batched_copy_launch(&t, 7, H100);
        assert_eq!(cfg.grid, 4);
    }

    #[test]
    fn fill_pattern_repeats_the_element() {
        let p = fill_pattern(0x0102u16);
        assert_eq!(p[0], p[1]);
        assert_eq!(p[0] & 0xffff, 0x0102);
    }
}
