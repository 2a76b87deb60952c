// The emulated CUDA driver: the driver API entry points cpugpu calls (src/cuda/driver.rs),
// implemented on the CPU with the semantics of the real driver that the crate relies on, so that
// the crate's CUDA backend runs unchanged in every test run. Exported as `cpugpu_emu_<name>`.
//
// What it models (docs/EMULATOR.md has the full list, and what it does not model):
// - devices with real-looking attributes (an sm_90 part named as emulated), cuInit, primary
//   contexts and the per-thread current context;
// - device memory (synchronous, stream-ordered, and from memory pools), page-locked host memory
//   (one address on both sides: unified addressing), memsets and copies in every direction;
// - streams as in-order queues, each run by a worker thread of its own (so asynchronous work is
//   asynchronous), the legacy default stream's implicit synchronisation, events (record, query,
//   synchronize, elapsed time, stream waits);
// - a stream-ordered free takes effect when it executes: the memory is poisoned (freed under a
//   sanitizer, so a later access is a heap-use-after-free report; 0xDD bytes and a quarantine
//   before reuse otherwise); copies check their ranges when issued (CUDA_ERROR_INVALID_VALUE)
//   and again when they execute (a freed range is CUDA_ERROR_ILLEGAL_ADDRESS, sticky for the
//   context, as a GPU fault is);
// - modules (the crate's emulated image, build.rs) and launches through the block executor,
//   refusing what CUDA refuses (block over 1,024 threads or the kernel's launch bounds, grid
//   limits, dynamic shared memory over 48 KiB without the opt-in attribute);
// - real CUresult codes for misuse: bad or destroyed handles, no or another current context,
//   freed or foreign pointers, launches too large.
// Test knobs (driver.h): seeded random delays before every stream operation, the Nth call of a
// kind failing with a chosen code, per-tag resource counts and a per-thread launch log.
#include "driver.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../cpugpu_abi.h"
#include "cuda_emu.h"
#include "executor.h"
#include "sanitizers.h"

// ---- the kernel table, from the one kernel list ----
#define CPUGPU_KERNEL(name, params, max_threads, min_blocks) extern "C" void name(const params);
#define CPUGPU_TEST_KERNEL(name, params, max_threads, min_blocks) CPUGPU_KERNEL(name, params, max_threads, min_blocks)
#include "../kernel_list.h"
#undef CPUGPU_KERNEL
#undef CPUGPU_TEST_KERNEL

