// simt_runtime_impl.hpp -- the SIMT emulator's runtime: fiber stacks, the block scheduler, block
// barriers, warp rendezvous, the launch. Included once per executable by simt_runtime.cpp, or by
// simt.hpp under SIMT_HEADER_ONLY. Not for kernels or tests to include.
//
// Model (details in README.md):
// - A launch runs blocks on W worker OS threads (the calling thread is worker 0). A worker runs
//   one block at a time, to completion, then takes the next block.
// - The threads of a block are fibers of that worker. They run cooperatively: a thread runs until
//   it waits (barrier, warp-synchronous call, __activemask, __nanosleep) or exits; then the next
//   ready thread in schedule order runs (see pick_ordered / pick_next).
// - Every wait and every exit is checked against CUDA's rules; a violation aborts the process
//   with a message naming the call site (file:line:column), the block and the thread.
#pragma once
#ifndef SIMT_EMULATION
#error "include simt.hpp before simt_runtime_impl.hpp"
#endif

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <exception>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include <boost/context/detail/fcontext.hpp>

#if SIMT_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#if SIMT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if SIMT_TSAN
// Runtime code that runs on fibers touches state shared by the fibers of a block, which TSan must
// not see as racy: the only synchronization TSan is told about is CUDA's (barriers, __syncwarp,
// atomics, block start and end). Not inlined, so kernels stay instrumented. Such functions call
// no lambdas or library helpers that touch runtime state: those would be instrumented functions.
#define SIMT_RT __attribute__((no_sanitize("thread"), noinline))
#else
#define SIMT_RT
#endif

namespace simt::detail {

namespace bctx = boost::context::detail;

// ---- Diagnostics ---------------------------------------------------------------------------------
struct Worker;
struct Fiber;

/// "0-3,8,30-31" for a lane mask.
struct LaneList {
  char text[120];
  explicit LaneList(std::uint32_t m) {
    int len = 0;
    text[0] = '\0';
    if (m == 0) std::snprintf(text, sizeof text, "none");
    for (int i = 0; i < 32 && len < static_cast<int>(sizeof text) - 8;) {
      if (!(m >> i & 1u)) {
        ++i;
        continue;
      }
      int j = i;
      while (j + 1 < 32 && (m >> (j + 1) & 1u)) ++j;
      const char* sep = len ? "," : "";
      len += i == j ? std::snprintf(text + len, sizeof text - len, "%s%d", sep, i)
                    : std::snprintf(text + len, sizeof text - len, "%s%d-%d", sep, i, j);
      i = j + 1;
    }
  }
};

/// "file:line:column".
struct SiteText {
  char text[400];
  explicit SiteText(const Loc& l) {
    std::snprintf(text, sizeof text, "%s:%u:%u", l.file_name(), unsigned(l.line()), unsigned(l.column()));
  }
};

[[noreturn, gnu::cold]] SIMT_API void vfail(const Worker* w, const Fiber* f, const Loc* loc, const char* fmt, std::va_list ap);

/// Prints "simt: fatal: <message>", the call site and the thread, and aborts.
[[noreturn, gnu::cold, gnu::format(printf, 4, 5)]] SIMT_API void fail(const Worker* w, const Fiber* f, const Loc* loc,
                                                                      const char* fmt, ...) {
  std::va_list ap;
  va_start(ap, fmt);
  vfail(w, f, loc, fmt, ap);
}

[[noreturn, gnu::cold, gnu::format(printf, 1, 2)]] SIMT_API void die(const char* fmt, ...) {
  std::va_list ap;
  va_start(ap, fmt);
  vfail(nullptr, nullptr, nullptr, fmt, ap);
}

/// Same call site: the same call expression of the same function (a template instantiation is a
/// function of its own). GCC and Clang give every call site one static source_location object,
/// so its address decides.
SIMT_RT SIMT_API bool same_site(const Loc& a, const Loc& b) noexcept {
  return __builtin_bit_cast(const void*, a) == __builtin_bit_cast(const void*, b);
}

// ---- Sanitizer hooks -----------------------------------------------------------------------------
inline void tsan_release([[maybe_unused]] void* addr) noexcept {
#if SIMT_TSAN
  __tsan_release(addr);
#endif
}
inline void tsan_acquire([[maybe_unused]] void* addr) noexcept {
#if SIMT_TSAN
  __tsan_acquire(addr);
#endif
}

// ---- Fiber stacks --------------------------------------------------------------------------------
/// One fiber stack: mmap'd, with a PROT_NONE guard page below it (an overflow faults at once).
/// Under TSan it also owns the TSan fiber that runs on it (creating one costs ~1 ms: both pooled).
struct StackSlot {
  void* map = nullptr;
  std::size_t map_bytes = 0;
  char* lo = nullptr;
  std::size_t bytes = 0;
  void* tsan_fiber = nullptr;
  bool tsan_dirty = false;  // used by a thread that threw or was abandoned: shadow call stack unbalanced
};

/// Process-wide pool of stack sets: a launch takes one set per worker and gives it back.
class StackPool {
 public:
  static StackPool& instance() {
    static StackPool pool;
    return pool;
  }

  std::vector<StackSlot> take(unsigned n, std::size_t bytes) {
    std::vector<StackSlot> set;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      std::size_t best = free_.size();
      for (std::size_t i = 0; i < free_.size(); ++i)
        if (!free_[i].empty() && free_[i].front().bytes == bytes && (best == free_.size() || free_[i].size() > free_[best].size()))
          best = i;
      if (best != free_.size()) {
        set = std::move(free_[best]);
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
      }
    }
    set.reserve(n);
    while (set.size() < n) set.push_back(map_slot(bytes));
    return set;
  }

  void give(std::vector<StackSlot>&& set) {
    for (StackSlot& s : set)
      if (s.tsan_dirty) destroy_tsan_fiber(s);
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(std::move(set));
  }

  static void ensure_tsan_fiber([[maybe_unused]] StackSlot& s, [[maybe_unused]] unsigned index) {
#if SIMT_TSAN
    if (s.tsan_fiber) return;
    // TSan keeps at most ~8k threads and fibers alive.
    if (live_tsan_fibers().fetch_add(1) > 6000) die("more than 6000 TSan fibers: use fewer SIMT_WORKERS or smaller blocks");
    s.tsan_fiber = __tsan_create_fiber(0);
    char name[32];
    std::snprintf(name, sizeof name, "simt thread %u", index);
    __tsan_set_fiber_name(s.tsan_fiber, name);
#endif
  }

