// tests/mpi/mpi_collective_test.cpp -- vecnorm::MpiCollective on its own:
// rank/size, all_gather contents at several sizes, argument checks, and the
// timeout (a late rank) with its clean-up.
#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <vecnorm/error.hpp>
#include <vecnorm/mpi.hpp>

#include "mpi_test_util.hpp"

namespace {

using vecnorm::Device;
using vecnorm::ErrorCode;
using vecnorm::MpiCollective;
using vnmpi::world_rank;
using vnmpi::world_size;

// Byte i of rank r's message.
std::uint8_t pattern(int rank, std::size_t i) {
  return static_cast<std::uint8_t>((rank * 131 + static_cast<int>(i % 251) * 7 + static_cast<int>(i / 251)) & 0xff);
}

TEST(MpiCollective, RankSizeNameAndPrivateCommunicator) {
  MpiCollective c(MPI_COMM_WORLD);
  EXPECT_EQ(c.rank(), world_rank());
  EXPECT_EQ(c.size(), world_size());
  EXPECT_EQ(c.name(), "mpi");
  EXPECT_EQ(c.timeout_seconds(), 300.0);
  EXPECT_FALSE(c.broken());
  EXPECT_NE(c.communicator(), MPI_COMM_WORLD);
  int cmp = MPI_UNEQUAL;
  MPI_Comm_compare(c.communicator(), MPI_COMM_WORLD, &cmp);
  EXPECT_EQ(cmp, MPI_CONGRUENT) << "a duplicate: same group and order, its own context";
  MPI_Errhandler eh = MPI_ERRHANDLER_NULL;
  MPI_Comm_get_errhandler(c.communicator(), &eh);
  EXPECT_TRUE(eh == MPI_ERRORS_RETURN) << "MPI errors come back as codes (then as vecnorm::Error)";
  MPI_Errhandler_free(&eh);
  auto as_base = vecnorm::mpi_collective(MPI_COMM_WORLD, 12.5);
  ASSERT_NE(as_base, nullptr);
  EXPECT_EQ(as_base->name(), "mpi");
  EXPECT_EQ(as_base->size(), world_size());
  auto* concrete = dynamic_cast<MpiCollective*>(as_base.get());
  ASSERT_NE(concrete, nullptr);
  EXPECT_EQ(concrete->timeout_seconds(), 12.5);
}

TEST(MpiCollective, AllGatherSeveralSizes) {
  MpiCollective c(MPI_COMM_WORLD, 60.0);
  const int n = world_size();
  for (std::size_t bytes : {std::size_t{0}, std::size_t{1}, std::size_t{24}, std::size_t{1} << 20, std::size_t{24}}) {
    std::vector<std::uint8_t> send(bytes);
    for (std::size_t i = 0; i < bytes; ++i) send[i] = pattern(c.rank(), i);
    std::vector<std::uint8_t> recv(bytes * static_cast<std::size_t>(n) + 8, 0xA5);  // + 8 sentinel bytes
    EXPECT_NO_THROW(c.all_gather(bytes ? send.data() : nullptr, recv.data(), bytes, Device::cpu(), {}))
        << bytes << " bytes";
    std::size_t bad = 0;
    for (int r = 0; r < n; ++r)
      for (std::size_t i = 0; i < bytes; ++i)
        if (recv[static_cast<std::size_t>(r) * bytes + i] != pattern(r, i)) ++bad;
    EXPECT_EQ(bad, 0u) << bytes << " bytes: wrong bytes received";
    for (std::size_t i = bytes * static_cast<std::size_t>(n); i < recv.size(); ++i)
      EXPECT_EQ(recv[i], 0xA5) << bytes << " bytes: wrote past size() * bytes at " << i;
  }
  EXPECT_FALSE(c.broken());
}

TEST(MpiCollective, ZeroBytesWithNullBuffers) {
  MpiCollective c(MPI_COMM_WORLD, 60.0);
  EXPECT_NO_THROW(c.all_gather(nullptr, nullptr, 0, Device::cpu(), {}));
  EXPECT_FALSE(c.broken());
}

TEST(MpiCollective, SendInsideRecvInPlace) {
  // send == recv + rank * bytes (MPI_IN_PLACE's layout): works, the adapter
  // gathers through its own buffers.
  MpiCollective c(MPI_COMM_WORLD, 60.0);
  const std::size_t bytes = 40;
  std::vector<std::uint8_t> recv(bytes * static_cast<std::size_t>(c.size()), 0);
  for (std::size_t i = 0; i < bytes; ++i) recv[static_cast<std::size_t>(c.rank()) * bytes + i] = pattern(c.rank(), i);
  EXPECT_NO_THROW(
      c.all_gather(recv.data() + static_cast<std::size_t>(c.rank()) * bytes, recv.data(), bytes, Device::cpu(), {}));
  std::size_t bad = 0;
  for (int r = 0; r < c.size(); ++r)
    for (std::size_t i = 0; i < bytes; ++i)
      if (recv[static_cast<std::size_t>(r) * bytes + i] != pattern(r, i)) ++bad;
  EXPECT_EQ(bad, 0u);
}

TEST(MpiCollective, DeviceBuffersAreRejected) {
  MpiCollective c(MPI_COMM_WORLD, 60.0);
  std::vector<std::uint8_t> send(8, 1), recv(8 * static_cast<std::size_t>(c.size()));
  try {
    c.all_gather(send.data(), recv.data(), 8, Device::cuda(0), {});
    ADD_FAILURE() << "device buffers were accepted";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    const std::string m = e.what();
    EXPECT_NE(m.find("mpi"), std::string::npos) << m;
    EXPECT_NE(m.find("host"), std::string::npos) << m;
    EXPECT_NE(m.find("NCCL"), std::string::npos) << m;
    EXPECT_NE(m.find("CPU backend"), std::string::npos) << m;
    EXPECT_NE(m.find("cuda:0"), std::string::npos) << m;
  }
  // Refused before any MPI call: the adapter still works.
  EXPECT_FALSE(c.broken());
  EXPECT_NO_THROW(c.all_gather(send.data(), recv.data(), 8, Device::cpu(), {}));
}

TEST(MpiCollective, ArgumentChecks) {
  MpiCollective c(MPI_COMM_WORLD, 60.0);
  std::uint8_t one = 0;
  try {
    c.all_gather(&one, &one, static_cast<std::size_t>(INT_MAX) + 1, Device::cpu(), {});
    ADD_FAILURE() << "INT_MAX + 1 bytes were accepted";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("int"), std::string::npos) << e.what();
  }
  try {
    c.all_gather(nullptr, &one, 1, Device::cpu(), {});
    ADD_FAILURE() << "a null send buffer was accepted";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
  }
  EXPECT_FALSE(c.broken());

