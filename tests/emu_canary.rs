//! Proof that the sanitizer runs of the emulated kernels are live (`.ci/emu-sanitizers`).
//!
//! Each test re-runs this test binary as a child process on one deliberately broken kernel
//! (`kernels/test_only/canary.cu`) and asserts that the sanitizer the kernels were built with
//! reports it and fails the child. In a build without that sanitizer the test says so and
//! returns: nothing is being proved there.
#![cfg(feature = "emulator")]

use std::process::Command;

use cpugpu::emu;

/// Set in the child: which canary to run.
const CHILD_ENV: &str = "CPUGPU_EMU_CANARY";

/// The child's entry point. Without the variable (every ordinary run) it does nothing.
#[test]
fn canary_child() {
    let src = vec![7u64; 8];
    let Ok(which) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dev = cpugpu::Device::cuda(0).expect("the emulated GPU");
    // SAFETY: none, on purpose: each canary is a broken kernel whose report (or abort) the
    // parent test asserts; this runs only in that child process.
    unsafe {
        match which.as_str() {
            "read_past_end" => println!("read {:?}", emu::canary::read_past_end(&dev, &src)),
            "divergent_barrier" => {
                println!("read {:?}", emu::canary::divergent_barrier(&dev, &src))
            }
            "shared_race_mid" => {
                for _ in 0..4 {
                    println!("read {:?}", emu::canary::shared_race_mid(&dev, &src));
                }
            }
            "shared_race" => {
                // Several launches: each is a fresh chance for the two threads to interleave,
                // but ThreadSanitizer's happens-before analysis reports the race on the first.
                for _ in 0..4 {
                    println!("read {:?}", emu::canary::shared_race(&dev, &src));
                }
            }
            other => panic!("unknown canary {other}"),
        }
    }
}

/// True when the kernels were built with `sanitizer`. Otherwise the test is skipped, unless
/// `CPUGPU_EMU_REQUIRE_SANITIZER` names it (`.ci/emu-sanitizers` sets it), which makes a build
/// that silently lost its sanitizer a failure instead of a skip.
fn built_with(sanitizer: &str) -> bool {
    if emu::sanitizer() == Some(sanitizer) {
        return true;
    }
    assert_ne!(
        std::env::var("CPUGPU_EMU_REQUIRE_SANITIZER").as_deref(),
        Ok(sanitizer),
        "CPUGPU_EMU_REQUIRE_SANITIZER={sanitizer} but the kernels were built with {:?}",
        emu::sanitizer()
    );
    eprintln!(
        "skipped: kernels not built with CPUGPU_EMU_SANITIZE={sanitizer} (see .ci/emu-sanitizers)"
    );
    false
}

/// Runs the child on `canary`; returns (success, stderr).
fn run_child(canary: &str) -> (bool, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args(["canary_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, canary)
        .output()
        .expect("run the child test process");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn address_sanitizer_reports_a_kernel_reading_past_the_end() {
    if !built_with("address") {
        return;
    }
    let (ok, stderr) = run_child("read_past_end");
    assert!(!ok, "the child passed: {stderr}");
    assert!(
        stderr.contains("AddressSanitizer: heap-buffer-overflow")
            && stderr.contains("canary_read_past_end"),
        "no AddressSanitizer report naming the canary kernel:\n{stderr}"
    );
}

#[test]
fn thread_sanitizer_reports_a_shared_memory_race() {
    if !built_with("thread") {
        return;
    }
    let (ok, stderr) = run_child("shared_race");
    assert!(!ok, "the child passed: {stderr}");
    assert!(
        stderr.contains("ThreadSanitizer: data race") && stderr.contains("canary_shared_race"),
        "no ThreadSanitizer report naming the canary kernel:\n{stderr}"
    );
}

#[test]
fn thread_sanitizer_reports_a_race_between_two_barriers() {
    if !built_with("thread") {
        return;
    }
    let (ok, stderr) = run_child("shared_race_mid");
    assert!(!ok, "the child passed: {stderr}");
    assert!(
        stderr.contains("ThreadSanitizer: data race") && stderr.contains("canary_shared_race_mid"),
        "no ThreadSanitizer report naming the canary kernel:\n{stderr}"
    );
}

#[test]
fn the_emulator_aborts_on_a_divergent_barrier() {
    // No sanitizer needed: the emulator checks that all threads meet at the same barrier.
    let (ok, stderr) = run_child("divergent_barrier");
    assert!(!ok, "the child passed: {stderr}");
    assert!(
        stderr.contains("cuda_emu: divergent __syncthreads"),
        "no divergence report:\n{stderr}"
    );
}