  StackPool() = default;
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;
  ~StackPool() {
    for (auto& set : free_)
      for (StackSlot& s : set) {
        destroy_tsan_fiber(s);
        ::munmap(s.map, s.map_bytes);
      }
  }

 private:
  static std::atomic<int>& live_tsan_fibers() {
    static std::atomic<int> n{0};
    return n;
  }
  static void destroy_tsan_fiber([[maybe_unused]] StackSlot& s) {
#if SIMT_TSAN
    if (s.tsan_fiber) {
      __tsan_destroy_fiber(s.tsan_fiber);
      live_tsan_fibers().fetch_sub(1);
    }
#endif
    s.tsan_fiber = nullptr;
    s.tsan_dirty = false;
  }
  static StackSlot map_slot(std::size_t bytes) {
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    StackSlot s;
    s.bytes = (bytes + page - 1) / page * page;
    s.map_bytes = s.bytes + page;
    s.map = ::mmap(nullptr, s.map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s.map == MAP_FAILED) die("cannot map a %zu KiB fiber stack", s.map_bytes / 1024);
    if (::mprotect(s.map, page, PROT_NONE) != 0) die("cannot protect a fiber stack guard page");
    s.lo = static_cast<char*>(s.map) + page;
    return s;
  }

  std::mutex mutex_;
  std::vector<std::vector<StackSlot>> free_;
};

// ---- Block state ---------------------------------------------------------------------------------
/// An execution context: a CUDA thread's fiber, or the worker's own (scheduler) context.
struct Context {
  bctx::fcontext_t fctx = nullptr;
  void* tsan_fiber = nullptr;
  const void* stack_lo = nullptr;
  std::size_t stack_bytes = 0;
  void* asan_fake_stack = nullptr;
};

/// What a thread is doing (a compact array indexed by linear thread id).
enum Wait : std::uint8_t { ready, at_barrier, at_warp_op, at_activemask, exited };

inline const char* barrier_name(BarrierOp op) {
  switch (op) {
    case BarrierOp::sync: return "__syncthreads";
    case BarrierOp::count: return "__syncthreads_count";
    case BarrierOp::all: return "__syncthreads_and";
    case BarrierOp::any: return "__syncthreads_or";
  }
  return "?";
}

/// One CUDA thread.
struct Fiber : Context {
  uint3 tid{0, 0, 0};
  unsigned lin = 0;   // linear id in the block
  unsigned warp = 0;  // lin / 32
  unsigned lane = 0;  // lin % 32
  const char* wait_api = nullptr;  // what it waits in, for diagnostics
  Loc wait_loc;
};

/// Lanes of one warp waiting in one warp-synchronous call (same call site, same mask). Groups of
/// different calls may name the same lanes: a lane named by a pending group may make other calls
/// first, as CUDA allows; only a wait that can never end is an error.
struct WarpGroup {
  std::uint32_t mask = 0, arrived = 0;
  Op op = Op::syncwarp;
  const char* api = "";
  Loc loc;
};

/// Lanes waiting in __activemask at one call site.
struct Gather {
  Loc loc;
  std::uint32_t lanes = 0;
};

struct Warp {
  std::uint32_t present = 0;  // lanes that exist (the last warp of a block may be partial)
  std::uint32_t exited = 0;   // lanes that returned from the kernel
  std::uint32_t active = 0;   // bit s: group[s] is pending
  std::uint32_t waiting = 0;  // lanes waiting in a pending group
  std::uint32_t barrier = 0;  // lanes waiting at a block barrier
  std::uint32_t ready = 0;    // lanes that can run (the running lane included)
  unsigned ngather = 0;
  WarpGroup group[32];
  Gather gather[8];
  std::uint64_t in[32];   // each lane's operand
  std::uint64_t out[32];  // each lane's result
  std::uint8_t src[32];   // shuffles: the lane each lane reads
  char tsan_sync[32];     // __syncwarp happens-before: each lane releases its own address
};

struct Barrier {
  unsigned arrived = 0;
  unsigned first = 0;  // linear id of the first thread that arrived
  BarrierOp op = BarrierOp::sync;
  Loc loc;
  int count = 0;
  bool all = true, any = false;
  int result = 0;
  char tsan_sync = 0;
};

/// A launch as the workers see it.
struct LaunchState {
  dim3 grid, block;
  unsigned long long nblocks = 0;
  unsigned nthreads = 0;
  std::size_t dynamic_shared_bytes = 0;
  void (*invoke)(const void*) = nullptr;
  const void* payload = nullptr;
  Config cfg;
  unsigned workers = 1;
  unsigned long long perm_a = 1, perm_c = 0;  // shuffle: the k-th block run is (a*k + c) mod nblocks

  std::atomic<unsigned long long> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::exception_ptr error;

  void fail(std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::move(e);
    }
    failed.store(true, std::memory_order_relaxed);
  }
  unsigned long long block_at(unsigned long long k) const {
    switch (cfg.order) {
      case Order::forward: return k;
      case Order::reverse: return nblocks - 1 - k;
      case Order::shuffle: return static_cast<unsigned long long>((static_cast<simt_uint128_t>(perm_a) * k + perm_c) % nblocks);
    }
    return k;
  }
};

/// A worker: the threads of the block it runs, and its scheduler.
struct Worker {
  LaunchState* launch = nullptr;
  Context sched;  // the worker's own context
  std::vector<StackSlot> stacks;
  std::vector<Fiber> fiber_store;
  std::vector<Warp> warp_store;
  std::vector<std::uint32_t> order_store;
  std::vector<std::uint8_t> state_store;
  Fiber* fibers = nullptr;
  Warp* warps = nullptr;
  std::uint32_t* order = nullptr;  // Order::shuffle: order[pos] is a linear thread id
  std::uint8_t* state = nullptr;   // Wait, by linear thread id
  unsigned n = 0, nwarps = 0;
  bool reverse = false, shuffle = false;

  Fiber* current = nullptr;  // running thread; null while the scheduler runs
  unsigned live = 0;         // threads not exited
  unsigned ready = 0;        // threads that can run (the running one included)
  unsigned exited = 0;
  unsigned first_exited = 0;
  int pos = -1;  // Order::shuffle: position of the running thread in order[]
  Barrier bar;
  uint3 block{0, 0, 0};
  unsigned char* dyn = nullptr;
  std::size_t dyn_bytes = 0;
  std::uint64_t rng = 0;
  bool threw = false;         // a thread of the running block threw (set by runtime code only)
  std::exception_ptr error;   // what it threw; touched by the scheduler after the block ends
  char tsan_block_start = 0, tsan_block_end = 0;