namespace {

struct KernelEntry {
    const char* name;
    void (*run)(const void*);
    unsigned param_bytes;
    unsigned max_threads;  // the kernel's launch bounds (1,024 when it has none)
};

#define CPUGPU_KERNEL(name, params, max_threads, min_blocks) \
    {#name, [](const void* p) { name(*static_cast<const params*>(p)); }, sizeof(params), max_threads},
#define CPUGPU_TEST_KERNEL(name, params, max_threads, min_blocks) CPUGPU_KERNEL(name, params, max_threads, min_blocks)
const KernelEntry kKernels[] = {
#include "../kernel_list.h"
};
#undef CPUGPU_KERNEL
#undef CPUGPU_TEST_KERNEL

// ---- CUDA's types and constants, as cuda.h declares them ----
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;

constexpr CUresult SUCCESS = 0;
constexpr CUresult INVALID_VALUE = 1;
constexpr CUresult OUT_OF_MEMORY = 2;
constexpr CUresult NOT_INITIALIZED = 3;
constexpr CUresult NO_DEVICE = 100;
constexpr CUresult INVALID_DEVICE = 101;
constexpr CUresult INVALID_IMAGE = 200;
constexpr CUresult INVALID_CONTEXT = 201;
constexpr CUresult INVALID_HANDLE = 400;
constexpr CUresult NOT_FOUND = 500;
constexpr CUresult NOT_READY = 600;
constexpr CUresult ILLEGAL_ADDRESS = 700;
constexpr CUresult LAUNCH_OUT_OF_RESOURCES = 701;
constexpr CUresult NOT_SUPPORTED = 801;

struct ErrorName {
    CUresult code;
    const char* name;
};
const ErrorName kErrorNames[] = {
    {0, "CUDA_SUCCESS"},
    {1, "CUDA_ERROR_INVALID_VALUE"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY"},
    {3, "CUDA_ERROR_NOT_INITIALIZED"},
    {4, "CUDA_ERROR_DEINITIALIZED"},
    {34, "CUDA_ERROR_STUB_LIBRARY"},
    {35, "CUDA_ERROR_INSUFFICIENT_DRIVER"},
    {36, "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER"},
    {46, "CUDA_ERROR_DEVICE_UNAVAILABLE"},
    {100, "CUDA_ERROR_NO_DEVICE"},
    {101, "CUDA_ERROR_INVALID_DEVICE"},
    {200, "CUDA_ERROR_INVALID_IMAGE"},
    {201, "CUDA_ERROR_INVALID_CONTEXT"},
    {209, "CUDA_ERROR_NO_BINARY_FOR_GPU"},
    {218, "CUDA_ERROR_INVALID_PTX"},
    {226, "CUDA_ERROR_CONTAINED"},
    {400, "CUDA_ERROR_INVALID_HANDLE"},
    {401, "CUDA_ERROR_ILLEGAL_STATE"},
    {500, "CUDA_ERROR_NOT_FOUND"},
    {600, "CUDA_ERROR_NOT_READY"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"},
    {702, "CUDA_ERROR_LAUNCH_TIMEOUT"},
    {709, "CUDA_ERROR_CONTEXT_IS_DESTROYED"},
    {710, "CUDA_ERROR_ASSERT"},
    {716, "CUDA_ERROR_MISALIGNED_ADDRESS"},
    {719, "CUDA_ERROR_LAUNCH_FAILED"},
    {800, "CUDA_ERROR_NOT_PERMITTED"},
    {801, "CUDA_ERROR_NOT_SUPPORTED"},
    {999, "CUDA_ERROR_UNKNOWN"},
};

constexpr unsigned STREAM_NON_BLOCKING = 1;
constexpr unsigned EVENT_BLOCKING_SYNC = 1;
constexpr unsigned EVENT_DISABLE_TIMING = 2;
constexpr unsigned EVENT_INTERPROCESS = 4;
constexpr unsigned MEMHOSTALLOC_ALL = 1 | 2 | 4;

constexpr int FUNC_ATTR_MAX_THREADS_PER_BLOCK = 0;
constexpr int FUNC_ATTR_SHARED_SIZE_BYTES = 1;
constexpr int FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

constexpr int MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES = 1;
constexpr int MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES = 3;
constexpr int MEMPOOL_ATTR_RELEASE_THRESHOLD = 4;
constexpr int MEMPOOL_ATTR_RESERVED_MEM_CURRENT = 5;
constexpr int MEMPOOL_ATTR_RESERVED_MEM_HIGH = 6;
constexpr int MEMPOOL_ATTR_USED_MEM_CURRENT = 7;
constexpr int MEMPOOL_ATTR_USED_MEM_HIGH = 8;

// cuda.h's CUmemPoolProps (88 bytes).
struct MemPoolProps {
    int alloc_type;     // CU_MEM_ALLOCATION_TYPE_PINNED = 1
    int handle_types;   // CU_MEM_HANDLE_TYPE_NONE = 0
    int location_type;  // CU_MEM_LOCATION_TYPE_DEVICE = 1
    int location_id;
    void* win32_security_attributes;
    std::size_t max_size;
    unsigned short usage;
    unsigned char reserved[54];
};
static_assert(sizeof(MemPoolProps) == 88, "CUmemPoolProps layout");

// The emulated device: an sm_90 part (Hopper), 132 SMs, the limits of an H100.
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxGridX = 2147483647u;
constexpr unsigned kMaxGridYZ = 65535;
constexpr unsigned kDefaultDynamicShared = 48 * 1024;
constexpr std::size_t kDeviceAlign = 256;  // cudaMalloc's guaranteed alignment
constexpr const char* kDeviceName = "cpugpu emulated GPU (CPU threads, not a real device)";

int device_attribute(int attr, bool* known) {
    *known = true;
    switch (attr) {
        case 1: return 1024;         // MAX_THREADS_PER_BLOCK
        case 2: return 1024;         // MAX_BLOCK_DIM_X
        case 3: return 1024;         // MAX_BLOCK_DIM_Y
        case 4: return 64;           // MAX_BLOCK_DIM_Z
        case 5: return 2147483647;   // MAX_GRID_DIM_X
        case 6: return 65535;        // MAX_GRID_DIM_Y
        case 7: return 65535;        // MAX_GRID_DIM_Z
        case 8: return 48 * 1024;    // MAX_SHARED_MEMORY_PER_BLOCK
        case 9: return 65536;        // TOTAL_CONSTANT_MEMORY
        case 10: return 32;          // WARP_SIZE
        case 12: return 65536;       // MAX_REGISTERS_PER_BLOCK
        case 13: return 1980000;     // CLOCK_RATE (kHz)
        case 16: return 132;         // MULTIPROCESSOR_COUNT
        case 18: return 0;           // INTEGRATED
        case 19: return 1;           // CAN_MAP_HOST_MEMORY
        case 31: return 1;           // CONCURRENT_KERNELS
        case 38: return 50 * 1024 * 1024;  // L2_CACHE_SIZE
        case 39: return 2048;        // MAX_THREADS_PER_MULTIPROCESSOR
        case 40: return 2;           // ASYNC_ENGINE_COUNT
        case 41: return 1;           // UNIFIED_ADDRESSING
        case 75: return 9;           // COMPUTE_CAPABILITY_MAJOR
        case 76: return 0;           // COMPUTE_CAPABILITY_MINOR
        case 81: return 228 * 1024;  // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        case 97: return static_cast<int>(cuda_emu::kMaxDynamicShared);  // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        case 115: return 1;          // MEMORY_POOLS_SUPPORTED
        default: *known = false; return 0;
    }
}

// ---- objects ----
struct Context;
struct Stream;

struct Pool {
    int device = 0;
    bool is_default = false;
    std::uint64_t release_threshold = 0;
    std::uint64_t used = 0, used_high = 0, reserved = 0, reserved_high = 0;
    std::multimap<std::size_t, void*> reusable;  // freed blocks past their quarantine, by size
    std::deque<std::pair<void*, std::size_t>> quarantine;
    std::size_t quarantined = 0;
};

enum class AllocKind { Device, Host };

struct Alloc {
    CUdeviceptr base = 0;
    std::size_t bytes = 0;
    AllocKind kind = AllocKind::Device;
    Pool* pool = nullptr;        // stream-ordered allocations
    bool free_pending = false;   // a cuMemFreeAsync is queued
    std::uint64_t tag = 0;
};

// One cuEventRecord: done once its stream has run it. A query, a synchronisation or a stream
// wait concerns the record current when it is called, not any later one.
struct Record {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    std::chrono::steady_clock::time_point time{};
};

struct Event {
    Context* ctx = nullptr;
    unsigned flags = 0;
    std::uint64_t tag = 0;
    std::mutex m;
    std::shared_ptr<Record> latest;  // null: never recorded
};


struct Op {
    const char* what;
    std::function<void()> run;
};

struct Stream {
    Context* ctx = nullptr;
    unsigned flags = 0;
    bool legacy = false;
    std::uint64_t id = 0;
    std::uint64_t tag = 0;
    std::mutex m;
    std::condition_variable cv;
    std::deque<Op> queue;
    std::uint64_t enqueued = 0;
    std::uint64_t completed = 0;
    bool closing = false;
    std::mt19937_64 rng;
};

struct Context {
    int device = 0;
    std::atomic<int> sticky{0};  // a fault makes the context unusable, as on a GPU
    std::shared_ptr<Stream> legacy;
    std::vector<std::weak_ptr<Stream>> streams;  // blocking ones, for the legacy stream's sync
    std::vector<std::weak_ptr<Stream>> all_streams;
    int retains = 0;
};

// Waits for `r` to be done, or for `ctx` to have faulted (after which the record may never run).
CUresult wait_record(Context* ctx, Record& r) {
    std::unique_lock<std::mutex> lock(r.m);
    while (!r.done) {
        if (CUresult e = ctx->sticky.load()) return e;
        r.cv.wait_for(lock, std::chrono::milliseconds(10));
    }
    return SUCCESS;
}

std::shared_ptr<Record> latest_record(Event& e) {
    std::lock_guard<std::mutex> g(e.m);
    return e.latest;
}

struct Function;
struct Module {
    Context* ctx = nullptr;
    std::vector<std::unique_ptr<Function>> functions;
};

struct Function {
    const KernelEntry* kernel = nullptr;
    Module* module = nullptr;
    int max_dynamic_shared = kDefaultDynamicShared;
};

struct TagStats {
    std::uint64_t device_allocs = 0, device_bytes = 0, host_allocs = 0, host_bytes = 0, streams = 0, events = 0,
                  launches = 0;
};

// ---- the driver's state ----
struct Driver {
    std::mutex m;  // guards everything below but the streams' and events' own state
    bool initialized = false;
    int devices = 1;
    std::atomic<std::uint32_t> delay_us{0};
    std::uint64_t seed = 1;
    std::vector<std::unique_ptr<Context>> contexts;  // the primary context of each device
    std::vector<std::unique_ptr<Pool>> default_pools;
    std::unordered_map<void*, std::shared_ptr<Stream>> streams;
    std::unordered_map<void*, std::shared_ptr<Event>> events;
    std::unordered_map<void*, std::unique_ptr<Module>> modules;
    std::unordered_map<void*, Function*> functions;
    std::unordered_map<void*, std::unique_ptr<Pool>> pools;
    std::map<CUdeviceptr, Alloc> allocs;
    std::unordered_map<std::uint64_t, TagStats> tags;
    std::uint64_t next_stream_id = 0;
    std::string description;
};

Driver& drv() {
    static Driver* d = new Driver();  // never destroyed: stream workers may run until exit
    return *d;
}

thread_local Context* tls_ctx = nullptr;
thread_local std::uint64_t tls_tag = 0;
thread_local std::vector<const char*> tls_launch_log;
struct Fault {
    std::uint64_t countdown = 0;
    CUresult code = 0;
};
thread_local Fault tls_faults[CPUGPU_EMU_FAULT_KINDS];

// The injected failure for this call of `kind`, or SUCCESS.
CUresult injected(int kind) {
    Fault& f = tls_faults[kind];
    if (f.countdown == 0) return SUCCESS;
    if (--f.countdown == 0) return f.code;
    return SUCCESS;
}

void report(const char* fmt, const char* a, unsigned long long b) {
    std::fprintf(stderr, fmt, a, b);
    std::fflush(stderr);
}

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == 0) return fallback;
    char* end = nullptr;
    const unsigned long long x = std::strtoull(v, &end, 0);
    if (end == v || *end != 0) {
        std::fprintf(stderr, "cuda_emu: %s=%s is not a number; using %llu\n", name, v,
                     static_cast<unsigned long long>(fallback));
        return fallback;
    }
    return x;
}

// ---- memory ----
// Fresh memory with garbage in it (0xCB): a read of memory nobody wrote shows up as wrong data.
void* fresh_memory(std::size_t bytes, std::size_t align) {
    void* p = nullptr;
    if (posix_memalign(&p, align, bytes == 0 ? 1 : bytes) != 0) return nullptr;
    std::memset(p, 0xCB, bytes);
    return p;
}

constexpr bool kSanitized = CPUGPU_EMU_ASAN || CPUGPU_EMU_TSAN;
constexpr std::size_t kQuarantineBytes = 64u << 20;

// Releases a device block whose (stream-ordered or synchronous) free has executed.
// Under a sanitizer: free() now, so AddressSanitizer reports any later access as a
// heap-use-after-free with this free's stack, and ThreadSanitizer a free racing an access on
// another stream. Otherwise: 0xDD bytes, then a quarantine before the pool may reuse the block.
void release_device_block(Driver& d, Pool* pool, void* p, std::size_t bytes) {
    if (kSanitized || pool == nullptr) {
        std::free(p);
        return;
    }
    std::memset(p, 0xDD, bytes);
    pool->quarantine.emplace_back(p, bytes);
    pool->quarantined += bytes;
    while (pool->quarantined > kQuarantineBytes) {
        auto [q, n] = pool->quarantine.front();
        pool->quarantine.pop_front();
        pool->quarantined -= n;
        if (pool->reserved - pool->used > std::max<std::uint64_t>(pool->release_threshold, kQuarantineBytes)) {
            pool->reserved -= n;
            std::free(q);
        } else {
            pool->reusable.emplace(n, q);
        }
    }
    (void)d;
}

// The live allocation holding [p, p + n), or null.
Alloc* find_alloc(Driver& d, CUdeviceptr p, std::size_t n) {
    auto it = d.allocs.upper_bound(p);
    if (it == d.allocs.begin()) return nullptr;
    --it;
    Alloc& a = it->second;
    if (p < a.base || p - a.base > a.bytes || n > a.bytes - (p - a.base)) return nullptr;
    return &a;
}

// ---- streams ----
void stream_main(std::shared_ptr<Stream> s) {
    char name[16];
    std::snprintf(name, sizeof name, "cuda_emu s%llu", static_cast<unsigned long long>(s->id));
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        Op op;
        {
            std::unique_lock<std::mutex> lock(s->m);
            s->cv.wait(lock, [&] { return !s->queue.empty() || s->closing; });
            if (s->queue.empty()) return;  // closing and drained
            op = std::move(s->queue.front());
            s->queue.pop_front();
        }
        const std::uint32_t delay = drv().delay_us.load(std::memory_order_relaxed);
        if (delay > 0) {
            std::uint64_t us;
            {
                std::lock_guard<std::mutex> g(s->m);
                us = s->rng() % (static_cast<std::uint64_t>(delay) + 1);
            }
            std::this_thread::sleep_for(std::chrono::microseconds(us));
        }
        // After a fault the context is unusable: later work is dropped, as on a GPU.
        if (s->ctx->sticky.load() == SUCCESS) op.run();
        {
            std::lock_guard<std::mutex> g(s->m);
            ++s->completed;
        }
        s->cv.notify_all();
    }
}

std::shared_ptr<Stream> make_stream(Driver& d, Context* ctx, unsigned flags, bool legacy) {
    auto s = std::make_shared<Stream>();
    s->ctx = ctx;
    s->flags = flags;
    s->legacy = legacy;
    s->id = d.next_stream_id++;
    s->tag = tls_tag;
    s->rng.seed(d.seed * 0x9E3779B97F4A7C15ull + s->id);
    std::thread(stream_main, s).detach();
    return s;
}

// Appends `op` to `s` (the caller holds the driver lock). The legacy default stream waits for the
// blocking streams' earlier work and they for its, as CUDA's implicit synchronisation has it.
// Returns the op's position: the stream has run it once `completed` reaches that number.
std::uint64_t enqueue(Stream& s, Op op) {
    std::vector<Op> before;
    auto wait_for = [&before](const std::shared_ptr<Stream>& other) {
        std::uint64_t upto;
        {
            std::lock_guard<std::mutex> g(other->m);
            upto = other->enqueued;
            if (other->completed >= upto) return;
        }
        before.push_back(Op{"implicit synchronisation with the legacy stream", [other, upto] {
                                std::unique_lock<std::mutex> lock(other->m);
                                other->cv.wait(lock, [&] { return other->completed >= upto; });
                            }});
    };
    if (s.legacy) {
        for (auto& w : s.ctx->streams)
            if (auto other = w.lock()) wait_for(other);
    } else if ((s.flags & STREAM_NON_BLOCKING) == 0) {
        wait_for(s.ctx->legacy);
    }
    std::uint64_t pos;
    {
        std::lock_guard<std::mutex> g(s.m);
        for (auto& b : before) {
            s.queue.push_back(std::move(b));
            ++s.enqueued;
        }
        s.queue.push_back(std::move(op));
        pos = ++s.enqueued;
    }
    s.cv.notify_all();
    return pos;
}

void wait_until(Stream& s, std::uint64_t pos) {
    std::unique_lock<std::mutex> lock(s.m);
    s.cv.wait(lock, [&] { return s.completed >= pos; });
}

std::uint64_t tail(Stream& s) {
    std::lock_guard<std::mutex> g(s.m);
    return s.enqueued;
}

// ---- argument checks (the caller holds the driver lock) ----
CUresult need_init(Driver& d) { return d.initialized ? SUCCESS : NOT_INITIALIZED; }

CUresult current_context(Driver& d, Context** out) {
    if (CUresult r = need_init(d)) return r;
    if (tls_ctx == nullptr) return INVALID_CONTEXT;
    if (CUresult r = tls_ctx->sticky.load()) return r;
    *out = tls_ctx;
    return SUCCESS;
}

// The stream a handle names, in the current context (0, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD
// all name the context's legacy default stream here).
CUresult resolve_stream(Driver& d, void* h, Context* ctx, std::shared_ptr<Stream>* out) {
    const auto v = reinterpret_cast<std::uintptr_t>(h);
    if (v <= 2) {
        *out = ctx->legacy;
        return SUCCESS;
    }
    auto it = d.streams.find(h);
    if (it == d.streams.end()) return INVALID_HANDLE;
    if (it->second->ctx != ctx) return INVALID_HANDLE;
    *out = it->second;
    return SUCCESS;
}

// A device-accessible range (device memory, or page-locked host memory: unified addressing).
CUresult device_range(Driver& d, CUdeviceptr p, std::size_t n) {
    Alloc* a = find_alloc(d, p, n);
    return a == nullptr || a->free_pending ? INVALID_VALUE : SUCCESS;
}

// Checks at execution time that [p, p + n) is still allocated; a freed range is a fault.
bool still_valid(Context* ctx, const char* what, CUdeviceptr p, std::size_t n) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (find_alloc(d, p, n) != nullptr) return true;
    report("cuda_emu: %s touched 0x%llx, which is not allocated any more: an illegal address (the context "
           "is now unusable, as after a GPU fault)\n",
           what, p);
    int expected = SUCCESS;
    ctx->sticky.compare_exchange_strong(expected, ILLEGAL_ADDRESS);
    return false;
}

