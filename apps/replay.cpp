// apps/replay.cpp -- `vecnorm replay`: recorded .npy data stepped through vecnorm.
//
// Step t of T feeds every key whose first step is <= t its row t - FIRST_STEP,
// all present keys in one call (stateful VecNorm::step, or stateless::step
// with per-key statistics arrays). Inputs are read and outputs written in
// slices of rows, so memory stays at a few slices per key whatever T is.
// Outputs go to temporary files that are renamed only after the whole replay
// (and --save-state) succeeded; on any error or interrupt they are removed.
//
// The command line is replay_args.cpp's.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <vecnorm/vecnorm.hpp>

#include "cli.hpp"
#include "commands.hpp"
#include "npy.hpp"
#include "replay_args.hpp"

namespace vncli {
namespace {

using namespace replay;

/// One key being replayed.
struct Input {
  Spec spec;
  std::string label;  ///< "key 'obs' (obs.npy)" for messages
  std::optional<NpyReader> reader;
  vecnorm::DType in_dtype = vecnorm::DType::float32, out_dtype = vecnorm::DType::float32;
  std::vector<std::int64_t> file_shape;
  vecnorm::Shape batch, feature, step_shape;
  std::int64_t rows = 0;
  std::size_t in_row = 0, out_row = 0;

  // Slices of rows on the host.
  std::int64_t chunk_rows = 1;
  HostBytes in_chunk, out_chunk;
  std::int64_t in_begin = 0, in_count = 0;
  std::int64_t out_pending = 0;
  std::unique_ptr<NpyWriter> writer;

  // Device staging (Backend::cuda) and stateless statistics (on the backend).
  vecnorm::Buffer dx, dy;
  vecnorm::Buffer loc, var, count;

  bool present(std::int64_t t) const { return t >= spec.first && t < spec.first + rows; }
};

std::string out_name(const std::string& key) {
  std::string n = key;
  std::replace(n.begin(), n.end(), '/', '.');
  return n + ".npy";
}

/// Creates --out DIR when missing and removes it again on failure when it is
/// still empty (so that a failed run leaves nothing behind).
class OutDir {
 public:
  explicit OutDir(std::string dir) : dir_(std::move(dir)) {
    struct stat st {};
    if (::stat(dir_.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) throw InputError("--out " + dir_ + ": exists and is not a directory");
      return;
    }
    if (errno != ENOENT) throw InputError("--out " + dir_ + ": " + std::strerror(errno));
    if (::mkdir(dir_.c_str(), 0777) != 0) throw InputError("--out " + dir_ + ": cannot create: " + std::strerror(errno));
    created_ = true;
  }
  ~OutDir() {
    if (created_ && !keep_) ::rmdir(dir_.c_str());
  }
  OutDir(const OutDir&) = delete;
  OutDir& operator=(const OutDir&) = delete;
  void keep() { keep_ = true; }
  const std::string& path() const { return dir_; }