  Worker() = default;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() { ::operator delete(dyn, std::align_val_t{16}); }
};

SIMT_API void vfail(const Worker* w, const Fiber* f, const Loc* loc, const char* fmt, std::va_list ap) {
  char msg[2048];
  std::vsnprintf(msg, sizeof msg, fmt, ap);  // (no va_end: the caller never regains control)
  std::fflush(stdout);
  std::fprintf(stderr, "simt: fatal: %s\n", msg);
  if (loc) std::fprintf(stderr, "  at %s in %s\n", SiteText(*loc).text, loc->function_name());
  if (w) {
    std::fprintf(stderr, "  in block (%u,%u,%u)", w->block.x, w->block.y, w->block.z);
    if (f)
      std::fprintf(stderr, " thread (%u,%u,%u) (linear id %u, warp %u, lane %u)", f->tid.x, f->tid.y, f->tid.z, f->lin, f->warp,
                   f->lane);
    std::fprintf(stderr, "\n");
  }
  std::fflush(stderr);
  std::abort();
}

SIMT_RT SIMT_API Worker& worker_or_die(const char* api) {
  Worker* w = tls_worker;
  if (!w || !w->current) [[unlikely]]
    die("%s called outside a kernel run by simt::launch", api);
  return *w;
}

// ---- Switching -----------------------------------------------------------------------------------
// Every switch passes the suspending context as transfer data; the resumed side stores the
// suspended fcontext into it. Sanitizers are told about each switch (TSan: no synchronization).
SIMT_RT SIMT_API void on_resumed(Context& self, bctx::transfer_t t) noexcept {
  Context* prev = static_cast<Context*>(t.data);
  prev->fctx = t.fctx;
#if SIMT_ASAN
  __sanitizer_finish_switch_fiber(self.asan_fake_stack, &prev->stack_lo, &prev->stack_bytes);
#else
  (void)self;
#endif
}

