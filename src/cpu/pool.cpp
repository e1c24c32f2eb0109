// src/cpu/pool.cpp -- see pool.hpp.
#include "pool.hpp"

#include <sched.h>

#include <algorithm>
#include <cassert>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VECNORM_PAUSE() _mm_pause()
#else
#define VECNORM_PAUSE() std::this_thread::yield()
#endif

namespace vecnorm::detail::cpu {
namespace {

/// How long a worker spins for the next call before it sleeps, and how long a
/// caller spins for the last chunks before it yields its time slice.
constexpr auto kWorkerSpin = std::chrono::microseconds(50);
constexpr int kCallerSpins = 2000;
constexpr int kMaxWorkers = 255;

/// The unclaimed chunks of one call, in one atomic word: the call's epoch
/// (high 32 bits) and the range [front, back) (16 bits each: kMaxTaskChunks).
/// One thread claims from the front, the others from the back, so that with
/// two threads each streams through one contiguous half of the data (as a static split does:
/// interleaved chunks cost a third of a 64 MB step's memory bandwidth here).
/// The epoch ends a stale claim: a pool worker that wakes late for call e
/// finds call e + 1's ticket and takes nothing of it.
class Ticket {
 public:
  /// Opens call `e` with chunks [0, chunks); a release store, which the
  /// claims' acquire orders before their reads of the call's fields.
  void open(std::uint32_t e, std::int64_t chunks) noexcept {
    assert(chunks >= 0 && chunks <= kMaxTaskChunks);
    word_.store(std::uint64_t{e} << 32 | static_cast<std::uint64_t>(chunks), std::memory_order_release);
  }

  /// The next unclaimed chunk of call `e`, or -1 when none is left (or the
  /// call is over).
  std::int64_t claim(std::uint32_t e, bool front) noexcept {
    std::uint64_t t = word_.load(std::memory_order_acquire);
    for (;;) {
      if (static_cast<std::uint32_t>(t >> 32) != e) return -1;
      const std::uint64_t f = (t >> 16) & 0xffffu, b = t & 0xffffu;
      if (f >= b) return -1;
      const std::uint64_t next = front ? t + (std::uint64_t{1} << 16) : t - 1;
      if (word_.compare_exchange_weak(t, next, std::memory_order_acq_rel, std::memory_order_acquire))
        return static_cast<std::int64_t>(front ? f : b - 1);
    }
  }

 private:
  std::atomic<std::uint64_t> word_{0};
};

class Pool {
 public:
  void run(const ChunkTask& task, int threads) {
    const std::int64_t chunks = task.chunks;
    if (chunks <= 0) return;
    const int team = static_cast<int>(std::min<std::int64_t>(threads, chunks));
    if (team <= 1 || busy_.exchange(true, std::memory_order_acquire)) {
      if (team > 1) inline_calls_.fetch_add(1, std::memory_order_relaxed);
      for (std::int64_t i = 0; i < chunks; ++i) task.call(task.ctx, i);
      return;
    }
    ensure_workers(team - 1);
    // Publish the call: its fields, then the ticket (epoch, next chunk), then
    // the epoch the workers watch.
    call_.store(task.call, std::memory_order_relaxed);
    ctx_.store(task.ctx, std::memory_order_relaxed);
    chunks_.store(chunks, std::memory_order_relaxed);
    reverse_.store(task.reverse, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    seats_.store(team - 1, std::memory_order_relaxed);
    const std::uint32_t e = ++epoch_value_;
    ticket_.open(e, chunks);
    epoch_.store(e, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) epoch_.notify_all();
    // Work alongside them.
    std::int64_t mine = 0;
    for (std::int64_t i; (i = ticket_.claim(e, !task.reverse)) >= 0; ++mine) task.call(task.ctx, i);
    done_.fetch_add(mine, std::memory_order_acq_rel);
    // Only chunks a worker has started remain: wait for them.
    for (int spins = 0; done_.load(std::memory_order_acquire) < chunks; ++spins) {
      if (spins < kCallerSpins)
        VECNORM_PAUSE();
      else
        std::this_thread::yield();
    }
    busy_.store(false, std::memory_order_release);
  }

  int workers() {
    std::lock_guard<std::mutex> lock(start_);
    return static_cast<int>(workers_.size());
  }
  std::int64_t inline_calls() const { return inline_calls_.load(std::memory_order_relaxed); }

 private:
  void ensure_workers(int n) {
    n = std::min(n, kMaxWorkers);
    if (started_.load(std::memory_order_acquire) >= n) return;
    std::lock_guard<std::mutex> lock(start_);
    while (static_cast<int>(workers_.size()) < n) {
      workers_.emplace_back([this] { work(); });
      workers_.back().detach();
    }
    started_.store(static_cast<int>(workers_.size()), std::memory_order_release);
  }

  void work() {
    std::uint32_t seen = epoch_.load(std::memory_order_acquire);
    for (;;) {
      // Wait for a new call: spin a while, then sleep.
      std::uint32_t e = epoch_.load(std::memory_order_acquire);
      const auto until = std::chrono::steady_clock::now() + kWorkerSpin;
      for (int spins = 0; e == seen; ++spins) {
        if ((spins & 63) == 63 && std::chrono::steady_clock::now() > until) {
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          if (epoch_.load(std::memory_order_seq_cst) == seen) epoch_.wait(seen, std::memory_order_seq_cst);
          sleepers_.fetch_sub(1, std::memory_order_seq_cst);
        } else {
          VECNORM_PAUSE();
        }
        e = epoch_.load(std::memory_order_acquire);
      }
      seen = e;
      // A seat in this call's team (threads - 1 of them)?
      if (seats_.fetch_sub(1, std::memory_order_acq_rel) <= 0) continue;
      std::int64_t mine = 0;
      const bool front = reverse_.load(std::memory_order_relaxed);
      for (std::int64_t i; (i = ticket_.claim(e, front)) >= 0; ++mine)
        call_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), i);
      if (mine > 0) done_.fetch_add(mine, std::memory_order_acq_rel);
    }
  }

