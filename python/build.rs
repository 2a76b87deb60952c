//! Sets `cfg(gpu)` when the bindings are built against the crate's CUDA backend: `--features
//! cuda` (a real GPU, through libcuda) or `--features emulator` (the crate's emulated GPU, see
//! docs/EMULATOR.md). Both build the same GPU paths of the bindings; only the emulator build
//! adds its test hooks (`_native._emu`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(gpu)");
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    let emulator = std::env::var_os("CARGO_FEATURE_EMULATOR").is_some();
    if cuda && emulator {
        panic!(
            "the `cuda` and `emulator` features exclude each other: `emulator` builds the CUDA \
             backend against the emulated driver instead of libcuda"
        );
    }
    if cuda || emulator {
        println!("cargo:rustc-cfg=gpu");
    }
}
