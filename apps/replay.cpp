// apps/replay.cpp -- `vecnorm replay`: recorded .npy data stepped through vecnorm.
//
// Step t of T feeds every key whose first step is <= t its row t - FIRST_STEP,
// all present keys in one call (stateful VecNorm::step, stateless::step with
// per-key statistics arrays, or with --returns RewardScaler::step). Inputs are read and outputs written in
// slices of rows, so memory stays at a few slices per key whatever T is.
// Outputs go to temporary files that are renamed only after the whole replay
// (and --save-state) succeeded; on any error or interrupt they are removed.
//
// Here: the normalizer, the steps and the end of a run. The command line is
// replay_args.cpp's, the files replay_io.cpp's, the final statistics printed
// replay_report.cpp's.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <vecnorm/vecnorm.hpp>

#include "cli.hpp"
#include "commands.hpp"
#include "replay_args.hpp"
#include "replay_io.hpp"
#include "replay_report.hpp"
#include "replay_rows.hpp"

namespace vncli {
namespace replay {
namespace {

// ---------------------------------------------------------------- the normalizer

/// A key's memory on the backend: its staging for device steps (Backend::cuda)
/// and, stateless, its statistics arrays; with --returns, host rows in the
/// statistics' dtype where the reward's file has the other float dtype.
struct KeyBuffers {
  vecnorm::Buffer dx, dy;
  vecnorm::Buffer loc, var, count;
  std::int64_t updates = 0;  ///< stateless: the steps that updated the key
  std::vector<std::byte> hx, hy;  ///< --returns: x and y converted (empty: the file's dtype is the statistics')
};

/// What steps the keys. Stateful: a VecNorm. Stateless: stateless::step on
/// each key's statistics arrays; the VecNorm checks the table and the state,
/// and at the end turns the statistics arrays into read-outs and a file.
/// --returns: a RewardScaler, whose statistics are the VecNorm.
struct Normalizer {
  vecnorm::Options opt;
  vecnorm::KeyTable table;
  std::optional<vecnorm::VecNorm> own;
  std::optional<vecnorm::RewardScaler> scaler;
  bool stateless = false;
  std::vector<KeyBuffers> buffers;  ///< per key, in input order
  vecnorm::VecNorm& vn() { return scaler ? scaler->statistics() : *own; }
};

/// --load-state's file, when given.
std::optional<vecnorm::State> read_loaded_state(const std::string& path) {
  if (path.empty()) return std::nullopt;
  try {
    return vecnorm::read_state_file(path);
  } catch (const vecnorm::Error& e) {
    throw InputError("--load-state: " + library_message(e));
  }
}

/// A loaded state holds returns exactly when the replay scales rewards
/// (--returns), with the same discount (and reset rule, where --reset is given;
/// otherwise the state's).
void check_loaded_returns(const Args& a, const vecnorm::State& loaded) {
  const std::string file = "--load-state " + a.load_state;
  if (!loaded.returns) {
    if (a.gamma)
      throw InputError(file + " holds no returns (a VecNorm's state), which --returns needs (a RewardScaler's, "
                              "saved by replay --returns --save-state or vecnorm::save_state(RewardScaler))");
    return;
  }
  const vecnorm::ReturnOptions& ro = loaded.returns->options;
  if (!a.gamma)
    throw InputError(file + " holds a reward scaler's returns (gamma " + shortest(ro.gamma) + ", reset " +
                     vecnorm::to_string(ro.reset) + "): replay it with --returns " + shortest(ro.gamma));
  if (*a.gamma != ro.gamma)
    throw InputError(file + ": --returns " + shortest(*a.gamma) + " differs from the state's gamma " +
                     shortest(ro.gamma));
  if (a.reset_set && a.reset != ro.reset)
    throw InputError(file + ": --reset " + vecnorm::to_string(a.reset) + " differs from the state's reset " +
                     vecnorm::to_string(ro.reset));
}

/// The command line's options (a loaded state's are the defaults), validated,
/// on the resolved backend.
vecnorm::Options statistics_options(const Args& a, const std::optional<vecnorm::State>& loaded) {
  vecnorm::Options opt = a.options;
  if (a.gamma && !loaded) {  // SB3's return statistics (RewardScaler's defaults), unless given
    if (!a.estimator_set) opt.estimator = vecnorm::Estimator::stable;
    if (!a.decay_set) opt.decay = 1.0;
    if (!a.prior_set && opt.estimator == vecnorm::Estimator::stable) opt.prior_count = 1e-4;  // (torchrl has none)
    if (!a.scale_set) opt.scale = vecnorm::ScaleForm::sqrt_var_plus_eps;
    if (!a.eps_set) opt.eps = 1e-8;
    if (!a.clip_set) opt.clip = 10.0;
    if (!a.stats_set) opt.stats_dtype = vecnorm::DType::float64;
  }
  if (loaded) {
    // The state's statistics options are the defaults; explicit ones must agree (import checks).
    const vecnorm::Options& so = loaded->options;
    if (!a.estimator_set) opt.estimator = so.estimator;
    if (!a.decay_set) opt.decay = so.decay;
    if (!a.eps_set) opt.eps = so.eps;
    if (!a.stats_set) opt.stats_dtype = so.stats_dtype;
    if (!a.nonfinite_set) opt.nonfinite = so.nonfinite;
    if (!a.scale_set) opt.scale = so.scale;
    if (!a.clip_set) opt.clip = so.clip;
    if (!a.prior_set) opt.prior_count = so.prior_count;
    if (!a.unbiased_set) opt.unbiased = so.unbiased;
    if (!a.until_set) opt.until = so.until;
    if (!a.center_set) opt.center = so.center;
    if (!a.max_scale_set) opt.max_scale = so.max_scale;
    // --until 0 lifts a loaded bound, and with it its rule.
    if (!a.until_strict_set) opt.until_strict = so.until_strict && opt.until > 0;
    if (a.stateless && so.until > 0)
      throw InputError("--load-state " + a.load_state + " holds a bound on updates (until = " +
                       std::to_string(so.until) + "), which --stateless cannot use (it counts per element)");
    if (!a.options.reduce_batch_dims && !a.stateless) opt.reduce_batch_dims = so.reduce_batch_dims;
    if (a.stateless && so.reduce_batch_dims)
      throw InputError("--load-state " + a.load_state +
                       " holds pooled statistics (reduce_batch_dims), which --stateless cannot use");
    check_loaded_returns(a, *loaded);
  }
  try {
    opt.validate();
  } catch (const vecnorm::Error& e) {
    throw UsageError(library_message(e));
  }
  opt.backend = resolve_backend(a.backend);
  return opt;
}

/// The key table; with --returns each key's dtype is its statistics' (a
/// RewardScaler's rewards are), the file's float32 or float64.
vecnorm::KeyTable key_table(const Inputs& inputs, const vecnorm::Options& opt, bool rewards) {
  vecnorm::KeyTable table;
  table.batch_shape = inputs.front()->batch;
  for (const auto& in : inputs) {
    vecnorm::DType dtype = in->in_dtype;
    if (rewards) {
      if (dtype != vecnorm::DType::float32 && dtype != vecnorm::DType::float64)
        throw InputError("--returns: " + in->label + ": dtype " + vecnorm::to_string(dtype) +
                         ", expected float32 or float64 rewards (numpy: r.astype(np.float32))");
      dtype = vecnorm::stats_dtype_for(opt.stats_dtype, dtype);
    }
    table.keys.push_back({in->spec.key, in->feature, dtype});
  }
  return table;
}

/// The normalizer of the inputs' keys, with the loaded state's statistics.
Normalizer make_normalizer(const Args& a, const Inputs& inputs, const std::optional<vecnorm::State>& loaded) {
  vecnorm::Options opt = statistics_options(a, loaded);
  vecnorm::KeyTable table = key_table(inputs, opt, a.gamma.has_value());
  Normalizer norm{opt, table, std::nullopt, std::nullopt, a.stateless, {}};
  try {
    if (a.gamma)
      norm.scaler.emplace(opt, vecnorm::ReturnOptions{*a.gamma, a.reset, a.hold_frozen}, table);
    else
      norm.own.emplace(opt, table);
  } catch (const vecnorm::Error& e) {
    // Key names and options come from the command line.
    if (e.code() == vecnorm::ErrorCode::invalid_key_table || e.code() == vecnorm::ErrorCode::invalid_option)
      throw UsageError(library_message(e));
    throw;
  }
  if (loaded) {
    try {
      if (norm.scaler)
        norm.scaler->import_state(*loaded);
      else
        norm.vn().import_state(*loaded);
    } catch (const vecnorm::Error& e) {
      throw InputError("--load-state " + a.load_state + " does not match the inputs: " + library_message(e));
    }
  }
  return norm;
}

/// Each key's buffers on the backend (stateless statistics from the loaded
/// state) and its host slices.
void allocate(Normalizer& norm, Inputs& inputs, const std::optional<vecnorm::State>& loaded, bool writes_outputs) {
  const vecnorm::Backend backend = norm.opt.backend;
  norm.buffers.resize(inputs.size());
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    Input& in = *inputs[k];
    KeyBuffers& b = norm.buffers[k];
    const std::size_t numel = static_cast<std::size_t>(in.step_shape.numel());
    const std::size_t stats_size = vecnorm::dtype_size(vecnorm::stats_dtype_for(norm.opt.stats_dtype, in.in_dtype));
    // A reward's rows in its statistics' dtype when its file has the other float dtype.
    const vecnorm::DType step_dtype = norm.table.keys[k].dtype;
    const std::size_t step_row = numel * vecnorm::dtype_size(step_dtype);
    if (norm.scaler && step_dtype != in.in_dtype) {
      b.hx.resize(step_row);
      b.hy.resize(step_row);
    }
    if (backend == vecnorm::Backend::cuda) {
      b.dx = vecnorm::Buffer(backend, norm.scaler ? step_row : in.in_row);
      b.dy = vecnorm::Buffer(backend, norm.scaler ? step_row : in.out_row);
    }
    if (norm.stateless) {
      b.loc = vecnorm::Buffer(backend, numel * stats_size);
      b.var = vecnorm::Buffer(backend, numel * stats_size);
      b.count = vecnorm::Buffer(backend, numel * sizeof(std::int64_t));
      if (loaded) {
        const vecnorm::KeyState& ks = loaded->keys[k];
        b.loc.copy_from_host(ks.loc.data(), ks.loc.size());
        b.var.copy_from_host(ks.var.data(), ks.var.size());
        // Each element's own count: the key's less the updates it left out.
        std::vector<std::int64_t> c(numel, ks.count);
        for (std::size_t i = 0; i < ks.skips.size() && i < numel; ++i) c[i] -= ks.skips[i];
        b.count.copy_from_host(c.data(), c.size() * sizeof(std::int64_t));
      }
    }
    in.allocate_slices(writes_outputs);
  }
}

// ---------------------------------------------------------------- the steps

/// n values from `from` (float32 or float64) to `to` (float32 or float64).
void convert_floats(const std::byte* from, vecnorm::DType from_dtype, std::byte* to, vecnorm::DType to_dtype,
                    std::size_t n) {
  if (from_dtype == to_dtype) {
    std::memcpy(to, from, n * vecnorm::dtype_size(from_dtype));
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (from_dtype == vecnorm::DType::float32) {
      float f;
      std::memcpy(&f, from + 4 * i, 4);
      const double d = f;
      std::memcpy(to + 8 * i, &d, 8);
    } else {
      double d;
      std::memcpy(&d, from + 8 * i, 8);
      const float f = static_cast<float>(d);
      std::memcpy(to + 4 * i, &f, 4);
    }
  }
}

/// Steps 0..T-1: the keys present at a step go into one call, and their
/// outputs come back to the host slices (and, with --out, to the files).
class StepLoop {
 public:
  StepLoop(Normalizer& norm, Inputs& inputs, std::optional<std::int64_t> freeze_after, RowMask* mask, RowMask* dones)
      : norm_(norm),
        inputs_(inputs),
        freeze_after_(freeze_after),
        mask_(mask),
        dones_(dones),
        on_device_(norm.opt.backend == vecnorm::Backend::cuda) {
    batch_.reserve(inputs.size());
    items_.reserve(inputs.size());
    rewards_.reserve(inputs.size());
  }

