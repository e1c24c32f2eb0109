// src/backends.hpp -- the backends' entry points and the one switch over them.
#pragma once

#include "plan.hpp"

namespace vecnorm::detail {

namespace cpu {
void run(const Plan& plan, Workspace& ws);
void run(const AffinePlan& plan);
}  // namespace cpu

/// Resolve Backend::automatic (cuda when built and usable, else cpu).
Backend resolve(Backend requested);

/// Run a validated plan on `backend` (already resolved).
void dispatch(Backend backend, const Plan& plan, Workspace& ws, Stream stream);
void dispatch(Backend backend, const AffinePlan& plan, Stream stream);

}  // namespace vecnorm::detail
