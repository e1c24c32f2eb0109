// tests/support/ranks.hpp -- ranks of an in-process collective
// (vecnorm::thread_group) as threads of one test, and their normalizers.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "device_buffer.hpp"
#include "vecnorm/collective.hpp"
#include "vecnorm/vecnorm.hpp"

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

/// The options the rank tests start from: `backend`, pooled over the batch
/// dims, the stable estimator, cumulative (decay 1), float64 statistics.
inline vecnorm::Options pooled_cumulative_options(vecnorm::Backend backend) {
  vecnorm::Options o = options_for(backend);
  o.reduce_batch_dims = true;
  o.estimator = vecnorm::Estimator::stable;
  o.decay = 1.0;
  o.stats_dtype = vecnorm::DType::float64;
  return o;
}

/// `ranks` normalizers of `base` over `table`, the ranks of one in-process
/// group (vecnorm::thread_group).
inline std::vector<std::unique_ptr<vecnorm::VecNorm>> ranks_of(const vecnorm::Options& base,
                                                               const vecnorm::KeyTable& table, int ranks) {
  const auto group = vecnorm::thread_group(ranks);
  std::vector<std::unique_ptr<vecnorm::VecNorm>> vns;
  for (int r = 0; r < ranks; ++r) {
    vecnorm::Options o = base;
    o.collective = group[static_cast<std::size_t>(r)];
    vns.push_back(std::make_unique<vecnorm::VecNorm>(o, table));
  }
  return vns;
}

}  // namespace vntest