/// Suspends `from` (forever if `dies`) and runs `to` (a thread, or the scheduler if null).
SIMT_RT SIMT_API void switch_to(Worker& w, Context& from, Fiber* to, bool dies) noexcept {
  Context& target = to ? static_cast<Context&>(*to) : w.sched;
  w.current = to;
  if (to) ::threadIdx = to->tid;
#if SIMT_TSAN
  __tsan_switch_to_fiber(target.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
#if SIMT_ASAN
  // A dying fiber's frames are never returned from: clear their redzones, the stack is reused.
  if (dies) __asan_handle_no_return();
  __sanitizer_start_switch_fiber(dies ? nullptr : &from.asan_fake_stack, target.stack_lo, target.stack_bytes);
#else
  (void)dies;
#endif
  bctx::fcontext_t to_ctx = target.fctx;
  target.fctx = nullptr;
  const bctx::transfer_t t = bctx::jump_fcontext(to_ctx, &from);
  on_resumed(from, t);
}

// ---- Scheduling ----------------------------------------------------------------------------------
SIMT_RT SIMT_API std::uint64_t next_random(std::uint64_t& s) noexcept {  // splitmix64
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

SIMT_RT SIMT_API void reshuffle(Worker& w) noexcept {
  for (unsigned i = w.n; i > 1; --i) {
    const unsigned j = static_cast<unsigned>(next_random(w.rng) % i);
    const std::uint32_t t = w.order[i - 1];
    w.order[i - 1] = w.order[j];
    w.order[j] = t;
  }
}

SIMT_RT SIMT_API void wake(Worker& w, unsigned lin) noexcept {
  w.state[lin] = ready;
  w.warps[lin / 32].ready |= 1u << (lin % 32);
  ++w.ready;
}

/// The running thread stops being ready: it waits in `api` at `loc`.
SIMT_RT SIMT_API void start_waiting(Worker& w, Fiber& self, Wait what, const char* api, const Loc& loc) noexcept {
  w.state[self.lin] = what;
  w.warps[self.warp].ready &= ~(1u << self.lane);
  --w.ready;
  self.wait_api = api;
  self.wait_loc = loc;
}

/// Lanes waiting in __activemask get the set of lanes of their warp gathered at the same call.
SIMT_RT SIMT_API bool resolve_gathers(Worker& w) noexcept {
  bool any = false;
  for (unsigned k = 0; k < w.nwarps; ++k) {
    Warp& wp = w.warps[k];
    for (unsigned g = 0; g < wp.ngather; ++g) {
      const std::uint32_t lanes = wp.gather[g].lanes;
      for (std::uint32_t m = lanes; m; m &= m - 1) {
        const unsigned l = static_cast<unsigned>(std::countr_zero(m));
        wp.out[l] = lanes;
        wake(w, k * 32 + l);
      }
      any = true;
    }
    wp.ngather = 0;
  }
  return any;
}

[[noreturn, gnu::cold]] SIMT_RT SIMT_API void deadlock(Worker& w) {
  char msg[1800];
  int len = std::snprintf(msg, sizeof msg, "deadlock: no thread of the block can proceed");
  // Waiting threads grouped by what they wait in, in order of first appearance.
  std::vector<bool> listed(w.n, false);
  for (unsigned i = 0; i < w.n && len < static_cast<int>(sizeof msg) - 200; ++i) {
    const Fiber& f = w.fibers[i];
    if (listed[i] || w.state[i] == exited) continue;
    char ids[64] = "";
    int ids_len = 0;
    unsigned count = 0;
    for (unsigned j = i; j < w.n; ++j) {
      const Fiber& g = w.fibers[j];
      if (listed[j] || w.state[j] != w.state[i] || g.wait_api != f.wait_api || !same_site(g.wait_loc, f.wait_loc)) continue;
      listed[j] = true;
      if (count++ < 6 && ids_len < 48) ids_len += std::snprintf(ids + ids_len, sizeof ids - ids_len, "%s%u", ids_len ? "," : "", j);
    }
    len += std::snprintf(msg + len, sizeof msg - len, "\n  %u thread(s) [linear ids %s%s] wait in %s at %s", count, ids,
                         count > 6 ? ",..." : "", f.wait_api ? f.wait_api : "?", SiteText(f.wait_loc).text);
  }
  fail(&w, nullptr, nullptr, "%s", msg);
}

/// Forward/reverse schedule: the first ready thread after lane `after` of warp `c` in schedule
/// order (forward: lanes and warps by increasing index; reverse: decreasing), wrapping around.
/// after = -1 (forward) or 32 (reverse) starts at the first lane of warp c.
SIMT_RT SIMT_API Fiber* pick_ordered(Worker& w, unsigned c, int after) noexcept {
  const unsigned nw = w.nwarps;
  if (!w.reverse) {
    std::uint32_t m = after >= 31 ? 0u : w.warps[c].ready & (~0u << (after + 1));
    unsigned k = c;
    for (unsigned step = 0; !m && step < nw; ++step) {
      k = k + 1 == nw ? 0 : k + 1;
      m = w.warps[k].ready;
    }
    return m ? &w.fibers[k * 32 + static_cast<unsigned>(std::countr_zero(m))] : nullptr;
  }
  std::uint32_t m = after <= 0 ? 0u : after >= 32 ? w.warps[c].ready : w.warps[c].ready & ((1u << after) - 1u);
  unsigned k = c;
  for (unsigned step = 0; !m && step < nw; ++step) {
    k = k == 0 ? nw - 1 : k - 1;
    m = w.warps[k].ready;
  }
  return m ? &w.fibers[k * 32 + 31 - static_cast<unsigned>(std::countl_zero(m))] : nullptr;
}

/// The next thread to run after (warp c, lane `after`); null when every thread exited. Aborts on
/// deadlock. Forward/reverse: pick_ordered. Shuffle: the next ready thread of the current pass over
/// a random permutation of the block, a new permutation for every pass.
SIMT_RT SIMT_API Fiber* pick_next(Worker& w, unsigned c, int after) {
  for (;;) {
    if (w.ready == 0) {
      if (w.live == 0) return nullptr;
      if (!resolve_gathers(w)) deadlock(w);
    }
    if (!w.shuffle) return pick_ordered(w, c, after);
    const int n = static_cast<int>(w.n);
    while (++w.pos < n) {
      const std::uint32_t i = w.order[w.pos];
      if (w.state[i] == ready) return &w.fibers[i];
    }
    w.pos = -1;
    reshuffle(w);
  }
}

/// Where a thread that stops being ready resumes the search: the first lane of its own warp. So a
/// warp runs on until all its lanes wait at a block barrier or exit, and its fibers' stacks stay
/// in cache (moving on to the next warp at every warp-synchronous call is much slower).
SIMT_RT SIMT_API Fiber* pick_after_wait(Worker& w, const Fiber& self) { return pick_next(w, self.warp, w.reverse ? 32 : -1); }

/// The running thread has stopped being ready: run others until it is ready again.
SIMT_RT SIMT_API void suspend(Worker& w, Fiber& self) {
  Fiber* next = pick_after_wait(w, self);
  if (next != &self) switch_to(w, self, next, false);
}

// ---- Warp rendezvous -----------------------------------------------------------------------------
inline constexpr std::uint64_t kPoison = ~std::uint64_t{0};  // a shuffle read of a lane outside the mask

/// The lane a shuffle reads, as PTX shfl.sync defines it for the clamp value CUDA passes for
/// `width`: idx reads lane (srcLane mod width) of the own segment; up/down read lane -/+ delta if
/// that stays in the own segment; xor reads lane ^ laneMask unless that lies in a later segment.
/// Otherwise (and for delta 0) the lane reads its own value.
constexpr unsigned shfl_source(std::uint32_t spec, unsigned lane) noexcept {
  const auto mode = static_cast<ShflMode>(spec >> 16);
  const unsigned width = (spec >> 8) & 0xffu, b = spec & 31u;
  const unsigned segmask = (32u - width) & 31u;
  const unsigned min_lane = lane & segmask;
  const unsigned max_lane = min_lane | (31u & ~segmask);
  switch (mode) {
    case ShflMode::idx: return min_lane | (b & ~segmask);
    case ShflMode::up: return lane >= min_lane + b ? lane - b : lane;
    case ShflMode::down: return lane + b <= max_lane ? lane + b : lane;
    case ShflMode::bfly: return (lane ^ b) <= max_lane ? (lane ^ b) : lane;
  }
  return lane;
}

/// Computes the results of group slot g (all its lanes arrived) and wakes its waiting lanes.
SIMT_RT SIMT_API void complete_group(Worker& w, Warp& wp, unsigned g, unsigned self_lane) {
  WarpGroup& grp = wp.group[g];
  const std::uint32_t arr = grp.arrived;
  const unsigned first = static_cast<unsigned>(std::countr_zero(arr));
  switch (grp.op) {
    case Op::syncwarp:
      for (std::uint32_t m = arr; m; m &= m - 1) wp.out[std::countr_zero(m)] = arr;  // who to acquire from (TSan)
      break;
    case Op::shfl:
      for (std::uint32_t m = arr; m; m &= m - 1) {
        const unsigned l = static_cast<unsigned>(std::countr_zero(m)), s = wp.src[l];
        wp.out[l] = (arr >> s & 1u) ? wp.in[s] : kPoison;
      }
      break;
    case Op::ballot: {
      std::uint64_t b = 0;
      for (std::uint32_t m = arr; m; m &= m - 1) {
        const unsigned l = static_cast<unsigned>(std::countr_zero(m));
        b |= std::uint64_t{wp.in[l] != 0} << l;
      }
      for (std::uint32_t m = arr; m; m &= m - 1) wp.out[std::countr_zero(m)] = b;
      break;
    }
    case Op::match_any:
      for (std::uint32_t m = arr; m; m &= m - 1) {
        const unsigned l = static_cast<unsigned>(std::countr_zero(m));
        std::uint64_t same = 0;
        for (std::uint32_t q = arr; q; q &= q - 1) {
          const unsigned k = static_cast<unsigned>(std::countr_zero(q));
          same |= std::uint64_t{wp.in[k] == wp.in[l]} << k;
        }
        wp.out[l] = same;
      }
      break;
    case Op::match_all: {
      bool same = true;
      for (std::uint32_t m = arr; m; m &= m - 1) same = same && wp.in[std::countr_zero(m)] == wp.in[first];
      for (std::uint32_t m = arr; m; m &= m - 1) wp.out[std::countr_zero(m)] = same ? arr : 0;
      break;
    }
    default: {
      std::uint32_t r = static_cast<std::uint32_t>(wp.in[first]);
      for (std::uint32_t m = arr & (arr - 1); m; m &= m - 1) {  // the lanes after the first
        const std::uint32_t v = static_cast<std::uint32_t>(wp.in[std::countr_zero(m)]);
        const std::int32_t rs = static_cast<std::int32_t>(r), vs = static_cast<std::int32_t>(v);
        switch (grp.op) {
          case Op::reduce_add: r += v; break;
          case Op::reduce_min_u: r = v < r ? v : r; break;
          case Op::reduce_max_u: r = v > r ? v : r; break;
          case Op::reduce_min_i: r = static_cast<std::uint32_t>(vs < rs ? vs : rs); break;
          case Op::reduce_max_i: r = static_cast<std::uint32_t>(vs > rs ? vs : rs); break;
          case Op::reduce_and: r &= v; break;
          case Op::reduce_or: r |= v; break;
          case Op::reduce_xor: r ^= v; break;
          default: break;
        }
      }
      for (std::uint32_t m = arr; m; m &= m - 1) wp.out[std::countr_zero(m)] = r;
      break;
    }
  }
  wp.active &= ~(1u << g);
  wp.waiting &= ~arr;
  const unsigned base = static_cast<unsigned>(&wp - w.warps) * 32;
  for (std::uint32_t m = arr; m; m &= m - 1) {
    const unsigned l = static_cast<unsigned>(std::countr_zero(m));
    if (l != self_lane) wake(w, base + l);
  }
}

/// A pending group (other than slot `except`) that waits for `lane` while one of the lanes of
/// `mask` waits in it: if `lane` now waits for `mask`, neither can ever proceed. 32 if none.
SIMT_RT SIMT_API unsigned blocking_group(const Warp& wp, std::uint32_t mask, unsigned lane, unsigned except) noexcept {
  for (std::uint32_t a = wp.active & ~(except < 32 ? 1u << except : 0u); a; a &= a - 1) {
    const unsigned s = static_cast<unsigned>(std::countr_zero(a));
    if ((wp.group[s].arrived & mask) && (wp.group[s].mask >> lane & 1u)) return s;
  }
  return 32;
}

/// Reports why a warp-synchronous call cannot proceed (the checks of warp_sync_op, spelled out).
[[noreturn, gnu::cold]] SIMT_RT SIMT_API void bad_warp_call(Worker& w, Fiber& self, Op op, const char* api,
                                                                          std::uint32_t mask, const Loc& loc, unsigned slot) {
  const Warp& wp = w.warps[self.warp];
  const std::uint32_t me = 1u << self.lane;
  if (!(mask & me)) fail(&w, &self, &loc, "%s: mask 0x%08x does not name the calling lane %u (CUDA requires it)", api, mask, self.lane);
  if (op != Op::syncwarp && (mask & ~wp.present))
    fail(&w, &self, &loc, "%s: mask 0x%08x names lanes %s, which do not exist: the block has %u threads, this warp has lanes %s", api,
         mask, LaneList(mask & ~wp.present).text, w.n, LaneList(wp.present).text);
  if (op != Op::syncwarp && (mask & wp.exited))
    fail(&w, &self, &loc,
         "%s: mask 0x%08x names lanes %s, which have exited: name only lanes that reach this call (a full mask "
         "in a divergent branch or after an early return is the usual cause; __ballot_sync gives the right mask)",
         api, mask, LaneList(mask & wp.exited).text);
  if (mask & wp.barrier) {
    const Fiber& other = w.fibers[self.warp * 32 + static_cast<unsigned>(std::countr_zero(mask & wp.barrier))];
    fail(&w, &self, &loc,
         "divergent warp-synchronous call: %s with mask 0x%08x while lanes %s of the mask wait in %s at %s for this thread too", api,
         mask, LaneList(mask & wp.barrier).text, other.wait_api, SiteText(other.wait_loc).text);
  }
  const unsigned b = blocking_group(wp, mask, self.lane, slot);
  if (b < 32) {
    const WarpGroup& o = wp.group[b];
    fail(&w, &self, &loc,
         "divergent warp-synchronous call: lane %u reached %s here with mask 0x%08x, while lanes %s of that mask wait in %s "
         "at %s with mask 0x%08x, which names lane %u: neither call can complete",
         self.lane, api, mask, LaneList(o.arrived & mask).text, o.api, SiteText(o.loc).text, o.mask, self.lane);
  }
  fail(&w, &self, &loc, "internal error: inconsistent warp state");
}

SIMT_RT SIMT_API std::uint64_t warp_sync_op(Op op, const char* api, std::uint32_t mask, std::uint64_t value, std::uint32_t spec,
                                            const Loc& loc) {
  Worker& w = worker_or_die(api);
  Fiber& self = *w.current;
  Warp& wp = w.warps[self.warp];
  const unsigned lane = self.lane;
  const std::uint32_t me = 1u << lane;
  // __syncwarp may name exited lanes, and the missing lanes of a partial warp (CUDA waits for the
  // non-exited lanes of the mask only); other calls read the named lanes' values: they may not.
  const std::uint32_t absent_ok = op == Op::syncwarp ? (wp.exited | ~wp.present) : 0u;
  if (!(mask & me) || (mask & ~wp.present & ~absent_ok) || (mask & wp.exited & ~absent_ok) || (mask & wp.barrier)) [[unlikely]]
    bad_warp_call(w, self, op, api, mask, loc, 32);
  unsigned g = 32;
  for (std::uint32_t a = wp.active; a; a &= a - 1) {
    const unsigned s = static_cast<unsigned>(std::countr_zero(a));
    if (wp.group[s].mask == mask && wp.group[s].op == op && same_site(wp.group[s].loc, loc)) {
      g = s;
      break;
    }
  }
  if ((wp.waiting & mask) && blocking_group(wp, mask, lane, g) < 32) [[unlikely]]
    bad_warp_call(w, self, op, api, mask, loc, g);
  if (g == 32) {
    g = static_cast<unsigned>(std::countr_zero(~wp.active));  // < 32: each pending group has a waiting lane
    WarpGroup& grp = wp.group[g];
    grp.mask = mask;
    grp.arrived = 0;
    grp.op = op;
    grp.api = api;
    grp.loc = loc;
    wp.active |= 1u << g;
  }
  WarpGroup& grp = wp.group[g];
  wp.in[lane] = value;
  if (op == Op::shfl) wp.src[lane] = static_cast<std::uint8_t>(shfl_source(spec, lane));
  grp.arrived |= me;
  if (op == Op::syncwarp) tsan_release(&wp.tsan_sync[lane]);
  const std::uint32_t need = mask & ~absent_ok;
  if ((grp.arrived & need) == need) {
    complete_group(w, wp, g, lane);
  } else {
    wp.waiting |= me;
    start_waiting(w, self, at_warp_op, api, loc);
    suspend(w, self);
  }
  // Only __syncwarp orders memory between lanes (CUDA: shuffles and votes exchange values only).
  if (op == Op::syncwarp)
    for (std::uint32_t m = static_cast<std::uint32_t>(wp.out[lane]); m; m &= m - 1) tsan_acquire(&wp.tsan_sync[std::countr_zero(m)]);
  return wp.out[lane];
}

SIMT_RT SIMT_API std::uint32_t activemask_op(const Loc& loc) {
  Worker& w = worker_or_die("__activemask");
  Fiber& self = *w.current;
  Warp& wp = w.warps[self.warp];
  unsigned g = 0;
  while (g < wp.ngather && !same_site(wp.gather[g].loc, loc)) ++g;
  if (g == wp.ngather) {
    if (wp.ngather == 8) fail(&w, &self, &loc, "__activemask: more than 8 distinct call sites pending in one warp");
    wp.gather[wp.ngather++] = Gather{loc, 0};
  }
  wp.gather[g].lanes |= 1u << self.lane;
  start_waiting(w, self, at_activemask, "__activemask", loc);
  suspend(w, self);
  return static_cast<std::uint32_t>(wp.out[self.lane]);
}

SIMT_RT SIMT_API void yield_op() {
  Worker& w = worker_or_die("__nanosleep");
  Fiber& self = *w.current;
  Fiber* next = pick_next(w, self.warp, static_cast<int>(self.lane));
  if (next != &self) switch_to(w, self, next, false);
}

SIMT_RT SIMT_API void* dynamic_shared_base() { return worker_or_die("simt::dynamic_shared").dyn; }
SIMT_RT SIMT_API std::size_t dynamic_shared_bytes() { return worker_or_die("simt::dynamic_shared_size").dyn_bytes; }

SIMT_API void trap_op(const Loc& loc) {
  Worker* w = tls_worker;
  if (w && w->current) fail(w, w->current, &loc, "__trap() called");
  die("__trap() called outside a kernel");
}

SIMT_API void bad_shfl_width(const char* api, int width, const Loc& loc) {
  Worker& w = worker_or_die(api);
  fail(&w, w.current, &loc, "%s: width %d is not a power of 2 in [1, 32] (undefined in CUDA)", api, width);
}

// ---- Block barrier -------------------------------------------------------------------------------
[[noreturn, gnu::cold]] SIMT_RT SIMT_API void bad_barrier(Worker& w, Fiber& self, BarrierOp op, const Loc& loc) {
  if (w.exited > 0)
    fail(&w, &self, &loc,
         "%s reached after %u thread(s) of the block exited (first: linear id %u); every thread of the block must reach the "
         "barrier (exited threads do not count as arrived here)",
         barrier_name(op), w.exited, w.first_exited);
  const Warp& wp = w.warps[self.warp];
  for (std::uint32_t s = wp.active; s; s &= s - 1) {
    const WarpGroup& grp = wp.group[std::countr_zero(s)];
    if (grp.mask & (1u << self.lane))
      fail(&w, &self, &loc,
           "divergent warp-synchronous call: %s reached while lanes %s of this warp wait for this lane in %s at %s (mask 0x%08x)",
           barrier_name(op), LaneList(grp.arrived).text, grp.api, SiteText(grp.loc).text, grp.mask);
  }
  const Barrier& b = w.bar;
  fail(&w, &self, &loc,
       "divergent barrier: this thread reached %s here, while %u thread(s) (first: linear id %u) wait in %s at %s; all threads "
       "of a block must reach the same barrier",
       barrier_name(op), b.arrived, b.first, barrier_name(b.op), SiteText(b.loc).text);
}

SIMT_RT SIMT_API int block_barrier(BarrierOp op, int pred, const Loc& loc) {
  Worker& w = worker_or_die(barrier_name(op));
  Fiber& self = *w.current;
  Warp& wp = w.warps[self.warp];
  const std::uint32_t me = 1u << self.lane;
  Barrier& b = w.bar;
  std::uint32_t named = 0;  // lanes that pending warp groups wait for
  for (std::uint32_t a = wp.active; a; a &= a - 1) named |= wp.group[std::countr_zero(a)].mask;
  if (w.exited > 0 || (named & me) || (b.arrived > 0 && (b.op != op || !same_site(b.loc, loc)))) [[unlikely]]
    bad_barrier(w, self, op, loc);
  if (b.arrived == 0) {
    b.loc = loc;
    b.op = op;
    b.first = self.lin;
    b.count = 0;
    b.all = true;
    b.any = false;
  }
  b.count += pred != 0;
  b.all = b.all && pred != 0;
  b.any = b.any || pred != 0;
  tsan_release(&b.tsan_sync);
  if (++b.arrived == w.n) {
    b.result = op == BarrierOp::count ? b.count : op == BarrierOp::all ? int(b.all) : op == BarrierOp::any ? int(b.any) : 0;
    b.arrived = 0;
    for (unsigned i = 0; i < w.n; ++i)
      if (w.state[i] == at_barrier) wake(w, i);
    for (unsigned k = 0; k < w.nwarps; ++k) w.warps[k].barrier = 0;
  } else {
    start_waiting(w, self, at_barrier, barrier_name(op), loc);
    wp.barrier |= me;
    suspend(w, self);
  }
  tsan_acquire(&b.tsan_sync);
  return b.result;
}

// ---- Thread lifetime -----------------------------------------------------------------------------
/// The running thread returned from the kernel (or threw).
[[noreturn]] SIMT_RT SIMT_API void finish_fiber(Worker& w, Fiber& self, bool threw) {
  start_waiting(w, self, exited, "(exited)", Loc{});
  --w.live;
  if (w.exited++ == 0) w.first_exited = self.lin;
  Warp& wp = w.warps[self.warp];
  const std::uint32_t me = 1u << self.lane;
  wp.exited |= me;
  if (!threw) {
    // Pending warp-synchronous calls whose mask names this lane.
    for (std::uint32_t a = wp.active; a; a &= a - 1) {
      const unsigned g = static_cast<unsigned>(std::countr_zero(a));
      WarpGroup& grp = wp.group[g];
      if (!(grp.mask & me)) continue;
      if (grp.op != Op::syncwarp)
        fail(&w, &self, &grp.loc,
             "lane %u exited while lanes %s wait for it in %s (mask 0x%08x names it): the lanes named in the mask must all reach "
             "the same call",
             self.lane, LaneList(grp.arrived).text, grp.api, grp.mask);
      // __syncwarp: CUDA waits for the non-exited lanes named in the mask only.
      const std::uint32_t need = grp.mask & ~wp.exited;
      if ((grp.arrived & need) == need) complete_group(w, wp, g, 32);
    }
    if (w.bar.arrived > 0)
      fail(&w, &self, &w.bar.loc,
           "thread %u exited while %u thread(s) wait in %s; every thread of the block must reach the barrier (exited threads do "
           "not count as arrived here)",
           self.lin, w.bar.arrived, barrier_name(w.bar.op));
  }
  Fiber* next = threw ? nullptr : pick_after_wait(w, self);
  tsan_release(&w.tsan_block_end);  // after this thread's last access to runtime state
  switch_to(w, self, next, true);
  __builtin_unreachable();
}

[[noreturn]] SIMT_RT SIMT_API void fiber_entry(bctx::transfer_t t) noexcept {
  Worker& w = *tls_worker;
  Fiber& self = *w.current;
  self.asan_fake_stack = nullptr;  // a fresh fiber has no fake stack to restore
  on_resumed(self, t);
  tsan_acquire(&w.tsan_block_start);
  bool threw = false;
  try {
    w.launch->invoke(w.launch->payload);
  } catch (...) {
    threw = true;
    if (!w.threw) {  // the first thread that throws stops the block (the others never resume)
      w.threw = true;
      w.error = std::current_exception();
    }
  }
  finish_fiber(w, self, threw);
}

// ---- Running blocks ------------------------------------------------------------------------------
/// Fibers' stack tops are staggered by this many bytes (0..4032): stacks are page-aligned, and
/// without it the hot top lines of all fibers fall into the same cache sets.
inline std::size_t stack_color(unsigned i) noexcept { return ((i * 37u) % 64u) * 64u; }

SIMT_RT SIMT_API void setup_worker(Worker& w, LaunchState& L, std::vector<StackSlot>&& stacks, unsigned index) {
  w.launch = &L;
  w.n = L.nthreads;
  w.nwarps = (w.n + 31) / 32;
  w.reverse = L.cfg.order == Order::reverse;
  w.shuffle = L.cfg.order == Order::shuffle;
  w.stacks = std::move(stacks);
  w.fiber_store.assign(w.n, Fiber{});
  w.warp_store.assign(w.nwarps, Warp{});
  w.order_store.resize(w.n);
  w.state_store.assign(w.n, ready);
  w.fibers = w.fiber_store.data();
  w.warps = w.warp_store.data();
  w.order = w.order_store.data();
  w.state = w.state_store.data();
  const dim3 b = L.block;
  for (unsigned i = 0; i < w.n; ++i) {
    Fiber& f = w.fibers[i];
    f.lin = i;
    f.tid = uint3{i % b.x, (i / b.x) % b.y, i / (b.x * b.y)};
    f.warp = i / 32;
    f.lane = i % 32;
    StackSlot& s = w.stacks[i];
    StackPool::ensure_tsan_fiber(s, i);
    f.tsan_fiber = s.tsan_fiber;
    f.stack_lo = s.lo;
    f.stack_bytes = s.bytes;
    w.warps[i / 32].present |= 1u << (i % 32);
  }
#if SIMT_TSAN
  w.sched.tsan_fiber = __tsan_get_current_fiber();
#endif
  w.dyn_bytes = L.dynamic_shared_bytes;
  w.dyn = static_cast<unsigned char*>(::operator new(w.dyn_bytes > 0 ? w.dyn_bytes : 1, std::align_val_t{16}));
  w.rng = L.cfg.seed * 0x9E3779B97F4A7C15ull + index;
}

/// Abandons the threads of a block that failed: they are never resumed (no unwinding: kernel
/// locals are trivially destructible in practice); their stacks are reused by later blocks.
SIMT_RT SIMT_API void abandon_block(Worker& w) {
  for (unsigned i = 0; i < w.n; ++i) {
#if SIMT_TSAN
    if (w.state[i] != exited) {
      // What the thread did so far happens before the end of the launch (the host reads the
      // results): release on its behalf, without running it.
      __tsan_switch_to_fiber(w.fibers[i].tsan_fiber, __tsan_switch_to_fiber_no_sync);
      __tsan_release(&w.tsan_block_end);
      __tsan_switch_to_fiber(w.sched.tsan_fiber, __tsan_switch_to_fiber_no_sync);
    }
#endif
#if SIMT_ASAN
    // Frames left on the stack keep their redzones poisoned.
    __asan_unpoison_memory_region(w.stacks[i].lo, w.stacks[i].bytes);
#endif
    // TSan's shadow call stack of a fiber that threw or was abandoned is unbalanced: a new TSan
    // fiber replaces it when the stack goes back to the pool.
    w.stacks[i].tsan_dirty = true;
  }
}

SIMT_RT SIMT_API void run_block(Worker& w, unsigned long long b) {
  const dim3 g = w.launch->grid;
  w.block = uint3{static_cast<unsigned>(b % g.x), static_cast<unsigned>((b / g.x) % g.y),
                  static_cast<unsigned>(b / (static_cast<unsigned long long>(g.x) * g.y))};
  ::blockIdx = w.block;
  for (unsigned i = 0; i < w.n; ++i) {
    const std::size_t top = w.stacks[i].bytes - stack_color(i);
    w.fibers[i].fctx = bctx::make_fcontext(w.stacks[i].lo + top, top, &fiber_entry);
    w.state[i] = ready;
    w.order[i] = i;
  }
  for (unsigned k = 0; k < w.nwarps; ++k) {
    Warp& wp = w.warps[k];
    wp.exited = wp.active = wp.waiting = wp.barrier = 0;
    wp.ready = wp.present;
    wp.ngather = 0;
  }
  if (w.shuffle) {
    w.rng ^= b * 0xD1B54A32D192ED03ull;
    reshuffle(w);
  }
  w.bar.arrived = 0;
  w.live = w.ready = w.n;
  w.exited = 0;
  w.pos = -1;
  // CUDA leaves shared memory uninitialized: the dynamic part starts as 0xFF bytes (NaN floats).
  std::memset(w.dyn, 0xFF, w.dyn_bytes);
  tsan_release(&w.tsan_block_start);
  Fiber* first = pick_next(w, w.reverse ? w.nwarps - 1 : 0, w.reverse ? 32 : -1);
  switch_to(w, w.sched, first, false);
  // Back here when every thread exited, or one threw.
  if (w.threw) abandon_block(w);
  tsan_acquire(&w.tsan_block_end);
}

SIMT_RT SIMT_API void worker_main(LaunchState& L, unsigned index, std::vector<StackSlot>& stacks) {
  Worker w;
  Worker* const saved = tls_worker;
  try {
    setup_worker(w, L, std::move(stacks), index);
    tls_worker = &w;
    ::blockDim = L.block;
    ::gridDim = L.grid;
#if SIMT_TSAN
    // Blocks are dealt round-robin: which blocks run on different workers (and so are checked
    // against each other by TSan) does not depend on timing.
    for (unsigned long long k = index; k < L.nblocks && !L.failed.load(std::memory_order_relaxed); k += L.workers) {
#else
    for (;;) {
      if (L.failed.load(std::memory_order_relaxed)) break;
      const unsigned long long k = L.next.fetch_add(1, std::memory_order_relaxed);
      if (k >= L.nblocks) break;
#endif
      run_block(w, L.block_at(k));
      if (w.threw) {
        L.fail(w.error);
        break;
      }
    }
  } catch (...) {
    L.fail(std::current_exception());
  }
  tls_worker = saved;
  stacks = std::move(w.stacks);
}

// ---- Configuration -------------------------------------------------------------------------------
SIMT_API unsigned long long parse_env_number(const char* name, const char* text, unsigned long long lo, unsigned long long hi) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi)
    die("environment variable %s='%s' is not an integer in [%llu, %llu]", name, text, lo, hi);
  return v;
}

SIMT_API Config config_from_environment() {
  Config c;
  if (const char* s = std::getenv("SIMT_WORKERS"); s && *s) c.workers = static_cast<unsigned>(parse_env_number("SIMT_WORKERS", s, 1, 256));
  if (const char* s = std::getenv("SIMT_REVERSE"); s && *s && std::strcmp(s, "0") != 0) c.order = Order::reverse;
  if (const char* s = std::getenv("SIMT_SHUFFLE_SEED"); s && *s) {
    c.order = Order::shuffle;
    c.seed = parse_env_number("SIMT_SHUFFLE_SEED", s, 0, ~0ull);
  }
  if (const char* s = std::getenv("SIMT_STACK_KB"); s && *s)
    c.stack_bytes = static_cast<std::size_t>(parse_env_number("SIMT_STACK_KB", s, 16, 1 << 20)) * 1024;
  return c;
}

struct ConfigStore {
  std::mutex mutex;
  bool initialized = false;
  Config config;
  static ConfigStore& instance() {
    static ConfigStore s;
    return s;
  }
};

SIMT_API std::mutex& static_shared_launch_mutex() {
  static std::mutex m;
  return m;
}

SIMT_API void check_launch(dim3 grid, dim3 block, std::size_t dyn) {
  const char* why = nullptr;
  if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z)
    why = "every dimension must be at least 1";
  else if (block.x > 1024 || block.y > 1024 || block.z > 64)
    why = "block dimensions are limited to (1024, 1024, 64)";
  else if (static_cast<unsigned long long>(block.x) * block.y * block.z > 1024)
    why = "a block has at most 1024 threads";
  else if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    why = "grid dimensions are limited to (2^31-1, 65535, 65535)";
  else if (dyn > 227 * 1024)
    why = "more dynamic shared memory than any GPU gives a block (227 KiB)";
  if (!why) return;
  char msg[300];
  std::snprintf(msg, sizeof msg, "simt::launch: invalid configuration grid (%u,%u,%u) block (%u,%u,%u) dynamic shared %zu B: %s", grid.x,
                grid.y, grid.z, block.x, block.y, block.z, dyn, why);
  throw launch_error(msg);
}

