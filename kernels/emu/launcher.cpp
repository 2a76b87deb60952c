// The emulator's launcher: the kernel table (from kernel_list.h) and the C ABI entry point Rust
// calls, `cpugpu_emu_launch(kernel, grid, block, shared_bytes, params)`.
//
// Threads: a pool of worker threads, grown to the largest block size seen and reused across
// launches (spawning 256 threads per launch would dominate the test suite). Worker i plays
// thread i of every block of a launch; blocks run one after another, separated by block-wide
// barriers. Launches are serialised by a process-wide mutex (one "stream"), which is also what
// makes `__shared__` function-local statics safe.
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cuda_emu.h"
#include "../cpugpu_abi.h"

#define CPUGPU_KERNEL(name, params) extern "C" void name(const params);
#define CPUGPU_TEST_KERNEL(name, params) CPUGPU_KERNEL(name, params)
#include "../kernel_list.h"
#undef CPUGPU_KERNEL
#undef CPUGPU_TEST_KERNEL

namespace {

using Trampoline = void (*)(const void*);

struct KernelEntry {
    const char* name;
    Trampoline run;
};

// Each entry copies the parameter struct (as a real launch does) and calls the kernel.
#define CPUGPU_KERNEL(name, params) {#name, [](const void* p) { name(*static_cast<const params*>(p)); }},
#define CPUGPU_TEST_KERNEL(name, params) CPUGPU_KERNEL(name, params)
const KernelEntry kKernels[] = {
#include "../kernel_list.h"
};
#undef CPUGPU_KERNEL
#undef CPUGPU_TEST_KERNEL

constexpr unsigned kKernelCount = sizeof(kKernels) / sizeof(kKernels[0]);
constexpr unsigned kMaxBlock = 1024;
constexpr unsigned kMaxShared = 227 * 1024;  // sm_90's largest opt-in shared memory per block

struct Job {
    Trampoline run = nullptr;
    const void* params = nullptr;
    unsigned grid = 0;
    unsigned block = 0;
    unsigned shared = 0;
};

class Pool {
public:
    ~Pool() {
        {
            std::lock_guard<std::mutex> g(mutex_);
            stop_ = true;
        }
        work_.notify_all();
        for (auto& t : workers_) t.join();
    }

    void launch(const Job& job) {
        std::lock_guard<std::mutex> serial(launch_mutex_);
        // Per-launch block state: barriers sized to the block, one warp state per 32 threads.
        std::vector<int> predicates(job.block, 0);
        std::vector<int> kinds(job.block, 0);
        cuda_emu::BlockState block;
        std::barrier<cuda_emu::BlockCompletion> block_barrier(job.block, cuda_emu::BlockCompletion{&block});
        const unsigned warps = (job.block + 31) / 32;
        std::vector<cuda_emu::WarpState> warp_states(warps);
        std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
        for (unsigned w = 0; w < warps; ++w) {
            const unsigned lanes = std::min(32u, job.block - w * 32);
            warp_barriers.push_back(std::make_unique<std::barrier<>>(lanes));
            warp_states[w].barrier = warp_barriers.back().get();
            warp_states[w].lanes = lanes;
        }
        // Exactly shared_bytes, so AddressSanitizer sees an overrun of dynamic shared memory.
        std::unique_ptr<unsigned char[]> dynamic_shared(job.shared ? new unsigned char[job.shared] : nullptr);
        block.barrier = &block_barrier;
        block.predicates = predicates.data();
        block.kinds = kinds.data();
        block.threads = job.block;
        block.warps = warp_states.data();
        block.dynamic_shared = dynamic_shared.get();

        std::unique_lock<std::mutex> lock(mutex_);
        while (workers_.size() < job.block) {
            const unsigned id = static_cast<unsigned>(workers_.size());
            workers_.emplace_back([this, id] { worker(id); });
        }
        job_ = job;
        state_ = &block;
        finished_ = 0;
        ++generation_;
        work_.notify_all();
        done_.wait(lock, [&] { return finished_ == job.block; });
        state_ = nullptr;
    }

private:
    void worker(unsigned id) {
        unsigned long long seen = 0;
        for (;;) {
            Job job;
            cuda_emu::BlockState* block = nullptr;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                work_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                job = job_;
                block = state_;
            }
            if (id >= job.block) continue;
            run_thread(id, job, block);
            std::lock_guard<std::mutex> g(mutex_);
            if (++finished_ == job.block) done_.notify_all();
        }
    }

    static void run_thread(unsigned id, const Job& job, cuda_emu::BlockState* block) {
        cuda_emu::tls_block = block;
        cuda_emu::tls_linear = id;
        cuda_emu::tls_warp_calls = 0;
        threadIdx = uint3{id, 0, 0};
        blockDim = dim3{job.block, 1, 1};
        gridDim = dim3{job.grid, 1, 1};
        for (unsigned b = 0; b < job.grid; ++b) {
            blockIdx = uint3{b, 0, 0};
            // Fresh garbage in dynamic shared memory for every block, like a real SM.
            if (id == 0 && job.shared) std::memset(block->dynamic_shared, 0xA5, job.shared);
            cuda_emu::block_sync(0, cuda_emu::kBlockStart);
            job.run(job.params);
            // Block end: the next block starts after every thread has left this one.
            cuda_emu::block_sync(0, cuda_emu::kBlockEnd);
        }
        cuda_emu::tls_block = nullptr;
    }

    std::mutex launch_mutex_;
    std::mutex mutex_;
    std::condition_variable work_;
    std::condition_variable done_;
    std::vector<std::thread> workers_;
    Job job_;
    cuda_emu::BlockState* state_ = nullptr;
    unsigned long long generation_ = 0;
    unsigned finished_ = 0;
    bool stop_ = false;
};

Pool& pool() {
    static Pool p;
    return p;
}

}  // namespace

extern "C" {

// Runs kernel `kernel` (its index in kernel_list.h) on a grid x block launch with shared_bytes
// of dynamic shared memory; `params` points at the kernel's parameter struct. Returns 0 on
// success, 1 for an unknown kernel, 2 for a launch configuration CUDA would refuse.
int cpugpu_emu_launch(uint32_t kernel, uint32_t grid, uint32_t block, uint32_t shared_bytes, const void* params) {
    if (kernel >= kKernelCount) return 1;
    if (grid == 0 || block == 0 || block > kMaxBlock || shared_bytes > kMaxShared || params == nullptr) return 2;
    pool().launch(Job{kKernels[kernel].run, params, grid, block, shared_bytes});
    return 0;
}

uint32_t cpugpu_emu_kernel_count(void) { return kKernelCount; }

// The name of kernel `kernel`, or null.
const char* cpugpu_emu_kernel_name(uint32_t kernel) {
    return kernel < kKernelCount ? kKernels[kernel].name : nullptr;
}

}  // extern "C"
