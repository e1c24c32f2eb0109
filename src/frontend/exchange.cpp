// src/frontend/exchange.cpp -- a distributed pooled update (vecnorm/collective.hpp):
// this rank's batch moments, the all-gather of every rank's message, the
// checks of what the ranks sent, the update from the merged moments.
#include <algorithm>
#include <cstring>
#include <string>

#include "../errors.hpp"
#include "pipeline.hpp"
#include "vecnorm/core/exchange.hpp"

namespace vecnorm::detail {

namespace {

using core::kExchangeHeader;

/// FNV-1a over bytes.
struct Hash {
  std::uint64_t h = 1469598103934665603ull;
  void add(const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  template <class T>
  void add(const T& v) {
    add(&v, sizeof v);
  }
};

/// What every rank's normalizer must agree on: the key table (names, feature
/// sizes, each key's statistics dtype) and the options that shape the update.
/// Not the input dtypes: the messages carry every rank's moments in double,
/// whatever its input (a rank without the key -- the torch bridge's table then
/// holds the statistics' dtype for the input's -- reaches the check that
/// names the key instead of failing here).
double signature(const CallConfig& cfg, const KeyTable& table) {
  Hash h;
  for (const KeySpec& k : table.keys) {
    h.add(k.name.data(), k.name.size());
    h.add(k.feature_shape.numel());
    h.add(static_cast<int>(stats_dtype_for(cfg.stats_dtype, k.dtype)));  // each key's, however it was chosen
  }
  h.add(static_cast<int>(cfg.estimator));
  h.add(static_cast<int>(cfg.nonfinite));
  h.add(cfg.decay.log_decay);
  h.add(cfg.decay.cumulative);
  h.add(cfg.rule.lo);
  h.add(cfg.rule.in);
  h.add(cfg.rule.out);
  h.add(cfg.rule.hi);
  h.add(cfg.rule.clip);
  h.add(cfg.decay.prior);
  h.add(cfg.decay.unbiased);
  h.add(cfg.decay.until);
  h.add(cfg.decay.until_strict);
  h.add(cfg.rule.center);
  return core::bits_to_double(h.h);
}

/// Offset (doubles, from the message's start) of key k's block.
std::int64_t key_offset(const KeyTable& table, int k) {
  std::int64_t off = kExchangeHeader;
  for (int j = 0; j < k; ++j) off += core::exchange_key_doubles(table.keys[static_cast<std::size_t>(j)].feature_shape.numel());
  return off;
}

std::int64_t message_doubles(const KeyTable& table) { return key_offset(table, static_cast<int>(table.keys.size())); }

double status_of(std::exception_ptr e) {
  if (!e) return 0.0;
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    return 1.0 + static_cast<double>(static_cast<int>(err.code()));
  } catch (...) {
    return 1000.0;  // not a vecnorm::Error
  }
}

std::string status_name(double status) {
  if (status >= 1000.0) return "an exception that is not a vecnorm::Error";
  return to_string(static_cast<ErrorCode>(static_cast<int>(status) - 1));
}

std::string ranks_where(const double* gathered, int ranks, std::int64_t stride, std::int64_t off, bool present) {
  std::string out;
  for (int r = 0; r < ranks; ++r)
    if ((gathered[r * stride + off] >= 0.0) == present) out += (out.empty() ? "" : ", ") + std::to_string(r);
  return out;
}

/// The host check of the gathered messages: the same verdict on every rank
/// (they all see the same bytes).
void check_messages(const CallConfig& cfg, const KeyTable& table, const double* g, std::int64_t stride) {
  const int ranks = cfg.group->size();
  const std::string where = "distributed step (collective '" + cfg.group->name() + "', rank " +
                            std::to_string(cfg.group->rank()) + " of " + std::to_string(ranks) + "): ";
  const std::string unchanged = "; no rank changed its statistics";
  for (int r = 0; r < ranks; ++r)
    if (g[r * stride] != 0.0)
      fail(ErrorCode::collective_error, where + "rank " + std::to_string(r) + " failed its step (" +
                                            status_name(g[r * stride]) + "; its own error says why)" + unchanged);
  for (int r = 1; r < ranks; ++r)
    if (core::double_bits(g[r * stride + 1]) != core::double_bits(g[1]))
      fail(ErrorCode::collective_error,
           where + "rank " + std::to_string(r) +
               "'s normalizer differs from rank 0's: expected the same key table (names, feature shapes, statistics dtypes) "
               "and options (decay, eps, scale, max_scale, clip, prior_count, unbiased, until, until_strict, center, "
               "estimator, stats_dtype, nonfinite) on every rank" +
               unchanged);
  for (int k = 0; k < static_cast<int>(table.keys.size()); ++k) {
    const std::int64_t off = key_offset(table, k);
    const std::string with = ranks_where(g, ranks, stride, off, true);
    const std::string without = ranks_where(g, ranks, stride, off, false);
    if (!with.empty() && !without.empty())
      fail(ErrorCode::collective_error, where + key_prefix(table.keys[static_cast<std::size_t>(k)].name) +
                                            "expected on every rank or on none, got it from rank(s) " + with +
                                            " but not from rank(s) " + without + unchanged);
  }
}

}  // namespace

void exchange_and_dispatch(const CallConfig& cfg, const KeyTable& table, PlanBuffers& buf, Scratch& ws, Stream stream,
                           std::exception_ptr local) {
  Collective& group = *cfg.group;
  const int ranks = group.size();
  const std::int64_t stride = message_doubles(table);
  const std::size_t bytes = static_cast<std::size_t>(stride) * sizeof(double);
  const bool on_device = cfg.backend == Backend::cuda;

  // This rank's message as far as the host knows it: the header, and every
  // key absent (n = -1) but those of the call (n = 0 until the moments come).
  std::vector<double>& msg = buf.message;
  msg.assign(static_cast<std::size_t>(stride), 0.0);
  msg[1] = signature(cfg, table);
  for (std::size_t k = 0; k < table.keys.size(); ++k) msg[static_cast<std::size_t>(key_offset(table, static_cast<int>(k)))] = -1.0;
  Hash keys;
  if (!local)
    for (const int k : buf.keys) msg[static_cast<std::size_t>(key_offset(table, k))] = 0.0;
  for (std::size_t k = 0; k < table.keys.size(); ++k)
    keys.add(msg[static_cast<std::size_t>(key_offset(table, static_cast<int>(k)))] >= 0.0);
  msg[2] = core::bits_to_double(keys.h);

  // The send and receive buffers (without them this rank cannot take part:
  // the others then wait for it until their collective's timeout).
  double* send = static_cast<double*>(ws.exchange(bytes * static_cast<std::size_t>(ranks + 1), cfg.device, stream));
  double* recv = send + stride;

  auto put_message = [&]() {
    if (on_device)
      cuda::put_message(send, msg.data(), msg.size(), stream);
    else
      std::memcpy(send, msg.data(), bytes);
  };
  if (!local) {
    try {
      Plan update = make_plan(cfg, buf.segments);
      update.ranks = ranks;  // (takes the maps of keys this rank has no rows of)
      reserve_scratch(cfg, update, ws, stream);
      buf.moments.assign(buf.segments.begin(), buf.segments.end());
      for (Segment& s : buf.moments) s.y = send + key_offset(table, s.key);
      CallConfig mc = cfg;
      mc.work = Work::moments;
      const Plan moments = make_plan(mc, buf.moments);
      reserve_scratch(mc, moments, ws, stream);
      put_message();
      dispatch(cfg.backend, moments, ws, stream);
    } catch (...) {
      local = std::current_exception();
    }
  }
  if (local) {
    msg[0] = status_of(local);
    put_message();
  }

  group.all_gather(send, recv, bytes, cfg.device, stream);
  if (local) std::rethrow_exception(local);
  // On the host the verdict is read here; on a device reading it would wait
  // for the device: gathered_stats_kernel decides the same without the host.
  if (!on_device) check_messages(cfg, table, recv, stride);

  for (Segment& s : buf.segments) s.mu = recv + key_offset(table, s.key);
  Plan plan = make_plan(cfg, buf.segments);
  plan.ranks = ranks;
  plan.rank = group.rank();
  plan.stride = stride;
  plan.exchange = recv;
  dispatch(cfg.backend, plan, ws, stream);
}

}  // namespace vecnorm::detail
