// src/nccl/nccl_collective.cpp -- vecnorm::NcclCollective (vecnorm/nccl.hpp).
// Plain C++ against the CUDA runtime and NCCL headers; no CUDA runtime call.
#include "vecnorm/nccl.hpp"

#include <mutex>
#include <thread>

#include "vecnorm/error.hpp"

namespace vecnorm {
namespace {

std::string nccl_error(ncclResult_t rc, ncclComm_t comm) {
  std::string s = ncclGetErrorString(rc);
  s += " (ncclResult " + std::to_string(static_cast<int>(rc)) + ")";
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') s += ": " + std::string(last);
  }
  return s;
}

}  // namespace

struct NcclCollective::Impl {
  ncclComm_t comm = nullptr;
  int rank = 0;
  int size = 1;
  int device = 0;
  std::mutex mutex;

  std::string where(std::size_t bytes) const {
    return "vecnorm: nccl all_gather (rank " + std::to_string(rank) + " of " + std::to_string(size) + ", cuda:" +
           std::to_string(device) + ", " + std::to_string(bytes) + " bytes)";
  }
  // A non-blocking communicator answers ncclInProgress while it works on the
  // host side: wait for its answer (an enqueue or an initialization, never
  // the GPU work).
  ncclResult_t settle(ncclResult_t rc) const {
    while (rc == ncclInProgress) {
      std::this_thread::yield();
      if (ncclCommGetAsyncError(comm, &rc) != ncclSuccess) return ncclInternalError;
    }
    return rc;
  }
};

NcclCollective::NcclCollective(ncclComm_t comm) : impl_(std::make_unique<Impl>()) {
  if (comm == nullptr) {
    throw Error(ErrorCode::invalid_argument, "vecnorm: nccl_collective: the communicator is null");
  }
  impl_->comm = comm;
  ncclResult_t rc = impl_->settle(ncclCommUserRank(comm, &impl_->rank));
  if (rc == ncclSuccess) rc = impl_->settle(ncclCommCount(comm, &impl_->size));
  if (rc == ncclSuccess) rc = impl_->settle(ncclCommCuDevice(comm, &impl_->device));
  if (rc != ncclSuccess) {
    throw Error(ErrorCode::collective_error,
                "vecnorm: nccl_collective: reading the communicator's rank, size and device failed: " +
                    nccl_error(rc, comm));
  }
}

NcclCollective::~NcclCollective() = default;

int NcclCollective::rank() const { return impl_->rank; }
int NcclCollective::size() const { return impl_->size; }
std::string NcclCollective::name() const { return "nccl"; }
int NcclCollective::device() const noexcept { return impl_->device; }
ncclComm_t NcclCollective::communicator() const noexcept { return impl_->comm; }

void NcclCollective::all_gather(const void* send, void* recv, std::size_t bytes, Device device, Stream stream) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  if (device.kind != Device::Kind::cuda) {
    throw Error(ErrorCode::invalid_argument,
                m.where(bytes) + ": got buffers on " + device.str() +
                    "; the NCCL adapter takes device buffers only. For CPU steps use the MPI adapter "
                    "(vecnorm/mpi.hpp)");
  }
  if (device.index != m.device) {
    throw Error(ErrorCode::invalid_argument, m.where(bytes) + ": got buffers on " + device.str() +
                                                 ", the communicator's device is cuda:" + std::to_string(m.device));
  }
  if (bytes > 0 && (send == nullptr || recv == nullptr)) {
    throw Error(ErrorCode::invalid_argument, m.where(bytes) + ": null send or recv buffer");
  }
  // A communicator that failed (or was aborted) earlier: say so now rather
  // than enqueue onto it.
  ncclResult_t async = ncclSuccess;
  ncclResult_t rc = ncclCommGetAsyncError(m.comm, &async);
  if (rc != ncclSuccess) {
    throw Error(ErrorCode::collective_error, m.where(bytes) + ": ncclCommGetAsyncError failed: " + nccl_error(rc, m.comm));
  }
  async = m.settle(async);
  if (async != ncclSuccess) {
    throw Error(ErrorCode::collective_error, m.where(bytes) + ": the communicator has an asynchronous error: " +
                                                 nccl_error(async, m.comm) + " (abort and re-create it)");
  }
  if (bytes == 0) return;  // every rank calls with the same bytes: all skip
  rc = m.settle(ncclAllGather(send, recv, bytes, ncclUint8, m.comm, static_cast<cudaStream_t>(stream.cuda_stream)));
  if (rc != ncclSuccess) {
    throw Error(ErrorCode::collective_error, m.where(bytes) + ": ncclAllGather failed: " + nccl_error(rc, m.comm));
  }
}

std::shared_ptr<Collective> nccl_collective(ncclComm_t comm) { return std::make_shared<NcclCollective>(comm); }

}  // namespace vecnorm
