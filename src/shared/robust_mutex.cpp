// src/shared/robust_mutex.cpp -- init and RAII lock of the segment's robust
// mutex (robust_mutex.hpp).
#include "robust_mutex.hpp"

#include <cerrno>

#include "../errors.hpp"
#include "layout.hpp"

namespace vecnorm::detail::shm {

void init_robust_mutex(pthread_mutex_t& m, const std::string& name) {
  pthread_mutexattr_t attr;
  int rc = pthread_mutexattr_init(&attr);
  if (rc == 0) rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  if (rc == 0) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  if (rc == 0) rc = pthread_mutex_init(&m, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) fail_sys(name, "create: a robust process-shared mutex", rc);
}

RobustLock::RobustLock(pthread_mutex_t& m, std::uint64_t& owner_deaths, const std::string& name) : m_(m) {
  int rc = pthread_mutex_lock(&m_);
  if (rc == EOWNERDEAD) {
    // A process died holding the lock. Everything it may have written is in
    // the unpublished view and slots, which the next writer overwrites
    // whole: the published statistics are intact, nothing to repair.
    word(owner_deaths).fetch_add(1, std::memory_order_relaxed);
    rc = pthread_mutex_consistent(&m_);
    if (rc != 0) {
      pthread_mutex_unlock(&m_);
      fail_sys(name, "lock: pthread_mutex_consistent after a dead owner", rc);
    }
  } else if (rc == ENOTRECOVERABLE) {
    fail(ErrorCode::invalid_argument,
         seg_prefix(name) +
             "lock: not recoverable (a process released it after its owner died without marking it "
             "consistent; not something vecnorm does). The published statistics are intact but the "
             "segment cannot be locked any more: unlink it and create it again");
  } else if (rc != 0) {
    fail_sys(name, "lock", rc);
  }
}

RobustLock::~RobustLock() { pthread_mutex_unlock(&m_); }

}  // namespace vecnorm::detail::shm
