// src/state/checkpoint.cpp -- the bytes of a checkpoint file (docs/state-format.md):
// encode_state writes format version 2, or 3 to 5 where the options need it
// (scale, clip, prior_count, unbiased not the defaults: 3; until: 4; center
// false: 5), 6 for a state with returns (a RewardScaler's), 7 where the keys'
// statistics dtypes differ (stats dtype code 2), 8 where max_scale is finite or
// until_strict set; decode_state reads 1 to 8.
// Files on disk are files.cpp's; the shapes, key specs and codes it shares
// with shared segments are binary_io.hpp's and schema.hpp's.
#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>

#include "binary_io.hpp"
#include "rethrow.hpp"
#include "schema.hpp"
#include "vecnorm/checkpoint.hpp"

namespace vecnorm {

namespace {

// ---------------------------------------------------------------- format constants

constexpr std::array<std::uint8_t, 8> kMagic = {'V', 'N', 'R', 'M', 'C', 'K', 'P', 'T'};
constexpr std::size_t kFixedHeader = 24;    // magic, version, flags, file size
constexpr std::size_t kHeaderV1 = 60;       // ... + options, number of keys, batch ndim
constexpr std::size_t kHeaderV2 = 64;       // ... + nonfinite
constexpr std::size_t kHeaderV3 = 88;       // ... + scale, unbiased, clip, prior_count
constexpr std::size_t kHeaderV4 = 96;       // ... + until
constexpr std::size_t kHeaderV5 = 100;      // ... + center (versions 6 and 7: the same header)
constexpr std::size_t kHeaderV8 = 112;      // ... + max_scale, until_strict
constexpr std::size_t kChecksumBytes = 4;   // CRC-32C trailer
constexpr std::size_t kMinStatsRecordV1 = 8 + 8 + 8;  // count, loc length, var length
constexpr std::size_t kMinStatsRecordV2 = 8 + 8 + 8 + 8 + 8;  // count, skipped, loc/var/skips lengths
constexpr std::uint32_t kMaxNameBytes = 65535;

const char* const kPrefix = "checkpoint: ";

[[noreturn]] void bad(const std::string& what) { detail::fail(ErrorCode::state_mismatch, kPrefix + what); }

/// What is wrong with key `ks`'s skips / skipped (format version 2 rules), or
/// "" when nothing is. `kw` names the key ("key 'obs'").
std::string skips_problem(const KeyState& ks, bool pooled, std::int64_t numel, const std::string& kw) {
  if (ks.skipped < 0) return kw + " skipped: expected >= 0, got " + std::to_string(ks.skipped);
  const std::size_t n = ks.skips.size();
  if (n == 0) {
    if (!pooled && ks.skipped != 0)
      return kw + " skipped: expected the sum of skips, 0 (no skips stored), got " + std::to_string(ks.skipped);
    return "";
  }
  if (pooled)
    return kw + " skips: expected none with pooled statistics (reduce_batch_dims = 1: whole rows are skipped), got " +
           std::to_string(n) + " values";
  if (static_cast<std::uint64_t>(n) != static_cast<std::uint64_t>(numel))
    return kw + " skips length: expected 0 or " + std::to_string(numel) + " values (one per element of " +
           ks.stats_shape.str() + "), got " + std::to_string(n);
  std::int64_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t v = ks.skips[i];
    if (v < 0 || v > ks.count)
      return kw + " skips[" + std::to_string(i) + "]: expected 0 to " + std::to_string(ks.count) +
             " (the count), got " + std::to_string(v);
    if (__builtin_add_overflow(sum, v, &sum))
      return kw + " skips: their sum overflows int64";
  }
  if (sum != ks.skipped)
    return kw + " skipped: expected the sum of skips, " + std::to_string(sum) + ", got " + std::to_string(ks.skipped);
  if (sum == 0)
    return kw + " skips: expected none when no element was skipped (skipped = 0), got " + std::to_string(n) +
           " values, all 0";
  return "";
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

/// Printable bytes as they are, others as \xNN.
std::string escaped(std::span<const std::uint8_t> b) {
  std::string s;
  for (std::uint8_t c : b) {
    if (c >= 0x20 && c < 0x7F && c != '\\' && c != '\'') {
      s += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      s += buf;
    }
  }
  return s;
}

using detail::checked_numel;

// ---------------------------------------------------------------- decode (versions 1 to 6)
//
// One parser for both versions: version 2 is version 1 with the nonfinite code
// after eps, and per key the skipped counter after count and the skips after
// var. Fields a version 1 file does not have get the values that reproduce the
// behaviour of the vecnorm that wrote it (docs/state-format.md, "Versioning and compatibility").

State decode_records(std::span<const std::uint8_t> d, std::uint32_t version) {
  const bool v2 = version >= 2;
  const std::size_t body_end = d.size() - kChecksumBytes;
  detail::Reader r(d, kFixedHeader, body_end, {ErrorCode::state_mismatch, kPrefix, " (before the checksum)"});
  State st;
  const std::uint32_t est = r.u32("estimator");
  if (est > 1) bad("estimator: expected 0 (torchrl) or 1 (stable), got " + std::to_string(est));
  st.options.estimator = detail::estimator_of_code(est);
  const std::uint32_t pooled = r.u32("reduce_batch_dims");
  if (pooled > 1) bad("reduce_batch_dims: expected 0 or 1, got " + std::to_string(pooled));
  st.options.reduce_batch_dims = pooled == 1;
  const std::uint32_t sd = r.u32("stats_dtype");
  if (version == 7 && sd != 2)  // version 7 is written for code 2 only (one encoding per state)
    bad("stats_dtype: expected 2 (each key's from its input) in format version 7, got " + std::to_string(sd));
  if (version != 7 && sd > (version == 8 ? 2u : 1u))
    bad(version == 8 ? "stats_dtype: expected 0 (float32), 1 (float64) or 2 (each key's from its input), got " +
                           std::to_string(sd)
                     : "stats_dtype: expected 0 (float32) or 1 (float64), got " + std::to_string(sd));
  st.options.stats_dtype = detail::stats_dtype_of_code(sd);
  const std::uint32_t nkeys = r.u32("number of keys");
  st.options.decay = r.f64("decay");
  st.options.eps = r.f64("eps");
  // Version 1 was written by a vecnorm without the option: non-finite input
  // entered its statistics.
  st.options.nonfinite = NonFinite::propagate;
  if (v2) {
    const std::uint32_t nf = r.u32("nonfinite");
    if (nf > 2) bad("nonfinite: expected 0 (propagate), 1 (skip) or 2 (error), got " + std::to_string(nf));
    st.options.nonfinite = detail::nonfinite_of_code(nf);
  }
  // Version 3 adds the scale form, the batch-variance rule, the output bound
  // and the prior; earlier files had the defaults.
  if (version >= 3) {
    const std::uint32_t sc = r.u32("scale");
    if (sc > 2) bad("scale: expected 0 (clamp), 1 (sqrt_var_plus_eps) or 2 (std_plus_eps), got " + std::to_string(sc));
    st.options.scale = detail::scale_of_code(sc);
    const std::uint32_t ub = r.u32("unbiased");
    if (ub > 1) bad("unbiased: expected 0 or 1, got " + std::to_string(ub));
    st.options.unbiased = ub == 1;
    st.options.clip = r.f64("clip");
    st.options.prior_count = r.f64("prior_count");
  }
  // Version 4 adds the bound on updates (earlier files: none).
  if (version >= 4) {
    st.options.until = r.i64("until");
    if (st.options.until < 0) bad("until: expected until >= 0, got " + std::to_string(st.options.until));
  }
  // Version 5 adds the centring of the map (earlier files: centred).
  if (version >= 5) {
    const std::uint32_t c = r.u32("center");
    if (c > 1) bad("center: expected 0 or 1, got " + std::to_string(c));
    st.options.center = c == 1;
  }
  // Version 8 adds the upper bound of the scale and brax's rule of the bound
  // on updates (earlier files: none, rsl_rl's).
  if (version >= 8) {
    st.options.max_scale = r.f64("max_scale");
    if (!(st.options.max_scale > 0.0))
      bad("max_scale: expected max_scale > 0 (inf: no bound), got " + detail::num(st.options.max_scale));
    const std::uint32_t us = r.u32("until_strict");
    if (us > 1) bad("until_strict: expected 0 or 1, got " + std::to_string(us));
    st.options.until_strict = us == 1;
    // Written only where one of them is set: one encoding per state.
    if (!(st.options.max_scale < std::numeric_limits<double>::infinity()) && !st.options.until_strict)
      bad("max_scale, until_strict: expected a finite max_scale or until_strict 1 in format version 8 (written only "
          "for those), got inf and 0");
  }
  st.table.batch_shape = detail::read_shape(r, "batch shape");
  // Every key takes at least a key spec + the smallest statistics record:
  // bound the count by what is left before allocating anything for it.
  const std::size_t min_key = detail::kMinKeySpecBytes + (v2 ? kMinStatsRecordV2 : kMinStatsRecordV1);
  const std::size_t max_keys = r.left() / min_key;
  if (nkeys == 0 || nkeys > max_keys)
    bad("number of keys: expected 1 to " + std::to_string(max_keys) + " (what " + std::to_string(r.left()) +
        " bytes can hold), got " + std::to_string(nkeys));
  st.table.keys.reserve(nkeys);
  for (std::uint32_t k = 0; k < nkeys; ++k) {
    KeySpec spec = detail::read_key_spec(r, k, kMaxNameBytes);
    if (st.table.batch_shape.ndim() + spec.feature_shape.ndim() > Shape::kMaxDims)
      bad("key '" + spec.name + "': batch " + st.table.batch_shape.str() + " + feature " + spec.feature_shape.str() +
          ": expected at most " + std::to_string(Shape::kMaxDims) + " dims");
    st.table.keys.push_back(std::move(spec));
  }
  // Code 2 is written only where the keys' statistics dtypes differ (one
  // encoding per state: keys that agree are stored with their dtype's code).
  if (sd == 2 && detail::stats_dtype_code(std::nullopt, st.table) != 2)
    bad("stats_dtype: expected 0 or 1 for keys whose statistics dtypes agree (each " +
        std::string(to_string(stats_dtype_for(std::nullopt, st.table.keys.front().dtype))) + "), got 2");
  st.keys.resize(nkeys);
  for (std::uint32_t k = 0; k < nkeys; ++k) {
    const KeySpec& spec = st.table.keys[k];
    const std::string kw = "key '" + spec.name + "'";
    KeyState& ks = st.keys[k];
    ks.stats_shape = detail::stats_shape(st.options.reduce_batch_dims, st.table, spec);
    const DType key_sd = stats_dtype_for(st.options.stats_dtype, spec.dtype);
    const std::size_t elem = dtype_size(key_sd);
    std::int64_t numel = 0;
    std::uint64_t expected = 0;
    if (!checked_numel(ks.stats_shape, numel) ||
        __builtin_mul_overflow(static_cast<std::uint64_t>(numel), static_cast<std::uint64_t>(elem), &expected))
      bad(kw + " statistics shape " + ks.stats_shape.str() + ": too many elements");
    ks.count = r.i64(kw + " count");
    if (ks.count < 0) bad(kw + " count: expected >= 0, got " + std::to_string(ks.count));
    if (v2) {
      ks.skipped = r.i64(kw + " skipped");
      if (ks.skipped < 0) bad(kw + " skipped: expected >= 0, got " + std::to_string(ks.skipped));
    }
    for (int which = 0; which < 2; ++which) {
      const std::string part = kw + (which == 0 ? " loc" : " var");
      const std::uint64_t n = r.u64(part + " length");
      if (n != expected)
        bad(part + " length: expected " + std::to_string(expected) + " bytes (" + ks.stats_shape.str() + " of " +
            to_string(key_sd) + "), got " + std::to_string(n));
      // n <= what is left is checked before any allocation.
      (which == 0 ? ks.loc : ks.var) = r.values(static_cast<std::size_t>(n), elem, part);
    }
    if (v2) {
      const std::uint64_t n = r.u64(kw + " skips length");
      if (n != 0 && st.options.reduce_batch_dims)
        bad(kw + " skips: expected none with pooled statistics (reduce_batch_dims = 1: whole rows are skipped), got " +
            std::to_string(n) + " values");
      if (n != 0 && n != static_cast<std::uint64_t>(numel))
        bad(kw + " skips length: expected 0 or " + std::to_string(numel) + " values (one per element of " +
            ks.stats_shape.str() + "), got " + std::to_string(n));
      // n == numel, and numel * 8 bytes must be left before the checksum (checked
      // before anything is allocated for them).
      std::uint64_t nbytes = 0;
      if (__builtin_mul_overflow(n, std::uint64_t{8}, &nbytes) || nbytes > r.left())
        bad("truncated: expected " + std::to_string(n) + " x 8 bytes for " + kw + " skips at offset " +
            std::to_string(r.pos()) + ", got " + std::to_string(r.left()) + " (before the checksum)");
      const auto raw = r.bytes(static_cast<std::size_t>(nbytes), kw + " skips");
      ks.skips.resize(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < ks.skips.size(); ++i)
        ks.skips[i] = static_cast<std::int64_t>(detail::load_u64(raw.data() + 8 * i));
      const std::string problem = skips_problem(ks, st.options.reduce_batch_dims, numel, kw);
      if (!problem.empty()) bad(problem);
    }
  }
  // Version 6: a RewardScaler's returns after the keys' statistics; version 7:
  // a flag (0 none, 1 returns) first.
  bool has_returns = version == 6;
  if (version >= 7) {
    const std::uint32_t flag = r.u32("returns flag");
    if (flag > 1) bad("returns flag: expected 0 (none) or 1 (a RewardScaler's returns follow), got " + std::to_string(flag));
    has_returns = flag == 1;
  }
  if (has_returns) {
    ReturnsState& rs = st.returns.emplace();
    rs.options.gamma = r.f64("returns gamma");
    if (!(rs.options.gamma >= 0.0 && rs.options.gamma <= 1.0))
      bad("returns gamma: expected 0 <= gamma <= 1, got " + detail::num(rs.options.gamma));
    const std::uint32_t reset = r.u32("returns reset");
    if (reset > 2) bad("returns reset: expected 0 (after), 1 (before) or 2 (never), got " + std::to_string(reset));
    rs.options.reset = detail::reset_of_code(reset);
    rs.values.resize(nkeys);
    for (std::uint32_t k = 0; k < nkeys; ++k) {
      const KeySpec& spec = st.table.keys[k];
      const std::string part = "key '" + spec.name + "' returns";
      std::uint64_t expected = 0;
      if (!detail::returns_bytes(st.table, spec, st.options.stats_dtype, expected)) bad(part + ": too many elements");
      const std::uint64_t n = r.u64(part + " length");
      if (n != expected)
        bad(part + " length: expected " + std::to_string(expected) + " bytes (" +
            st.table.batch_shape.concat(spec.feature_shape).str() + " of " +
            to_string(stats_dtype_for(st.options.stats_dtype, spec.dtype)) + "), got " + std::to_string(n));
      rs.values[k] = r.values(static_cast<std::size_t>(n), dtype_size(stats_dtype_for(st.options.stats_dtype, spec.dtype)), part);
    }
  }
  if (r.left() != 0)
    bad("expected the checksum at offset " + std::to_string(r.pos()) + ", got " + std::to_string(r.left()) +
        " more bytes before it");
  return st;
}

}  // namespace

// ================================================================ public

std::vector<std::uint8_t> encode_state(const State& state) {
  // Element counts first (State::validate multiplies the dims without overflow checks).
  for (std::size_t k = 0; k < state.table.keys.size(); ++k) {
    const KeySpec& spec = state.table.keys[k];
    std::int64_t numel = 0;
    if (state.table.batch_shape.ndim() + spec.feature_shape.ndim() <= Shape::kMaxDims &&
        !checked_numel(detail::stats_shape(state.options.reduce_batch_dims, state.table, spec), numel))
      detail::fail(ErrorCode::invalid_argument,
                   "encode_state: " + detail::key_prefix(spec.name) + "statistics shape: too many elements");
  }
  try {
    state.validate();
  } catch (const Error& e) {
    detail::rethrow_prefixed(e, "encode_state: ");
  }
  // The skips rules of the format (State::validate may check less): never
  // write a file decode_state refuses.
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    std::int64_t numel = 0;
    checked_numel(state.keys[k].stats_shape, numel);
    const std::string problem = skips_problem(state.keys[k], state.options.reduce_batch_dims, numel,
                                              "key '" + state.table.keys[k].name + "'");
    if (!problem.empty()) detail::fail(ErrorCode::state_mismatch, "encode_state: " + problem);
  }
  // The oldest version that holds the options: files of default options stay
  // readable by a vecnorm that knows only version 2.
  const std::uint32_t version = detail::checkpoint_format_for(state);
  std::size_t size = (version >= 8   ? kHeaderV8
                       : version >= 5 ? kHeaderV5
                       : version == 4 ? kHeaderV4
                       : version == 3 ? kHeaderV3
                                      : kHeaderV2) +
                     8 * static_cast<std::size_t>(state.table.batch_shape.ndim()) + kChecksumBytes;
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    const KeySpec& spec = state.table.keys[k];
    if (spec.name.size() > kMaxNameBytes)
      detail::fail(ErrorCode::invalid_argument, "encode_state: key '" + spec.name.substr(0, 64) +
                                                    "...': name of " + std::to_string(spec.name.size()) +
                                                    " bytes: expected at most " + std::to_string(kMaxNameBytes));
    std::int64_t numel = 0;
    if (!checked_numel(state.keys[k].stats_shape, numel))
      detail::fail(ErrorCode::invalid_argument, "encode_state: " + detail::key_prefix(spec.name) +
                                                    "statistics shape " + state.keys[k].stats_shape.str() +
                                                    ": too many elements");
    size += 12 + spec.name.size() + 8 * static_cast<std::size_t>(spec.feature_shape.ndim()) + kMinStatsRecordV2 +
            state.keys[k].loc.size() + state.keys[k].var.size() + 8 * state.keys[k].skips.size();
    if (state.returns) size += 8 + state.returns->values[k].size();
  }
  if (state.returns) size += 12;  // gamma, reset
  if (version >= 7) size += 4;    // the returns flag
  const detail::OptionCodes codes = detail::option_codes(state.options, state.table);
  detail::Writer w(size);
  w.bytes(kMagic.data(), kMagic.size());
  w.u32(version);
  w.u32(0);  // flags
  const std::size_t size_at = w.size();
  w.u64(0);  // file size, patched below
  w.u32(codes.estimator);
  w.u32(codes.reduce_batch_dims);
  w.u32(codes.stats_dtype);
  w.u32(static_cast<std::uint32_t>(state.table.keys.size()));
  w.f64(codes.decay);
  w.f64(codes.eps);
  w.u32(codes.nonfinite);
  if (version >= 3) {
    w.u32(codes.scale);
    w.u32(codes.unbiased);
    w.f64(codes.clip);
    w.f64(codes.prior_count);
  }
  if (version >= 4) w.i64(codes.until);
  if (version >= 5) w.u32(codes.center);
  if (version >= 8) {
    w.f64(codes.max_scale);
    w.u32(codes.until_strict);
  }
  detail::write_shape(w, state.table.batch_shape);
  for (const KeySpec& spec : state.table.keys) detail::write_key_spec(w, spec);
  auto elem = [&](std::size_t k) { return dtype_size(stats_dtype_for(state.options.stats_dtype, state.table.keys[k].dtype)); };
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    const KeyState& ks = state.keys[k];
    w.i64(ks.count);
    w.i64(ks.skipped);
    w.u64(ks.loc.size());
    w.values(ks.loc, elem(k));
    w.u64(ks.var.size());
    w.values(ks.var, elem(k));
    w.u64(ks.skips.size());
    for (std::int64_t v : ks.skips) w.i64(v);
  }
  if (version >= 7) w.u32(state.returns ? 1 : 0);
  if (state.returns) {
    w.f64(state.returns->options.gamma);
    w.u32(detail::reset_code(state.returns->options.reset));
    for (std::size_t k = 0; k < state.returns->values.size(); ++k) {
      w.u64(state.returns->values[k].size());
      w.values(state.returns->values[k], elem(k));
    }
  }
  w.patch_u64(size_at, w.size() + kChecksumBytes);
  w.u32(crc32c(w.out()));
  return std::move(w.out());
}

