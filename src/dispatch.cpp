// src/dispatch.cpp -- the one switch over backends.
#include "backends.hpp"
#include "errors.hpp"
#include "vecnorm/version.hpp"

namespace vecnorm {

#if !defined(VECNORM_WITH_CUDA)
bool cuda_built() noexcept { return false; }
bool cuda_available() noexcept { return false; }
#endif

namespace detail {

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
        fail(ErrorCode::backend_unavailable, "backend cuda: no usable CUDA device; use backend cpu or auto");
      return Backend::cuda;
    case Backend::automatic:
      return cuda_available() ? Backend::cuda : Backend::cpu;
  }
  fail(ErrorCode::invalid_option, "backend: unknown value");
}

void dispatch(Backend backend, const Plan& plan, Workspace& ws, Stream stream) {
  (void)stream;
  switch (backend) {
    case Backend::cpu:
      cpu::run(plan, ws);
      return;
    case Backend::cuda:
    case Backend::automatic:
      break;
  }
  fail(ErrorCode::backend_unavailable, "backend cuda: not implemented in this build");
}

void dispatch(Backend backend, const AffinePlan& plan, Stream stream) {
  (void)stream;
  switch (backend) {
    case Backend::cpu:
      cpu::run(plan);
      return;
    case Backend::cuda:
    case Backend::automatic:
      break;
  }
  fail(ErrorCode::backend_unavailable, "backend cuda: not implemented in this build");
}

}  // namespace detail
}  // namespace vecnorm
