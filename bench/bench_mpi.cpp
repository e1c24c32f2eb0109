// bench/bench_mpi.cpp -- the cost of pooled statistics merged across MPI ranks
// (vecnorm/mpi.hpp): one training step of a pooled VecNorm over the keys
// "obs" (F,) float32 and "reward" () float32, each rank stepping its own
// batch of B rows, alone (no collective) and with
// Options::collective = vecnorm::mpi_collective(MPI_COMM_WORLD).
//
//   mpirun -np N vecnorm_bench_mpi [--rounds R] [--steps S] [--cases 1x17,4096x48]
//
// A plain MPI program (no Google Benchmark): per case, 50 warm-up steps of each
// normalizer, then R rounds (default 7); each round times S steps alone and S
// steps with the merge (the order alternating from round to round), each block
// after an MPI_Barrier, its time the maximum over the ranks (MPI_Allreduce
// MAX). Reported: the median over the rounds of microseconds per step, the
// difference (what the merge costs) and the bytes each rank sends per step
// (8 * (3 + sum over keys of (2F + 1)), F the key's feature elements: 1 for
// the scalar reward; checked against what all_gather is handed). A second
// table gives the mean time per step inside all_gather, of the least and the
// most waiting rank. Without --steps, S is 200, or fewer where a block would
// take longer than about 0.2 s (at least 10).
//
// On the side it checks that every rank ends with the same loc, var and count
// bytes (export_state) in the merged normalizer, and the expected count; it
// prints FAIL and exits 1 if not.
//
// Options: Release build, backend cpu, cpu_threads = 1 (one thread per rank:
// no oversubscription by vecnorm's pool), decay 0.9999, reduce_batch_dims.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <mpi.h>

#include <vecnorm/collective.hpp>
#include <vecnorm/core/exchange.hpp>
#include <vecnorm/mpi.hpp>
#include <vecnorm/vecnorm.hpp>

namespace {

struct Case {
  std::int64_t rows;  // per rank
  std::int64_t feat;
};

struct Args {
  int rounds = 7;
  int steps = 0;  // 0: automatic (200, fewer for big cases)
  std::vector<Case> cases{{1, 17}, {64, 48}, {4096, 48}, {4096, 235}};
};

[[noreturn]] void usage(int rank, const char* what) {
  if (rank == 0)
    std::fprintf(stderr, "vecnorm_bench_mpi: %s\nusage: vecnorm_bench_mpi [--rounds N] [--steps N] [--cases BxF,BxF,...]\n",
                 what);
  MPI_Finalize();
  std::exit(2);
}

int parse_positive(int rank, const char* s) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || v <= 0 || v > 1000000) usage(rank, "expected a positive integer");
  return static_cast<int>(v);
}

std::vector<Case> parse_cases(int rank, const std::string& s) {
  std::vector<Case> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    const std::size_t comma = std::min(s.find(',', pos), s.size());
    const std::string item = s.substr(pos, comma - pos);
    long long b = 0, f = 0;
    char tail = 0;
    if (std::sscanf(item.c_str(), "%lldx%lld%c", &b, &f, &tail) != 2 || b <= 0 || f <= 0)
      usage(rank, ("bad case '" + item + "' (expected BxF, e.g. 4096x48)").c_str());
    out.push_back({b, f});
    pos = comma + 1;
  }
  return out;
}

Args parse(int rank, int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) usage(rank, ("missing value after " + arg).c_str());
    if (arg == "--rounds") {
      a.rounds = parse_positive(rank, argv[++i]);
    } else if (arg == "--steps") {
      a.steps = parse_positive(rank, argv[++i]);
    } else if (arg == "--cases") {
      a.cases = parse_cases(rank, argv[++i]);
    } else {
      usage(rank, ("unknown argument " + arg).c_str());
    }
  }
  return a;
}

/// Observation features with different means and scales; each rank its own.
struct Data {
  std::vector<float> obs, rew, yobs, yrew;
  Data(std::int64_t b, std::int64_t f, int rank) {
    std::mt19937 gen(1234u + 7919u * static_cast<unsigned>(rank));
    std::normal_distribution<float> nd(0.f, 1.f);
    obs.resize(static_cast<std::size_t>(b * f));
    rew.resize(static_cast<std::size_t>(b));
    for (std::int64_t i = 0; i < b * f; ++i) {
      const std::int64_t j = i % f;
      obs[static_cast<std::size_t>(i)] =
          static_cast<float>(j % 7) - 3.f + static_cast<float>(rank) * 0.25f + (1.f + static_cast<float>(j % 5)) * nd(gen);
    }
    for (auto& r : rew) r = 0.1f * nd(gen);
    yobs.resize(obs.size());
    yrew.resize(rew.size());
  }
};

