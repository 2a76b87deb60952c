// The emulated CUDA driver's test interface: knobs, fault injection, statistics and the launch
// log, beyond the driver entry points themselves (which are exported as `cpugpu_emu_<name>`,
// e.g. `cpugpu_emu_cuInit`, so an emulated build never interposes on a real libcuda loaded into
// the same process). Read by src/cuda/emu.rs.
#ifndef CPUGPU_EMU_DRIVER_H
#define CPUGPU_EMU_DRIVER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a fault injected with cpugpu_emu_fail_nth applies to. */
enum CpugpuEmuFaultKind {
    CPUGPU_EMU_FAULT_DEVICE_ALLOC = 0, /* cuMemAlloc, cuMemAllocAsync, cuMemAllocFromPoolAsync */
    CPUGPU_EMU_FAULT_HOST_ALLOC = 1,   /* cuMemHostAlloc */
    CPUGPU_EMU_FAULT_COPY = 2,         /* cuMemcpy*Async */
    CPUGPU_EMU_FAULT_MEMSET = 3,       /* cuMemsetD*Async */
    CPUGPU_EMU_FAULT_LAUNCH = 4,       /* cuLaunchKernel */
    CPUGPU_EMU_FAULT_EVENT = 5,        /* cuEventCreate, cuEventRecord */
    CPUGPU_EMU_FAULT_STREAM = 6,       /* cuStreamCreate, cuStreamWaitEvent */
    CPUGPU_EMU_FAULT_KINDS = 7
};

/* The calling thread's `nth` next call of `kind` (1 = the very next) fails with `code`, doing
 * nothing else. `nth` 0 cancels. Per thread, so tests running in parallel do not see each
 * other's faults. Returns 0, or 1 for an unknown kind. */
int cpugpu_emu_fail_nth(int kind, uint64_t nth, int code);

/* Random delays: before every operation a stream executes, its worker sleeps a seeded random
 * 0..=max_us microseconds (0 turns them off). CPUGPU_EMU_DELAY_US sets the initial value. */
void cpugpu_emu_set_delay_us(uint32_t max_us);

/* A hold: the stream's next operation waits until the hold is released, so a test can keep work
 * queued behind it for as long as it needs (no timing involved). Returns the hold, or NULL for an
 * unknown stream (0 is the current context's legacy stream). Each hold is released once. */
void* cpugpu_emu_hold_stream(void* stream);
void cpugpu_emu_release_hold(void* hold);

/* Tags: resources are counted under the tag of the thread that created them (0 by default), so
 * a test can check that its own work leaked nothing while other tests run. */
void cpugpu_emu_set_tag(uint64_t tag);
typedef struct CpugpuEmuStats {
    uint64_t device_allocs; /* live device allocations (stream-ordered frees count once executed) */
    uint64_t device_bytes;
    uint64_t host_allocs; /* live page-locked host allocations */
    uint64_t host_bytes;
    uint64_t streams; /* live streams */
    uint64_t events;  /* live events */
    uint64_t launches; /* kernels launched (cumulative) */
} CpugpuEmuStats;
void cpugpu_emu_tag_stats(uint64_t tag, CpugpuEmuStats* out);

/* The kernel names the calling thread launched since its last call, oldest first: at most `cap`
 * are copied to `out` (static strings); returns how many there were. */
uint64_t cpugpu_emu_take_launch_log(const char** out, uint64_t cap);

/* "address", "thread" or NULL: the sanitizer the emulated GPU was built with. */
const char* cpugpu_emu_sanitizer(void);

/* The configuration in effect, as one line of text (static storage). */
const char* cpugpu_emu_describe(void);

#ifdef __cplusplus
}
#endif

#endif /* CPUGPU_EMU_DRIVER_H */
