//! The emulated GPU's test interface (`--features emulator`): knobs, fault injection, resource
//! counts and the launch log of the emulated CUDA driver in `kernels/emu/`.
//!
//! With the `emulator` feature, the crate's CUDA backend (`src/cuda/`, the operations' launch
//! sequences, the kernels of `kernels/`) runs unchanged against an emulated driver: `Device::cuda(0)`
//! and `Device::auto()` give a GPU that executes on CPU threads. Nothing here is needed to use it;
//! these functions let tests look inside it and make it misbehave on purpose. A green run on the
//! emulated GPU is not a GPU run: `docs/EMULATOR.md` says what it models and what it does not.
//!
//! Environment variables read when the driver initialises (the first `Device::cuda`/`auto`):
//!
//! | variable | default | effect |
//! |---|---|---|
//! | `CPUGPU_EMU_DELAY_US` | 0 | before each operation a stream runs, sleep a seeded random 0..=N µs |
//! | `CPUGPU_EMU_SEED` | 1 | seeds the delays and the block and thread orders |
//! | `CPUGPU_EMU_ORDER` | `shuffle` | block start order and thread resume order: `forward`, `reverse`, `shuffle` |
//! | `CPUGPU_EMU_BLOCKS` | 2 | blocks run at once (OS threads of the block executor, 1..=8) |
//! | `CPUGPU_EMU_DEVICES` | 1 | emulated GPUs; 0 makes `cuInit` report `CUDA_ERROR_NO_DEVICE` |
//!
//! ```
//! use cpugpu::{emu, Device};
//! let dev = Device::cuda(0)?; // the emulated GPU
//! assert!(dev.to_string().contains("emulated"));
//! let data = dev.upload(&[1u32, 2, 3], &[3])?;
//! let idx = dev.upload(&[2i64, 0], &[2])?;
//! emu::take_launch_log();
//! let rows = dev.gather_rows(data.view(), idx.view(), Default::default())?;
//! assert_eq!(rows.to_vec()?, [3, 1]);
//! assert_eq!(emu::take_launch_log(), ["gather_rows_w4_i64"]); // one launch at batch sizes
//! # Ok::<(), cpugpu::Error>(())
//! ```

use std::ffi::{c_char, CStr, CString};

use crate::kernels::abi::CpugpuCanaryParams;
use crate::kernels::launch::{self, i64_of, LaunchConfig};
use crate::kernels::{list, Kernel};
use crate::{Device, DeviceBuffer, Op, Result};

/// `CpugpuEmuStats` of `kernels/emu/driver.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live device allocations (a stream-ordered free counts once it has executed).
    pub device_allocs: u64,
    /// Their bytes.
    pub device_bytes: u64,
    /// Live page-locked host allocations.
    pub host_allocs: u64,
    /// Their bytes.
    pub host_bytes: u64,
    /// Live streams.
    pub streams: u64,
    /// Live events.
    pub events: u64,
    /// Kernels launched (cumulative).
    pub launches: u64,
}

extern "C" {
    fn cpugpu_emu_fail_nth(kind: i32, nth: u64, code: i32) -> i32;
    fn cpugpu_emu_set_delay_us(max_us: u32);
    fn cpugpu_emu_set_tag(tag: u64);
    fn cpugpu_emu_tag_stats(tag: u64, out: *mut Stats);
    fn cpugpu_emu_take_launch_log(out: *mut *const c_char, cap: u64) -> u64;
    fn cpugpu_emu_sanitizer() -> *const c_char;
    fn cpugpu_emu_describe() -> *const c_char;
    fn cpugpu_emu_abi_layout(s: *const c_char, f: *const c_char) -> i64;
    fn cpugpu_emu_hold_stream(stream: *mut std::ffi::c_void) -> *mut std::ffi::c_void;
    fn cpugpu_emu_release_hold(hold: *mut std::ffi::c_void);
}

/// Work queued behind a [`hold`] waits until the hold is released (or dropped).
#[must_use = "a hold released at once holds nothing"]
pub struct Hold {
    raw: *mut std::ffi::c_void,
}

// SAFETY: the hold is a heap handle of the emulated driver, released once from any thread.
unsafe impl Send for Hold {}

impl Hold {
    /// Lets the stream go on.
    pub fn release(self) {}
}

impl Drop for Hold {
    fn drop(&mut self) {
        // SAFETY: a hold from cpugpu_emu_hold_stream, released exactly once (here).
        unsafe { cpugpu_emu_release_hold(self.raw) }
    }
}

