// src/collective.cpp -- thread_group(): a Collective among the threads of one
// process (vecnorm/collective.hpp).
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "backends.hpp"
#include "errors.hpp"
#include "vecnorm/collective.hpp"

namespace vecnorm {

namespace {

/// The meeting point of the group: each round, every rank deposits its
/// message; the last to arrive publishes them all; each rank copies them out
/// before the next round may start.
struct Hub {
  explicit Hub(int n, double timeout) : ranks(n), timeout_s(timeout), slots(static_cast<std::size_t>(n)) {}
  const int ranks;
  const double timeout_s;
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::vector<unsigned char>> slots;
  int arrived = 0;
  int left = 0;  // ranks that still have to copy the published round out
  std::uint64_t round = 0;
  bool broken = false;
};

class ThreadCollective final : public Collective {
 public:
  ThreadCollective(std::shared_ptr<Hub> hub, int rank) : hub_(std::move(hub)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return hub_->ranks; }
  std::string name() const override { return "threads"; }

  void all_gather(const void* send, void* recv, std::size_t bytes, Device device, Stream stream) override {
    std::vector<unsigned char> mine(bytes);
    if (device.kind == Device::Kind::cuda)
      detail::cuda::copy(mine.data(), send, bytes, stream, true);
    else if (bytes > 0)
      std::memcpy(mine.data(), send, bytes);
    std::vector<unsigned char> all(bytes * static_cast<std::size_t>(hub_->ranks));
    gather(mine, all, bytes);
    if (device.kind == Device::Kind::cuda)
      detail::cuda::copy(recv, all.data(), all.size(), stream, true);
    else if (!all.empty())
      std::memcpy(recv, all.data(), all.size());
  }

 private:
  [[noreturn]] void fail_now(const std::string& why) const {
    detail::fail(ErrorCode::collective_error, "collective 'threads' (rank " + std::to_string(rank_) + " of " +
                                                  std::to_string(hub_->ranks) + "): " + why);
  }

  void gather(std::vector<unsigned char>& mine, std::vector<unsigned char>& all, std::size_t bytes) {
    Hub& h = *hub_;
    std::unique_lock lock(h.mutex);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(h.timeout_s);
    auto wait = [&](auto ready) {
      if (!h.cv.wait_until(lock, deadline, [&] { return h.broken || ready(); })) {
        h.broken = true;
        h.cv.notify_all();
        fail_now("the other ranks did not all arrive within " + std::to_string(h.timeout_s) +
                 " s; the group is unusable from now on");
      }
      if (h.broken) fail_now("the group is broken (a rank timed out earlier)");
    };
    if (h.broken) fail_now("the group is broken (a rank timed out earlier)");
    // The previous round must be copied out by everyone before a new one starts.
    wait([&] { return h.left == 0; });
    const std::uint64_t my_round = h.round;
    h.slots[static_cast<std::size_t>(rank_)] = std::move(mine);
    if (++h.arrived == h.ranks) {
      h.arrived = 0;
      h.left = h.ranks;
      ++h.round;
      h.cv.notify_all();
    } else {
      wait([&] { return h.round != my_round; });
    }
    for (int r = 0; r < h.ranks; ++r) {
      const auto& slot = h.slots[static_cast<std::size_t>(r)];
      if (slot.size() != bytes) {
        --h.left;
        h.cv.notify_all();
        fail_now("rank " + std::to_string(r) + " sent " + std::to_string(slot.size()) + " bytes, expected " +
                 std::to_string(bytes) + " (every rank must gather the same size)");
      }
      if (bytes > 0) std::memcpy(all.data() + static_cast<std::size_t>(r) * bytes, slot.data(), bytes);
    }
    if (--h.left == 0) h.cv.notify_all();
  }

  std::shared_ptr<Hub> hub_;
  int rank_;
};

}  // namespace

std::vector<std::shared_ptr<Collective>> thread_group(int ranks, double timeout_seconds) {
  if (ranks < 1)
    detail::fail(ErrorCode::invalid_argument, "thread_group: ranks: expected at least 1, got " + std::to_string(ranks));
  if (!(timeout_seconds > 0.0))
    detail::fail(ErrorCode::invalid_argument,
                 "thread_group: timeout_seconds: expected > 0, got " + std::to_string(timeout_seconds));
  auto hub = std::make_shared<Hub>(ranks, timeout_seconds);
  std::vector<std::shared_ptr<Collective>> out;
  for (int r = 0; r < ranks; ++r) out.push_back(std::make_shared<ThreadCollective>(hub, r));
  return out;
}

}  // namespace vecnorm