SIMT_API void run_grid(dim3 grid, dim3 block, std::size_t dyn, void (*invoke)(const void*), const void* payload) {
  if (tls_worker && tls_worker->current) die("simt::launch called from device code (dynamic parallelism is not supported)");
  check_launch(grid, block, dyn);
  LaunchState L;
  L.grid = grid;
  L.block = block;
  L.nblocks = static_cast<unsigned long long>(grid.x) * grid.y * grid.z;
  L.nthreads = block.x * block.y * block.z;
  L.dynamic_shared_bytes = dyn;
  L.invoke = invoke;
  L.payload = payload;
  L.cfg = get_config();
#if defined(SIMT_SINGLE_WORKER)
  L.cfg.workers = 1;
#endif
  L.workers = static_cast<unsigned>(L.cfg.workers < L.nblocks ? L.cfg.workers : L.nblocks);
  if (L.cfg.order == Order::shuffle) {
    std::uint64_t s = L.cfg.seed;
    L.perm_a = (next_random(s) % L.nblocks) | 1u;
    while (std::gcd(L.perm_a, L.nblocks) != 1) L.perm_a += 2;
    L.perm_a %= L.nblocks;
    if (L.perm_a == 0) L.perm_a = 1;
    L.perm_c = next_random(s) % L.nblocks;
  }

  std::unique_lock<std::mutex> serial;  // plain-static __shared__: one block at a time in the process
  if (SIMT_SHARED_IS_STATIC) serial = std::unique_lock<std::mutex>(static_shared_launch_mutex());

  std::vector<std::vector<StackSlot>> sets(L.workers);
  for (auto& s : sets) s = StackPool::instance().take(L.nthreads, L.cfg.stack_bytes);
  std::vector<std::thread> threads;
  threads.reserve(L.workers);
  try {
    for (unsigned i = 1; i < L.workers; ++i) threads.emplace_back(worker_main, std::ref(L), i, std::ref(sets[i]));
  } catch (...) {
    L.fail(std::current_exception());
  }
  worker_main(L, 0, sets[0]);
  for (auto& t : threads) t.join();
  for (auto& s : sets) StackPool::instance().give(std::move(s));
  if (L.error) std::rethrow_exception(L.error);
}

}  // namespace simt::detail

namespace simt {

SIMT_API Config get_config() {
  auto& s = detail::ConfigStore::instance();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) {
    s.config = detail::config_from_environment();
    s.initialized = true;
  }
  return s.config;
}

SIMT_API void set_config(const Config& c) {
  if (c.workers == 0) throw std::invalid_argument("simt::Config::workers must be at least 1");
  if (c.stack_bytes < 16 * 1024) throw std::invalid_argument("simt::Config::stack_bytes must be at least 16 KiB");
  auto& s = detail::ConfigStore::instance();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.config = c;
  s.initialized = true;
}

}  // namespace simt
