// src/dispatch.cpp -- the one switch over backends.
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

void dispatch(Backend backend, const Plan& plan, Workspace& ws, Stream stream) {
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
  fail(ErrorCode::invalid_argument, "internal: dispatch of an unresolved backend");
}

void dispatch(Backend backend, const AffinePlan& plan, Stream stream) {
  switch (backend) {
    case Backend::cpu:
      cpu::run(plan);
      return;
    case Backend::cuda:
      cuda::run(plan, stream);
      return;
    case Backend::automatic:
      break;
  }
  fail(ErrorCode::invalid_argument, "internal: dispatch of an unresolved backend");
}

}  // namespace vecnorm::detail