  void run(std::int64_t T) {
    Progress progress("vecnorm replay", T, is_terminal(2));
    for (std::int64_t t = 0; t < T; ++t) {
      check_interrupt();
      const bool frozen = freeze_after_ && t >= *freeze_after_;
      if (frozen && !norm_.stateless && !norm_.vn().is_frozen()) norm_.vn().freeze();
      gather(t);
      if (!present_.empty()) {
        step(t, frozen);
        store(t + 1 == T);
      }
      progress.update(t + 1);
    }
    progress.clear();
  }

 private:
  /// The call's arguments: each present key's row t, staged on the device when steps run there.
  void gather(std::int64_t t) {
    batch_.clear();
    items_.clear();
    rewards_.clear();
    present_.clear();
    const vecnorm::ConstTensorView mask = mask_ != nullptr ? mask_->row(t) : vecnorm::ConstTensorView{};
    const vecnorm::ConstTensorView done = dones_ != nullptr ? dones_->row(t) : vecnorm::ConstTensorView{};
    for (std::size_t k = 0; k < inputs_.size(); ++k) {
      Input& in = *inputs_[k];
      if (!in.present(t)) continue;
      KeyBuffers& b = norm_.buffers[k];
      const std::byte* x_host = in.input_row(t - in.spec.first);
      vecnorm::ConstTensorView x;
      vecnorm::TensorView y;
      if (norm_.scaler) {  // in the statistics' dtype (converted where the file has the other)
        const vecnorm::DType dt = norm_.table.keys[k].dtype;
        const std::size_t numel = static_cast<std::size_t>(in.step_shape.numel());
        if (!b.hx.empty()) {
          convert_floats(x_host, in.in_dtype, b.hx.data(), dt, numel);
          x_host = b.hx.data();
        }
        if (on_device_) {
          b.dx.copy_from_host(x_host, numel * vecnorm::dtype_size(dt));
          x = b.dx.view(dt, in.step_shape);
          y = b.dy.view(dt, in.step_shape);
        } else {
          x = vecnorm::ConstTensorView{x_host, dt, in.step_shape};
          y = vecnorm::TensorView{b.hy.empty() ? in.output_row() : b.hy.data(), dt, in.step_shape};
        }
        rewards_.push_back({in.spec.key, x, y, done, mask});
        present_.push_back(k);
        continue;
      }
      if (on_device_) {
        b.dx.copy_from_host(x_host, in.in_row);
        x = b.dx.view(in.in_dtype, in.step_shape);
        y = b.dy.view(in.out_dtype, in.step_shape);
      } else {
        x = vecnorm::ConstTensorView{x_host, in.in_dtype, in.step_shape};
        y = vecnorm::TensorView{in.output_row(), in.out_dtype, in.step_shape};
      }
      if (norm_.stateless) {
        const vecnorm::DType stats_dtype = vecnorm::stats_dtype_for(norm_.opt.stats_dtype, in.in_dtype);
        const vecnorm::TensorView loc = b.loc.view(stats_dtype, in.step_shape),
                                  var = b.var.view(stats_dtype, in.step_shape),
                                  count = b.count.view(vecnorm::DType::int64, in.step_shape);
        items_.push_back({in.spec.key, x, y, {loc, var, count}, {loc, var, count}, mask});
      } else {
        batch_.push_back({in.spec.key, x, y, mask});
      }
      present_.push_back(k);
    }
  }

