// Fibers for the emulated GPU (see fiber.h).
#include "fiber.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "sanitizers.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace cuda_emu {
namespace {

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "cuda_emu: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

std::size_t page_size() {
    static const std::size_t p = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return p;
}

}  // namespace
}  // namespace cuda_emu

#if defined(__x86_64__)
// cpugpu_emu_fiber_swap(void** save_sp, void* new_sp): pushes the System V callee-saved registers,
// the x87 control word and MXCSR on the current stack, stores the stack pointer in *save_sp,
// loads new_sp and pops the same layout from it. A new fiber's stack is laid out by Fiber::Fiber
// so that the final `ret` enters cpugpu_emu_fiber_start with r12 = argument, r13 = function.
extern "C" void cpugpu_emu_fiber_swap(void** save_sp, void* new_sp);
extern "C" void cpugpu_emu_fiber_start();
asm(R"(
    .text
    .p2align 4
    .globl cpugpu_emu_fiber_swap
    .hidden cpugpu_emu_fiber_swap
    .type cpugpu_emu_fiber_swap, @function
cpugpu_emu_fiber_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr 8(%rsp)
    fnstcw (%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    fldcw (%rsp)
    ldmxcsr 8(%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cpugpu_emu_fiber_swap, .-cpugpu_emu_fiber_swap

    .p2align 4
    .globl cpugpu_emu_fiber_start
    .hidden cpugpu_emu_fiber_start
    .type cpugpu_emu_fiber_start, @function
cpugpu_emu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size cpugpu_emu_fiber_start, .-cpugpu_emu_fiber_start
)");
#endif

namespace cuda_emu {

Fiber::Fiber() {
    // The OS thread's own stack: its bounds, for AddressSanitizer's switch bookkeeping.
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void* addr = nullptr;
        std::size_t size = 0;
        pthread_attr_getstack(&attr, &addr, &size);
        pthread_attr_destroy(&attr);
        stack_bottom_ = addr;
        stack_size_ = size;
    }
#if CPUGPU_EMU_TSAN
    tsan_ = __tsan_get_current_fiber();
#endif
#if !defined(__x86_64__)
    sp_ = new ucontext_t();
#endif
}

Fiber* Fiber::this_thread() {
    // Deliberately never freed: a thread's context outlives every fiber switched from it.
    thread_local Fiber* self = new Fiber();
    return self;
}

Fiber::Fiber(void (*entry)(void*), void* arg, std::size_t stack_bytes, const char* name)
    : entry_(entry), arg_(arg) {
    const std::size_t page = page_size();
    const std::size_t usable = (stack_bytes + page - 1) / page * page;
    mapping_bytes_ = usable + page;  // one guard page below the stack: an overflow faults
    void* m = mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) die("mmap of a fiber stack failed");
    if (mprotect(m, page, PROT_NONE) != 0) die("mprotect of a fiber stack's guard page failed");
    mapping_ = m;
    stack_bottom_ = static_cast<char*>(m) + page;
    stack_size_ = usable;
#if CPUGPU_EMU_TSAN
    tsan_ = __tsan_create_fiber(0);
    __tsan_set_fiber_name(tsan_, name);
    owns_tsan_ = true;
#else
    (void)name;
#endif
#if defined(__x86_64__)
    // Initial frame, read by cpugpu_emu_fiber_swap's pops: [x87 cw, MXCSR] r15 r14 r13 r12 rbx rbp
    // return address. The return address slot sits at 8 mod 16, so that after `ret` the stack is
    // 16-byte aligned at the `call` in cpugpu_emu_fiber_start, as the ABI requires.
    auto top = reinterpret_cast<std::uintptr_t>(stack_bottom_) + usable;
    top &= ~static_cast<std::uintptr_t>(15);
    auto* frame = reinterpret_cast<std::uint64_t*>(top - 72);
    frame[0] = 0x037F;  // x87 control word (default)
    frame[1] = 0x1F80;  // MXCSR (default)
    frame[2] = 0;       // r15
    frame[3] = 0;       // r14
    frame[4] = reinterpret_cast<std::uint64_t>(&Fiber::start);  // r13: the function
    frame[5] = reinterpret_cast<std::uint64_t>(this);           // r12: its argument
    frame[6] = 0;                                               // rbx
    frame[7] = 0;                                               // rbp
    frame[8] = reinterpret_cast<std::uint64_t>(&cpugpu_emu_fiber_start);
    sp_ = frame;
#else
    auto* uc = new ucontext_t();
    if (getcontext(uc) != 0) die("getcontext failed");
    uc->uc_stack.ss_sp = const_cast<void*>(stack_bottom_);
    uc->uc_stack.ss_size = usable;
    uc->uc_link = nullptr;
    makecontext(uc, reinterpret_cast<void (*)()>(&Fiber::start), 1, this);
    sp_ = uc;
#endif
}

Fiber::~Fiber() {
#if CPUGPU_EMU_TSAN
    if (owns_tsan_) __tsan_destroy_fiber(tsan_);
#endif
    if (mapping_ != nullptr) munmap(mapping_, mapping_bytes_);
#if !defined(__x86_64__)
    delete static_cast<ucontext_t*>(sp_);
#endif
}

void Fiber::start(void* self) {
#if CPUGPU_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    auto* f = static_cast<Fiber*>(self);
    f->entry_(f->arg_);
    die("a fiber's entry function returned");
}

void Fiber::switch_to(Fiber& from, Fiber& to, bool sync) {
#if CPUGPU_EMU_ASAN
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, to.stack_bottom_, to.stack_size_);
#endif
#if CPUGPU_EMU_TSAN
    __tsan_switch_to_fiber(to.tsan_, sync ? 0 : __tsan_switch_to_fiber_no_sync);
#else
    (void)sync;
#endif
#if defined(__x86_64__)
    cpugpu_emu_fiber_swap(&from.sp_, to.sp_);
#else
    if (swapcontext(static_cast<ucontext_t*>(from.sp_), static_cast<ucontext_t*>(to.sp_)) != 0) die("swapcontext failed");
#endif
#if CPUGPU_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
}

}  // namespace cuda_emu
