// tests/mpi/mpi_main.cpp -- main() of the MPI tests: every rank runs every
// test; rank 0 prints gtest's usual output, the other ranks print only their
// failures (prefixed with their rank). The exit status is non-zero on every
// rank when any rank failed.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

// The output of ranks other than 0: failed assertions and failed tests only.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                 r.line_number(), r.message());
    std::fflush(stderr);
  }
  void OnTestEnd(const ::testing::TestInfo& t) override {
    if (t.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] [  FAILED  ] %s.%s\n", rank_, t.test_suite_name(), t.name());
      std::fflush(stderr);
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  ::testing::InitGoogleTest(&argc, argv);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    if (listeners.default_xml_generator() != nullptr)
      delete listeners.Release(listeners.default_xml_generator());  // one report file: rank 0's
    listeners.Append(new FailurePrinter(rank));
  }
  const int local = RUN_ALL_TESTS() == 0 ? 0 : 1;

  // Which ranks failed, on every rank (each exits non-zero then).
  std::vector<int> all(static_cast<std::size_t>(size), 0);
  MPI_Allgather(&local, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int failed = 0;
  std::string who;
  for (int r = 0; r < size; ++r)
    if (all[static_cast<std::size_t>(r)] != 0) {
      ++failed;
      who += ' ';
      who += std::to_string(r);
    }
  if (rank == 0) {
    if (failed)
      std::printf("MPI tests: FAILED on %d of %d ranks:%s\n", failed, size, who.c_str());
    else
      std::printf("MPI tests: passed on all %d ranks\n", size);
    std::fflush(stdout);
  }
  MPI_Finalize();
  return failed ? 1 : 0;
}
