//! The Rust mirror of `kernels/cpugpu_abi.h`: the kernels' parameter structs and constants.
//!
//! Hand-written for now (issue 3 will generate it with bindgen and commit the result). Two
//! guards keep it from drifting: the `const` size assertions below, and the emulator build's
//! generated layout table (`build.rs`: every struct and field of the header as C++
//! `sizeof`/`offsetof` and as Rust `size_of`/`offset_of!`), compared by
//! `tests/emulated.rs::abi_layout_matches_the_header`. A field added on one side only fails to
//! compile (`offset_of!` of a missing field) or fails that test.
#![allow(missing_docs)] // each struct mirrors, and is documented by, its C declaration

use std::ffi::c_void;

/// The error word's "no error" value; kernels `atomicMin` the first bad position into it.
pub(crate) const NO_ERROR: u64 = u64::MAX;
/// `CPUGPU_SCAN_ITEMS_PER_THREAD`.
pub(crate) const SCAN_ITEMS_PER_THREAD: u32 = 16;
/// `CPUGPU_SCAN_BLOCK`.
pub(crate) const SCAN_BLOCK: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpugpuValidateParams {
    pub indices: *const c_void,
    pub error: *mut u64,
    pub n: i64,
    pub bound: i64,
    pub allow_negative: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpugpuGatherRowsParams {
    pub src: *const c_void,
    pub dst: *mut c_void,
    pub indices: *const c_void,
    pub error: *const u64,
    pub n_indices: i64,
    pub src_rows: i64,
    pub row_units: i64,
    pub lanes_per_row: i64,
    pub fill: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpugpuScatterWinnersParams {
    pub indices: *const c_void,
    pub winners: *mut i64,
    pub error: *mut u64,
    pub n: i64,
    pub dst_rows: i64,
    pub allow_negative: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpugpuScatterRowsParams {
    pub src: *const c_void,
    pub dst: *mut c_void,
    pub indices: *const c_void,
    pub winners: *const i64,
    pub error: *const u64,
    pub n_indices: i64,
    pub dst_rows: i64,
    pub row_units: i64,
    pub lanes_per_row: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpugpuPadParams {
    pub src: *const c_void,
    pub dst: *mut c_void,
    pub outer: i64,
    pub src_row_units: i64,
    pub dst_row_units: i64,
    pub fill: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpugpuOffsetsParams {
    pub lengths: *const c_void,
    pub offsets: *mut c_void,
    pub tile_sums: *mut u64,
    pub error: *mut u64,
    pub n: i64,
    pub limit: i64,
    pub tiles: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpugpuBatchedCopyParams {
    pub src_ptrs: *const *const c_void,
    pub dst_ptrs: *const *mut c_void,
    pub flat: *mut c_void,
    pub seg_offsets: *const i64,
    pub offsets_out: *mut c_void,
    pub n_segments: i64,
    pub units_per_elem: i64,
    pub tile_units: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpugpuCanaryParams {
    pub src: *const u64,
    pub dst: *mut u64,
    pub n: i64,
}

// Sizes on a 64-bit target: all fields are 8 bytes, so there is no padding to disagree about.
const _: () = assert!(std::mem::size_of::<CpugpuValidateParams>() == 40);
const _: () = assert!(std::mem::size_of::<CpugpuGatherRowsParams>() == 80);
const _: () = assert!(std::mem::size_of::<CpugpuScatterWinnersParams>() == 48);
const _: () = assert!(std::mem::size_of::<CpugpuScatterRowsParams>() == 72);
const _: () = assert!(std::mem::size_of::<CpugpuPadParams>() == 56);
const _: () = assert!(std::mem::size_of::<CpugpuOffsetsParams>() == 56);
const _: () = assert!(std::mem::size_of::<CpugpuBatchedCopyParams>() == 64);
const _: () = assert!(std::mem::size_of::<CpugpuCanaryParams>() == 24);
