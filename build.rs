//! Build script.
//!
//! Default build: nothing but `rerun-if-changed` lines (no C++ compiler is needed or run).
//!
//! `--features emulator` (tests): the CUDA backend against the emulated GPU. Compiles the CUDA
//! kernels in `kernels/` as C++20 with the system's g++ against `kernels/emu/cuda_emu.h`, plus the
//! emulated driver (`kernels/emu/{driver,executor,fiber}.cpp`), into a static library, and
//! generates into `OUT_DIR`:
//! - `kernel_list.rs`: one typed handle per kernel of `kernels/kernel_list.h`;
//! - `cpugpu_kernels.fatbin`: the emulated module image (the names of the kernels it holds),
//!   loaded by `cuModuleLoadData` as the real fatbin is;
//! - `abi_layout.rs` / `abi_layout.cpp`: every struct and field of `kernels/cpugpu_abi.h`, as
//!   Rust `size_of`/`offset_of!` and as C++ `sizeof`/`offsetof`, compared by a test so the
//!   Rust mirror (`src/kernels/abi.rs`) cannot drift from the header.
//!
//! `CPUGPU_EMU_SANITIZE=address|thread` builds the emulated GPU with that sanitizer and links
//! its runtime (`.ci/emu-sanitizers` runs the tests that way).
//!
//! Both features build the CUDA backend (`src/cuda/`), so both set `cfg(cpugpu_cuda)`; the
//! emulated one also sets `cfg(cpugpu_emulated)`. They exclude each other: the crate's driver
//! entry points link either to libcuda or to the emulated driver.
//!
//! `--features cuda`: compiles every top-level `kernels/*.cu` with nvcc into one fatbin (SASS for
//! `CPUGPU_CUDA_ARCHS`, default `80 86 89 90`, plus PTX for the newest), embedded in the library
//! (`OUT_DIR/cpugpu_kernels.fatbin`); regenerates the kernel ABI's Rust side from
//! `kernels/cpugpu_abi.h` with bindgen and fails when it differs from the committed
//! `src/kernels/abi_bindings.rs` (`CPUGPU_BLESS_BINDINGS=1` rewrites it instead). Without nvcc
//! it fails, saying how to get one.

use std::fs;
use std::path::{Path, PathBuf};

#[cfg(feature = "emulator")]
const TEST_KERNEL_SOURCES: &[&str] = &[
    "kernels/test_only/canary.cu",
    "kernels/test_only/emu_selftest.cu",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for entry in walk(Path::new("kernels")) {
        println!("cargo:rerun-if-changed={}", entry.display());
    }
    println!("cargo:rerun-if-env-changed=CPUGPU_EMU_SANITIZE");
    println!("cargo::rustc-check-cfg=cfg(cpugpu_emu_sanitize, values(\"address\", \"thread\"))");
    println!("cargo::rustc-check-cfg=cfg(cpugpu_cuda)");
    println!("cargo::rustc-check-cfg=cfg(cpugpu_emulated)");
    #[cfg(all(feature = "emulator", feature = "cuda"))]
    panic!(
        "the `cuda` and `emulator` features exclude each other: `emulator` builds the CUDA \
         backend against the emulated GPU (tests, no GPU needed), `cuda` against the real driver"
    );
    #[cfg(any(feature = "emulator", feature = "cuda"))]
    {
        println!("cargo:rustc-cfg=cpugpu_cuda");
        kernel_list::generate();
    }
    #[cfg(feature = "emulator")]
    emulator::build(&kernel_sources());
    #[cfg(feature = "cuda")]
    cuda::build(&kernel_sources());
}

/// Every top-level `kernels/*.cu` (not `kernels/test_only/`, not `kernels/emu/`): a new kernel
/// file is built without touching this script.
#[cfg(any(feature = "emulator", feature = "cuda"))]
fn kernel_sources() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir("kernels")
        .expect("read kernels/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "cu"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no kernels/*.cu found");
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                files.extend(walk(&p));
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// The emulator build: only compiled with the `emulator` feature, so a default build does not
/// even build the `cc` crate.
#[cfg(feature = "emulator")]
mod emulator {
    use std::env;
    use std::fmt::Write as _;
    use std::fs;
    use std::path::PathBuf;

