// src/dispatch.cpp -- the one switch over backends.
#include <string>

#include "backends.hpp"
#include "errors.hpp"
#include "vecnorm/version.hpp"

namespace vecnorm::detail {

Backend resolve(Backend requested) {
  switch (requested) {
    case Backend::cpu:
      return Backend::cpu;
    case Backend::cuda:
      if (!cuda_built())
        fail(ErrorCode::backend_unavailable,
             "backend cuda: this build of vecnorm has no CUDA backend (configure with a CUDA compiler and "
             "VECNORM_ENABLE_CUDA=ON); use backend cpu or auto");
      if (!cuda_available())
        fail(ErrorCode::backend_unavailable,
             "backend cuda: no usable CUDA device (the CUDA runtime reported none); use backend cpu or auto");
      return Backend::cuda;
    case Backend::automatic:
      return cuda_available() ? Backend::cuda : Backend::cpu;
  }
  fail(ErrorCode::invalid_option, "option backend: expected cpu, cuda or auto, got value " +
                                      std::to_string(static_cast<int>(requested)));
}

Device backend_device(Backend resolved) {
  return resolved == Backend::cuda ? Device::cuda(cuda::current_device()) : Device::cpu();
}

namespace {
[[noreturn]] void unresolved() { fail(ErrorCode::invalid_argument, "internal: dispatch of an unresolved backend"); }
}  // namespace

void dispatch(Backend backend, const Plan& plan, Scratch& ws, Stream stream) {
  switch (backend) {
    case Backend::cpu:
      cpu::run(plan, ws);
      return;
    case Backend::cuda:
      cuda::run(plan, ws, stream);
      return;
    case Backend::automatic:
      break;
  }
  unresolved();
}

WorkspaceSize scratch_size(Backend backend, const Plan& plan) {
  switch (backend) {
    case Backend::cpu:
      return {cpu::scratch_bytes(plan), 0};
    case Backend::cuda:
      return {0, cuda::scratch_bytes(plan)};
    case Backend::automatic:
      break;
  }
  unresolved();
}

std::int64_t first_nonfinite(Backend backend, const void* x, DType d, std::int64_t rows, std::int64_t feat,
                             const std::uint8_t* mask, Stream stream, Scratch& ws) {
  switch (backend) {
    case Backend::cpu:
      return cpu::first_nonfinite(x, d, rows, feat, mask);
    case Backend::cuda:
      return cuda::first_nonfinite(x, d, rows, feat, mask, stream, ws);
    case Backend::automatic:
      break;
  }
  unresolved();
}

void returns(Backend backend, const ReturnPass& pass, Stream stream) {
  switch (backend) {
    case Backend::cpu:
      cpu::returns(pass);
      return;
    case Backend::cuda:
      cuda::returns(pass, stream);
      return;
    case Backend::automatic:
      break;
  }
  unresolved();
}

}  // namespace vecnorm::detail