State decode_state(std::span<const std::uint8_t> d) {
  const std::size_t n = d.size();
  // Magic: a prefix of it is a truncated file, anything else is not a checkpoint.
  const std::size_t m = std::min(n, kMagic.size());
  if (!std::equal(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(m), kMagic.begin()))
    bad("bad magic: expected '" + escaped(kMagic) + "' (a vecnorm checkpoint), got '" +
        escaped(d.first(m)) + "'");
  if (n < 12)
    bad("truncated: expected at least 12 bytes for the magic and format version, got " + std::to_string(n));
  const std::uint32_t version = detail::load_u32(d.data() + 8);
  if (version < kCheckpointOldestVersion || version > kCheckpointFormatVersion)
    bad("unsupported format version: this reader reads versions " + std::to_string(kCheckpointOldestVersion) +
        " to " + std::to_string(kCheckpointFormatVersion) + ", the file has version " + std::to_string(version) +
        (version > kCheckpointFormatVersion ? " (written by a newer vecnorm?)" : ""));
  if (n < kFixedHeader)
    bad("truncated: expected at least " + std::to_string(kFixedHeader) + " bytes for the fixed header, got " +
        std::to_string(n));
  const std::uint64_t recorded = detail::load_u64(d.data() + 16);
  if (recorded != n)
    bad((recorded > n ? "truncated: expected " : "size mismatch: expected ") + std::to_string(recorded) +
        " bytes (the size recorded in the header), got " + std::to_string(n));
  const std::size_t header = version == 1   ? kHeaderV1
                             : version == 2 ? kHeaderV2
                             : version == 3 ? kHeaderV3
                             : version == 4 ? kHeaderV4
                             : version <= 7 ? kHeaderV5
                                            : kHeaderV8;
  if (n < header + kChecksumBytes)
    bad("truncated: expected at least " + std::to_string(header + kChecksumBytes) + " bytes for a version " +
        std::to_string(version) + " header and checksum, got " + std::to_string(n));
  const std::uint32_t stored = detail::load_u32(d.data() + n - kChecksumBytes);
  const std::uint32_t computed = crc32c(d.first(n - kChecksumBytes));
  if (stored != computed)
    bad("checksum mismatch: expected CRC-32C " + hex32(stored) + " (stored), got " + hex32(computed) +
        " (computed over bytes 0.." + std::to_string(n - kChecksumBytes) + ")");
  const std::uint32_t flags = detail::load_u32(d.data() + 12);
  if (flags != 0) bad("flags: expected 0 in format version " + std::to_string(version) + ", got " + hex32(flags));
  try {
    State st = decode_records(d, version);
    st.validate();
    return st;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::state_mismatch && detail::bare(e).rfind(kPrefix, 0) == 0) throw;
    bad("invalid state: " + detail::bare(e));
  }
}

}  // namespace vecnorm