  void step(std::int64_t t, bool frozen) {
    try {
      if (norm_.scaler) {
        norm_.scaler->step(rewards_);
      } else if (norm_.stateless) {
        vecnorm::stateless::step(norm_.opt, norm_.table, items_,
                                 frozen ? vecnorm::Op::normalize : vecnorm::Op::update_and_normalize);
        if (!frozen)
          for (const std::size_t k : present_) ++norm_.buffers[k].updates;
      } else {
        norm_.vn().step(batch_);
      }
    } catch (const vecnorm::Error& e) {
      throw InputError("step " + std::to_string(t) + (frozen ? " (frozen by --freeze-after)" : "") + ": " +
                       library_message(e));
    }
  }

  void store(bool last_step) {
    if (on_device_) vecnorm::synchronize(norm_.opt.backend);
    for (const std::size_t k : present_) {
      Input& in = *inputs_[k];
      KeyBuffers& b = norm_.buffers[k];
      if (!b.hy.empty()) {  // a reward computed in the statistics' other float dtype
        if (on_device_) b.dy.copy_to_host(b.hy.data(), b.hy.size());
        convert_floats(b.hy.data(), norm_.table.keys[k].dtype, in.output_row(), in.out_dtype,
                       static_cast<std::size_t>(in.step_shape.numel()));
      } else if (on_device_) {
        b.dy.copy_to_host(in.output_row(), in.out_row);
      }
      in.output_done(last_step);
    }
  }

