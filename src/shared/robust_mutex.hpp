// src/shared/robust_mutex.hpp -- the segment's process-shared robust mutex.
//
// Robust: when a process dies holding it, the next locker gets EOWNERDEAD and
// goes on. Nothing needs repair then: everything a writer writes before its
// one publishing store is unpublished (docs/shared.md), so the published
// statistics are intact whatever moment it died at.
#pragma once

#include <pthread.h>

#include <cstdint>
#include <string>

namespace vecnorm::detail::shm {

/// Initializes `m`, in a new segment, as PTHREAD_PROCESS_SHARED and
/// PTHREAD_MUTEX_ROBUST. Error(invalid_argument) naming segment `name` on failure.
void init_robust_mutex(pthread_mutex_t& m, const std::string& name);

/// Holds `m` for its lifetime. A dead owner is recovered (counted in
/// `owner_deaths`, an atomic word of the segment, and the mutex made
/// consistent); a mutex that is not recoverable, or any other failure, throws
/// Error(invalid_argument) naming segment `name`.
class RobustLock {
 public:
  RobustLock(pthread_mutex_t& m, std::uint64_t& owner_deaths, const std::string& name);
  ~RobustLock();
  RobustLock(const RobustLock&) = delete;
  RobustLock& operator=(const RobustLock&) = delete;

 private:
  pthread_mutex_t& m_;
};

}  // namespace vecnorm::detail::shm