    use super::TEST_KERNEL_SOURCES;

    /// The emulated driver.
    const DRIVER_SOURCE: &str = "kernels/emu/driver.cpp";
    /// The emulated GPU's block executor and fibers.
    const RUNTIME_SOURCES: &[&str] = &["kernels/emu/executor.cpp", "kernels/emu/fiber.cpp"];

    /// A C++20 build of emulator sources; `instrument` adds `-fsanitize=<sanitize>`.
    fn emu_build(sanitize: &str, instrument: bool) -> cc::Build {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++20")
            .include("kernels")
            .flag("-pthread")
            .flag_if_supported("-Wall")
            .flag_if_supported("-Wextra")
            .warnings_into_errors(true);
        if sanitize.is_empty() {
            build.opt_level(2);
        } else {
            build
                .opt_level(1)
                .debug(true)
                .flag("-fno-omit-frame-pointer");
            if instrument {
                build.flag(format!("-fsanitize={sanitize}"));
            }
        }
        build
    }

    pub(super) fn build(sources: &[PathBuf]) {
        println!("cargo:rustc-cfg=cpugpu_emulated");
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        super::kernel_list::write_emulated_image(&out);

        let abi = fs::read_to_string("kernels/cpugpu_abi.h").expect("read kernels/cpugpu_abi.h");
        let structs = parse_abi_structs(&abi);
        let (rs, cpp) = abi_layout(&structs);
        fs::write(out.join("abi_layout.rs"), rs).expect("write abi_layout.rs");
        fs::write(out.join("abi_layout.cpp"), cpp).expect("write abi_layout.cpp");

        let sanitize = env::var("CPUGPU_EMU_SANITIZE").unwrap_or_default();
        if !matches!(sanitize.as_str(), "" | "address" | "thread") {
            panic!("CPUGPU_EMU_SANITIZE={sanitize:?}: expected \"address\" or \"thread\"");
        }
        if !sanitize.is_empty() {
            println!("cargo:rustc-cfg=cpugpu_emu_sanitize=\"{sanitize}\"");
        }
        // The kernels and the driver: built with the sanitizer, so every access a kernel, a
        // copy or a memset makes is checked.
        let mut build = emu_build(&sanitize, true);
        // The kernels are CUDA sources: compile them as C++ (`-x c++` applies to the files after it).
        build.flag("-x").flag("c++");
        for src in sources {
            build.file(src);
        }
        for src in TEST_KERNEL_SOURCES {
            build.file(src);
        }
        build.file(DRIVER_SOURCE);
        build.file(out.join("abi_layout.cpp"));
        build.compile("cpugpu_emu");
        // The block executor and the fibers: they rewrite each fiber's bookkeeping between
        // switches on one OS thread, which ThreadSanitizer would take for races. Under
        // ThreadSanitizer they are built without its instrumentation but with its hooks
        // (CPUGPU_EMU_TSAN_HOOKS: fiber switches and the barriers' happens-before edges).
        let mut rt = emu_build(&sanitize, sanitize != "thread");
        if sanitize == "thread" {
            rt.define("CPUGPU_EMU_TSAN_HOOKS", "1");
        }
        for src in RUNTIME_SOURCES {
            rt.file(src);
        }
        rt.compile("cpugpu_emu_rt");

        // The C++ runtime (and the sanitizer runtime, dynamically: load it first with LD_PRELOAD).
        println!("cargo:rustc-link-lib=dylib=stdc++");
        match sanitize.as_str() {
            "address" => println!("cargo:rustc-link-lib=dylib=asan"),
            "thread" => println!("cargo:rustc-link-lib=dylib=tsan"),
            _ => {}
        }
    }

