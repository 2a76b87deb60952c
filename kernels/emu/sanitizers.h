// The emulated GPU's hooks into AddressSanitizer and ThreadSanitizer: no-ops in a plain build.
#ifndef CPUGPU_EMU_SANITIZERS_H
#define CPUGPU_EMU_SANITIZERS_H

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define CPUGPU_EMU_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define CPUGPU_EMU_ASAN 0
#endif

// CPUGPU_EMU_TSAN_HOOKS: the block executor and the fibers, built without ThreadSanitizer's
// instrumentation but linked with its runtime (build.rs), still make its fiber and
// happens-before calls.
#if defined(__SANITIZE_THREAD__) || defined(CPUGPU_EMU_TSAN_HOOKS)
#define CPUGPU_EMU_TSAN 1
#include <sanitizer/tsan_interface.h>
#else
#define CPUGPU_EMU_TSAN 0
#endif

// Functions that read or write the executor's bookkeeping for the running fiber: the scheduler
// rewrites that state between fibers with no happens-before edge a sanitizer could see (the
// fibers take turns on one OS thread). Under ThreadSanitizer the whole executor is built without
// instrumentation (build.rs); the attribute keeps these functions out of line.
#define CPUGPU_EMU_NOSAN __attribute__((noinline, no_sanitize_thread))

namespace cuda_emu {

// Happens-before edges for ThreadSanitizer: a release on `addr` by one thread (fiber) and a
// later acquire on it by another.
inline void tsan_release(void* addr) {
#if CPUGPU_EMU_TSAN
    __tsan_release(addr);
#else
    (void)addr;
#endif
}
inline void tsan_acquire(void* addr) {
#if CPUGPU_EMU_TSAN
    __tsan_acquire(addr);
#else
    (void)addr;
#endif
}

// AddressSanitizer poisoning: any instrumented access to a poisoned byte is reported.
inline void asan_poison(const void* p, std::size_t n) {
#if CPUGPU_EMU_ASAN
    __asan_poison_memory_region(p, n);
#else
    (void)p;
    (void)n;
#endif
}
inline void asan_unpoison(const void* p, std::size_t n) {
#if CPUGPU_EMU_ASAN
    __asan_unpoison_memory_region(p, n);
#else
    (void)p;
    (void)n;
#endif
}

}  // namespace cuda_emu

#endif  // CPUGPU_EMU_SANITIZERS_H