TagStats& stats(Driver& d, std::uint64_t tag) { return d.tags[tag]; }

}  // namespace

// ==== the driver API ====
#define EMU_API(name) extern "C" __attribute__((visibility("default"))) CUresult cpugpu_emu_##name

EMU_API(cuInit)(unsigned flags) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (flags != 0) return INVALID_VALUE;
    if (!d.initialized) {
        d.devices = static_cast<int>(std::min<std::uint64_t>(env_u64("CPUGPU_EMU_DEVICES", 1), 8));
        d.delay_us = static_cast<std::uint32_t>(env_u64("CPUGPU_EMU_DELAY_US", 0));
        d.seed = env_u64("CPUGPU_EMU_SEED", 1);
        cuda_emu::ExecutorConfig c;
        c.blocks_in_flight = static_cast<unsigned>(env_u64("CPUGPU_EMU_BLOCKS", 2));
        c.seed = d.seed;
        const char* order = std::getenv("CPUGPU_EMU_ORDER");
        const std::string o = order ? order : "shuffle";
        c.order = o == "forward" ? cuda_emu::Order::Forward
                  : o == "reverse" ? cuda_emu::Order::Reverse
                                   : cuda_emu::Order::Shuffle;
        cuda_emu::configure_executor(c);
        char text[256];
        std::snprintf(text, sizeof text, "%d device(s), %u blocks in flight, %s order, seed %llu, delays up to %u us",
                      d.devices, c.blocks_in_flight, o == "forward" || o == "reverse" ? o.c_str() : "shuffled",
                      static_cast<unsigned long long>(d.seed), d.delay_us.load());
        d.description = text;
        for (int i = 0; i < d.devices; ++i) {
            auto ctx = std::make_unique<Context>();
            ctx->device = i;
            auto pool = std::make_unique<Pool>();
            pool->device = i;
            pool->is_default = true;
            d.default_pools.push_back(std::move(pool));
            d.contexts.push_back(std::move(ctx));
        }
        d.initialized = true;
    }
    return d.devices == 0 ? NO_DEVICE : SUCCESS;
}