    struct AbiStruct {
        name: String,
        fields: Vec<String>,
    }

    /// `typedef struct Name {` ... one `type field;` per line ... `} Name;`
    fn parse_abi_structs(text: &str) -> Vec<AbiStruct> {
        let mut structs = Vec::new();
        let mut current: Option<AbiStruct> = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("typedef struct ") {
                let name = rest.trim_end_matches('{').trim().to_string();
                current = Some(AbiStruct {
                    name,
                    fields: Vec::new(),
                });
            } else if line.starts_with('}') {
                if let Some(s) = current.take() {
                    structs.push(s);
                }
            } else if let Some(s) = current.as_mut() {
                if let Some(decl) = line.strip_suffix(';') {
                    let decl = decl.split('[').next().unwrap_or(decl);
                    let field = decl.rsplit([' ', '*']).next().expect("a field name");
                    s.fields.push(field.to_string());
                }
            }
        }
        assert!(!structs.is_empty(), "cpugpu_abi.h declares no structs");
        structs
    }

    fn abi_layout(structs: &[AbiStruct]) -> (String, String) {
        let mut rs = String::from(
            "// Generated by build.rs from kernels/cpugpu_abi.h. Do not edit.\n\
             /// (struct, field or \"\" for the struct itself, Rust offset or size).\n\
             pub(crate) const ABI_LAYOUT: &[(&str, &str, usize)] = &[\n",
        );
        let mut cpp = String::from(
            "// Generated by build.rs from kernels/cpugpu_abi.h. Do not edit.\n\
             #include <cstddef>\n#include <cstring>\n#include \"cpugpu_abi.h\"\n\
             namespace { struct Entry { const char* s; const char* f; long long v; };\n\
             const Entry kLayout[] = {\n",
        );
        for st in structs {
            writeln!(
                rs,
                "    ({n:?}, \"\", std::mem::size_of::<super::abi::{n}>()),",
                n = st.name
            )
            .unwrap();
            writeln!(
                cpp,
                "    {{\"{n}\", \"\", (long long)sizeof({n})}},",
                n = st.name
            )
            .unwrap();
            for f in &st.fields {
                writeln!(
                    rs,
                    "    ({n:?}, {f:?}, std::mem::offset_of!(super::abi::{n}, {f})),",
                    n = st.name
                )
                .unwrap();
                writeln!(
                    cpp,
                    "    {{\"{n}\", \"{f}\", (long long)offsetof({n}, {f})}},",
                    n = st.name
                )
                .unwrap();
            }
        }
        rs.push_str("];\n");
        cpp.push_str(
            "};\n}\n\
             // The C++ offset of field f of struct s (its size when f is \"\"), or -1.\n\
             extern \"C\" long long cpugpu_emu_abi_layout(const char* s, const char* f) {\n\
             \x20   for (const Entry& e : kLayout)\n\
             \x20       if (std::strcmp(e.s, s) == 0 && std::strcmp(e.f, f) == 0) return e.v;\n\
             \x20   return -1;\n}\n",
        );
        (rs, cpp)
    }
}

/// `OUT_DIR/kernel_list.rs` from `kernels/kernel_list.h`: one typed Rust handle per kernel, for
/// the real and the emulated module alike.
#[cfg(any(feature = "emulator", feature = "cuda"))]
mod kernel_list {
    use std::env;
    use std::fmt::Write as _;
    use std::fs;
    use std::path::PathBuf;

    pub(super) fn generate() {
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let list = fs::read_to_string("kernels/kernel_list.h").expect("read kernels/kernel_list.h");
        let kernels = parse_kernel_list(&list);
        fs::write(out.join("kernel_list.rs"), kernel_list_rs(&kernels))
            .expect("write kernel_list.rs");
    }

    struct Kernel {
        name: String,
        params: String,
        max_threads: u32,
        test_only: bool,
    }

