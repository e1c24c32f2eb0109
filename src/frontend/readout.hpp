// src/frontend/readout.hpp -- the maps of stored statistics on the host: the
// read-outs loc(key) / scale(key) and to_affine() of VecNorm and
// SharedVecNorm, computed from a key's statistics in host memory with the
// backends' own arithmetic (core::stats_maps), so that they are what a
// normalize applies, bit for bit.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vecnorm/core/maps.hpp"
#include "vecnorm/normalizer.hpp"
#include "vecnorm/options.hpp"

namespace vecnorm::detail {

/// One key's statistics in host memory, as stored (stats dtype values).
struct HostStats {
  const void* loc = nullptr;
  const void* var = nullptr;
  std::int64_t count = 0;
  const std::int64_t* skips = nullptr;  ///< per-element skips; null: none
  std::int64_t numel = 0;               ///< values of loc and of var
};

/// The maps of one key in its compute type (float32 or float64): numel values
/// of mu and of p, stored raw in double-sized slots.
struct KeyMaps {
  DType dtype = DType::float32;
  std::size_t numel = 0;
  std::vector<double> mu, p;
  std::size_t bytes() const { return numel * dtype_size(dtype); }
  /// mu (or p) as doubles.
  std::vector<double> widened(bool of_p) const;
};

/// The maps of key `spec` of a normalizer with `options`. Error(zero_count)
/// naming the key when its count is 0 and there is no prior (with one: its map).
KeyMaps key_maps(const Options& options, const KeySpec& spec, const HostStats& st, core::MapKind kind);

/// A fixed affine normalizer (AffineNormalizer) for `table` on `backend` with
/// the maps of every key's statistics (stats[k] for key k).
AffineNormalizer make_affine(const Options& options, Backend backend, const KeyTable& table,
                             std::span<const Shape> stats_shapes, std::span<const HostStats> stats);

}  // namespace vecnorm::detail