EMU_API(cuGetErrorName)(CUresult error, const char** p) {
    if (p == nullptr) return INVALID_VALUE;
    for (const ErrorName& e : kErrorNames) {
        if (e.code == error) {
            *p = e.name;
            return SUCCESS;
        }
    }
    *p = nullptr;
    return INVALID_VALUE;
}

EMU_API(cuDeviceGetCount)(int* count) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    if (count == nullptr) return INVALID_VALUE;
    *count = d.devices;
    return SUCCESS;
}

EMU_API(cuDeviceGet)(CUdevice* dev, int ordinal) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    if (dev == nullptr) return INVALID_VALUE;
    if (ordinal < 0 || ordinal >= d.devices) return INVALID_DEVICE;
    *dev = ordinal;
    return SUCCESS;
}

EMU_API(cuDeviceGetName)(char* name, int len, CUdevice dev) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    if (dev < 0 || dev >= d.devices) return INVALID_DEVICE;
    if (name == nullptr || len <= 0) return INVALID_VALUE;
    std::snprintf(name, static_cast<std::size_t>(len), "%s", kDeviceName);
    return SUCCESS;
}

EMU_API(cuDeviceGetAttribute)(int* value, int attr, CUdevice dev) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    if (dev < 0 || dev >= d.devices) return INVALID_DEVICE;
    if (value == nullptr) return INVALID_VALUE;
    bool known = false;
    const int v = device_attribute(attr, &known);
    if (!known) return INVALID_VALUE;
    *value = v;
    return SUCCESS;
}

EMU_API(cuDevicePrimaryCtxRetain)(void** pctx, CUdevice dev) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    if (dev < 0 || dev >= d.devices) return INVALID_DEVICE;
    if (pctx == nullptr) return INVALID_VALUE;
    Context* ctx = d.contexts[static_cast<std::size_t>(dev)].get();
    if (!ctx->legacy) {
        ctx->legacy = make_stream(d, ctx, 0, true);
        ctx->all_streams.push_back(ctx->legacy);
    }
    ++ctx->retains;
    *pctx = ctx;
    return SUCCESS;
}

namespace {
bool is_context(Driver& d, void* c) {
    for (auto& ctx : d.contexts)
        if (ctx.get() == c) return ctx->retains > 0;
    return false;
}
}  // namespace

EMU_API(cuCtxSetCurrent)(void* ctx) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    if (ctx != nullptr && !is_context(d, ctx)) return INVALID_CONTEXT;
    tls_ctx = static_cast<Context*>(ctx);
    return SUCCESS;
}

EMU_API(cuCtxGetCurrent)(void** pctx) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    if (pctx == nullptr) return INVALID_VALUE;
    *pctx = tls_ctx;
    return SUCCESS;
}

EMU_API(cuCtxSynchronize)() {
    Driver& d = drv();
    std::vector<std::shared_ptr<Stream>> all;
    Context* ctx = nullptr;
    {
        std::lock_guard<std::mutex> g(d.m);
        if (CUresult r = need_init(d)) return r;
        if (tls_ctx == nullptr) return INVALID_CONTEXT;
        ctx = tls_ctx;
        for (auto& w : ctx->all_streams)
            if (auto s = w.lock()) all.push_back(s);
    }
    for (auto& s : all) wait_until(*s, tail(*s));
    return ctx->sticky.load();
}

// ---- memory pools ----
EMU_API(cuDeviceGetDefaultMemPool)(void** pool, CUdevice dev) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    if (dev < 0 || dev >= d.devices) return INVALID_DEVICE;
    if (pool == nullptr) return INVALID_VALUE;
    *pool = d.default_pools[static_cast<std::size_t>(dev)].get();
    return SUCCESS;
}

EMU_API(cuMemPoolCreate)(void** pool, const MemPoolProps* props) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    if (pool == nullptr || props == nullptr) return INVALID_VALUE;
    if (props->alloc_type != 1 || props->handle_types != 0 || props->location_type != 1) return INVALID_VALUE;
    if (props->location_id < 0 || props->location_id >= d.devices) return INVALID_DEVICE;
    for (unsigned char b : props->reserved)
        if (b != 0) return INVALID_VALUE;
    auto p = std::make_unique<Pool>();
    p->device = props->location_id;
    *pool = p.get();
    d.pools.emplace(p.get(), std::move(p));
    return SUCCESS;
}

namespace {
Pool* find_pool(Driver& d, void* h) {
    for (auto& p : d.default_pools)
        if (p.get() == h) return p.get();
    auto it = d.pools.find(h);
    return it == d.pools.end() ? nullptr : it->second.get();
}
}  // namespace

EMU_API(cuMemPoolDestroy)(void* pool) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    auto it = d.pools.find(pool);
    if (it == d.pools.end()) return INVALID_VALUE;  // unknown, or a device's default pool
    // Kept (not freed) while any allocation from it is live, as the real driver defers it.
    for (auto& [base, a] : d.allocs)
        if (a.pool == it->second.get()) return SUCCESS;
    for (auto& [n, p] : it->second->reusable) std::free(p);
    for (auto& [p, n] : it->second->quarantine) std::free(p);
    d.pools.erase(it);
    return SUCCESS;
}

EMU_API(cuMemPoolSetAttribute)(void* pool, int attr, void* value) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    Pool* p = find_pool(d, pool);
    if (p == nullptr || value == nullptr) return INVALID_VALUE;
    switch (attr) {
        case MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
        case 2:
        case MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES:
            return SUCCESS;  // reuse is only ever of blocks whose free has executed here
        case MEMPOOL_ATTR_RELEASE_THRESHOLD:
            std::memcpy(&p->release_threshold, value, 8);
            return SUCCESS;
        case MEMPOOL_ATTR_RESERVED_MEM_HIGH:
        case MEMPOOL_ATTR_USED_MEM_HIGH: {
            std::uint64_t v;
            std::memcpy(&v, value, 8);
            if (v != 0) return INVALID_VALUE;  // watermarks can only be reset to zero
            if (attr == MEMPOOL_ATTR_RESERVED_MEM_HIGH) p->reserved_high = p->reserved;
            else p->used_high = p->used;
            return SUCCESS;
        }
        default:
            return INVALID_VALUE;
    }
}