  std::mutex start_;
  std::vector<std::thread> workers_;
  std::atomic<int> started_{0};
  std::atomic<bool> busy_{false};
  std::uint32_t epoch_value_ = 0;  // written by the caller holding busy_
  std::atomic<std::uint32_t> epoch_{0};
  Ticket ticket_;
  std::atomic<void (*)(void*, std::int64_t) noexcept> call_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<std::int64_t> chunks_{0};
  std::atomic<bool> reverse_{false};
  std::atomic<std::int64_t> done_{0};
  std::atomic<int> seats_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<std::int64_t> inline_calls_{0};
};

// Never destroyed: workers asleep at exit are ended with the process (joining
// them would wait for nothing in a fork()ed child, which has none).
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

thread_local const CpuExecutor* current_executor = nullptr;

/// A call on an executor's team: member 0 (the caller, where the executor
/// keeps it there) claims from the front, the others from the back
/// (task.reverse: the other way round). One call, one epoch (0).
struct TeamCall {
  const ChunkTask* task;
  Ticket ticket;

  static void body(void* arg, int member) noexcept {
    TeamCall& c = *static_cast<TeamCall*>(arg);
    const bool front = (member == 0) != c.task->reverse;
    for (std::int64_t i; (i = c.ticket.claim(0, front)) >= 0;) c.task->call(c.task->ctx, i);
  }
};

}  // namespace

void run_chunks(const ChunkTask& task, int threads) {
  const CpuExecutor* ex = current_executor;
  if (ex == nullptr || !ex->custom() || task.chunks <= 0) return pool().run(task, threads);
  const int team = static_cast<int>(std::min<std::int64_t>(std::max(threads, 1), task.chunks));
  TeamCall call{&task, {}};
  call.ticket.open(0, task.chunks);
  // The executor's join orders the chunks' writes before its return.
  ex->run(ex->context, team, &TeamCall::body, &call);
  // A member the executor never ran would leave chunks undone: run them here.
  TeamCall::body(&call, 0);
}

ExecutorScope::ExecutorScope(const CpuExecutor& executor) noexcept : saved_(current_executor) {
  current_executor = executor.custom() ? &executor : nullptr;
}
ExecutorScope::~ExecutorScope() { current_executor = saved_; }

int default_threads() {
  static const int n = [] {
    if (const char* env = std::getenv("VECNORM_NUM_THREADS")) {
      const int v = std::atoi(env);
      if (v > 0) return v;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }();
  return n;
}

PoolStats pool_stats() { return {pool().workers(), pool().inline_calls()}; }

}  // namespace vecnorm::detail::cpu