  Normalizer& norm_;
  Inputs& inputs_;
  const std::optional<std::int64_t> freeze_after_;
  RowMask* const mask_;   ///< --mask (null: none)
  RowMask* const dones_;  ///< --dones (null: none)
  const bool on_device_;
  std::vector<vecnorm::KeyData> batch_;        ///< stateful call
  std::vector<vecnorm::StatelessItem> items_;  ///< stateless call
  std::vector<vecnorm::RewardData> rewards_;   ///< --returns call
  std::vector<std::size_t> present_;           ///< keys in this call
};

// ---------------------------------------------------------------- the end

/// Stateless: the statistics arrays as a per-element State, imported into `vn`
/// for the read-outs and --save-state. The key's count is its updates (and the
/// loaded state's); an element whose count is less (left out by --mask or a
/// non-finite value) holds the difference in its skips, as a VecNorm does.
void import_stateless_statistics(Normalizer& norm, const Inputs& inputs, const std::optional<vecnorm::State>& loaded) {
  vecnorm::State st = norm.vn().export_state();
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const Input& in = *inputs[k];
    const KeyBuffers& b = norm.buffers[k];
    vecnorm::KeyState& ks = st.keys[k];
    b.loc.copy_to_host(ks.loc.data(), ks.loc.size());
    b.var.copy_to_host(ks.var.data(), ks.var.size());
    std::vector<std::int64_t> c(static_cast<std::size_t>(in.step_shape.numel()));
    b.count.copy_to_host(c.data(), c.size() * sizeof(std::int64_t));
    ks.count = (loaded ? loaded->keys[k].count : 0) + b.updates;
    ks.skips.assign(c.size(), 0);
    ks.skipped = 0;
    for (std::size_t i = 0; i < c.size(); ++i) {
      if (c[i] < 0 || c[i] > ks.count)
        throw InputError("internal: key '" + in.spec.key + "': element " + std::to_string(i) + " has count " +
                         std::to_string(c[i]) + ", expected 0 to " + std::to_string(ks.count));
      ks.skips[i] = ks.count - c[i];
      ks.skipped += ks.skips[i];
    }
    if (ks.skipped == 0) ks.skips.clear();
  }
  norm.vn().import_state(st);
}

/// Finishes the outputs, saves the state, then renames the outputs into place:
/// nothing is final before everything succeeded.
void commit(Inputs& inputs, Normalizer& norm, const std::string& save_path, std::optional<OutDir>& out_dir) {
  check_interrupt();
  finish_outputs(inputs);
  if (!save_path.empty()) {
    try {
      if (norm.scaler)
        vecnorm::save_state(*norm.scaler, save_path);  // with the returns
      else
        vecnorm::save_state(norm.vn(), save_path);
    } catch (const vecnorm::Error& e) {
      throw InputError("--save-state: " + library_message(e));
    }
  }
  check_interrupt();
  commit_outputs(inputs, out_dir);
}

}  // namespace
}  // namespace replay