EMU_API(cuMemPoolGetAttribute)(void* pool, int attr, void* value) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    Pool* p = find_pool(d, pool);
    if (p == nullptr || value == nullptr) return INVALID_VALUE;
    std::uint64_t v;
    switch (attr) {
        case MEMPOOL_ATTR_RELEASE_THRESHOLD: v = p->release_threshold; break;
        case MEMPOOL_ATTR_RESERVED_MEM_CURRENT: v = p->reserved; break;
        case MEMPOOL_ATTR_RESERVED_MEM_HIGH: v = p->reserved_high; break;
        case MEMPOOL_ATTR_USED_MEM_CURRENT: v = p->used; break;
        case MEMPOOL_ATTR_USED_MEM_HIGH: v = p->used_high; break;
        case MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
        case 2:
        case MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: {
            const int one = 1;
            std::memcpy(value, &one, sizeof one);
            return SUCCESS;
        }
        default: return INVALID_VALUE;
    }
    std::memcpy(value, &v, 8);
    return SUCCESS;
}

namespace {
// A device allocation from `pool` (nullptr: plain cuMemAlloc), registered under the caller's tag.
CUresult alloc_device(Driver& d, Context* ctx, Pool* pool, std::size_t bytes, CUdeviceptr* out) {
    if (CUresult r = injected(CPUGPU_EMU_FAULT_DEVICE_ALLOC)) return r;
    if (bytes == 0) return INVALID_VALUE;
    void* p = nullptr;
    const std::size_t rounded = (bytes + kDeviceAlign - 1) / kDeviceAlign * kDeviceAlign;
    if (pool != nullptr && !kSanitized) {
        auto it = pool->reusable.find(rounded);
        if (it != pool->reusable.end()) {
            p = it->second;
            pool->reusable.erase(it);
            std::memset(p, 0xCB, rounded);
        }
    }
    if (p == nullptr) {
        // Under a sanitizer exactly `bytes`, so AddressSanitizer's redzone starts at the end.
        p = fresh_memory(kSanitized ? bytes : rounded, kDeviceAlign);
        if (p == nullptr) return OUT_OF_MEMORY;
        if (pool != nullptr) {
            pool->reserved += rounded;
            pool->reserved_high = std::max(pool->reserved_high, pool->reserved);
        }
    }
    if (pool != nullptr) {
        pool->used += rounded;
        pool->used_high = std::max(pool->used_high, pool->used);
    }
    Alloc a;
    a.base = reinterpret_cast<CUdeviceptr>(p);
    a.bytes = bytes;
    a.kind = AllocKind::Device;
    a.pool = pool;
    a.tag = tls_tag;
    d.allocs.emplace(a.base, a);
    TagStats& t = stats(d, a.tag);
    ++t.device_allocs;
    t.device_bytes += bytes;
    (void)ctx;
    *out = a.base;
    return SUCCESS;
}

// Forgets a device allocation whose free has executed and releases its memory.
void free_device(Driver& d, CUdeviceptr base) {
    auto it = d.allocs.find(base);
    if (it == d.allocs.end()) return;
    Alloc a = it->second;
    d.allocs.erase(it);
    TagStats& t = stats(d, a.tag);
    --t.device_allocs;
    t.device_bytes -= a.bytes;
    const std::size_t rounded = (a.bytes + kDeviceAlign - 1) / kDeviceAlign * kDeviceAlign;
    if (a.pool != nullptr) a.pool->used -= rounded;
    release_device_block(d, a.pool, reinterpret_cast<void*>(a.base), rounded);
}
}  // namespace

EMU_API(cuMemAlloc_v2)(CUdeviceptr* dptr, std::size_t bytes) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    if (dptr == nullptr) return INVALID_VALUE;
    return alloc_device(d, ctx, nullptr, bytes, dptr);
}

EMU_API(cuMemAllocFromPoolAsync)(CUdeviceptr* dptr, std::size_t bytes, void* pool, void* stream) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    std::shared_ptr<Stream> s;
    if (CUresult r = resolve_stream(d, stream, ctx, &s)) return r;
    Pool* p = find_pool(d, pool);
    if (p == nullptr || dptr == nullptr) return INVALID_VALUE;
    if (p->device != ctx->device) return INVALID_VALUE;
    return alloc_device(d, ctx, p, bytes, dptr);
}

EMU_API(cuMemAllocAsync)(CUdeviceptr* dptr, std::size_t bytes, void* stream) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    std::shared_ptr<Stream> s;
    if (CUresult r = resolve_stream(d, stream, ctx, &s)) return r;
    if (dptr == nullptr) return INVALID_VALUE;
    return alloc_device(d, ctx, d.default_pools[static_cast<std::size_t>(ctx->device)].get(), bytes, dptr);
}

EMU_API(cuMemFreeAsync)(CUdeviceptr dptr, void* stream) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    std::shared_ptr<Stream> s;
    if (CUresult r = resolve_stream(d, stream, ctx, &s)) return r;
    auto it = d.allocs.find(dptr);
    if (it == d.allocs.end() || it->second.kind != AllocKind::Device || it->second.free_pending) return INVALID_VALUE;
    it->second.free_pending = true;
    enqueue(*s, Op{"cuMemFreeAsync", [dptr] {
                       Driver& dd = drv();
                       std::lock_guard<std::mutex> gg(dd.m);
                       free_device(dd, dptr);
                   }});
    return SUCCESS;
}

EMU_API(cuMemFree_v2)(CUdeviceptr dptr) {
    Driver& d = drv();
    std::vector<std::shared_ptr<Stream>> all;
    {
        std::lock_guard<std::mutex> g(d.m);
        Context* ctx = nullptr;
        if (CUresult r = current_context(d, &ctx)) return r;
        auto it = d.allocs.find(dptr);
        if (it == d.allocs.end() || it->second.kind != AllocKind::Device || it->second.free_pending)
            return INVALID_VALUE;
        it->second.free_pending = true;
        for (auto& w : ctx->all_streams)
            if (auto s = w.lock()) all.push_back(s);
    }
    // cuMemFree synchronises: work already issued that may use the block finishes first.
    for (auto& s : all) wait_until(*s, tail(*s));
    std::lock_guard<std::mutex> g(d.m);
    free_device(d, dptr);
    return SUCCESS;
}

EMU_API(cuMemHostAlloc)(void** pp, std::size_t bytes, unsigned flags) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    if (pp == nullptr || (flags & ~MEMHOSTALLOC_ALL) != 0) return INVALID_VALUE;
    if (CUresult r = injected(CPUGPU_EMU_FAULT_HOST_ALLOC)) return r;
    if (bytes == 0) return INVALID_VALUE;
    void* p = fresh_memory(bytes, 4096);
    if (p == nullptr) return OUT_OF_MEMORY;
    Alloc a;
    a.base = reinterpret_cast<CUdeviceptr>(p);
    a.bytes = bytes;
    a.kind = AllocKind::Host;
    a.tag = tls_tag;
    d.allocs.emplace(a.base, a);
    TagStats& t = stats(d, a.tag);
    ++t.host_allocs;
    t.host_bytes += bytes;
    *pp = p;
    return SUCCESS;
}