/// Stops `dev`'s stream at its current end: everything issued to it from now on waits until the
/// returned [`Hold`] is released, so a test can make "work still in flight" last as long as it
/// needs, with no timing involved.
pub fn hold(dev: &Device) -> Result<Hold> {
    let q = dev.cuda_queue(Op::Stream)?;
    let _bound = q.ctx.bind()?;
    // SAFETY: a live stream of the bound context; the driver only enqueues a wait on it.
    let raw = unsafe { cpugpu_emu_hold_stream(q.stream.raw().cast()) };
    if raw.is_null() {
        return Err(crate::Error::InvalidArgument {
            op: Op::Stream,
            name: "stream",
            value: 0,
            reason: "not a stream of the emulated driver",
        });
    }
    Ok(Hold { raw })
}

/// What [`fail_nth`] makes fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `cuMemAlloc`, `cuMemAllocFromPoolAsync`.
    DeviceAlloc = 0,
    /// `cuMemHostAlloc`.
    HostAlloc = 1,
    /// `cuMemcpy*Async`.
    Copy = 2,
    /// `cuMemsetD*Async`.
    Memset = 3,
    /// `cuLaunchKernel`.
    Launch = 4,
    /// `cuEventCreate`, `cuEventRecord`.
    Event = 5,
    /// `cuStreamCreate`, `cuStreamWaitEvent`.
    Stream = 6,
}

/// Makes the calling thread's `nth` next driver call of kind `fault` (1 = the very next) fail
/// with the driver result `code`, doing nothing else; `nth` 0 cancels. Per thread: tests running
/// in parallel do not see each other's faults.
pub fn fail_nth(fault: Fault, nth: u64, code: i32) {
    // SAFETY: sets a thread-local plan; any kind value of the enum is known to the driver.
    let r = unsafe { cpugpu_emu_fail_nth(fault as i32, nth, code) };
    debug_assert_eq!(r, 0);
}

/// Sets the random delay before each stream operation to at most `max_us` microseconds (0: off).
pub fn set_delay_us(max_us: u32) {
    // SAFETY: stores one atomic.
    unsafe { cpugpu_emu_set_delay_us(max_us) }
}

/// Resources the calling thread creates from now on are counted under `tag` (0 by default).
pub fn set_tag(tag: u64) {
    // SAFETY: sets a thread-local value.
    unsafe { cpugpu_emu_set_tag(tag) }
}

/// The resources counted under `tag`.
pub fn stats(tag: u64) -> Stats {
    let mut s = Stats::default();
    // SAFETY: writes one `Stats`, laid out as the C struct.
    unsafe { cpugpu_emu_tag_stats(tag, &mut s) };
    s
}

/// The kernels this thread launched since the last call, in order (tests use it to prove which
/// path ran: access widths, launches per operation).
pub fn take_launch_log() -> Vec<&'static str> {
    let mut names: Vec<*const c_char> = vec![std::ptr::null(); 64];
    loop {
        // SAFETY: the buffer holds `names.len()` pointers; the driver writes at most that many
        // and clears its log only when they all fit.
        let n = unsafe { cpugpu_emu_take_launch_log(names.as_mut_ptr(), names.len() as u64) };
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n <= names.len() {
            return names[..n]
                .iter()
                // SAFETY: each is a kernel name from the driver's static table.
                .map(|&p| unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("?"))
                .collect();
        }
        names.resize(n, std::ptr::null());
    }
}

/// The sanitizer the emulated GPU was built with (`CPUGPU_EMU_SANITIZE` at build time):
/// `Some("address")`, `Some("thread")` or `None`.
pub fn sanitizer() -> Option<&'static str> {
    // SAFETY: returns null or a static string.
    let p = unsafe { cpugpu_emu_sanitizer() };
    // SAFETY: non-null, static and NUL-terminated.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("?"))
}

/// The emulated GPU's configuration (devices, blocks in flight, orders, seed, delays).
pub fn describe() -> String {
    // SAFETY: returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(cpugpu_emu_describe()) }
        .to_string_lossy()
        .into_owned()
}

/// Test hook: caps the grid of every launch planned on this thread at `cap` blocks (0 restores
/// the default), so that small inputs also run the kernels' grid-stride loops more than once.
/// Results must not depend on it.
pub fn set_grid_cap(cap: u32) {
    launch::set_grid_cap(cap);
}

/// Test hook: checked gathers and scatters of at most `limit` indices take the one-launch batch
/// path on this thread (`None` restores the default, 4,096), so a test can run the same inputs
/// through both paths: `Some(0)` sends everything through the large-n path (validation pass
/// first), `Some(usize::MAX)` everything through the one-launch path. Results must not depend on
/// it.
pub fn set_small_batch(limit: Option<usize>) {
    launch::set_small_batch(limit);
}

