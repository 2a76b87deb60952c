//! Shared test helpers: seeded data, poisoned outputs, bitwise comparison and the element-width
//! matrix. Each integration test file includes this with `mod common;`.
#![allow(dead_code)]

#[cfg(feature = "emulator")]
pub mod gpu;
pub mod prep;

use bytemuck::Pod;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

/// Boundary sizes every operation is tested at (the large one crosses the parallel threshold
/// for every element width once multiplied by a row of a few elements).
pub const SIZES: &[usize] = &[0, 1, 2, 31, 32, 33, 257, 40_000];

/// The byte pattern poisoned outputs are filled with before a run.
pub const POISON: u8 = 0xA5;

/// A generator seeded from the test's own seed, so failures reproduce.
pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// `n` elements of random bytes.
pub fn random_vec<T: Pod>(rng: &mut SmallRng, n: usize) -> Vec<T> {
    let mut v = vec![T::zeroed(); n];
    rng.fill_bytes(bytemuck::cast_slice_mut(&mut v));
    v
}

/// One element of random bytes.
pub fn random_elem<T: Pod>(rng: &mut SmallRng) -> T {
    random_vec::<T>(rng, 1)[0]
}

/// `n` elements whose every byte is [`POISON`].
pub fn poisoned<T: Pod>(n: usize) -> Vec<T> {
    let mut v = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).fill(POISON);
    v
}

/// Random indices in `0..bound` (`bound` > 0), as `i64`.
pub fn random_indices(rng: &mut SmallRng, n: usize, bound: usize) -> Vec<i64> {
    (0..n).map(|_| rng.gen_range(0..bound as i64)).collect()
}

/// Bitwise equality (floats with NaN payloads included), with a message naming the case.
#[track_caller]
pub fn assert_bits_eq<T: Pod>(actual: &[T], expected: &[T], case: &str) {
    assert_eq!(actual.len(), expected.len(), "length differs: {case}");
    let a: &[u8] = bytemuck::cast_slice(actual);
    let e: &[u8] = bytemuck::cast_slice(expected);
    if a != e {
        let w = std::mem::size_of::<T>().max(1);
        let first = a.iter().zip(e).position(|(x, y)| x != y).unwrap() / w;
        panic!("element {first} differs: {case}");
    }
}

/// Runs `$body::<T>()` for one element type of each supported width: 1, 2 (f16), 4, 8 and 16
/// bytes (both a 16-aligned `u128` and a 4-aligned `[u32; 4]`).
#[macro_export]
macro_rules! for_each_width {
    ($body:ident) => {{
        $body::<u8>();
        $body::<half::f16>();
        $body::<half::bf16>();
        $body::<f32>();
        $body::<f64>();
        $body::<u128>();
        $body::<[u32; 4]>();
    }};
}