EMU_API(cuMemHostGetDevicePointer_v2)(CUdeviceptr* dptr, void* p, unsigned flags) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    if (dptr == nullptr || flags != 0) return INVALID_VALUE;
    Alloc* a = find_alloc(d, reinterpret_cast<CUdeviceptr>(p), 0);
    if (a == nullptr || a->kind != AllocKind::Host) return INVALID_VALUE;
    *dptr = reinterpret_cast<CUdeviceptr>(p);  // unified addressing: one address on both sides
    return SUCCESS;
}

EMU_API(cuMemFreeHost)(void* p) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    auto it = d.allocs.find(reinterpret_cast<CUdeviceptr>(p));
    if (it == d.allocs.end() || it->second.kind != AllocKind::Host) return INVALID_VALUE;
    TagStats& t = stats(d, it->second.tag);
    --t.host_allocs;
    t.host_bytes -= it->second.bytes;
    d.allocs.erase(it);
    // Not synchronising (stricter than the driver may be): work still using the memory is the
    // caller's bug, and shows up as a use after free.
    std::free(p);
    return SUCCESS;
}

// ---- copies and memsets ----
namespace {

enum class Dir { HtoD, DtoH, DtoD };

CUresult copy_async(Dir dir, void* dst, const void* src, std::size_t bytes, void* stream) {
    Driver& d = drv();
    std::unique_lock<std::mutex> lock(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    std::shared_ptr<Stream> s;
    if (CUresult r = resolve_stream(d, stream, ctx, &s)) return r;
    if (CUresult r = injected(CPUGPU_EMU_FAULT_COPY)) return r;
    if (bytes == 0) return SUCCESS;
    if ((dst == nullptr || src == nullptr)) return INVALID_VALUE;
    const auto dp = reinterpret_cast<CUdeviceptr>(dst);
    const auto sp = reinterpret_cast<CUdeviceptr>(src);
    // Device-side ranges must be allocated; host-side ones are the caller's (pageable or pinned).
    const bool dst_dev = dir != Dir::DtoH;
    const bool src_dev = dir != Dir::HtoD;
    if (dst_dev && device_range(d, dp, bytes) != SUCCESS) return INVALID_VALUE;
    if (src_dev && device_range(d, sp, bytes) != SUCCESS) return INVALID_VALUE;
    const Alloc* host_side = dir == Dir::HtoD ? find_alloc(d, sp, bytes) : dir == Dir::DtoH ? find_alloc(d, dp, bytes) : nullptr;
    const bool pageable = dir != Dir::DtoD && (host_side == nullptr || host_side->kind != AllocKind::Host);
    static const char* const names[] = {"cuMemcpyHtoDAsync", "cuMemcpyDtoHAsync", "cuMemcpyDtoDAsync"};
    const char* what = names[static_cast<int>(dir)];
    if (dir == Dir::HtoD && pageable) {
        // Pageable source: staged now, so the caller may reuse it as soon as this returns.
        auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                                   static_cast<const unsigned char*>(src) + bytes);
        enqueue(*s, Op{what, [ctx, what, dst, dp, bytes, staged] {
                           if (still_valid(ctx, what, dp, bytes)) std::memcpy(dst, staged->data(), bytes);
                       }});
        return SUCCESS;
    }
    const std::uint64_t pos = enqueue(*s, Op{what, [ctx, what, dst, src, dp, sp, bytes, dst_dev, src_dev] {
                                                 if (dst_dev && !still_valid(ctx, what, dp, bytes)) return;
                                                 if (src_dev && !still_valid(ctx, what, sp, bytes)) return;
                                                 std::memmove(dst, src, bytes);
                                             }});
    if (dir == Dir::DtoH && pageable) {
        // Pageable destination: the call returns once the copy has landed, as the driver's does.
        lock.unlock();
        wait_until(*s, pos);
        return ctx->sticky.load();
    }
    return SUCCESS;
}

CUresult memset_async(CUdeviceptr dst, unsigned value, unsigned width, std::size_t n, void* stream) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    std::shared_ptr<Stream> s;
    if (CUresult r = resolve_stream(d, stream, ctx, &s)) return r;
    if (CUresult r = injected(CPUGPU_EMU_FAULT_MEMSET)) return r;
    if (n == 0) return SUCCESS;
    if (dst % width != 0) return INVALID_VALUE;
    if (n > SIZE_MAX / width || device_range(d, dst, n * width) != SUCCESS) return INVALID_VALUE;
    static const char* const names[] = {"", "cuMemsetD8Async", "cuMemsetD16Async", "", "cuMemsetD32Async"};
    const char* what = names[width];
    enqueue(*s, Op{what, [ctx, what, dst, value, width, n] {
                       if (!still_valid(ctx, what, dst, n * width)) return;
                       auto* p = reinterpret_cast<unsigned char*>(dst);
                       if (width == 1) {
                           std::memset(p, static_cast<int>(value & 0xFF), n);
                       } else if (width == 2) {
                           const auto v = static_cast<std::uint16_t>(value);
                           for (std::size_t i = 0; i < n; ++i) std::memcpy(p + 2 * i, &v, 2);
                       } else {
                           for (std::size_t i = 0; i < n; ++i) std::memcpy(p + 4 * i, &value, 4);
                       }
                   }});
    return SUCCESS;
}

}  // namespace

EMU_API(cuMemcpyHtoDAsync_v2)(CUdeviceptr dst, const void* src, std::size_t bytes, void* stream) {
    return copy_async(Dir::HtoD, reinterpret_cast<void*>(dst), src, bytes, stream);
}
EMU_API(cuMemcpyDtoHAsync_v2)(void* dst, CUdeviceptr src, std::size_t bytes, void* stream) {
    return copy_async(Dir::DtoH, dst, reinterpret_cast<const void*>(src), bytes, stream);
}
EMU_API(cuMemcpyDtoDAsync_v2)(CUdeviceptr dst, CUdeviceptr src, std::size_t bytes, void* stream) {
    return copy_async(Dir::DtoD, reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes, stream);
}
EMU_API(cuMemsetD8Async)(CUdeviceptr dst, unsigned char v, std::size_t n, void* stream) {
    return memset_async(dst, v, 1, n, stream);
}
EMU_API(cuMemsetD16Async)(CUdeviceptr dst, unsigned short v, std::size_t n, void* stream) {
    return memset_async(dst, v, 2, n, stream);
}
EMU_API(cuMemsetD32Async)(CUdeviceptr dst, unsigned v, std::size_t n, void* stream) {
    return memset_async(dst, v, 4, n, stream);
}

// ---- streams ----
EMU_API(cuStreamCreate)(void** ph, unsigned flags) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    if (ph == nullptr || (flags & ~STREAM_NON_BLOCKING) != 0) return INVALID_VALUE;
    if (CUresult r = injected(CPUGPU_EMU_FAULT_STREAM)) return r;
    auto s = make_stream(d, ctx, flags, false);
    // Destroyed streams leave the lists here (their workers may still be draining).
    auto gone = [](const std::weak_ptr<Stream>& w) { return w.expired(); };
    ctx->all_streams.erase(std::remove_if(ctx->all_streams.begin(), ctx->all_streams.end(), gone),
                           ctx->all_streams.end());
    ctx->streams.erase(std::remove_if(ctx->streams.begin(), ctx->streams.end(), gone), ctx->streams.end());
    ctx->all_streams.push_back(s);
    if ((flags & STREAM_NON_BLOCKING) == 0) ctx->streams.push_back(s);
    ++stats(d, s->tag).streams;
    *ph = s.get();
    d.streams.emplace(s.get(), s);
    return SUCCESS;
}