    /// The emulated module image: a magic line, then the name of every listed kernel (test
    /// kernels included), each NUL-terminated, then an empty name. `cuModuleLoadData` of the
    /// emulated driver reads it as the real driver reads the fatbin.
    #[cfg(feature = "emulator")]
    pub(super) fn write_emulated_image(out: &std::path::Path) {
        let list = fs::read_to_string("kernels/kernel_list.h").expect("read kernels/kernel_list.h");
        let mut image = b"CPUGPU-EMULATED-IMAGE-1\0".to_vec();
        for k in parse_kernel_list(&list) {
            image.extend_from_slice(k.name.as_bytes());
            image.push(0);
        }
        image.push(0);
        fs::write(out.join("cpugpu_kernels.fatbin"), image).expect("write the emulated image");
        fs::write(
            out.join("cuda_build_info.rs"),
            "/// The architectures the embedded fatbin has SASS for: none, this is the emulated \
             GPU's image.\npub const FATBIN_ARCHS: &[&str] = &[];\n",
        )
        .expect("write cuda_build_info.rs");
    }

    /// Lines `CPUGPU_KERNEL(name, Params, max_threads, min_blocks)` and the same for
    /// `CPUGPU_TEST_KERNEL`.
    fn parse_kernel_list(text: &str) -> Vec<Kernel> {
        let mut kernels = Vec::new();
        for line in text.lines().map(str::trim) {
            let (rest, test_only) = if let Some(r) = line.strip_prefix("CPUGPU_KERNEL(") {
                (r, false)
            } else if let Some(r) = line.strip_prefix("CPUGPU_TEST_KERNEL(") {
                (r, true)
            } else {
                continue;
            };
            let inner = rest
                .strip_suffix(')')
                .expect("kernel_list.h: one entry per line");
            let mut parts = inner.split(',').map(str::trim);
            let (Some(name), Some(params), Some(max_threads), Some(min_blocks), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                panic!("kernel_list.h: bad entry {line:?} (name, params, max_threads, min_blocks)");
            };
            if name == "name" {
                continue; // the #define lines in the header's comments
            }
            let max: u32 = max_threads
                .parse()
                .unwrap_or_else(|_| panic!("kernel_list.h: {line:?}: max_threads is not a number"));
            assert!(
                (1..=1024).contains(&max),
                "kernel_list.h: {line:?}: max_threads must be 1..=1024"
            );
            let min: u32 = min_blocks
                .parse()
                .unwrap_or_else(|_| panic!("kernel_list.h: {line:?}: min_blocks is not a number"));
            assert!(
                min <= 32 && u64::from(min) * u64::from(max) <= 2048,
                "kernel_list.h: {line:?}: min_blocks x max_threads must fit an SM (2,048 threads)"
            );
            kernels.push(Kernel {
                name: name.to_string(),
                params: params.to_string(),
                max_threads: max,
                test_only,
            });
        }
        assert!(!kernels.is_empty(), "kernel_list.h lists no kernels");
        kernels
    }

    fn kernel_list_rs(kernels: &[Kernel]) -> String {
        let mut s = String::from(
            "// Generated by build.rs from kernels/kernel_list.h. Do not edit.\n\
             /// Every kernel, in table order: (name, test-only).\n\
             pub(crate) const KERNEL_NAMES: &[(&str, bool)] = &[\n",
        );
        for k in kernels {
            writeln!(s, "    ({:?}, {}),", k.name, k.test_only).unwrap();
        }
        s.push_str("];\n");
        for (id, k) in kernels.iter().enumerate() {
            writeln!(
                s,
                "/// Kernel `{name}` ({params}).\n#[allow(non_upper_case_globals, dead_code)]\n\
                 pub(crate) const {name}: Kernel<super::abi::{params}> = Kernel::new({id}, {name:?}, {max});",
                name = k.name,
                params = k.params,
                max = k.max_threads,
            )
            .unwrap();
        }
        s
    }
}

