// src/cpu/pool.hpp -- the CPU backend's threads: chunks claimed, never assigned.
//
// A parallel call splits its work into chunks whose boundaries depend only on
// the sizes (never on the thread count or on which thread runs them), and
// every chunk is claimed from one atomic counter by whoever is free: the
// calling thread first, and up to threads - 1 pool workers. A worker the OS
// has descheduled (a busy simulator beside us) claims nothing until it runs
// again, and the others take its share: no step waits for a thread that has
// not started, only for a chunk that one has started (a few microseconds of
// work). Workers spin for a bounded time after a call (back-to-back steps find
// them awake), then sleep on a futex. One call at a time uses the pool; a
// call that finds it busy (another thread's step, or a framework calling from
// its own worker threads) runs its chunks on its own thread, so threads that
// bring their own parallelism are never oversubscribed by ours.
//
// The results never depend on the thread count: per-element work is
// independent per element, and reductions keep one partial per chunk, merged
// in chunk order (src/cpu/pooled.cpp).
#pragma once

#include <cstdint>

#include "vecnorm/executor.hpp"

namespace vecnorm::detail::cpu {

/// The most chunks one call may have (the ticket's 16-bit fields).
constexpr std::int64_t kMaxTaskChunks = 0xffff;

/// One parallel call: call(ctx, i) for every chunk i in [0, chunks),
/// chunks <= kMaxTaskChunks.
struct ChunkTask {
  void (*call)(void* ctx, std::int64_t chunk) noexcept = nullptr;
  void* ctx = nullptr;
  std::int64_t chunks = 0;
  /// The caller claims chunks from the back and the workers from the front
  /// (default: the other way round). A second pass over data a first pass
  /// just read (a pooled normalize after its reduction) takes them in reverse,
  /// so that each thread starts where the data is still in the caches.
  bool reverse = false;
};

/// Runs every chunk of `task` exactly once, on this thread and up to
/// `threads` - 1 workers, and returns when all are done. Chunk bodies must not
/// throw and must not call run_chunks. The workers are the pool's, or the
/// threads of this thread's current executor (ExecutorScope).
void run_chunks(const ChunkTask& task, int threads);

/// While it lives, run_chunks on this thread hands its chunks to `executor`
/// (Options::cpu_executor; one that is not custom() leaves vecnorm's pool).
class ExecutorScope {
 public:
  explicit ExecutorScope(const CpuExecutor& executor) noexcept;
  ~ExecutorScope();
  ExecutorScope(const ExecutorScope&) = delete;
  ExecutorScope& operator=(const ExecutorScope&) = delete;

 private:
  const CpuExecutor* saved_;
};

/// The threads a call uses when Options::cpu_threads is 0: the CPUs this
/// process may run on (sched_getaffinity), or VECNORM_NUM_THREADS when set.
int default_threads();

/// The pool's state, for tests: workers started so far; calls run on the
/// caller alone because the pool was busy.
struct PoolStats {
  int workers = 0;
  std::int64_t inline_calls = 0;
};
PoolStats pool_stats();

}  // namespace vecnorm::detail::cpu