EMU_API(cuStreamDestroy_v2)(void* h) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    auto it = d.streams.find(h);
    if (it == d.streams.end()) return INVALID_HANDLE;
    std::shared_ptr<Stream> s = it->second;
    d.streams.erase(it);
    --stats(d, s->tag).streams;
    // Work already issued still runs; the worker leaves once the queue is drained.
    {
        std::lock_guard<std::mutex> sg(s->m);
        s->closing = true;
    }
    s->cv.notify_all();
    return SUCCESS;
}

EMU_API(cuStreamSynchronize)(void* h) {
    Driver& d = drv();
    std::shared_ptr<Stream> s;
    Context* ctx = nullptr;
    {
        std::lock_guard<std::mutex> g(d.m);
        if (CUresult r = need_init(d)) return r;
        if (tls_ctx == nullptr) return INVALID_CONTEXT;
        ctx = tls_ctx;
        if (CUresult r = resolve_stream(d, h, ctx, &s)) return r;
    }
    wait_until(*s, tail(*s));
    return ctx->sticky.load();
}

EMU_API(cuStreamQuery)(void* h) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    std::shared_ptr<Stream> s;
    if (CUresult r = resolve_stream(d, h, ctx, &s)) return r;
    std::lock_guard<std::mutex> sg(s->m);
    return s->completed >= s->enqueued ? SUCCESS : NOT_READY;
}

// ---- events ----
EMU_API(cuEventCreate)(void** ph, unsigned flags) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    if (ph == nullptr || (flags & ~(EVENT_BLOCKING_SYNC | EVENT_DISABLE_TIMING | EVENT_INTERPROCESS)) != 0)
        return INVALID_VALUE;
    if ((flags & EVENT_INTERPROCESS) != 0) return NOT_SUPPORTED;
    if (CUresult r = injected(CPUGPU_EMU_FAULT_EVENT)) return r;
    auto e = std::make_shared<Event>();
    e->ctx = ctx;
    e->flags = flags;
    e->tag = tls_tag;
    ++stats(d, e->tag).events;
    *ph = e.get();
    d.events.emplace(e.get(), e);
    return SUCCESS;
}

EMU_API(cuEventDestroy_v2)(void* h) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    auto it = d.events.find(h);
    if (it == d.events.end()) return INVALID_HANDLE;
    --stats(d, it->second->tag).events;
    d.events.erase(it);  // a pending record or wait still holds the event
    return SUCCESS;
}

EMU_API(cuEventRecord)(void* h, void* stream) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    auto it = d.events.find(h);
    if (it == d.events.end()) return INVALID_HANDLE;
    std::shared_ptr<Stream> s;
    if (CUresult r = resolve_stream(d, stream, ctx, &s)) return r;
    std::shared_ptr<Event> e = it->second;
    if (e->ctx != s->ctx) return INVALID_HANDLE;  // an event records in its own context only
    if (CUresult r = injected(CPUGPU_EMU_FAULT_EVENT)) return r;
    auto rec = std::make_shared<Record>();
    {
        std::lock_guard<std::mutex> eg(e->m);
        e->latest = rec;
    }
    enqueue(*s, Op{"cuEventRecord", [rec] {
                       {
                           std::lock_guard<std::mutex> rg(rec->m);
                           rec->done = true;
                           rec->time = std::chrono::steady_clock::now();
                       }
                       rec->cv.notify_all();
                   }});
    return SUCCESS;
}

EMU_API(cuEventQuery)(void* h) {
    Driver& d = drv();
    std::shared_ptr<Event> e;
    {
        std::lock_guard<std::mutex> g(d.m);
        if (CUresult r = need_init(d)) return r;
        auto it = d.events.find(h);
        if (it == d.events.end()) return INVALID_HANDLE;
        e = it->second;
    }
    if (CUresult r = e->ctx->sticky.load()) return r;
    std::shared_ptr<Record> rec = latest_record(*e);
    if (!rec) return SUCCESS;  // never recorded
    std::lock_guard<std::mutex> rg(rec->m);
    return rec->done ? SUCCESS : NOT_READY;
}

EMU_API(cuEventSynchronize)(void* h) {
    Driver& d = drv();
    std::shared_ptr<Event> e;
    {
        std::lock_guard<std::mutex> g(d.m);
        if (CUresult r = need_init(d)) return r;
        auto it = d.events.find(h);
        if (it == d.events.end()) return INVALID_HANDLE;
        e = it->second;
    }
    std::shared_ptr<Record> rec = latest_record(*e);
    if (!rec) return e->ctx->sticky.load();
    return wait_record(e->ctx, *rec);
}

EMU_API(cuEventElapsedTime)(float* ms, void* start, void* end) {
    Driver& d = drv();
    std::shared_ptr<Event> a, b;
    {
        std::lock_guard<std::mutex> g(d.m);
        if (CUresult r = need_init(d)) return r;
        auto ia = d.events.find(start);
        auto ib = d.events.find(end);
        if (ia == d.events.end() || ib == d.events.end()) return INVALID_HANDLE;
        a = ia->second;
        b = ib->second;
    }
    if (ms == nullptr) return INVALID_VALUE;
    if ((a->flags & EVENT_DISABLE_TIMING) != 0 || (b->flags & EVENT_DISABLE_TIMING) != 0) return INVALID_HANDLE;
    std::chrono::steady_clock::time_point ta, tb;
    const std::shared_ptr<Record> ra = latest_record(*a);
    const std::shared_ptr<Record> rb = latest_record(*b);
    if (!ra || !rb) return INVALID_HANDLE;  // never recorded
    {
        std::lock_guard<std::mutex> ga(ra->m);
        if (!ra->done) return NOT_READY;
        ta = ra->time;
    }
    {
        std::lock_guard<std::mutex> gb(rb->m);
        if (!rb->done) return NOT_READY;
        tb = rb->time;
    }
    *ms = std::chrono::duration<float, std::milli>(tb - ta).count();
    return SUCCESS;
}

EMU_API(cuStreamWaitEvent)(void* stream, void* h, unsigned flags) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    std::shared_ptr<Stream> s;
    if (CUresult r = resolve_stream(d, stream, ctx, &s)) return r;
    auto it = d.events.find(h);
    if (it == d.events.end()) return INVALID_HANDLE;
    if (flags != 0) return INVALID_VALUE;
    if (CUresult r = injected(CPUGPU_EMU_FAULT_STREAM)) return r;
    std::shared_ptr<Event> e = it->second;  // may belong to another context: allowed
    std::shared_ptr<Record> rec = latest_record(*e);
    if (!rec) return SUCCESS;  // never recorded: nothing to wait for
    Context* ectx = e->ctx;
    enqueue(*s, Op{"cuStreamWaitEvent", [rec, ectx] { wait_record(ectx, *rec); }});
    return SUCCESS;
}

// ---- modules and launches ----
namespace {
constexpr char kImageMagic[] = "CPUGPU-EMULATED-IMAGE-1";
}

EMU_API(cuModuleLoadData)(void** module, const void* image) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    if (module == nullptr || image == nullptr) return INVALID_VALUE;
    // The image (build.rs) is the magic line, then the names of the kernels it holds, each
    // NUL-terminated, then an empty name.
    const char* p = static_cast<const char*>(image);
    if (std::strncmp(p, kImageMagic, sizeof kImageMagic) != 0) return INVALID_IMAGE;
    p += sizeof kImageMagic;
    auto m = std::make_unique<Module>();
    m->ctx = ctx;
    for (; *p != 0; p += std::strlen(p) + 1) {
        const KernelEntry* k = nullptr;
        for (const KernelEntry& e : kKernels)
            if (std::strcmp(e.name, p) == 0) k = &e;
        if (k == nullptr) return INVALID_IMAGE;  // the image names a kernel this build lacks
        auto f = std::make_unique<Function>();
        f->kernel = k;
        f->module = m.get();
        m->functions.push_back(std::move(f));
    }
    for (auto& f : m->functions) d.functions.emplace(f.get(), f.get());
    *module = m.get();
    d.modules.emplace(m.get(), std::move(m));
    return SUCCESS;
}

