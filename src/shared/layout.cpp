// src/shared/layout.cpp -- the segment's header, key table and layout (layout.hpp).
#include "layout.hpp"

#include <cstdio>
#include <cstring>
#include <limits>

#include "../errors.hpp"
#include "../state/binary_io.hpp"
#include "vecnorm/shared.hpp"

namespace vecnorm::detail::shm {

namespace {

constexpr std::size_t kAlign = 64;

std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::string hex64(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%016llX", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

// ---------------------------------------------------------------- messages

std::string seg_prefix(const std::string& name) { return "shared segment '" + name + "': "; }

void fail_sys(const std::string& name, const std::string& what, int err) {
  fail(ErrorCode::invalid_argument, seg_prefix(name) + what + ": " + std::strerror(err));
}

// ---------------------------------------------------------------- the key table in the segment

std::vector<std::uint8_t> encode_table(const KeyTable& t) {
  Writer w;
  write_shape(w, t.batch_shape);
  w.u32(static_cast<std::uint32_t>(t.keys.size()));
  for (const KeySpec& k : t.keys) write_key_spec(w, k);
  return std::move(w.out());
}

KeyTable decode_table(std::span<const std::uint8_t> bytes, const std::string& name) {
  Reader r(bytes, 0, bytes.size(),
           {ErrorCode::state_mismatch, seg_prefix(name) + "corrupt key table in the segment: ", ""});
  KeyTable t;
  t.batch_shape = read_shape(r, "batch shape");
  const std::uint32_t nk = r.u32("number of keys");
  // Bounded by what is left before anything is allocated for the keys.
  const std::size_t max_keys = r.left() / kMinKeySpecBytes;
  if (nk > max_keys)
    r.fail("number of keys: expected at most " + std::to_string(max_keys) + " (what " + std::to_string(r.left()) +
           " bytes can hold), got " + std::to_string(nk));
  t.keys.reserve(nk);
  // Key names are as long as the caller's were (no limit but the table's bytes).
  for (std::uint32_t k = 0; k < nk; ++k)
    t.keys.push_back(read_key_spec(r, k, std::numeric_limits<std::uint32_t>::max()));
  if (r.left() != 0) r.fail(std::to_string(r.left()) + " bytes after the last key");
  return t;
}

// ---------------------------------------------------------------- layout

Layout layout_of(const Options& o, const KeyTable& t, std::size_t table_bytes) {
  Layout L;
  const std::size_t nk = t.keys.size();
  L.table_offset = round_up(sizeof(Header));
  L.table_bytes = table_bytes;
  L.views_offset = round_up(L.table_offset + table_bytes);
  L.counts_offset = round_up(L.views_offset + 2 * nk);
  L.skipped_offset = round_up(L.counts_offset + 2 * nk * sizeof(std::int64_t));
  L.dirty_offset = round_up(L.skipped_offset + 2 * nk * sizeof(std::int64_t));
  L.stats_offset = round_up(L.dirty_offset + 2 * nk);
  L.has_skips = !o.reduce_batch_dims;  // as VecNorm: whatever nonfinite (a state with skips may be imported)
  std::size_t at = L.stats_offset;
  for (int s = 0; s < 2; ++s) {
    L.loc[s].resize(nk);
    L.var[s].resize(nk);
    L.skips[s].assign(nk, 0);
  }
  for (std::size_t k = 0; k < nk; ++k) {
    L.stats_shape.push_back(stats_shape(o.reduce_batch_dims, t, t.keys[k]));
    const std::size_t b =
        static_cast<std::size_t>(L.stats_shape.back().numel()) * dtype_size(stats_dtype_for(o.stats_dtype, t.keys[k].dtype));
    L.stats_bytes.push_back(b);
    for (int s = 0; s < 2; ++s) {
      L.loc[s][k] = at;
      at += round_up(b);
      L.var[s][k] = at;
      at += round_up(b);
    }
  }
  L.skips_offset = at;
  L.skips_bytes.assign(nk, 0);
  if (L.has_skips) {
    for (std::size_t k = 0; k < nk; ++k) {
      L.skips_bytes[k] = static_cast<std::size_t>(L.stats_shape[k].numel()) * sizeof(std::int64_t);
      for (int s = 0; s < 2; ++s) {
        L.skips[s][k] = at;
        at += round_up(L.skips_bytes[k]);
      }
    }
  }
  L.total = at;
  return L;
}

// ---------------------------------------------------------------- the header

void write_header(Header& h, const Options& o, const KeyTable& table, const Layout& L) {
  const OptionCodes c = option_codes(o, table);
  const std::size_t num_keys = table.keys.size();
  h.layout_version = kSharedLayoutVersion;
  h.header_bytes = sizeof(Header);
  h.total_bytes = L.total;
  h.mutex_bytes = sizeof(pthread_mutex_t);
  h.num_keys = static_cast<std::uint32_t>(num_keys);
  h.estimator = c.estimator;
  h.reduce_batch_dims = c.reduce_batch_dims;
  h.stats_dtype = c.stats_dtype;
  h.nonfinite = c.nonfinite;
  h.decay = c.decay;
  h.eps = c.eps;
  h.scale = c.scale;
  h.unbiased = c.unbiased;
  h.clip = c.clip;
  h.prior_count = c.prior_count;
  h.until = c.until;
  h.center = c.center;
  h.until_strict = c.until_strict;
  h.max_scale = c.max_scale;
  h.table_offset = L.table_offset;
  h.table_bytes = L.table_bytes;
  h.views_offset = L.views_offset;
  h.counts_offset = L.counts_offset;
  h.stats_offset = L.stats_offset;
  h.skipped_offset = L.skipped_offset;
  h.dirty_offset = L.dirty_offset;
  h.skips_offset = L.skips_offset;
}

OptionCodes option_codes_of(const Header& h) {
  return {h.estimator, h.reduce_batch_dims, h.stats_dtype, h.nonfinite, h.decay,
          h.eps,       h.scale,             h.unbiased,    h.clip,      h.prior_count, h.until, h.center,
          h.max_scale, h.until_strict};
}

void check_identity(const Header& h, std::uint64_t size, const Roles& roles) {
  if (h.layout_version != kSharedLayoutVersion)
    fail_mismatch(roles, "layout version", std::to_string(kSharedLayoutVersion) + " (this build)",
                  std::to_string(h.layout_version));
  if (h.header_bytes != sizeof(Header))
    fail_mismatch(roles, "header size (another build?)", std::to_string(sizeof(Header)),
                  std::to_string(h.header_bytes));
  if (h.mutex_bytes != sizeof(pthread_mutex_t))
    fail_mismatch(roles, "mutex size (another build or C library?)", std::to_string(sizeof(pthread_mutex_t)),
                  std::to_string(h.mutex_bytes));
  if (h.total_bytes != size)
    fail_mismatch(roles, "size of the segment (truncated?)", std::to_string(h.total_bytes) + " bytes (in its header)",
                  std::to_string(size) + " bytes");
}

KeyTable read_table(const Header& h, const void* base, std::uint64_t size, const std::string& name,
                    const Roles& roles) {
  if (h.table_offset > size || h.table_bytes > size - h.table_offset)
    fail_mismatch(roles, "key table bounds", "inside the segment's " + std::to_string(size) + " bytes",
                  "offset " + std::to_string(h.table_offset) + " + " + std::to_string(h.table_bytes) + " bytes");
  return decode_table({static_cast<const std::uint8_t*>(base) + h.table_offset, static_cast<std::size_t>(h.table_bytes)},
                      name);
}

void check_layout(const Header& h, const Layout& L, std::size_t num_keys, const Roles& roles) {
  if (h.num_keys != num_keys || L.table_offset != h.table_offset || L.views_offset != h.views_offset ||
      L.counts_offset != h.counts_offset || L.skipped_offset != h.skipped_offset ||
      L.dirty_offset != h.dirty_offset || L.stats_offset != h.stats_offset || L.skips_offset != h.skips_offset ||
      L.total != h.total_bytes)
    fail_mismatch(roles, "layout",
                  "views/counts/skipped/dirty/stats/skips at " + std::to_string(L.views_offset) + "/" +
                      std::to_string(L.counts_offset) + "/" + std::to_string(L.skipped_offset) + "/" +
                      std::to_string(L.dirty_offset) + "/" + std::to_string(L.stats_offset) + "/" +
                      std::to_string(L.skips_offset) + ", " + std::to_string(L.total) + " bytes",
                  std::to_string(h.views_offset) + "/" + std::to_string(h.counts_offset) + "/" +
                      std::to_string(h.skipped_offset) + "/" + std::to_string(h.dirty_offset) + "/" +
                      std::to_string(h.stats_offset) + "/" + std::to_string(h.skips_offset) + ", " +
                      std::to_string(h.total_bytes) + " bytes");
}

void fail_bad_magic(const std::string& name, std::uint64_t magic) {
  char got[9] = {};
  std::memcpy(got, &magic, 8);
  for (char& c : got)
    if (c != 0 && (c < 0x20 || c > 0x7E)) c = '?';
  fail(ErrorCode::state_mismatch, seg_prefix(name) + "attach: bad magic: expected 'VNRMSHRD' (" + hex64(kMagic) +
                                      "), got '" + got + "' (" + hex64(magic) + "): not a vecnorm shared segment");
}

}  // namespace vecnorm::detail::shm