  // Construction: checked before MPI_Comm_dup (no collective call is made).
  for (double bad : {0.0, -1.0, std::nan("")}) {
    try {
      MpiCollective x(MPI_COMM_WORLD, bad);
      ADD_FAILURE() << "timeout " << bad << " was accepted";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("timeout"), std::string::npos) << e.what();
    }
  }
  try {
    MpiCollective x(MPI_COMM_NULL);
    ADD_FAILURE() << "MPI_COMM_NULL was accepted";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
  }
  // +infinity: no timeout.
  MpiCollective forever(MPI_COMM_WORLD, INFINITY);
  std::uint8_t s = 3;
  std::vector<std::uint8_t> r(static_cast<std::size_t>(forever.size()));
  EXPECT_NO_THROW(forever.all_gather(&s, r.data(), 1, Device::cpu(), {}));
}

TEST(MpiCollective, DrainWithNothingPendingReturnsAtOnce) {
  MpiCollective c(MPI_COMM_WORLD, 60.0);
  EXPECT_TRUE(c.drain(0.0));
  EXPECT_FALSE(c.broken());
}

// The last rank joins 3 s late; the others gather with a 1 s timeout: they
// throw Error(collective_error) after 1 s (well before 2.5 s), their adapters
// are broken (later calls throw at once); then the late rank joins and gets
// everyone's data, the others drain() their stale request, and a barrier: a
// clean state for MPI_Finalize.
TEST(MpiCollective, TimeoutBreaksTheAdapterAndDrainCleansUp) {
  const int n = world_size();
  if (n < 2) GTEST_SKIP() << "needs at least 2 ranks";
  const int late = n - 1;
  const int me = world_rank();
  const double kTimeout = 1.0;
  const double kLateBy = 3.0;
  MpiCollective c(MPI_COMM_WORLD, me == late ? 60.0 : kTimeout);
  const std::size_t bytes = 24;
  std::vector<std::uint8_t> send(bytes);
  for (std::size_t i = 0; i < bytes; ++i) send[i] = pattern(me, i);
  std::vector<std::uint8_t> recv(bytes * static_cast<std::size_t>(n), 0);
  vnmpi::barrier();

  using clock = std::chrono::steady_clock;
  double elapsed = -1;
  if (me == late) {
    std::this_thread::sleep_for(std::chrono::duration<double>(kLateBy));
    const auto t0 = clock::now();
    EXPECT_NO_THROW(c.all_gather(send.data(), recv.data(), bytes, Device::cpu(), {}));
    elapsed = std::chrono::duration<double>(clock::now() - t0).count();
    std::size_t bad = 0;
    for (int r = 0; r < n; ++r)
      for (std::size_t i = 0; i < bytes; ++i)
        if (recv[static_cast<std::size_t>(r) * bytes + i] != pattern(r, i)) ++bad;
    EXPECT_EQ(bad, 0u) << "the late rank gets the data the others sent before they gave up";
    EXPECT_FALSE(c.broken());
  } else {
    // The caller's buffers may go away after the throw: the stale request
    // owns the adapter's buffers, not these.
    std::vector<std::uint8_t> my_send = send;
    std::vector<std::uint8_t> my_recv(recv.size(), 0);
    const auto t0 = clock::now();
    try {
      c.all_gather(my_send.data(), my_recv.data(), bytes, Device::cpu(), {});
      ADD_FAILURE() << "rank " << me << ": the gather completed though rank " << late << " was late";
    } catch (const vecnorm::Error& e) {
      elapsed = std::chrono::duration<double>(clock::now() - t0).count();
      EXPECT_EQ(e.code(), ErrorCode::collective_error);
      const std::string m = e.what();
      EXPECT_NE(m.find("mpi"), std::string::npos) << m;
      EXPECT_NE(m.find("rank " + std::to_string(me)), std::string::npos) << m;
      EXPECT_NE(m.find("24 bytes"), std::string::npos) << m;
      EXPECT_NE(m.find("timeout of 1 s"), std::string::npos) << m;
      EXPECT_NE(m.find("unusable"), std::string::npos) << m;
    }
    my_send.assign(my_send.size(), 0xEE);  // the caller reuses / frees its memory
    my_recv = {};
    EXPECT_GE(elapsed, kTimeout) << "rank " << me;
    EXPECT_LT(elapsed, 2.5) << "rank " << me;
    EXPECT_TRUE(c.broken());
    // Later calls throw at once, and say why.
    const auto t1 = clock::now();
    try {
      std::vector<std::uint8_t> r2(recv.size());
      c.all_gather(send.data(), r2.data(), bytes, Device::cpu(), {});
      ADD_FAILURE() << "a broken adapter gathered";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::collective_error);
      EXPECT_NE(std::string(e.what()).find("unusable"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::duration<double>(clock::now() - t1).count(), 0.1);
    // Complete the stale request once the late rank has joined.
    EXPECT_TRUE(c.drain(60.0)) << "rank " << me;
    EXPECT_TRUE(c.drain(0.0));
    EXPECT_TRUE(c.broken()) << "draining does not repair the adapter";
  }
  const double worst = vnmpi::max_all(me == late ? 0.0 : elapsed);
  if (me == 0) {
    std::printf("[ timeout  ] the early ranks threw after at most %.3f s (timeout %.1f s)\n", worst, kTimeout);
    ::testing::Test::RecordProperty("max_timeout_seconds", std::to_string(worst));
  }
  vnmpi::barrier();
}

}  // namespace
