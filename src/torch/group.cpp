// src/torch/group.cpp -- vecnorm::Collective over a torch.distributed process
// group (gloo on the CPU, NCCL on CUDA), found by its registered name as
// torch's functional collectives find theirs.
//
// all_gather is the group's all_gather_single (c10d's _allgather_base_
// operator) on views of vecnorm's message buffers, then Work::wait(): on CUDA
// that makes the current stream wait for NCCL's (no host synchronization); on
// the CPU it blocks until gloo is done, or its timeout.
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <memory>
#include <string>

#include "call.hpp"
#include "vecnorm/collective.hpp"

namespace vecnorm::torch_ops {
namespace {

class TorchCollective final : public Collective {
 public:
  TorchCollective(std::string name, c10::intrusive_ptr<c10d::ProcessGroup> pg)
      : name_(std::move(name)), pg_(std::move(pg)) {}
  int rank() const override { return pg_->getRank(); }
  int size() const override { return pg_->getSize(); }
  std::string name() const override { return "torch.distributed " + pg_->getBackendName() + " group " + name_; }

  void all_gather(const void* send, void* recv, std::size_t bytes, Device device, Stream) override {
    const at::TensorOptions opts =
        at::TensorOptions()
            .dtype(at::kByte)
            .device(device.kind == Device::Kind::cuda ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device.index))
                                                      : at::Device(at::kCPU));
    at::Tensor in = at::from_blob(const_cast<void*>(send), {static_cast<int64_t>(bytes)}, opts);
    at::Tensor out = at::from_blob(recv, {static_cast<int64_t>(bytes) * size()}, opts);
    try {
      pg_->all_gather_single(out, in)->wait();
    } catch (const std::exception& e) {
      throw Error(ErrorCode::collective_error, "vecnorm: collective '" + name() + "' (rank " + std::to_string(rank()) +
                                                   " of " + std::to_string(size()) + "): the all-gather of " +
                                                   std::to_string(bytes) + " bytes failed: " + e.what());
    }
  }

 private:
  std::string name_;
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
};

}  // namespace

std::shared_ptr<Collective> torch_collective(const std::string& group) {
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  try {
    pg = c10d::resolve_process_group(group);
  } catch (const std::exception& e) {
    C10_THROW_ERROR(ValueError, "vecnorm: process group '" + group +
                                    "' is not registered with torch.distributed (was it destroyed?): " + e.what());
  }
  return std::make_shared<TorchCollective>(group, std::move(pg));
}

}  // namespace vecnorm::torch_ops
