// tests/support/ranks.hpp -- ranks of an in-process collective
// (vecnorm::thread_group) as threads of one test.
#pragma once

#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace vntest {

/// Runs body(rank) on `ranks` threads at once; rethrows the first failure.
inline void on_ranks(int ranks, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace vntest
