// vecnorm/executor.hpp -- whose threads run vecnorm's CPU work.
//
// By default a CPU call runs on the calling thread and the workers of
// vecnorm's own pool. A framework with an intra-op thread pool of its own
// (PyTorch's, whose OpenMP threads spin for milliseconds after each of its
// operators) hands vecnorm a CpuExecutor in Options::cpu_executor: the call's
// chunks then run on that pool's threads instead, so that the two pools never
// compete for the same cores. The chunks are still claimed, never assigned:
// each member of the team takes chunks from one counter until none are left,
// so a member that starts late finds the work done by the others.
#pragma once

namespace vecnorm {

struct CpuExecutor {
  /// Runs body(arg, member) once for every member in [0, team) -- member 0 on
  /// the calling thread where it can, the others on the pool's threads or,
  /// when none is free (a call from inside one of its parallel regions),
  /// one after the other on the caller -- and returns when all have returned.
  /// body does not throw; run must not either. Every write of a body must
  /// happen before run returns (a join, as an OpenMP barrier or a thread join
  /// gives; the members claim their chunks with relaxed atomics). run must not
  /// make the calling thread run other vecnorm CPU calls meanwhile (a
  /// work-stealing pool that would: the nested call would see this executor).
  /// `context` must outlive every normalizer (and copy of its Options) that
  /// uses it, and run must accept calls from several threads at once.
  void (*run)(void* context, int team, void (*body)(void* arg, int member) noexcept, void* arg) noexcept = nullptr;
  void* context = nullptr;

  /// True when run is set (otherwise vecnorm's pool is used).
  bool custom() const noexcept { return run != nullptr; }
};

}  // namespace vecnorm
