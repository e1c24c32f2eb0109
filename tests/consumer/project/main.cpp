// A consumer of the vecnorm package: one header, one target.
#include <vecnorm/vecnorm.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  // Pooled, stable, decay 1: after one batch loc is the batch mean and scale its
  // population standard deviation, so y is known in closed form.
  vecnorm::Options options;
  options.estimator = vecnorm::Estimator::stable;
  options.decay = 1.0;
  options.reduce_batch_dims = true;
  vecnorm::KeyTable table;
  table.batch_shape = vecnorm::Shape{4};
  table.keys.push_back({"reward", vecnorm::Shape{}, vecnorm::DType::float32});
  vecnorm::VecNorm vn(options, table);

  std::vector<float> x = {1.0f, 2.0f, 3.0f, 4.0f};
  std::vector<float> y(4, 0.0f);
  vn.step({{"reward", vecnorm::view(x.data(), vecnorm::Shape{4}), vecnorm::view(y.data(), vecnorm::Shape{4})}});

  const double scale = std::sqrt(1.25);  // population std of 1..4
  int bad = 0;
  for (int i = 0; i < 4; ++i) {
    const double expected = (x[i] - 2.5) / scale;
    if (std::fabs(y[i] - expected) > 1e-6) {
      std::fprintf(stderr, "y[%d]: expected %.9g, got %.9g\n", i, expected, static_cast<double>(y[i]));
      ++bad;
    }
  }
  if (vn.count("reward") != 4) {
    std::fprintf(stderr, "count: expected 4, got %lld\n", static_cast<long long>(vn.count("reward")));
    ++bad;
  }
  std::printf("vecnorm %s consumer: %s\n", vecnorm::version(), bad == 0 ? "ok" : "FAILED");
  return bad == 0 ? 0 : 1;
}
