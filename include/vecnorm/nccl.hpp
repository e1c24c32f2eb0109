// vecnorm/nccl.hpp -- the NCCL adapter of vecnorm::Collective (library
// vecnorm::nccl, target vecnorm_nccl; built with the CUDA backend when CMake
// finds nccl.h and libnccl).
//
//   ncclComm_t comm;                         // one rank per GPU, made by the caller
//   ncclCommInitRank(&comm, world, id, rank);
//   vecnorm::Options o;
//   o.backend = vecnorm::Backend::cuda;
//   o.reduce_batch_dims = true;
//   o.collective = vecnorm::nccl_collective(comm);
//   vecnorm::VecNorm vn(o, table);           // steps pool the batches of all GPUs
//   ...
//   // destroy vn (and every copy of the collective) before ncclCommDestroy(comm)
//
// Device memory only: all_gather() is ncclAllGather(send, recv, bytes,
// ncclUint8, comm, stream) on the step's stream (Stream::cuda_stream), with no
// host synchronization; host (Device::cpu()) buffers throw
// Error(invalid_argument) (use vecnorm/mpi.hpp for CPU steps).
//
// No timeout. NCCL collectives have no timeout of their own, and this adapter
// adds none: a rank that never joins leaves the gather (and everything queued
// after it on the stream) waiting on the GPU; the host notices nothing until
// it synchronizes, where it waits too. Detecting that is the job of the
// program's watchdog: PyTorch's NCCL watchdog (ProcessGroupNCCL's timeout,
// TORCH_NCCL_ASYNC_ERROR_HANDLING), or a thread of your own that polls
// ncclCommGetAsyncError() and calls ncclCommAbort() after a deadline. An
// aborted or failed communicator is reported by the next all_gather() as
// Error(collective_error).
#pragma once

#include <memory>
#include <string>

#include <nccl.h>

#include "vecnorm/collective.hpp"

namespace vecnorm {

/// A Collective over a caller-owned NCCL communicator (not duplicated, not
/// destroyed: it must outlive the adapter and every VecNorm holding it). NCCL
/// matches collectives by order: every rank's steps (and the caller's own
/// NCCL calls on `comm`) must come in the same order; the adapter serializes
/// its own calls from several threads of one process.
///
/// Errors, all vecnorm::Error:
///   - invalid_argument: host buffers, buffers on another device than the
///     communicator's, null buffers with bytes > 0;
///   - collective_error: an NCCL call failed or the communicator holds an
///     asynchronous error (the message has ncclGetErrorString and
///     ncclGetLastError). The adapter does not break itself: NCCL's state is
///     the communicator's (abort and re-create it).
class NcclCollective final : public Collective {
 public:
  /// Reads rank, size and device of `comm`; Error(invalid_argument) for a null
  /// communicator, Error(collective_error) when NCCL fails.
  explicit NcclCollective(ncclComm_t comm);
  ~NcclCollective() override;
  NcclCollective(const NcclCollective&) = delete;
  NcclCollective& operator=(const NcclCollective&) = delete;

  int rank() const override;
  int size() const override;
  /// ncclAllGather on stream.cuda_stream (null: the default stream). Returns
  /// when the gather is enqueued (a non-blocking communicator's ncclInProgress
  /// is waited out on the host: the enqueue, not the GPU work). bytes == 0
  /// calls nothing.
  void all_gather(const void* send, void* recv, std::size_t bytes, Device device, Stream stream) override;
  std::string name() const override;  ///< "nccl"

  /// The CUDA device of the communicator (ncclCommCuDevice).
  int device() const noexcept;
  ncclComm_t communicator() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// std::make_shared<NcclCollective>(comm): the adapter for Options::collective.
std::shared_ptr<Collective> nccl_collective(ncclComm_t comm);

}  // namespace vecnorm