/// The CUDA build: nvcc to one embedded fatbin, and the bindgen check of the kernel ABI.
#[cfg(feature = "cuda")]
mod cuda {
    use std::env;
    use std::fmt::Write as _;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// SASS targets when `CPUGPU_CUDA_ARCHS` is unset: Ampere (A100, A10/RTX 30), Ada (L4/L40,
    /// RTX 40) and Hopper (H100/H200). PTX for the newest is embedded too, so a newer GPU JITs it.
    const DEFAULT_ARCHS: &str = "80 86 89 90";

    /// Flags shared with `.ci/kernel-static-checks` (keep the two in step).
    const NVCC_FLAGS: &[&str] = &[
        "-std=c++17",
        "-O3",
        "-Xptxas",
        "-O3",
        "-Werror",
        "all-warnings",
    ];

    const HOW_TO_GET_NVCC: &str = "the `cuda` feature needs nvcc (CUDA 13.0) to compile \
        kernels/*.cu. On a machine without CUDA, `eval \"$(scripts/install-cuda-toolchain.sh)\"` \
        installs it from PyPI into .venv-cuda (no GPU or root needed for nvcc) and exports NVCC, \
        CUDA_PATH, CUDA_LIBRARY_PATH and LIBCLANG_PATH; otherwise set NVCC=/path/to/nvcc or \
        CUDA_PATH=/usr/local/cuda. Build without `--features cuda` for the host backend.";

    pub(super) fn build(sources: &[PathBuf]) {
        for var in [
            "NVCC",
            "CUDA_PATH",
            "CUDA_ROOT",
            "PATH",
            "CPUGPU_CUDA_ARCHS",
            "CPUGPU_BLESS_BINDINGS",
            "LIBCLANG_PATH",
        ] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let nvcc = find_nvcc().unwrap_or_else(|| panic!("{HOW_TO_GET_NVCC}"));
        compile_fatbin(&nvcc, sources, &out);
        check_bindings();
    }

    /// `NVCC`, else `CUDA_PATH/bin/nvcc` (or `CUDA_ROOT`), else the first `nvcc` on `PATH`.
    fn find_nvcc() -> Option<PathBuf> {
        if let Some(p) = env::var_os("NVCC") {
            let p = PathBuf::from(p);
            if p.is_file() {
                return Some(p);
            }
            panic!("NVCC={} is not a file. {HOW_TO_GET_NVCC}", p.display());
        }
        for var in ["CUDA_PATH", "CUDA_ROOT"] {
            if let Some(root) = env::var_os(var) {
                let p = Path::new(&root).join("bin").join("nvcc");
                if p.is_file() {
                    return Some(p);
                }
            }
        }
        env::split_paths(&env::var_os("PATH")?)
            .map(|d| d.join("nvcc"))
            .find(|p| p.is_file())
    }