/// Checks the ABI header against the Rust side: every struct size and field offset of
/// `kernels/cpugpu_abi.h`, as g++ lays it out, must match `src/kernels/abi.rs`. Returns the
/// mismatches.
pub fn self_check() -> Vec<String> {
    let mut problems = Vec::new();
    for &(s, f, rust) in crate::kernels::layout::ABI_LAYOUT {
        let (Ok(cs), Ok(cf)) = (CString::new(s), CString::new(f)) else {
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

/// Launches a canary or self-test kernel on `dev` over `src` (uploaded), with `dst_len` words of
/// output, and returns the output.
///
/// # Safety
/// The kernel must access only `src[0..src.len()]` and `dst[0..dst_len]`, or be a canary whose
/// fault the caller expects (the canaries are wrong on purpose).
unsafe fn run_test_kernel(
    dev: &Device,
    kernel: Kernel<CpugpuCanaryParams>,
    cfg: LaunchConfig,
    src: &[u64],
    dst_len: usize,
) -> Result<Vec<u64>> {
    let op = Op::Device;
    let q = dev.cuda_queue(op)?;
    let s = dev.upload(src, &[src.len()])?;
    let mut d = DeviceBuffer::<u64>::zeroed(dev, crate::Shape::vector(dst_len))?;
    let p = CpugpuCanaryParams {
        src: s.view().cuda_ptr().unwrap_or(0) as *const u64,
        dst: d.view_mut().cuda_ptr().unwrap_or(0) as *mut u64,
        n: i64_of(src.len()),
    };
    // SAFETY: the caller's contract; both buffers live until the stream is synchronised below.
    unsafe { q.launch(op, kernel, cfg, &p)? };
    dev.synchronize()?;
    d.to_vec()
}

/// Deliberately broken kernels that prove the sanitizer runs are live (`tests/emu_canary.rs`),
/// and the emulator's own primitives.
#[doc(hidden)]
pub mod canary {
    use super::*;

    fn one_thread() -> LaunchConfig {
        launch::flat_launch(1, 1)
    }

    /// Launches `canary_read_past_end` (it reads `src[src.len()]`, one word past the buffer).
    ///
    /// # Safety
    /// None: the kernel reads out of bounds on purpose, to prove AddressSanitizer reports it.
    /// Only the canary test calls it, in a child process whose failure it asserts.
    pub unsafe fn read_past_end(dev: &Device, src: &[u64]) -> Result<u64> {
        // SAFETY: not sound, on purpose (see above).
        unsafe { run_test_kernel(dev, list::canary_read_past_end, one_thread(), src, 1) }
            .map(|v| v[0])
    }

    /// Launches `canary_divergent_barrier` (thread 0 skips a `__syncthreads`): the emulator
    /// aborts the process with a message naming both threads.
    ///
    /// # Safety
    /// None: a divergent barrier is undefined behaviour on a GPU. Only the canary test calls it,
    /// in a child process.
    pub unsafe fn divergent_barrier(dev: &Device, src: &[u64]) -> Result<u64> {
        let cfg = LaunchConfig {
            grid: 1,
            block: 64,
            shared_bytes: 0,
        };
        // SAFETY: not sound, on purpose (see above).
        unsafe { run_test_kernel(dev, list::canary_divergent_barrier, cfg, src, 1) }.map(|v| v[0])
    }

    /// Launches `canary_shared_race` (threads 0 and 1 race on a shared-memory word).
    ///
    /// # Safety
    /// None: a data race, on purpose, to prove ThreadSanitizer reports it. Only the canary test
    /// calls it, in a child process.
    pub unsafe fn shared_race(dev: &Device, src: &[u64]) -> Result<u64> {
        let cfg = LaunchConfig {
            grid: 1,
            block: 64,
            shared_bytes: 0,
        };
        // SAFETY: not sound, on purpose (see above).
        unsafe { run_test_kernel(dev, list::canary_shared_race, cfg, src, 1) }.map(|v| v[0])
    }

    /// Launches `canary_shared_race_mid`: the same race as [`shared_race`], between two
    /// barriers.
    ///
    /// # Safety
    /// None: a data race, on purpose. Only the canary test calls it, in a child process.
    pub unsafe fn shared_race_mid(dev: &Device, src: &[u64]) -> Result<u64> {
        let cfg = LaunchConfig {
            grid: 1,
            block: 64,
            shared_bytes: 0,
        };
        // SAFETY: not sound, on purpose (see above).
        unsafe { run_test_kernel(dev, list::canary_shared_race_mid, cfg, src, 1) }.map(|v| v[0])
    }

    /// Launches `emu_selftest_warp_ops` on one block of `threads` threads (a multiple of 32):
    /// 8 results per thread, then the atomicAdd total and the atomicMax.
    pub fn warp_selftest(dev: &Device, threads: u32) -> Result<Vec<u64>> {
        let n = usize::try_from(threads).unwrap_or(0) * 8 + 2;
        let cfg = LaunchConfig {
            grid: 1,
            block: threads,
            shared_bytes: 0,
        };
        // SAFETY: the kernel writes dst[0..threads * 8 + 2], which exists, and reads nothing.
        unsafe { run_test_kernel(dev, list::emu_selftest_warp_ops, cfg, &[0], n) }
    }
}