 private:
  std::string dir_;
  bool created_ = false, keep_ = false;
};

std::string join(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

/// Opens every input and checks shapes against each other; returns T.
std::int64_t open_inputs(const Args& a, std::vector<std::unique_ptr<Input>>& inputs) {
  const std::size_t nb = static_cast<std::size_t>(a.batch_dims);
  for (const Spec& s : a.inputs) {
    auto in = std::make_unique<Input>();
    in->spec = s;
    in->label = "key '" + s.key + "' (" + s.path;
    if (s.first) {
      in->label += '@';
      in->label += std::to_string(s.first);
    }
    in->label += ")";
    in->reader.emplace(s.path);
    const NpyHeader& h = in->reader->header();
    in->file_shape = h.shape;
    if (h.shape.size() < 1 + nb)
      throw InputError(in->label + ": shape " + dims_str(h.shape) + ": expected at least " + std::to_string(1 + nb) +
                       " dims (time + --batch-dims " + std::to_string(nb) + "), got " + std::to_string(h.shape.size()));
    if (h.shape.size() - 1 > static_cast<std::size_t>(vecnorm::Shape::kMaxDims))
      throw InputError(in->label + ": shape " + dims_str(h.shape) + ": expected at most " +
                       std::to_string(vecnorm::Shape::kMaxDims) + " dims after the time dim, got " +
                       std::to_string(h.shape.size() - 1));
    in->rows = h.shape[0];
    in->batch = shape_of(h.shape, 1, 1 + nb);
    in->feature = shape_of(h.shape, 1 + nb, h.shape.size());
    in->step_shape = in->batch.concat(in->feature);
    in->in_dtype = h.dtype;
    in->out_dtype = vecnorm::output_dtype(h.dtype);
    in->in_row = static_cast<std::size_t>(in->step_shape.numel()) * vecnorm::dtype_size(in->in_dtype);
    in->out_row = static_cast<std::size_t>(in->step_shape.numel()) * vecnorm::dtype_size(in->out_dtype);
    if (!inputs.empty() && in->batch != inputs.front()->batch)
      throw InputError("mismatched batch shapes: " + in->label + " has batch " + in->batch.str() + " (shape " +
                       dims_str(h.shape) + "), expected " + inputs.front()->batch.str() + " like " +
                       inputs.front()->label + " (shape " + dims_str(inputs.front()->file_shape) + ", --batch-dims " +
                       std::to_string(nb) + ")");
    inputs.push_back(std::move(in));
  }
  std::int64_t T = 0;
  const Input* longest = nullptr;
  for (const auto& in : inputs)
    if (in->spec.first + in->rows > T || longest == nullptr) {
      T = in->spec.first + in->rows;
      longest = in.get();
    }
  for (const auto& in : inputs) {
    const std::int64_t end = in->spec.first + in->rows;
    if (end != T)
      throw InputError("mismatched number of steps: " + in->label + " has " + std::to_string(in->rows) +
                       " rows from step " + std::to_string(in->spec.first) + ", so it ends at step " +
                       std::to_string(end) + "; expected it to end at step " + std::to_string(T) + " like " +
                       longest->label + ", i.e. " + std::to_string(T - in->spec.first) + " rows");
  }
  return T;
}

struct Result {
  std::string key;
  vecnorm::Shape shape;
  std::optional<std::int64_t> count;           ///< stateful
  std::vector<std::int64_t> counts;            ///< stateless, per element
  std::vector<double> loc, scale;              ///< empty when never updated
  bool updated = false;
};

std::string results_json(const std::vector<Result>& results, bool stateless) {
  std::string out = "{";
  for (std::size_t k = 0; k < results.size(); ++k) {
    const Result& r = results[k];
    out += k ? ",\n " : "\n ";
    json_string(out, r.key);
    out += ": {\"shape\": ";
    json_shape(out, r.shape);
    out += ", \"count\": ";
    if (stateless) {
      json_ints(out, r.counts);
    } else {
      json_int(out, *r.count);
    }
    out += ", \"loc\": ";
    if (r.updated) json_numbers(out, r.loc);
    else out += "null";
    out += ", \"scale\": ";
    if (r.updated) json_numbers(out, r.scale);
    else out += "null";
    out += "}";
  }
  out += "\n}\n";
  return out;
}

Result result_of(const vecnorm::VecNorm& vn, const std::string& key) {
  Result r;
  r.key = key;
  r.shape = vn.stats_shape(key);
  r.count = vn.count(key);
  r.updated = *r.count > 0;
  if (r.updated) {
    r.loc = vn.loc(key);
    r.scale = vn.scale(key);
  }
  return r;
}

}  // namespace

int run_replay(int argc, char** argv, int first) {
  Args a = parse_args(argc, argv, first);
  if (a.help) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  const double t_start = now_seconds();
  // Declared first so that it is destroyed last: after the writers have
  // removed their temporary files, a directory this run created is empty.
  std::optional<OutDir> out_dir;

  // ---- inputs
  std::vector<std::unique_ptr<Input>> inputs;
  const std::int64_t T = open_inputs(a, inputs);
  if (!a.out_dir.empty())
    for (std::size_t i = 0; i < inputs.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (out_name(inputs[i]->spec.key) == out_name(inputs[j]->spec.key))
          throw UsageError("keys '" + inputs[j]->spec.key + "' and '" + inputs[i]->spec.key +
                           "' would both be written to " + join(a.out_dir, out_name(inputs[i]->spec.key)));

  // ---- options, key table, statistics
  vecnorm::Options opt = a.options;
  std::optional<vecnorm::State> loaded;
  if (!a.load_state.empty()) {
    try {
      loaded = vecnorm::read_state_file(a.load_state);
    } catch (const vecnorm::Error& e) {
      throw InputError("--load-state: " + library_message(e));
    }
    // The state's statistics options are the defaults; explicit ones must agree (import checks).
    const vecnorm::Options& so = loaded->options;
    if (!a.estimator_set) opt.estimator = so.estimator;
    if (!a.decay_set) opt.decay = so.decay;
    if (!a.eps_set) opt.eps = so.eps;
    if (!a.stats_set) opt.stats_dtype = so.stats_dtype;
    if (!a.nonfinite_set) opt.nonfinite = so.nonfinite;
    if (!a.options.reduce_batch_dims && !a.stateless) opt.reduce_batch_dims = so.reduce_batch_dims;
    if (a.stateless && so.reduce_batch_dims)
      throw InputError("--load-state " + a.load_state +
                       " holds pooled statistics (reduce_batch_dims), which --stateless cannot use");
  }
  try {
    opt.validate();
  } catch (const vecnorm::Error& e) {
    throw UsageError(library_message(e));
  }
  const vecnorm::Backend backend = resolve_backend(a.backend);
  opt.backend = backend;

  vecnorm::KeyTable table;
  table.batch_shape = inputs.front()->batch;
  for (const auto& in : inputs) table.keys.push_back({in->spec.key, in->feature, in->in_dtype});

  // Stateful: the normalizer itself. Stateless: `vn` checks the table and the
  // state, and at the end turns the statistics arrays into read-outs and a file.
  vecnorm::VecNorm vn = [&] {
    try {
      return vecnorm::VecNorm(opt, table);
    } catch (const vecnorm::Error& e) {
      // Key names come from the command line.
      if (e.code() == vecnorm::ErrorCode::invalid_key_table) throw UsageError(library_message(e));
      throw;
    }
  }();
  if (loaded) {
    try {
      vn.import_state(*loaded);
    } catch (const vecnorm::Error& e) {
      throw InputError("--load-state " + a.load_state + " does not match the inputs: " + library_message(e));
    }
  }
  const vecnorm::DType stats_dtype = opt.stats_dtype;
  const std::size_t stats_size = vecnorm::dtype_size(stats_dtype);
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    Input& in = *inputs[k];
    const std::int64_t numel = in.step_shape.numel();
    if (backend == vecnorm::Backend::cuda) {
      in.dx = vecnorm::Buffer(backend, in.in_row);
      in.dy = vecnorm::Buffer(backend, in.out_row);
    }
    if (a.stateless) {
      in.loc = vecnorm::Buffer(backend, static_cast<std::size_t>(numel) * stats_size);
      in.var = vecnorm::Buffer(backend, static_cast<std::size_t>(numel) * stats_size);
      in.count = vecnorm::Buffer(backend, static_cast<std::size_t>(numel) * sizeof(std::int64_t));
      if (loaded) {
        const vecnorm::KeyState& ks = loaded->keys[k];
        in.loc.copy_from_host(ks.loc.data(), ks.loc.size());
        in.var.copy_from_host(ks.var.data(), ks.var.size());
        const std::vector<std::int64_t> c(static_cast<std::size_t>(numel), ks.count);
        in.count.copy_from_host(c.data(), c.size() * sizeof(std::int64_t));
      }
    }
    constexpr std::size_t kSliceBytes = std::size_t{8} << 20;
    const std::size_t row = std::max<std::size_t>({in.in_row, in.out_row, 1});
    in.chunk_rows = std::clamp<std::int64_t>(static_cast<std::int64_t>(kSliceBytes / row), 1,
                                             std::max<std::int64_t>(in.rows, 1));
    in.in_chunk = HostBytes(in.in_row * static_cast<std::size_t>(in.chunk_rows));
    in.out_chunk = HostBytes(in.out_row * static_cast<std::size_t>(a.out_dir.empty() ? 1 : in.chunk_rows));
  }

  // ---- outputs (temporary files until the end)
  InterruptGuard interrupts;
  if (!a.out_dir.empty()) {
    out_dir.emplace(a.out_dir);
    for (auto& in : inputs)
      in->writer = std::make_unique<NpyWriter>(join(a.out_dir, out_name(in->spec.key)), in->out_dtype, in->file_shape);
  }

  // ---- the replay
  Progress progress("vecnorm replay", T, is_terminal(2));
  std::vector<vecnorm::KeyData> batch;
  std::vector<vecnorm::StatelessItem> items;
  std::vector<Input*> present;
  batch.reserve(inputs.size());
  items.reserve(inputs.size());
  const bool on_device = backend == vecnorm::Backend::cuda;
  for (std::int64_t t = 0; t < T; ++t) {
    check_interrupt();
    const bool frozen = a.freeze_after && t >= *a.freeze_after;
    if (frozen && !a.stateless && !vn.is_frozen()) vn.freeze();
    batch.clear();
    items.clear();
    present.clear();
    for (auto& inp : inputs) {
      Input& in = *inp;
      if (!in.present(t)) continue;
      const std::int64_t r = t - in.spec.first;
      if (r >= in.in_begin + in.in_count) {
        in.in_begin = r;
        in.in_count = std::min(in.chunk_rows, in.rows - r);
        in.reader->read(static_cast<std::uint64_t>(r) * in.in_row, in.in_chunk.data(),
                        in.in_row * static_cast<std::size_t>(in.in_count));
      }
      const std::byte* x_host = in.in_chunk.data() + static_cast<std::size_t>(r - in.in_begin) * in.in_row;
      std::byte* y_host = in.out_chunk.data() + static_cast<std::size_t>(in.out_pending) * in.out_row;
      vecnorm::ConstTensorView x;
      vecnorm::TensorView y;
      if (on_device) {
        in.dx.copy_from_host(x_host, in.in_row);
        x = in.dx.view(in.in_dtype, in.step_shape);
        y = in.dy.view(in.out_dtype, in.step_shape);
      } else {
        x = vecnorm::ConstTensorView{x_host, in.in_dtype, in.step_shape};
        y = vecnorm::TensorView{y_host, in.out_dtype, in.step_shape};
      }
      if (a.stateless) {
        const vecnorm::TensorView loc = in.loc.view(stats_dtype, in.step_shape),
                                  var = in.var.view(stats_dtype, in.step_shape),
                                  count = in.count.view(vecnorm::DType::int64, in.step_shape);
        items.push_back({in.spec.key, x, y, {loc, var, count}, {loc, var, count}});
      } else {
        batch.push_back({in.spec.key, x, y});
      }
      present.push_back(&in);
    }
    if (!present.empty()) {
      try {
        if (a.stateless) {
          vecnorm::stateless::step(opt, table, items,
                                   frozen ? vecnorm::Op::normalize : vecnorm::Op::update_and_normalize);
        } else {
          vn.step(batch);
        }
      } catch (const vecnorm::Error& e) {
        throw InputError("step " + std::to_string(t) + (frozen ? " (frozen by --freeze-after)" : "") + ": " +
                         library_message(e));
      }
      if (on_device) vecnorm::synchronize(backend);
      for (Input* in : present) {
        std::byte* y_host = in->out_chunk.data() + static_cast<std::size_t>(in->out_pending) * in->out_row;
        if (on_device) in->dy.copy_to_host(y_host, in->out_row);
        if (!in->writer) continue;
        if (++in->out_pending == in->chunk_rows || t + 1 == T) {
          in->writer->write(in->out_chunk.data(), in->out_row * static_cast<std::size_t>(in->out_pending));
          in->out_pending = 0;
        }
      }
    }
    progress.update(t + 1);
  }
  progress.clear();

  // ---- final statistics
  if (a.stateless) {
    // The per-element arrays as a per-element State: every element of a key
    // was updated together, so its counts are all equal.
    vecnorm::State st = vn.export_state();
    for (std::size_t k = 0; k < inputs.size(); ++k) {
      Input& in = *inputs[k];
      vecnorm::KeyState& ks = st.keys[k];
      in.loc.copy_to_host(ks.loc.data(), ks.loc.size());
      in.var.copy_to_host(ks.var.data(), ks.var.size());
      std::vector<std::int64_t> c(static_cast<std::size_t>(in.step_shape.numel()));
      in.count.copy_to_host(c.data(), c.size() * sizeof(std::int64_t));
      ks.count = c.empty() ? (loaded ? loaded->keys[k].count : 0) + in.rows : c.front();
      if (std::any_of(c.begin(), c.end(), [&](std::int64_t v) { return v != ks.count; }))
        throw InputError("internal: key '" + in.spec.key + "': stateless counts differ between elements");
    }
    vn.import_state(st);
  }
  std::vector<Result> results;
  for (const auto& in : inputs) {
    Result r = result_of(vn, in->spec.key);
    if (a.stateless) {
      r.counts.assign(static_cast<std::size_t>(in->step_shape.numel()), *r.count);
      r.count.reset();
    }
    results.push_back(std::move(r));
  }
  const std::string json = a.json ? results_json(results, a.stateless) : std::string();

  // ---- commit: flush the outputs, save the state, then rename everything into place
  check_interrupt();
  for (auto& in : inputs)
    if (in->writer) in->writer->finish();
  if (!a.save_state.empty()) {
    try {
      vecnorm::save_state(vn, a.save_state);
    } catch (const vecnorm::Error& e) {
      throw InputError("--save-state: " + library_message(e));
    }
  }
  check_interrupt();
  for (auto& in : inputs)
    if (in->writer) in->writer->commit();
  if (out_dir) {
    out_dir->keep();
    sync_directory(out_dir->path());
  }

  if (a.json) {
    std::fwrite(json.data(), 1, json.size(), stdout);
  } else {
    std::printf("vecnorm replay: %lld steps of %zu key%s in %.2f s (backend %s, %s estimator, decay %s, eps %s, %s)\n",
                static_cast<long long>(T), inputs.size(), inputs.size() == 1 ? "" : "s", now_seconds() - t_start,
                vecnorm::to_string(backend), vecnorm::to_string(opt.estimator), shortest(opt.decay).c_str(),
                shortest(opt.eps).c_str(),
                a.stateless                  ? "stateless"
                : opt.reduce_batch_dims ? "pooled statistics"
                                             : "per-element statistics");
    for (std::size_t k = 0; k < inputs.size(); ++k) {
      const Input& in = *inputs[k];
      std::printf("  %s: %s %s, steps %lld..%lld, count %lld%s%s\n", in.spec.key.c_str(),
                  dims_str(in.file_shape).c_str(), vecnorm::to_string(in.in_dtype),
                  static_cast<long long>(in.spec.first), static_cast<long long>(T - 1),
                  static_cast<long long>(a.stateless ? results[k].counts.empty() ? 0 : results[k].counts.front()
                                                     : *results[k].count),
                  in.writer ? " -> " : "", in.writer ? in.writer->path().c_str() : "");
    }
    if (!a.save_state.empty()) std::printf("  state saved to %s\n", a.save_state.c_str());
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) throw InputError("cannot write to stdout");
  return kExitOk;
}

}  // namespace vncli