    fn archs() -> Vec<u32> {
        let text = env::var("CPUGPU_CUDA_ARCHS").unwrap_or_else(|_| DEFAULT_ARCHS.to_string());
        let mut archs: Vec<u32> = text
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim_start_matches("sm_").parse().unwrap_or_else(|_| {
                    panic!("CPUGPU_CUDA_ARCHS={text:?}: {s:?} is not a compute capability like 90")
                })
            })
            .collect();
        archs.sort_unstable();
        archs.dedup();
        assert!(
            !archs.is_empty(),
            "CPUGPU_CUDA_ARCHS={text:?} names no architecture"
        );
        archs
    }

    fn compile_fatbin(nvcc: &Path, sources: &[PathBuf], out: &Path) {
        // One translation unit including every kernel source: one fatbin, one module to load.
        let mut unit = String::from("// Generated by build.rs: every kernels/*.cu, one module.\n");
        for src in sources {
            let abs = fs::canonicalize(src).expect("canonicalize a kernel source");
            writeln!(unit, "#include \"{}\"", abs.display()).unwrap();
        }
        // Every listed kernel must be defined by some source: a missing one fails here, at
        // build time, not at module load.
        unit.push_str(
            "#define CPUGPU_KERNEL(name, params, max_threads, min_blocks) \\\n    static_assert(sizeof(&name) != 0, \"kernel \" #name \" is in kernel_list.h but no kernels/*.cu defines it\");\n\
             #include \"kernel_list.h\"\n",
        );
        let unit_path = out.join("cpugpu_kernels.cu");
        fs::write(&unit_path, unit).expect("write cpugpu_kernels.cu");
        let fatbin = out.join("cpugpu_kernels.fatbin");
        let archs = archs();
        let newest = *archs.last().expect("at least one arch");
        let mut cmd = Command::new(nvcc);
        cmd.arg("--fatbin")
            .args(NVCC_FLAGS)
            .arg("-t0")
            .arg("-I")
            .arg("kernels");
        for a in &archs {
            if *a == newest {
                cmd.arg("-gencode")
                    .arg(format!("arch=compute_{a},code=[sm_{a},compute_{a}]"));
            } else {
                cmd.arg("-gencode")
                    .arg(format!("arch=compute_{a},code=sm_{a}"));
            }
        }
        cmd.arg("-o").arg(&fatbin).arg(&unit_path);
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}. {HOW_TO_GET_NVCC}", nvcc.display()));
        if !output.status.success() {
            panic!(
                "nvcc failed ({}):\n{:?}\n{}{}",
                output.status,
                cmd,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let archs_text: Vec<String> = archs.iter().map(|a| format!("sm_{a}")).collect();
        fs::write(
            out.join("cuda_build_info.rs"),
            format!(
                "/// The architectures the embedded fatbin has SASS for; PTX for the last.\n\
                 pub const FATBIN_ARCHS: &[&str] = &{archs_text:?};\n"
            ),
        )
        .expect("write cuda_build_info.rs");
    }

    const BINDINGS: &str = "src/kernels/abi_bindings.rs";

    /// Regenerates the ABI bindings and compares them with the committed file, ignoring
    /// whitespace (rustfmt versions differ in layout, not in tokens).
    fn check_bindings() {
        println!("cargo:rerun-if-changed={BINDINGS}");
        let generated = bindgen::Builder::default()
            .header("kernels/cpugpu_abi.h")
            .allowlist_type("Cpugpu.*")
            .allowlist_var("CPUGPU_.*")
            .layout_tests(false)
            .derive_debug(true)
            .derive_copy(true)
            .derive_default(false)
            .use_core()
            .raw_line("// Generated by bindgen from kernels/cpugpu_abi.h (build.rs, `--features cuda`).")
            .raw_line("// Do not edit: change the header, then `CPUGPU_BLESS_BINDINGS=1 cargo build --features cuda`.")
            .generate()
            .unwrap_or_else(|e| {
                panic!(
                    "bindgen could not read kernels/cpugpu_abi.h ({e}). It needs libclang: \
                     `eval \"$(scripts/install-cuda-toolchain.sh)\"` installs libclang1-14 and sets \
                     LIBCLANG_PATH"
                )
            })
            .to_string();
        let committed = fs::read_to_string(BINDINGS).unwrap_or_default();
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        if squash(&generated) == squash(&committed) {
            return;
        }
        if env::var_os("CPUGPU_BLESS_BINDINGS").is_some_and(|v| v == "1") {
            fs::write(BINDINGS, &generated).expect("write the bindings");
            println!("cargo:warning=rewrote {BINDINGS} from kernels/cpugpu_abi.h");
            return;
        }
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let fresh = out.join("abi_bindings.generated.rs");
        fs::write(&fresh, &generated).expect("write the fresh bindings");
        panic!(
            "{BINDINGS} is out of date with kernels/cpugpu_abi.h: a fresh bindgen run differs \
             (compare with {}). If the header change is intended, run \
             `CPUGPU_BLESS_BINDINGS=1 cargo build --features cuda` and commit the result.",
            fresh.display()
        );
    }
}
