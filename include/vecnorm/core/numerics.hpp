// vecnorm/core/numerics.hpp -- the whole numeric core of vecnorm (one include).
//
// Every backend (the CPU loops in src/cpu, the CUDA kernels in kernels/, and
// the kernels run under the SIMT emulator in the tests) and the host read-outs
// call these functions and nothing else to update statistics and normalize:
//
//   exp_log.hpp    e^x - 1 and ln x with +, -, *, / only (the same bits on every backend)
//   math.hpp       decay weights, lerp, scale clamp, the affine map, finiteness
//   estimator.hpp  the estimators as policy types (TorchRL, Stable) and visit()
//   element.hpp    the per-element step: update, normalize, count and skip rule
//   pooled.hpp     pooled statistics: shift, reduce, combine, project, finalize
//   maps.hpp       the affine map of stored statistics (normalize / denormalize)
//   convert.hpp    float16 / bfloat16 / integer loads and stores, compute types
//
// The derivations are in docs/numerics.md; the normative statement is the
// project's semantics spec.
#pragma once

#include "vecnorm/core/convert.hpp"
#include "vecnorm/core/element.hpp"
#include "vecnorm/core/estimator.hpp"
#include "vecnorm/core/exp_log.hpp"
#include "vecnorm/core/maps.hpp"
#include "vecnorm/core/math.hpp"
#include "vecnorm/core/pooled.hpp"
