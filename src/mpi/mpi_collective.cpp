// src/mpi/mpi_collective.cpp -- vecnorm::MpiCollective (vecnorm/mpi.hpp).
#include "vecnorm/mpi.hpp"

#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "vecnorm/error.hpp"

namespace vecnorm {
namespace {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(len > 0 ? len : 0)) + " (MPI error " + std::to_string(code) + ")";
}

std::string seconds_str(double s) {
  std::ostringstream os;
  os << s << " s";
  return os.str();
}

bool mpi_running() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

// The buffers a posted MPI_Iallgather reads and writes: the adapter's, never
// the caller's (a timed-out request may complete at any later MPI call).
struct Staging {
  std::vector<unsigned char> send;
  std::vector<unsigned char> recv;
};

}  // namespace

struct MpiCollective::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
  double timeout = 300.0;

  std::mutex mutex;  // serializes all_gather / drain
  std::atomic<bool> broken{false};  // read without the mutex (broken() while a gather waits)
  std::string broken_reason;  // what broke it, for the messages of later calls
  std::unique_ptr<Staging> staging = std::make_unique<Staging>();
  // A timed-out request and the buffers it owns.
  MPI_Request stale = MPI_REQUEST_NULL;
  std::unique_ptr<Staging> stale_staging;

  std::string where(std::size_t bytes) const {
    return "vecnorm: mpi all_gather (rank " + std::to_string(rank) + " of " + std::to_string(size) + ", " +
           std::to_string(bytes) + " bytes)";
  }
  [[noreturn]] void fail(const std::string& message) {
    broken = true;
    broken_reason = message;
    throw Error(ErrorCode::collective_error, message);
  }
};

