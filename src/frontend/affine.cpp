// src/frontend/affine.cpp -- AffineNormalizer: fixed maps per key (what a
// frozen normalize applies), run through the call pipeline with a store that
// binds each key to its maps.
#include <vector>

#include "../backends.hpp"
#include "checks.hpp"
#include "pipeline.hpp"
#include "readout.hpp"
#include "vecnorm/buffer.hpp"
#include "vecnorm/normalizer.hpp"

namespace vecnorm {

struct AffineNormalizer::Impl {
  KeyTable table;
  detail::CallConfig config;
  std::vector<Shape> stats_shape;
  std::vector<detail::KeyMaps> apply_host;   // mu, 1/scale (host copies)
  std::vector<detail::KeyMaps> invert_host;  // mu, scale (host copies, for read-outs)
  std::vector<Buffer> apply_mu, apply_p, invert_mu, invert_p;  // the same, in backend memory

  /// Binds each key to the maps of one direction.
  class MapStore final : public detail::Store {
   public:
    MapStore(const Impl& im, bool apply) : im_(im), apply_(apply) {}
    void bind(const detail::CallConfig&, const KeyTable&, std::size_t, detail::Segment& s) override {
      const std::size_t k = static_cast<std::size_t>(s.key);
      s.mu = (apply_ ? im_.apply_mu : im_.invert_mu)[k].data();
      s.p = (apply_ ? im_.apply_p : im_.invert_p)[k].data();
      s.map_dtype = im_.apply_host[k].dtype;
    }

   private:
    const Impl& im_;
    bool apply_;
  };

  void run(std::span<const KeyData> batch, Stream stream, bool apply) const {
    detail::CallConfig cfg = config;
    cfg.work = apply ? detail::Work::apply_map : detail::Work::invert_map;
    MapStore store(*this, apply);
    detail::run_call(cfg, table, batch, store, detail::thread_buffers(), detail::scratch_of(nullptr, {}, stream), stream);
  }
};

namespace detail {

/// Builds AffineNormalizers (their constructor is private).
struct AffineFactory {
  static AffineNormalizer make(const Options& options, Backend backend, const KeyTable& table,
                               std::span<const Shape> shapes, std::span<const HostStats> stats) {
    auto a = std::make_unique<AffineNormalizer::Impl>();
    a->table = table;
    a->config = make_config(options, backend, CountLayout::per_key);
    a->stats_shape.assign(shapes.begin(), shapes.end());
    const std::size_t nk = table.keys.size();
    auto upload = [&](const std::vector<double>& host, std::size_t bytes) {
      Buffer b(backend, bytes);
      b.copy_from_host(host.data(), bytes);
      return b;
    };
    for (std::size_t k = 0; k < nk; ++k) {
      a->apply_host.push_back(key_maps(options, table.keys[k], stats[k], core::MapKind::normalize));
      a->invert_host.push_back(key_maps(options, table.keys[k], stats[k], core::MapKind::denormalize));
      const std::size_t bytes = a->apply_host[k].bytes();
      a->apply_mu.push_back(upload(a->apply_host[k].mu, bytes));
      a->apply_p.push_back(upload(a->apply_host[k].p, bytes));
      a->invert_mu.push_back(upload(a->invert_host[k].mu, bytes));
      a->invert_p.push_back(upload(a->invert_host[k].p, bytes));
    }
    return AffineNormalizer(std::move(a));
  }
};

AffineNormalizer make_affine(const Options& options, Backend backend, const KeyTable& table,
                             std::span<const Shape> stats_shapes, std::span<const HostStats> stats) {
  return AffineFactory::make(options, backend, table, stats_shapes, stats);
}

}  // namespace detail

AffineNormalizer::AffineNormalizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AffineNormalizer::~AffineNormalizer() = default;
AffineNormalizer::AffineNormalizer(AffineNormalizer&&) noexcept = default;
AffineNormalizer& AffineNormalizer::operator=(AffineNormalizer&&) noexcept = default;

void AffineNormalizer::apply(std::span<const KeyData> batch, Stream stream) const { impl_->run(batch, stream, true); }

void AffineNormalizer::invert(std::span<const KeyData> batch, Stream stream) const {
  impl_->run(batch, stream, false);
}

std::vector<double> AffineNormalizer::loc(std::string_view key) const {
  const std::size_t k = static_cast<std::size_t>(detail::find_key(impl_->table, key));
  return impl_->invert_host[k].widened(false);
}

std::vector<double> AffineNormalizer::scale(std::string_view key) const {
  const std::size_t k = static_cast<std::size_t>(detail::find_key(impl_->table, key));
  return impl_->invert_host[k].widened(true);
}

Shape AffineNormalizer::stats_shape(std::string_view key) const {
  return impl_->stats_shape[static_cast<std::size_t>(detail::find_key(impl_->table, key))];
}

const KeyTable& AffineNormalizer::key_table() const noexcept { return impl_->table; }

}  // namespace vecnorm
