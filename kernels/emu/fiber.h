// Fibers for the emulated GPU: one per CUDA thread of a running block, switched in user space.
//
// x86-64 switches with a few instructions of assembly (callee-saved registers, MXCSR and the x87
// control word); other targets use ucontext. Both tell AddressSanitizer and ThreadSanitizer about
// every switch (their fiber interfaces), so stacks and happens-before stay right under either.
#ifndef CPUGPU_EMU_FIBER_H
#define CPUGPU_EMU_FIBER_H

#include <cstddef>

namespace cuda_emu {

class Fiber {
public:
    // A fiber that runs `entry(arg)` on a stack of its own the first time it is switched to.
    // `entry` must never return. `name` shows up in sanitizer reports.
    Fiber(void (*entry)(void*), void* arg, std::size_t stack_bytes, const char* name);
    ~Fiber();
    Fiber(const Fiber&) = delete;
    Fiber& operator=(const Fiber&) = delete;

    // The calling OS thread's own context (its stack), made once per thread.
    static Fiber* this_thread();

    // Saves the running context into `from` and resumes `to`. With `sync`, everything `from` did
    // so far happens-before what `to` does next (for ThreadSanitizer); without it the two are
    // unordered, as two CUDA threads of a block are between barriers.
    static void switch_to(Fiber& from, Fiber& to, bool sync);

private:
    Fiber();  // this_thread()
    static void start(void* self);

    void* sp_ = nullptr;            // saved stack pointer (x86-64) or ucontext_t*
    void* mapping_ = nullptr;       // the stack mapping, guard page included
    std::size_t mapping_bytes_ = 0;
    const void* stack_bottom_ = nullptr;  // lowest usable address (for AddressSanitizer)
    std::size_t stack_size_ = 0;
    void* tsan_ = nullptr;          // ThreadSanitizer's fiber handle
    void (*entry_)(void*) = nullptr;
    void* arg_ = nullptr;
    bool owns_tsan_ = false;
};

}  // namespace cuda_emu

#endif  // CPUGPU_EMU_FIBER_H
