// The emulated GPU's block executor (see executor.h and cuda_emu.h).
//
// A few OS threads ("workers") take blocks from the launches in flight, one block at a time
// each. A worker runs its block's threads as fibers: it resumes each runnable fiber in turn, in
// a seeded order, until the fiber finishes the kernel or blocks at a barrier or warp collective;
// the last thread to arrive at a barrier releases the others. When no fiber can run and some
// have not finished, the kernel is stuck (a divergent barrier, a deadlock): the executor says
// which threads are where and aborts.
//
// Shared memory is per worker and re-made for every block: garbage-filled (0xA5), poisoned
// outside the parts in use under AddressSanitizer, and re-mapped under ThreadSanitizer so that
// no access of an earlier block is ordered before the next block's (an mmap resets the
// sanitizer's shadow of the range).
#include "executor.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "fiber.h"
#include "sanitizers.h"

#if CPUGPU_EMU_TSAN
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

namespace cuda_emu {
namespace {

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "cuda_emu: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

enum class Status : unsigned char { Runnable, AtBarrier, AtWarp, Done };

struct Worker;

// One fiber, playing one CUDA thread of its worker's current block.
struct Slot {
    Worker* worker = nullptr;
    unsigned linear = 0;
    std::unique_ptr<Fiber> fiber;
    std::string name;
    uint3 tid{0, 0, 0};
    unsigned warp_calls = 0;
    Status status = Status::Done;
    bool yielded = false;
};

struct Warp {
    unsigned lanes = 0;
    unsigned arrived = 0;
    unsigned phase = 0;        // collectives completed
    const char* op = nullptr;  // the collective the waiting lanes are in
    unsigned long long slots[2][32] = {};
};

struct Launch {
    LaunchSpec spec{};
    std::uint64_t blocks = 0;
    std::uint64_t next = 0;      // guarded by the executor's mutex
    std::uint64_t finished = 0;  // guarded by the executor's mutex
    Order order = Order::Forward;
    std::uint64_t perm_a = 1;  // Shuffle: block k is (perm_a * k + perm_b) mod blocks
    std::uint64_t perm_b = 0;
    bool complete = false;
    char done_sync = 0;  // every thread releases it at its end; the launcher acquires it

