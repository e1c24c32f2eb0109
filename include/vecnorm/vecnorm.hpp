// vecnorm/vecnorm.hpp -- everything of the public API.
//
//   #include <vecnorm/vecnorm.hpp>
//
// vecnorm normalizes observations and rewards with running statistics, as
// TorchRL's VecNormV2 does, on the CPU or on a CUDA device. See README.md.
#pragma once

#include "vecnorm/allocator.hpp"
#include "vecnorm/buffer.hpp"
#include "vecnorm/checkpoint.hpp"
#include "vecnorm/error.hpp"
#include "vecnorm/external.hpp"
#include "vecnorm/normalizer.hpp"
#include "vecnorm/options.hpp"
#include "vecnorm/reward.hpp"
#include "vecnorm/shared.hpp"
#include "vecnorm/stateless.hpp"
#include "vecnorm/tensor.hpp"
#include "vecnorm/version.hpp"
#include "vecnorm/workspace.hpp"

#if __has_include(<dlpack/dlpack.h>)
#include "vecnorm/dlpack.hpp"
#endif