int run_replay(int argc, char** argv, int first) {
  using namespace replay;
  const Args a = parse_args(argc, argv, first);
  if (a.help) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  const double t_start = now_seconds();
  // Declared first so that it is destroyed last: after the writers have
  // removed their temporary files, a directory this run created is empty.
  std::optional<OutDir> out_dir;

  Inputs inputs = open_inputs(a.inputs, a.batch_dims);
  const std::int64_t T = common_end(inputs);
  if (!a.out_dir.empty()) check_output_names(inputs, a.out_dir);

  const std::optional<vecnorm::State> loaded = read_loaded_state(a.load_state);
  Normalizer norm = make_normalizer(a, inputs, loaded);
  // --mask: every mode (pooled: rows left out of the batch; per-element and
  // stateless: the elements of those rows keep their statistics and count).
  std::optional<RowMask> mask, dones;
  if (!a.mask.empty()) mask.emplace("--mask", a.mask, T, inputs.front()->batch, norm.opt.backend, !a.gamma);
  if (!a.dones.empty()) dones.emplace("--dones", a.dones, T, inputs.front()->batch, norm.opt.backend, false);
  allocate(norm, inputs, loaded, !a.out_dir.empty());

  InterruptGuard interrupts;
  if (!a.out_dir.empty()) {
    out_dir.emplace(a.out_dir);
    open_outputs(inputs, a.out_dir);
  }
  StepLoop(norm, inputs, a.freeze_after, mask ? &*mask : nullptr, dones ? &*dones : nullptr).run(T);

  if (a.stateless) import_stateless_statistics(norm, inputs, loaded);
  const std::vector<Result> results = results_of(norm.vn(), inputs, a.stateless);
  const std::string json = a.json ? results_json(results, a.stateless) : std::string();
  commit(inputs, norm, a.save_state, out_dir);

  if (a.json) std::fwrite(json.data(), 1, json.size(), stdout);
  else
    print_summary(a, norm.opt, norm.scaler ? &norm.scaler->return_options() : nullptr, inputs, results, T,
                  now_seconds() - t_start);
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) throw InputError("cannot write to stdout");
  return kExitOk;
}

}  // namespace vncli