vecnorm::KeyTable table_for(const Case& c) {
  vecnorm::KeyTable t;
  t.batch_shape = vecnorm::Shape{c.rows};
  t.keys.push_back({"obs", vecnorm::Shape{c.feat}, vecnorm::DType::float32});
  t.keys.push_back({"reward", vecnorm::Shape{}, vecnorm::DType::float32});
  return t;
}

vecnorm::Options options_for(std::shared_ptr<vecnorm::Collective> collective) {
  vecnorm::Options o;
  o.reduce_batch_dims = true;
  o.decay = 0.9999;
  o.backend = vecnorm::Backend::cpu;
  o.cpu_threads = 1;
  o.collective = std::move(collective);
  return o;
}

void run_steps(vecnorm::VecNorm& vn, Data& d, const Case& c, int steps) {
  const vecnorm::Shape os{c.rows, c.feat};
  const vecnorm::Shape rs{c.rows};
  for (int i = 0; i < steps; ++i) {
    vn.step({{"obs", vecnorm::view(static_cast<const float*>(d.obs.data()), os), vecnorm::view(d.yobs.data(), os)},
             {"reward", vecnorm::view(static_cast<const float*>(d.rew.data()), rs), vecnorm::view(d.yrew.data(), rs)}});
  }
}

/// Seconds of `steps` steps, the maximum over the ranks (all ranks start together).
double timed_block(vecnorm::VecNorm& vn, Data& d, const Case& c, int steps) {
  MPI_Barrier(MPI_COMM_WORLD);
  const auto t0 = std::chrono::steady_clock::now();
  run_steps(vn, d, c, steps);
  const double mine = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double worst = 0.0;
  MPI_Allreduce(&mine, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// True when every rank holds the same bytes as rank 0.
bool same_on_all_ranks(const std::vector<std::uint8_t>& mine, int rank) {
  std::uint64_t size = mine.size();
  std::uint64_t size0 = size;
  MPI_Bcast(&size0, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  std::vector<std::uint8_t> ref(static_cast<std::size_t>(size0));
  if (rank == 0) ref = mine;
  MPI_Bcast(ref.data(), static_cast<int>(size0), MPI_BYTE, 0, MPI_COMM_WORLD);
  int ok = (size == size0 && ref == mine) ? 1 : 0;
  int all = 0;
  MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

/// Forwards to the MPI adapter and records the bytes of the last all_gather
/// (what this rank sends per step), to check the reported message size, and
/// the time spent in it (a diagnostic: the rank that waits least shows the
/// transport itself, the others add the wait for the slowest rank).
class Recording final : public vecnorm::Collective {
 public:
  explicit Recording(std::shared_ptr<vecnorm::Collective> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void all_gather(const void* send, void* recv, std::size_t bytes, vecnorm::Device device, vecnorm::Stream stream) override {
    last_bytes = bytes;
    const auto t0 = std::chrono::steady_clock::now();
    inner_->all_gather(send, recv, bytes, device, stream);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++calls;
  }
  std::string name() const override { return inner_->name(); }
  std::size_t last_bytes = 0;
  double seconds = 0.0;  // inside all_gather (posting, waiting, copying)
  long calls = 0;

 private:
  std::shared_ptr<vecnorm::Collective> inner_;
};

struct Row {
  Case c;
  int steps;
  std::int64_t bytes;
  double alone_us, merged_us;
  double gather_min_us, gather_max_us;  // mean time in all_gather per step: least / most waiting rank
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const Args args = parse(rank, argc, argv);

  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int vlen = 0;
  MPI_Get_library_version(version, &vlen);
  std::string vline(version, static_cast<std::size_t>(std::max(vlen, 0)));
  vline = vline.substr(0, vline.find('\n'));
  while (!vline.empty() && (vline.back() == '\0' || vline.back() == ' ' || vline.back() == ',')) vline.pop_back();

  constexpr int kWarmup = 50;
  constexpr double kBlockTarget = 0.2;  // seconds per timed block, automatic steps
  bool failed = false;
  std::vector<Row> rows;

  try {
    for (const Case& c : args.cases) {
      Data data(c.rows, c.feat, rank);
      const vecnorm::KeyTable table = table_for(c);
      vecnorm::VecNorm alone(options_for(nullptr), table);
      auto recording = std::make_shared<Recording>(vecnorm::mpi_collective(MPI_COMM_WORLD));
      vecnorm::VecNorm merged(options_for(recording), table);

      // Warm-up; its time (max over ranks) sizes the blocks when --steps is not given.
      run_steps(alone, data, c, kWarmup);
      const double warm = timed_block(merged, data, c, kWarmup) / kWarmup;
      int steps = args.steps;
      if (steps == 0) {
        const double fit = warm > 0.0 ? kBlockTarget / warm : 200.0;
        steps = static_cast<int>(std::clamp(fit, 10.0, 200.0));
      }
      MPI_Bcast(&steps, 1, MPI_INT, 0, MPI_COMM_WORLD);  // every rank must step the same count

      recording->seconds = 0.0;
      recording->calls = 0;
      std::vector<double> t_alone, t_merged;
      for (int r = 0; r < args.rounds; ++r) {
        if (r % 2 == 0) {
          t_alone.push_back(timed_block(alone, data, c, steps));
          t_merged.push_back(timed_block(merged, data, c, steps));
        } else {
          t_merged.push_back(timed_block(merged, data, c, steps));
          t_alone.push_back(timed_block(alone, data, c, steps));
        }
      }

      // The side check: the merged statistics are the same bits on every rank.
      const vecnorm::State st = merged.export_state();
      std::vector<std::uint8_t> bytes;
      for (const auto& k : st.keys) {
        bytes.insert(bytes.end(), k.loc.begin(), k.loc.end());
        bytes.insert(bytes.end(), k.var.begin(), k.var.end());
        const auto* cp = reinterpret_cast<const std::uint8_t*>(&k.count);
        bytes.insert(bytes.end(), cp, cp + sizeof k.count);
      }
      const std::int64_t expected_count =
          static_cast<std::int64_t>(ranks) * c.rows * (kWarmup + static_cast<std::int64_t>(args.rounds) * steps);
      const bool counts_ok = merged.count("obs") == expected_count && merged.count("reward") == expected_count;
      if (!same_on_all_ranks(bytes, rank) || !counts_ok) {
        if (rank == 0 || !counts_ok)
          std::printf("FAIL: case %lldx%lld: rank %d: merged statistics differ across ranks or count %lld != %lld\n",
                      static_cast<long long>(c.rows), static_cast<long long>(c.feat), rank,
                      static_cast<long long>(merged.count("obs")), static_cast<long long>(expected_count));
        failed = true;
      }

      const std::int64_t msg_doubles = vecnorm::core::kExchangeHeader + vecnorm::core::exchange_key_doubles(c.feat) +
                                       vecnorm::core::exchange_key_doubles(1);  // obs (F,), reward () = 1 element
      if (recording->last_bytes != static_cast<std::size_t>(8 * msg_doubles)) {
        std::printf("FAIL: case %lldx%lld: rank %d: all_gather of %zu bytes, expected %lld\n",
                    static_cast<long long>(c.rows), static_cast<long long>(c.feat), rank, recording->last_bytes,
                    static_cast<long long>(8 * msg_doubles));
        failed = true;
      }
      const double gather_us = recording->calls > 0 ? 1e6 * recording->seconds / static_cast<double>(recording->calls) : 0.0;
      double gather_min = 0.0, gather_max = 0.0;
      MPI_Allreduce(&gather_us, &gather_min, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
      MPI_Allreduce(&gather_us, &gather_max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      rows.push_back({c, steps, 8 * msg_doubles, 1e6 * median(t_alone) / steps, 1e6 * median(t_merged) / steps,
                      gather_min, gather_max});
      // `merged` (holding the adapter) is destroyed here, before MPI_Finalize.
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

  if (rank == 0) {
    std::printf("%s\n", vline.c_str());
    std::printf("| case | ranks | bytes/rank/step | step alone (us) | step with MPI merge (us) | merge cost (us) |\n");
    std::printf("|---|---:|---:|---:|---:|---:|\n");
    for (const Row& r : rows) {
      std::printf("| %lldx%lld | %d | %lld | %.2f | %.2f | %.2f |\n", static_cast<long long>(r.c.rows),
                  static_cast<long long>(r.c.feat), ranks, static_cast<long long>(r.bytes), r.alone_us, r.merged_us,
                  r.merged_us - r.alone_us);
    }
    std::printf("\nTime inside all_gather per step (us, mean over the timed steps): the least waiting rank ~ the transport, the most waiting one adds the wait for the slowest rank.\n");
    std::printf("| case | ranks | all_gather, least waiting rank (us) | all_gather, most waiting rank (us) |\n");
    std::printf("|---|---:|---:|---:|\n");
    for (const Row& r : rows) {
      std::printf("| %lldx%lld | %d | %.2f | %.2f |\n", static_cast<long long>(r.c.rows), static_cast<long long>(r.c.feat),
                  ranks, r.gather_min_us, r.gather_max_us);
    }
    std::printf("(%d rounds; steps per round:", args.rounds);
    for (const Row& r : rows) std::printf(" %lldx%lld=%d", static_cast<long long>(r.c.rows), static_cast<long long>(r.c.feat), r.steps);
    std::printf("; medians over rounds of the slowest rank's time; rows per rank x F; cpu_threads=1)\n");
    std::fflush(stdout);
  }
  int any = failed ? 1 : 0, all = 0;
  MPI_Allreduce(&any, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return all ? 1 : 0;
}
