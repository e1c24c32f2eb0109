// vecnorm/collective.hpp -- pooled statistics across ranks (processes, GPUs,
// machines), on the transport the caller already runs.
//
// A VecNorm with reduce_batch_dims and Options::collective set pools over the
// batches of every rank of the group: each update
//
//   1. computes its own batch moments (rows n, mean and M2 per feature, in
//      double) into a fixed-size message: a header (status, signature, keys) and
//      (2F + 1) doubles per key of the table, whether the call has the key or
//      not (n = -1: absent);
//   2. all-gathers the messages (Collective::all_gather, on the step's
//      stream for device buffers: no host synchronization on CUDA);
//   3. merges every key's moments in rank order (Chan et al.), then applies the
//      one EMA update: every rank stores the same bits, equal (within rounding)
//      to one process stepping the concatenated batches.
//
// A rank whose call fails (bad input, a key the others do not have) still
// sends its message, marked failed: on the CPU every rank then throws
// Error(collective_error) naming that rank, and no rank changes anything; on
// CUDA the others' statistics stay unchanged (their outputs are normalized
// with them) and only the failing rank throws (reading the status would be a
// host synchronization). Per-element statistics are never merged: each rank
// owns its environments. See docs/distributed.md.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "vecnorm/tensor.hpp"

namespace vecnorm {

/// The one collective a distributed step calls. Adapters: vecnorm/mpi.hpp
/// (MPI), vecnorm/nccl.hpp (NCCL), thread_group() below (threads of one
/// process), and the Python package's torch.distributed one.
class Collective {
 public:
  virtual ~Collective() = default;
  /// This rank, in [0, size()).
  virtual int rank() const = 0;
  /// The number of ranks of the group.
  virtual int size() const = 0;
  /// Gathers `bytes` bytes from `send` of every rank into `recv` (size() *
  /// bytes, rank r's at r * bytes), in the memory of `device` (host memory
  /// for Device::cpu()). Device buffers: ordered on `stream`, no host
  /// synchronization. Every rank calls it with the same `bytes`. Throws
  /// vecnorm::Error(collective_error) on failure, a timeout included.
  virtual void all_gather(const void* send, void* recv, std::size_t bytes, Device device, Stream stream) = 0;
  /// For messages: "mpi", "nccl", "threads", ...
  virtual std::string name() const = 0;
};

/// `ranks` collectives that gather among the threads of this process (one per
/// thread, each thread using its own): for tests, and for several simulators
/// in one process. Host buffers; device buffers are copied through the host,
/// with a synchronization. A thread that waits longer than `timeout_seconds`
/// for the others throws Error(collective_error) (and the group is broken for
/// good: every later call throws).
std::vector<std::shared_ptr<Collective>> thread_group(int ranks, double timeout_seconds = 60.0);

}  // namespace vecnorm