    std::uint64_t block_at(std::uint64_t k) const {
        switch (order) {
            case Order::Forward:
                return k;
            case Order::Reverse:
                return blocks - 1 - k;
            case Order::Shuffle:
                return static_cast<std::uint64_t>(
                    (static_cast<unsigned __int128>(perm_a) * k + perm_b) % blocks);
        }
        return k;
    }
};

// Shared memory of one worker: CPUGPU_SHARED sites first (each followed by a redzone), then the
// dynamic part.
constexpr std::size_t kRedzone = 64;
constexpr std::size_t kStaticRegion = kMaxStaticShared + 64 * kRedzone;
constexpr std::size_t kArenaBytes = kStaticRegion + kMaxDynamicShared + kRedzone;

std::size_t round_up(std::size_t v, std::size_t to) { return (v + to - 1) / to * to; }

[[maybe_unused]] std::size_t page() {
    static const std::size_t p = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return p;
}

std::size_t stack_bytes() {
#if CPUGPU_EMU_ASAN
    return 512 * 1024;  // AddressSanitizer's redzones make frames several times larger
#elif CPUGPU_EMU_TSAN
    return 256 * 1024;
#else
    return 64 * 1024;
#endif
}

std::uint64_t splitmix(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

std::uint64_t gcd(std::uint64_t a, std::uint64_t b) {
    while (b != 0) {
        const std::uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

struct Worker {
    unsigned id = 0;
    Fiber* home = nullptr;
    std::vector<std::unique_ptr<Slot>> slots;
    Launch* launch = nullptr;
    uint3 block_idx{0, 0, 0};
    unsigned threads = 0;
    std::vector<Warp> warps;
    unsigned arrived = 0;
    unsigned block_phase = 0;  // barriers completed
    unsigned block_sum = 0;
    unsigned block_result = 0;
    // ThreadSanitizer's synchronisation objects, made for each block and freed at its end (which
    // drops them, so no block inherits another's edges): two for __syncthreads and two per warp,
    // alternating by phase, so that a thread's release at the next barrier never reaches a thread
    // still to resume from this one (which would order the two within a phase and hide a race).
    char* syncs = nullptr;
    unsigned done = 0;
    Slot* current = nullptr;
    unsigned char* arena = nullptr;
    std::size_t static_used = 0;      // the static region's next free offset
    std::size_t static_bytes = 0;     // what the block's CPUGPU_SHARED sites hold together
    std::size_t static_filled = 0;    // the prefix of the static region filled at block start
    std::size_t dynamic_used = 0;     // of the previous block (re-mapped under TSan)
    std::vector<std::pair<const SharedSite*, void*>> sites;
    std::mt19937_64 rng;

    CPUGPU_EMU_NOSAN void ensure_slots(unsigned n);
    CPUGPU_EMU_NOSAN void prepare_arena(unsigned dynamic_bytes);
    CPUGPU_EMU_NOSAN void run_block(Launch* l, std::uint64_t linear);
    [[noreturn]] CPUGPU_EMU_NOSAN void diagnose_stuck();
    CPUGPU_EMU_NOSAN void park(Slot& s, Status why);
};

thread_local Worker* tls_worker = nullptr;

struct Executor {
    std::mutex m;
    std::condition_variable work;
    std::condition_variable done;
    std::deque<Launch*> queue;
    std::vector<Worker*> workers;
    ExecutorConfig config;
    std::uint64_t launches = 0;
};

Executor& executor() {
    static Executor* e = new Executor();  // never destroyed: workers run until the process exits
    return *e;
}

CPUGPU_EMU_NOSAN void fiber_main(void* arg) {
    auto* s = static_cast<Slot*>(arg);
    Worker* w = s->worker;
    for (;;) {
        Launch* l = w->launch;
        l->spec.run(l->spec.params);
        s->status = Status::Done;
        ++w->done;
        tsan_release(&l->done_sync);
        Fiber::switch_to(*s->fiber, *w->home, false);
    }
}

void Worker::ensure_slots(unsigned n) {
    while (slots.size() < n) {
        auto s = std::make_unique<Slot>();
        s->worker = this;
        s->linear = static_cast<unsigned>(slots.size());
        s->name = "cuda_emu worker " + std::to_string(id) + " thread " + std::to_string(s->linear);
        s->fiber = std::make_unique<Fiber>(&fiber_main, s.get(), stack_bytes(), s->name.c_str());
        slots.push_back(std::move(s));
    }
}

void Worker::prepare_arena(unsigned dynamic_bytes) {
    if (arena == nullptr) {
        void* m = mmap(nullptr, kArenaBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) die("mmap of a block's shared memory failed");
        arena = static_cast<unsigned char*>(m);
        asan_poison(arena, kArenaBytes);
    }
    unsigned char* dyn = arena + kStaticRegion;
#if CPUGPU_EMU_TSAN
    // Fresh pages, and so a fresh shadow, for everything the previous block may have touched:
    // nothing it did is then ordered before (or racing with) what this block does.
    const std::size_t s = round_up(static_used > static_filled ? static_used : static_filled, page());
    if (s > 0 && mmap(arena, s, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
        die("re-mapping static shared memory failed");
    const std::size_t d = round_up(dynamic_used, page());
    if (d > 0 && mmap(dyn, d, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
        die("re-mapping dynamic shared memory failed");
#endif
    // Static sites: every byte any earlier block of this worker used is garbage again; a site
    // reaching past that is filled when a thread first asks for it (block_shared).
    static_filled = std::max(static_filled, static_used);
    asan_poison(arena, kStaticRegion);
    asan_unpoison(arena, static_filled);
    std::memset(arena, 0xA5, static_filled);
    asan_poison(arena, kStaticRegion);
    static_used = 0;
    static_bytes = 0;
    sites.clear();
    // Dynamic shared memory: exactly the launch's bytes are addressable.
    asan_unpoison(dyn, kMaxDynamicShared + kRedzone);
    std::memset(dyn, 0xA5, dynamic_bytes);
    asan_poison(dyn + dynamic_bytes, kMaxDynamicShared + kRedzone - dynamic_bytes);
    dynamic_used = dynamic_bytes;
}

void Worker::run_block(Launch* l, std::uint64_t linear) {
    launch = l;
    const dim3 g = l->spec.grid;
    const dim3 b = l->spec.block;
    block_idx = uint3{static_cast<unsigned>(linear % g.x), static_cast<unsigned>((linear / g.x) % g.y),
                      static_cast<unsigned>(linear / (static_cast<std::uint64_t>(g.x) * g.y))};
    threads = b.x * b.y * b.z;
    ensure_slots(threads);
    prepare_arena(l->spec.dynamic_shared);
    const unsigned nwarps = (threads + 31) / 32;
    warps.assign(nwarps, Warp{});
    for (unsigned w = 0; w < nwarps; ++w) warps[w].lanes = std::min(32u, threads - w * 32);
    std::unique_ptr<char[]> block_syncs(new char[2 + 2 * static_cast<std::size_t>(nwarps)]);
    syncs = block_syncs.get();
    arrived = 0;
    block_phase = 0;
    block_sum = 0;
    done = 0;
    for (unsigned t = 0; t < threads; ++t) {
        Slot& s = *slots[t];
        s.tid = uint3{t % b.x, (t / b.x) % b.y, t / (b.x * b.y)};
        s.warp_calls = 0;
        s.status = Status::Runnable;
    }
    const Order order = l->order;
    while (done < threads) {
        unsigned ran = 0;
        unsigned progressed = 0;
        const unsigned start = order == Order::Shuffle ? static_cast<unsigned>(rng() % threads) : 0;
        const bool backwards = order == Order::Reverse || (order == Order::Shuffle && (rng() & 1));
        for (unsigned k = 0; k < threads; ++k) {
            const unsigned i = (start + k) % threads;
            Slot& s = *slots[backwards ? threads - 1 - i : i];
            if (s.status != Status::Runnable) continue;
            s.yielded = false;
            current = &s;
            Fiber::switch_to(*home, *s.fiber, true);
            current = nullptr;
            ++ran;
            if (!s.yielded) ++progressed;
        }
        if (ran == 0 && done < threads) diagnose_stuck();
        // Only spin-waiting threads ran: let the other workers' blocks make progress.
        if (ran > 0 && progressed == 0) std::this_thread::yield();
    }
    syncs = nullptr;
    launch = nullptr;
}

void Worker::park(Slot& s, Status why) {
    s.status = why;
    Fiber::switch_to(*s.fiber, *home, false);
}

const char* status_name(Status s) {
    switch (s) {
        case Status::Runnable:
            return "running";
        case Status::AtBarrier:
            return "__syncthreads";
        case Status::AtWarp:
            return "a warp collective";
        case Status::Done:
            return "the kernel's end";
    }
    return "?";
}

void Worker::diagnose_stuck() {
    const char* kernel = launch->spec.name;
    char where[96];
    std::snprintf(where, sizeof where, "kernel %s, block (%u, %u, %u)", kernel, block_idx.x, block_idx.y, block_idx.z);
    // A thread at __syncthreads while another has left the kernel: the classic divergent barrier.
    int waiting = -1;
    int left = -1;
    for (unsigned t = 0; t < threads; ++t) {
        if (slots[t]->status == Status::AtBarrier && waiting < 0) waiting = static_cast<int>(t);
        if (slots[t]->status == Status::Done && left < 0) left = static_cast<int>(t);
    }
    if (waiting >= 0 && left >= 0) {
        std::fprintf(stderr,
                     "cuda_emu: divergent __syncthreads in %s: thread %d is at the kernel's end while thread %d "
                     "is at __syncthreads\n",
                     where, left, waiting);
        die("divergent barrier");
    }
    // A warp collective some lane of the warp never reaches.
    for (unsigned t = 0; t < threads; ++t) {
        if (slots[t]->status != Status::AtWarp) continue;
        const unsigned w = t / 32;
        for (unsigned l = w * 32; l < std::min(threads, w * 32 + 32); ++l) {
            if (slots[l]->status != Status::AtWarp) {
                std::fprintf(stderr,
                             "cuda_emu: divergent warp collective in %s: lane %u of warp %u waits in %s while lane %u "
                             "is at %s\n",
                             where, t % 32, w, warps[w].op ? warps[w].op : "a collective", l % 32,
                             status_name(slots[l]->status));
                die("divergent warp collective");
            }
        }
    }
    std::fprintf(stderr, "cuda_emu: deadlock in %s: no thread can run\n", where);
    die("deadlock");
}

Slot& running() {
    Worker* w = tls_worker;
    if (w == nullptr || w->current == nullptr) die("a device function was called outside a kernel");
    return *w->current;
}

CPUGPU_EMU_NOSAN unsigned long long* warp_exchange(unsigned mask, unsigned long long v, const char* op) {
    Slot& s = running();
    Worker& w = *s.worker;
    Warp& warp = w.warps[s.linear / 32];
    const unsigned lane = s.linear % 32;
    const unsigned full = warp.lanes == 32 ? 0xffffffffu : ((1u << warp.lanes) - 1u);
    if ((mask & full) != full) {
        std::fprintf(stderr, "cuda_emu: %s with mask %08x in kernel %s: the emulator needs every lane of the warp\n", op,
                     mask, w.launch->spec.name);
        die("partial-warp collective");
    }
    if (warp.arrived > 0 && warp.op != op) {
        std::fprintf(stderr,
                     "cuda_emu: divergent warp collective in kernel %s: lane %u of warp %u calls %s while other lanes "
                     "wait in %s\n",
                     w.launch->spec.name, lane, s.linear / 32, op, warp.op);
        die("divergent warp collective");
    }
    const unsigned buf = s.warp_calls++ & 1u;
    warp.slots[buf][lane] = v;
    char* sync = w.syncs + 2 + 2 * (s.linear / 32) + (warp.phase & 1u);
    tsan_release(sync);
    if (++warp.arrived == warp.lanes) {
        warp.arrived = 0;
        warp.op = nullptr;
        ++warp.phase;
        for (unsigned l = 0; l < warp.lanes; ++l) {
            Slot& other = *w.slots[(s.linear / 32) * 32 + l];
            if (other.status == Status::AtWarp) other.status = Status::Runnable;
        }
    } else {
        warp.op = op;
        w.park(s, Status::AtWarp);
    }
    tsan_acquire(sync);
    return warp.slots[buf];
}

}  // namespace

void configure_executor(const ExecutorConfig& config) {
    Executor& e = executor();
    std::lock_guard<std::mutex> g(e.m);
    e.config = config;
    e.config.blocks_in_flight = std::clamp(config.blocks_in_flight, 1u, 8u);
    e.work.notify_all();
}

namespace {

CPUGPU_EMU_NOSAN void worker_main(Worker* w) {
    tls_worker = w;
    w->home = Fiber::this_thread();
    char name[16];
    std::snprintf(name, sizeof name, "cuda_emu blk %u", w->id);
    pthread_setname_np(pthread_self(), name);
    Executor& e = executor();
    for (;;) {
        Launch* l = nullptr;
        std::uint64_t block = 0;
        {
            std::unique_lock<std::mutex> lock(e.m);
            e.work.wait(lock, [&] { return w->id < e.config.blocks_in_flight && !e.queue.empty(); });
            l = e.queue.front();
            block = l->block_at(l->next++);
            if (l->next == l->blocks) e.queue.pop_front();
        }
        w->run_block(l, block);
        {
            std::lock_guard<std::mutex> g(e.m);
            if (++l->finished == l->blocks) {
                l->complete = true;
                e.done.notify_all();
            }
        }
    }
}

}  // namespace

void execute_launch(const LaunchSpec& spec) {
    Executor& e = executor();
    Launch l;
    l.spec = spec;
    l.blocks = static_cast<std::uint64_t>(spec.grid.x) * spec.grid.y * spec.grid.z;
    if (l.blocks == 0) return;
    std::unique_lock<std::mutex> lock(e.m);
    while (e.workers.size() < e.config.blocks_in_flight) {
        auto* w = new Worker();  // never destroyed (see executor())
        w->id = static_cast<unsigned>(e.workers.size());
        w->rng.seed(splitmix(e.config.seed + w->id));
        e.workers.push_back(w);
        std::thread(worker_main, w).detach();
    }
    l.order = e.config.order;
    if (l.order == Order::Shuffle) {
        std::mt19937_64 r(splitmix(e.config.seed ^ (++e.launches * 0x2545F4914F6CDD1Dull)));
        std::uint64_t a = 1 + r() % l.blocks;
        while (gcd(a, l.blocks) != 1) a = 1 + r() % l.blocks;
        l.perm_a = l.blocks == 1 ? 0 : a;
        l.perm_b = r() % l.blocks;
    }
    e.queue.push_back(&l);
    e.work.notify_all();
    e.done.wait(lock, [&] { return l.complete; });
    lock.unlock();
    tsan_acquire(&l.done_sync);
}

// ---- the device functions of cuda_emu.h ----

CPUGPU_EMU_NOSAN uint3 thread_idx() noexcept { return tls_worker->current->tid; }
CPUGPU_EMU_NOSAN uint3 block_idx() noexcept { return tls_worker->block_idx; }
CPUGPU_EMU_NOSAN dim3 block_dim() noexcept { return tls_worker->launch->spec.block; }
CPUGPU_EMU_NOSAN dim3 grid_dim() noexcept { return tls_worker->launch->spec.grid; }

CPUGPU_EMU_NOSAN int block_sync(int predicate) {
    Slot& s = running();
    Worker& w = *s.worker;
    w.block_sum += predicate != 0 ? 1u : 0u;
    char* sync = w.syncs + (w.block_phase & 1u);
    tsan_release(sync);
    if (++w.arrived == w.threads) {
        w.block_result = w.block_sum;
        w.block_sum = 0;
        w.arrived = 0;
        ++w.block_phase;
        for (unsigned t = 0; t < w.threads; ++t) {
            if (w.slots[t]->status == Status::AtBarrier) w.slots[t]->status = Status::Runnable;
        }
    } else {
        w.park(s, Status::AtBarrier);
    }
    tsan_acquire(sync);
    // Stable until every thread has arrived at the next barrier, which this one has not yet.
    return static_cast<int>(w.block_result);
}

CPUGPU_EMU_NOSAN unsigned long long warp_shfl(unsigned mask, unsigned long long bits, Shfl mode, int arg, int width) {
    static const char* const names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};
    const unsigned long long* v = warp_exchange(mask, bits, names[static_cast<int>(mode)]);
    Slot& s = running();
    const unsigned lanes = s.worker->warps[s.linear / 32].lanes;
    const unsigned lane = s.linear % 32;
    const unsigned w = static_cast<unsigned>(width);
    const unsigned in_seg = lane % w;
    const unsigned base = lane - in_seg;
    switch (mode) {
        case Shfl::Idx: {
            const unsigned src = base + static_cast<unsigned>(arg) % w;
            return src < lanes ? v[src] : bits;
        }
        case Shfl::Up: {
            const unsigned d = static_cast<unsigned>(arg);
            return in_seg >= d ? v[lane - d] : bits;
        }
        case Shfl::Down: {
            const unsigned d = static_cast<unsigned>(arg);
            return in_seg + d < w && lane + d < lanes ? v[lane + d] : bits;
        }
        case Shfl::Xor: {
            // CUDA: a lane may read its own or an earlier group of `width` lanes; asking a later
            // group returns its own value.
            const unsigned other = lane ^ static_cast<unsigned>(arg);
            return other < base + w && other < lanes ? v[other] : bits;
        }
    }
    return bits;
}

CPUGPU_EMU_NOSAN unsigned warp_ballot(unsigned mask, int predicate) {
    const unsigned long long* v = warp_exchange(mask, predicate != 0 ? 1u : 0u, "__ballot_sync");
    Slot& s = running();
    const unsigned lanes = s.worker->warps[s.linear / 32].lanes;
    unsigned bits = 0;
    for (unsigned i = 0; i < lanes; ++i)
        if (v[i] != 0) bits |= 1u << i;
    return bits & mask;
}

CPUGPU_EMU_NOSAN void warp_sync(unsigned mask) { warp_exchange(mask, 0, "__syncwarp"); }

CPUGPU_EMU_NOSAN unsigned active_mask() noexcept {
    Slot& s = running();
    const unsigned lanes = s.worker->warps[s.linear / 32].lanes;
    return lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
}

CPUGPU_EMU_NOSAN void* block_shared(const SharedSite& site) {
    Slot& s = running();
    Worker& w = *s.worker;
    for (const auto& [known, p] : w.sites)
        if (known == &site) return p;
    const std::size_t off = round_up(w.static_used, std::max<std::size_t>(site.align, 16));
    if (w.static_bytes + site.bytes > kMaxStaticShared || off + site.bytes > kStaticRegion) {
        std::fprintf(stderr, "cuda_emu: kernel %s declares more than %u bytes of static shared memory\n",
                     w.launch->spec.name, kMaxStaticShared);
        die("static shared memory over the limit");
    }
    unsigned char* p = w.arena + off;
    asan_unpoison(p, site.bytes);
    if (off + site.bytes > w.static_filled) {
        // Garbage for the part no earlier block of this worker used (the rest was filled when
        // the block started). Not a kernel access: hidden from ThreadSanitizer.
#if CPUGPU_EMU_TSAN
        AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
        std::memset(p, 0xA5, site.bytes);
#if CPUGPU_EMU_TSAN
        AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
#endif
    }
    w.static_used = off + site.bytes + kRedzone;
    w.static_bytes += site.bytes;
    w.sites.emplace_back(&site, p);
    return p;
}

CPUGPU_EMU_NOSAN void* dynamic_shared() noexcept { return tls_worker->arena + kStaticRegion; }

CPUGPU_EMU_NOSAN void yield_thread() {
    Slot& s = running();
    s.yielded = true;
    s.worker->park(s, Status::Runnable);
}

}  // namespace cuda_emu