EMU_API(cuModuleGetFunction)(void** hfunc, void* module, const char* name) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    auto it = d.modules.find(module);
    if (it == d.modules.end()) return INVALID_HANDLE;
    if (hfunc == nullptr || name == nullptr) return INVALID_VALUE;
    for (auto& f : it->second->functions) {
        if (std::strcmp(f->kernel->name, name) == 0) {
            *hfunc = f.get();
            return SUCCESS;
        }
    }
    return NOT_FOUND;
}

EMU_API(cuFuncGetAttribute)(int* value, int attr, void* hfunc) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    auto it = d.functions.find(hfunc);
    if (it == d.functions.end()) return INVALID_HANDLE;
    if (value == nullptr) return INVALID_VALUE;
    switch (attr) {
        case FUNC_ATTR_MAX_THREADS_PER_BLOCK: *value = static_cast<int>(it->second->kernel->max_threads); return SUCCESS;
        case FUNC_ATTR_SHARED_SIZE_BYTES: *value = 0; return SUCCESS;  // not known to the emulator
        case FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES: *value = it->second->max_dynamic_shared; return SUCCESS;
        default: return INVALID_VALUE;
    }
}

EMU_API(cuFuncSetAttribute)(void* hfunc, int attr, int value) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (CUresult r = need_init(d)) return r;
    auto it = d.functions.find(hfunc);
    if (it == d.functions.end()) return INVALID_HANDLE;
    if (attr != FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES) return INVALID_VALUE;
    if (value < 0 || static_cast<unsigned>(value) > cuda_emu::kMaxDynamicShared) return INVALID_VALUE;
    it->second->max_dynamic_shared = value;
    return SUCCESS;
}

EMU_API(cuLaunchKernel)(void* hfunc, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void* stream, void** params, void** extra) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    Context* ctx = nullptr;
    if (CUresult r = current_context(d, &ctx)) return r;
    auto it = d.functions.find(hfunc);
    if (it == d.functions.end()) return INVALID_HANDLE;
    Function* f = it->second;
    if (f->module->ctx != ctx) return INVALID_HANDLE;  // a function of another context's module
    std::shared_ptr<Stream> s;
    if (CUresult r = resolve_stream(d, stream, ctx, &s)) return r;
    if (extra != nullptr) return INVALID_VALUE;  // CU_LAUNCH_PARAM_* buffers: not emulated
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0) return INVALID_VALUE;
    if (gx > kMaxGridX || gy > kMaxGridYZ || gz > kMaxGridYZ) return INVALID_VALUE;
    if (bx > 1024 || by > 1024 || bz > 64) return INVALID_VALUE;
    const unsigned long long threads = 1ull * bx * by * bz;
    if (threads > kMaxThreadsPerBlock) return INVALID_VALUE;
    if (threads > f->kernel->max_threads) return LAUNCH_OUT_OF_RESOURCES;  // over its launch bounds
    if (shared > static_cast<unsigned>(f->max_dynamic_shared)) return INVALID_VALUE;
    if (f->kernel->param_bytes > 0 && (params == nullptr || params[0] == nullptr)) return INVALID_VALUE;
    if (CUresult r = injected(CPUGPU_EMU_FAULT_LAUNCH)) return r;
    // The parameters are copied now, as the driver does: the caller's may change at once.
    auto copy = std::make_shared<std::vector<unsigned char>>(f->kernel->param_bytes + 16);
    auto* aligned = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(copy->data()) + 15) & ~std::uintptr_t(15));
    if (f->kernel->param_bytes > 0) std::memcpy(aligned, params[0], f->kernel->param_bytes);
    tls_launch_log.push_back(f->kernel->name);
    ++stats(d, tls_tag).launches;
    const KernelEntry* k = f->kernel;
    const dim3 grid{gx, gy, gz};
    const dim3 block{bx, by, bz};
    enqueue(*s, Op{k->name, [k, copy, aligned, grid, block, shared] {
                       cuda_emu::LaunchSpec spec{k->name, k->run, aligned, grid, block, shared};
                       cuda_emu::execute_launch(spec);
                   }});
    return SUCCESS;
}

// ==== test interface (driver.h) ====
extern "C" int cpugpu_emu_fail_nth(int kind, uint64_t nth, int code) {
    if (kind < 0 || kind >= CPUGPU_EMU_FAULT_KINDS) return 1;
    tls_faults[kind] = Fault{nth, code};
    return 0;
}

extern "C" void cpugpu_emu_set_delay_us(uint32_t max_us) { drv().delay_us.store(max_us); }

namespace {
struct Latch {
    std::mutex m;
    std::condition_variable cv;
    bool released = false;
};
}  // namespace

extern "C" void* cpugpu_emu_hold_stream(void* stream) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    if (!d.initialized) return nullptr;
    std::shared_ptr<Stream> s;
    if (reinterpret_cast<std::uintptr_t>(stream) <= 2) {
        if (tls_ctx == nullptr) return nullptr;
        s = tls_ctx->legacy;
    } else {
        auto it = d.streams.find(stream);
        if (it == d.streams.end()) return nullptr;
        s = it->second;
    }
    auto latch = std::make_shared<Latch>();
    enqueue(*s, Op{"a test's hold", [latch] {
                       std::unique_lock<std::mutex> lock(latch->m);
                       latch->cv.wait(lock, [&] { return latch->released; });
                   }});
    return new std::shared_ptr<Latch>(latch);
}

extern "C" void cpugpu_emu_release_hold(void* hold) {
    auto* p = static_cast<std::shared_ptr<Latch>*>(hold);
    if (p == nullptr) return;
    {
        std::lock_guard<std::mutex> g((*p)->m);
        (*p)->released = true;
    }
    (*p)->cv.notify_all();
    delete p;
}

extern "C" void cpugpu_emu_set_tag(uint64_t tag) { tls_tag = tag; }

extern "C" void cpugpu_emu_tag_stats(uint64_t tag, CpugpuEmuStats* out) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    const TagStats& t = d.tags[tag];
    out->device_allocs = t.device_allocs;
    out->device_bytes = t.device_bytes;
    out->host_allocs = t.host_allocs;
    out->host_bytes = t.host_bytes;
    out->streams = t.streams;
    out->events = t.events;
    out->launches = t.launches;
}

extern "C" uint64_t cpugpu_emu_take_launch_log(const char** out, uint64_t cap) {
    const uint64_t n = tls_launch_log.size();
    for (uint64_t i = 0; i < n && i < cap; ++i) out[i] = tls_launch_log[i];
    if (n <= cap) tls_launch_log.clear();
    return n;
}

extern "C" const char* cpugpu_emu_sanitizer(void) {
#if CPUGPU_EMU_ASAN
    return "address";
#elif CPUGPU_EMU_TSAN
    return "thread";
#else
    return nullptr;
#endif
}

extern "C" const char* cpugpu_emu_describe(void) {
    Driver& d = drv();
    std::lock_guard<std::mutex> g(d.m);
    return d.initialized ? d.description.c_str() : "not initialised (cuInit has not run)";
}
