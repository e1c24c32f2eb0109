// tests/mpi/mpi_test_util.hpp -- the world of the MPI tests (every rank runs
// every test, in the same order; see mpi_main.cpp).
//
// Rule of these tests: every rank reaches every collective call of a test
// (MPI's or an adapter's), whatever its checks found: checks use EXPECT_*,
// never an ASSERT_* that would leave the other ranks waiting (until the
// adapters' timeouts, or ctest's).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace vnmpi {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}
inline void barrier() { MPI_Barrier(MPI_COMM_WORLD); }

/// Every rank's `bytes` (each rank must pass the same size), rank order.
inline std::vector<std::vector<std::uint8_t>> gather_all(const std::vector<std::uint8_t>& bytes) {
  const int n = world_size();
  std::vector<std::uint8_t> all(bytes.size() * static_cast<std::size_t>(n));
  MPI_Allgather(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, all.data(), static_cast<int>(bytes.size()),
                MPI_BYTE, MPI_COMM_WORLD);
  std::vector<std::vector<std::uint8_t>> out(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r)
    out[static_cast<std::size_t>(r)].assign(all.begin() + static_cast<std::ptrdiff_t>(bytes.size()) * r,
                                            all.begin() + static_cast<std::ptrdiff_t>(bytes.size()) * (r + 1));
  return out;
}

/// Max of a double over the ranks.
inline double max_all(double v) {
  double out = v;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return out;
}

/// True on every rank when `ok` is true on every rank.
inline bool all_true(bool ok) {
  int v = ok ? 1 : 0;
  int out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return out == 1;
}

}  // namespace vnmpi
