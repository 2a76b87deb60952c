//! Build script.
//!
//! Default build: nothing but `rerun-if-changed` lines (no C++ compiler is needed or run).
//!
//! `--features emulator` (tests only): compiles the CUDA kernels in `kernels/` as C++20 with the
//! system's g++ against `kernels/emu/cuda_emu.h`, plus the emulator's launcher, into a static
//! library, and generates into `OUT_DIR`:
//! - `kernel_list.rs`: one typed handle per kernel of `kernels/kernel_list.h`;
//! - `abi_layout.rs` / `abi_layout.cpp`: every struct and field of `kernels/cpugpu_abi.h`, as
//!   Rust `size_of`/`offset_of!` and as C++ `sizeof`/`offsetof`, compared by a test so the
//!   hand-written Rust mirror (`src/kernels/abi.rs`) cannot drift from the header.
//!
//! `CPUGPU_EMU_SANITIZE=address|thread` builds the emulated kernels with that sanitizer and links
//! its runtime (`.ci/emu-sanitizers` runs the tests that way).

use std::fs;
use std::path::{Path, PathBuf};

#[cfg(feature = "emulator")]
const KERNEL_SOURCES: &[&str] = &[
    "kernels/gather.cu",
    "kernels/scatter.cu",
    "kernels/pad.cu",
    "kernels/offsets.cu",
    "kernels/batched_copy.cu",
];
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
    #[cfg(feature = "emulator")]
    emulator::build();
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

    use super::{KERNEL_SOURCES, TEST_KERNEL_SOURCES};

    pub(super) fn build() {
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

        let list = fs::read_to_string("kernels/kernel_list.h").expect("read kernels/kernel_list.h");
        let kernels = parse_kernel_list(&list);
        fs::write(out.join("kernel_list.rs"), kernel_list_rs(&kernels))
            .expect("write kernel_list.rs");

        let abi = fs::read_to_string("kernels/cpugpu_abi.h").expect("read kernels/cpugpu_abi.h");
        let structs = parse_abi_structs(&abi);
        let (rs, cpp) = abi_layout(&structs);
        fs::write(out.join("abi_layout.rs"), rs).expect("write abi_layout.rs");
        fs::write(out.join("abi_layout.cpp"), cpp).expect("write abi_layout.cpp");

        let sanitize = env::var("CPUGPU_EMU_SANITIZE").unwrap_or_default();
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++20")
            .include("kernels")
            .flag("-pthread")
            .flag_if_supported("-Wall")
            .flag_if_supported("-Wextra")
            .warnings_into_errors(true);
        match sanitize.as_str() {
            "" => {
                build.opt_level(2);
            }
            "address" | "thread" => {
                build
                    .opt_level(1)
                    .debug(true)
                    .flag(format!("-fsanitize={sanitize}"))
                    .flag("-fno-omit-frame-pointer");
                println!("cargo:rustc-cfg=cpugpu_emu_sanitize=\"{sanitize}\"");
            }
            other => panic!("CPUGPU_EMU_SANITIZE={other:?}: expected \"address\" or \"thread\""),
        }
        // The kernels are CUDA sources: compile them as C++ (`-x c++` applies to the files after it).
        build.flag("-x").flag("c++");
        for src in KERNEL_SOURCES.iter().chain(TEST_KERNEL_SOURCES) {
            build.file(src);
        }
        build.file("kernels/emu/launcher.cpp");
        build.file(out.join("abi_layout.cpp"));
        build.compile("cpugpu_emu");

        // The C++ runtime (and the sanitizer runtime, dynamically: load it first with LD_PRELOAD).
        println!("cargo:rustc-link-lib=dylib=stdc++");
        match sanitize.as_str() {
            "address" => println!("cargo:rustc-link-lib=dylib=asan"),
            "thread" => println!("cargo:rustc-link-lib=dylib=tsan"),
            _ => {}
        }
    }

    struct Kernel {
        name: String,
        params: String,
        test_only: bool,
    }

    /// Lines `CPUGPU_KERNEL(name, Params)` and `CPUGPU_TEST_KERNEL(name, Params)`.
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
            let (Some(name), Some(params), None) = (parts.next(), parts.next(), parts.next())
            else {
                panic!("kernel_list.h: bad entry {line:?}");
            };
            if name == "name" {
                continue; // the #define lines in the header's comments
            }
            kernels.push(Kernel {
                name: name.to_string(),
                params: params.to_string(),
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
                 pub(crate) const {name}: Kernel<super::abi::{params}> = Kernel::new({id}, {name:?});",
                name = k.name,
                params = k.params,
            )
            .unwrap();
        }
        s
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
