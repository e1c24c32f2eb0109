// vecnorm/core/exchange.hpp -- the message of a distributed pooled update
// (vecnorm/collective.hpp) and its merge, shared by the CPU backend, the CUDA
// kernels and the host side that checks it.
//
// One message per rank, all of the same size for a key table, in doubles:
//
//   [status, signature, keys]                      the header
//   [n, mean[0..F), M2[0..F)]   per key of the table, in table order
//
// status: 0 when the rank's call passed every check, else 1 + its ErrorCode.
// signature: the bits of a hash of what must agree across ranks (keys, feature
// sizes, options), compared as bits; keys: the bits of a hash of which keys
// the rank's call has (they must agree too). n: the rows this rank adds (after
// NonFinite::skip), -1 when its call does not have the key. The gathered
// buffer holds the ranks' messages one after the other (rank order).
#pragma once

#include <cstdint>
#include <cstring>

#include "vecnorm/core/hd.hpp"
#include "vecnorm/core/pooled.hpp"

namespace vecnorm::core {

/// Doubles of the header.
constexpr std::int64_t kExchangeHeader = 3;
/// Doubles of one key with F feature elements.
constexpr std::int64_t exchange_key_doubles(std::int64_t feat) { return 2 * feat + 1; }

/// A 64-bit value carried in a double's bits (the transport moves bytes).
VECNORM_HD double bits_to_double(std::uint64_t v) {
  double d;
  std::memcpy(&d, &v, sizeof d);
  return d;
}
VECNORM_HD std::uint64_t double_bits(double d) {
  std::uint64_t v;
  std::memcpy(&v, &d, sizeof v);
  return v;
}

/// One key of the gathered messages: `block` points at rank 0's [n, mean,
/// M2] of the key; rank r's is at block + r * stride.
struct GatheredKey {
  const double* block = nullptr;
  std::int64_t stride = 0;  ///< doubles per message
  int ranks = 0;
  std::int64_t feat = 0;

  VECNORM_HD double rows_of(int r) const { return block[r * stride]; }
  /// The rows every rank adds (absent ranks add none).
  VECNORM_HD double rows() const {
    double n = 0.0;
    for (int r = 0; r < ranks; ++r) n += rows_of(r) > 0.0 ? rows_of(r) : 0.0;
    return n;
  }
  /// The batch moments of feature f over every rank: each rank's moments
  /// merged in rank order (Chan et al.; ranks that add no rows are left out),
  /// so that every rank computes the same bits.
  VECNORM_HD Moments moments(std::int64_t f) const {
    Moments b;
    for (int r = 0; r < ranks; ++r) {
      const double* q = block + r * stride;
      if (!(q[0] > 0.0)) continue;
      Moments m;
      m.n = q[0];
      m.mean = q[1 + f];
      m.m2 = q[1 + feat + f];
      b = merge(b, m);
    }
    return b;
  }
};

/// Writes a rank's moments of feature f of one key into its message block.
VECNORM_HD void put_moments(double* block, std::int64_t feat, std::int64_t f, const Moments& m) {
  block[1 + f] = m.mean;
  block[1 + feat + f] = m.m2;
}

}  // namespace vecnorm::core