MpiCollective::MpiCollective(MPI_Comm comm, double timeout_seconds) : impl_(std::make_unique<Impl>()) {
  if (!mpi_running()) {
    throw Error(ErrorCode::invalid_argument,
                "vecnorm: mpi_collective: MPI is not initialized (or already finalized); call MPI_Init first");
  }
  if (comm == MPI_COMM_NULL) {
    throw Error(ErrorCode::invalid_argument, "vecnorm: mpi_collective: the communicator is MPI_COMM_NULL");
  }
  if (!(timeout_seconds > 0.0)) {
    throw Error(ErrorCode::invalid_argument,
                "vecnorm: mpi_collective: timeout_seconds must be > 0 (+infinity: no timeout), got " +
                    seconds_str(timeout_seconds));
  }
  impl_->timeout = timeout_seconds;
  int rc = MPI_Comm_dup(comm, &impl_->comm);
  if (rc != MPI_SUCCESS) {
    throw Error(ErrorCode::collective_error, "vecnorm: mpi_collective: MPI_Comm_dup failed: " + mpi_error_string(rc));
  }
  rc = MPI_Comm_set_errhandler(impl_->comm, MPI_ERRORS_RETURN);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(impl_->comm, &impl_->rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(impl_->comm, &impl_->size);
  if (rc != MPI_SUCCESS) {
    MPI_Comm_free(&impl_->comm);
    throw Error(ErrorCode::collective_error,
                "vecnorm: mpi_collective: setting up the duplicate communicator failed: " + mpi_error_string(rc));
  }
}

MpiCollective::~MpiCollective() {
  if (!impl_ || !mpi_running()) return;  // after MPI_Finalize: nothing of MPI's to free
  if (impl_->stale != MPI_REQUEST_NULL) {
    int done = 0;
    if (MPI_Test(&impl_->stale, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done) {
      // Still posted: MPI may write its buffers at any later call. Leak them.
      (void)impl_->stale_staging.release();
    }
  }
  if (impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm);
}

int MpiCollective::rank() const { return impl_->rank; }
int MpiCollective::size() const { return impl_->size; }
std::string MpiCollective::name() const { return "mpi"; }
double MpiCollective::timeout_seconds() const noexcept { return impl_->timeout; }
MPI_Comm MpiCollective::communicator() const noexcept { return impl_->comm; }

bool MpiCollective::broken() const { return impl_->broken.load(); }

void MpiCollective::all_gather(const void* send, void* recv, std::size_t bytes, Device device, Stream) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  if (device.kind != Device::Kind::cpu) {
    throw Error(ErrorCode::invalid_argument,
                m.where(bytes) + ": got buffers on " + device.str() +
                    "; the MPI adapter takes host buffers only (even with a CUDA-aware MPI). For CUDA steps use "
                    "the NCCL adapter (vecnorm/nccl.hpp), or run the normalizer on the CPU backend");
  }
  if (bytes > static_cast<std::size_t>(INT_MAX)) {
    throw Error(ErrorCode::invalid_argument,
                m.where(bytes) + ": MPI counts are int; at most " + std::to_string(INT_MAX) + " bytes per rank");
  }
  if (bytes > 0 && (send == nullptr || recv == nullptr)) {
    throw Error(ErrorCode::invalid_argument, m.where(bytes) + ": null send or recv buffer");
  }
  if (m.broken) {
    throw Error(ErrorCode::collective_error,
                m.where(bytes) + ": the adapter is unusable since an earlier failure (" + m.broken_reason +
                    "); make a new communicator and a new adapter");
  }
  if (!mpi_running()) {
    throw Error(ErrorCode::collective_error, m.where(bytes) + ": MPI is finalized");
  }

  Staging& st = *m.staging;
  const std::size_t total = bytes * static_cast<std::size_t>(m.size);
  if (st.send.size() < bytes) st.send.resize(bytes);
  if (st.recv.size() < total) st.recv.resize(total);
  if (bytes > 0) std::memcpy(st.send.data(), send, bytes);

  const int count = static_cast<int>(bytes);
  MPI_Request request = MPI_REQUEST_NULL;
  int rc = MPI_Iallgather(st.send.data(), count, MPI_BYTE, st.recv.data(), count, MPI_BYTE, m.comm, &request);
  if (rc != MPI_SUCCESS) m.fail(m.where(bytes) + ": MPI_Iallgather failed: " + mpi_error_string(rc));

  // Poll: MPI_Test drives the progress; between polls yield a few times, then
  // sleep 10 us growing to 1 ms (ranks may share cores: never spin hard).
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const bool bounded = m.timeout < 1e9;  // ~31 years and more (+inf): no timeout (and no overflow below)
  const auto limit = bounded ? std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(m.timeout))
                             : clock::duration::max();
  int done = 0;
  auto nap = std::chrono::microseconds(10);
  for (int polls = 0;; ++polls) {
    rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      // The request may still be posted on its buffers: keep them.
      m.stale = request;
      m.stale_staging = std::move(m.staging);
      m.fail(m.where(bytes) + ": MPI_Test failed: " + mpi_error_string(rc) + "; the communicator is now unusable");
    }
    if (done) break;
    if (bounded && clock::now() - start >= limit) {
      m.stale = request;
      m.stale_staging = std::move(m.staging);
      m.fail(m.where(bytes) + ": not every rank joined within the timeout of " + seconds_str(m.timeout) +
             " (a rank is late, dead, or called another collective); the communicator is now unusable: every "
             "later call throws");
    }
    if (polls < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(nap);
      if (nap < std::chrono::milliseconds(1)) nap *= 2;
    }
  }
  if (bytes > 0) std::memcpy(recv, st.recv.data(), total);
}

bool MpiCollective::drain(double timeout_seconds) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  if (m.stale == MPI_REQUEST_NULL) return true;
  if (!mpi_running()) return false;
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  for (;;) {
    int done = 0;
    const int rc = MPI_Test(&m.stale, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      throw Error(ErrorCode::collective_error,
                  "vecnorm: mpi drain (rank " + std::to_string(m.rank) + "): MPI_Test failed: " + mpi_error_string(rc));
    }
    if (done) {
      m.stale = MPI_REQUEST_NULL;
      m.stale_staging.reset();
      return true;
    }
    if (!(std::chrono::duration<double>(clock::now() - start).count() < timeout_seconds)) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

std::shared_ptr<Collective> mpi_collective(MPI_Comm comm, double timeout_seconds) {
  return std::make_shared<MpiCollective>(comm, timeout_seconds);
}

}  // namespace vecnorm
