// The emulated GPU's block executor: runs a kernel launch's blocks, a few at a time, each block's
// threads as fibers (see cuda_emu.h for the model). Used by the emulated driver's stream workers.
#ifndef CPUGPU_EMU_EXECUTOR_H
#define CPUGPU_EMU_EXECUTOR_H

#include <cstdint>

#include "cuda_emu.h"

namespace cuda_emu {

// The order in which a launch's blocks are started, and a block's runnable threads resumed.
enum class Order : int { Forward = 0, Reverse = 1, Shuffle = 2 };

struct ExecutorConfig {
    unsigned blocks_in_flight = 2;  // OS threads running blocks (1..=8)
    Order order = Order::Shuffle;
    std::uint64_t seed = 1;
};

// Sets the executor's configuration; takes effect for launches that start afterwards (the
// number of OS threads only grows).
void configure_executor(const ExecutorConfig& config);

struct LaunchSpec {
    const char* name;                  // the kernel's name, for diagnostics
    void (*run)(const void* params);   // runs one thread of the kernel
    const void* params;                // the launch's copy of the parameters
    dim3 grid;
    dim3 block;
    unsigned dynamic_shared;           // bytes
};

// Runs every block of `spec` and returns when all have finished (called from a stream's worker).
// A kernel bug the emulator can see (a divergent barrier, a deadlock, a partial-warp collective,
// more than 48 KiB of static shared memory) aborts the process with a message naming the kernel,
// the block and the threads involved.
void execute_launch(const LaunchSpec& spec);

// The largest dynamic shared memory a launch may ask for (the opt-in maximum).
constexpr unsigned kMaxDynamicShared = 227 * 1024;
// Static shared memory per block (CPUGPU_SHARED sites together).
constexpr unsigned kMaxStaticShared = 48 * 1024;

}  // namespace cuda_emu

#endif  // CPUGPU_EMU_EXECUTOR_H
