// vecnorm/mpi.hpp -- the MPI adapter of vecnorm::Collective (library
// vecnorm::mpi, target vecnorm_mpi; built when CMake finds MPI).
//
//   MPI_Init(&argc, &argv);
//   vecnorm::Options o;
//   o.reduce_batch_dims = true;
//   o.collective = vecnorm::mpi_collective(MPI_COMM_WORLD);  // collective call
//   vecnorm::VecNorm vn(o, table);  // every rank steps its own batch; the
//                                   // statistics pool the batches of all ranks
//
// Host memory only: the adapter gathers Device::cpu() buffers. A CUDA step
// would hand it device buffers, which it refuses with Error(invalid_argument)
// (even where the MPI is CUDA-aware): use vecnorm/nccl.hpp on CUDA, or the CPU
// backend with MPI.
//
// The C API of MPI only (MPI-3: MPI_Iallgather). The MPI must be initialized
// when the adapter is made, and the adapter should be destroyed (every
// VecNorm holding it included) before MPI_Finalize; one destroyed after
// MPI_Finalize frees nothing of MPI's.
#pragma once

#include <memory>
#include <string>

#include <mpi.h>

#include "vecnorm/collective.hpp"

namespace vecnorm {

/// A Collective on a private duplicate of an MPI communicator.
///
/// Construction MPI_Comm_dup()s `comm` (a collective call: every rank of
/// `comm` makes its adapter, in the same order as its other collective calls
/// on `comm`); the adapter's traffic never mixes with the caller's, and the
/// duplicate has MPI_ERRORS_RETURN. Destruction MPI_Comm_free()s the duplicate
/// unless MPI is already finalized.
///
/// all_gather(): MPI_Iallgather of MPI_BYTE through buffers of the adapter's
/// own (the caller's are copied in and out), then MPI_Test polled (yielding,
/// then sleeping up to 1 ms between polls) until it completes or
/// timeout_seconds pass. Every rank must call it with the same `bytes`, in the
/// same order (MPI's rule for collectives). Calls from several threads of one
/// process are serialized by the adapter (MPI must then provide at least
/// MPI_THREAD_SERIALIZED); two VecNorms sharing one adapter must step in the
/// same order on every rank.
///
/// Errors, all vecnorm::Error:
///   - invalid_argument: device (non-host) buffers, bytes > INT_MAX, null
///     buffers with bytes > 0; nothing was sent, the adapter stays usable.
///   - collective_error: an MPI call failed (the message has MPI_Error_string)
///     or the gather did not complete within timeout_seconds (a rank is late,
///     dead, or called something else). Either breaks the adapter for good:
///     the collective sequence of the ranks is no longer known to agree, so
///     every later all_gather() throws Error(collective_error) at once.
///
/// After a timeout the MPI request stays posted (MPI cannot cancel a
/// collective): it owns the adapter's buffers, never the caller's, so the
/// caller may free its memory. drain() completes it once the late ranks have
/// joined (e.g. before a clean MPI_Finalize); an adapter destroyed with the
/// request still pending leaks those buffers (they may still be written).
class MpiCollective final : public Collective {
 public:
  /// Throws Error(invalid_argument) when MPI is not initialized (or already
  /// finalized), `comm` is MPI_COMM_NULL or timeout_seconds is not > 0 (NaN
  /// included; +infinity, or anything from 1e9 s: no timeout),
  /// Error(collective_error) when MPI_Comm_dup fails.
  explicit MpiCollective(MPI_Comm comm, double timeout_seconds = 300.0);
  ~MpiCollective() override;
  MpiCollective(const MpiCollective&) = delete;
  MpiCollective& operator=(const MpiCollective&) = delete;

  int rank() const override;
  int size() const override;
  void all_gather(const void* send, void* recv, std::size_t bytes, Device device, Stream stream) override;
  std::string name() const override;  ///< "mpi"

  /// The timeout of all_gather(), in seconds.
  double timeout_seconds() const noexcept;
  /// True once a timeout or an MPI error has made the adapter unusable.
  bool broken() const;
  /// Completes the request a timed-out all_gather() left posted, polling for
  /// at most `timeout_seconds`. True when no request is pending any more (or
  /// none ever was). The adapter stays broken. Throws Error(collective_error)
  /// when MPI_Test fails.
  bool drain(double timeout_seconds);
  /// The duplicate communicator the adapter gathers on (owned by the adapter).
  MPI_Comm communicator() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// std::make_shared<MpiCollective>(comm, timeout_seconds): the adapter for
/// Options::collective. Collective over `comm`.
std::shared_ptr<Collective> mpi_collective(MPI_Comm comm, double timeout_seconds = 300.0);

}  // namespace vecnorm
