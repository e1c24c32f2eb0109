// apps/replay_args.cpp -- see replay_args.hpp.
#include "replay_args.hpp"

#include <algorithm>

#include "cli.hpp"

namespace vncli::replay {

const char* const kHelp =
    "usage: vecnorm replay [options] KEY=FILE.npy[@FIRST_STEP] ...\n"
    "\n"
    "Replays recorded data through vecnorm. Each FILE.npy holds one key's data over\n"
    "time, shaped [T, *batch, *feature] (.npy v1-v3, little-endian, C order; float16/32/64,\n"
    "int32/64 or uint8). @FIRST_STEP: the key starts at that step (a reward absent on the\n"
    "reset step 0: reward=r.npy@1 with T-1 rows). Every key must end at the same step T.\n"
    "\n"
    "options:\n"
    "  --batch-dims N        dims after the time dim that are batch dims (default 1)\n"
    "  --decay D             EMA decay, 0 < D <= 1 (default 0.9999)\n"
    "  --eps E               the scale's epsilon (default 1e-4; see --scale)\n"
    "  --scale FORM          clamp: max(std, eps) (default, TorchRL), sqrt_var_plus_eps:\n"
    "                        sqrt(var + eps) (SB3, Gymnasium, rl_games) or std_plus_eps:\n"
    "                        std + eps (rsl_rl, skrl)\n"
    "  --max-scale M         bound the scale to at most M (brax: 1e6; default: none)\n"
    "  --clip C              bound the outputs to [-C, C] (default: none)\n"
    "  --prior-count N       start from N samples of mean 0, var 1 (estimator stable)\n"
    "  --unbiased            pooled batch variance over m - 1 (skrl)\n"
    "  --no-center           outputs x / scale: the mean is not subtracted (reward\n"
    "                        scalers, rl_games norm_only)\n"
    "  --until N             a key's updates stop once its count reaches N samples\n"
    "                        (rsl_rl; default 0: no bound; not with --stateless)\n"
    "  --until-strict        with --until: a batch that would take the count past N is\n"
    "                        left out too (brax's until_count)\n"
    "  --estimator NAME      torchrl (VecNormV2's formulas, default) or stable\n"
    "  --nonfinite MODE      NaN/inf input: skip (default: left out of the statistics,\n"
    "                        counted), propagate (the reference) or error (stop)\n"
    "  --reduce-batch-dims   pool the batch dims: one statistic per feature\n"
    "  --mask FILE.npy       a row mask over time, [T, *batch] uint8 (numpy:\n"
    "                        mask.astype(np.uint8)), row t for step t: rows with 0 are\n"
    "                        left out of the updates of every key and still normalized\n"
    "                        (per-element statistics: their elements keep their\n"
    "                        statistics and count); or int32 row weights (pooled\n"
    "                        statistics: a row of weight w counts w times, brax's);\n"
    "                        with --returns, uint8: rows with 0 are inactive (left out,\n"
    "                        their returns held)\n"
    "  --returns GAMMA       reward scaling by the discounted return (SB3's VecNormalize\n"
    "                        norm_reward, Gymnasium's NormalizeReward): every key is a\n"
    "                        reward; each environment keeps R = GAMMA R + r, the returns\n"
    "                        update pooled statistics and the output is clip(r / scale).\n"
    "                        The statistics' defaults become SB3's: --estimator stable\n"
    "                        --decay 1 --prior-count 1e-4 --scale sqrt_var_plus_eps\n"
    "                        --eps 1e-8 --clip 10 --stats-dtype float64 (pooled,\n"
    "                        uncentred); inputs float32 or float64\n"
    "  --dones FILE.npy      with --returns: episode ends over time, [T, *batch] uint8,\n"
    "                        row t for step t (1: the environment's episode ended)\n"
    "  --reset RULE          with --returns: after (default, SB3: R enters the statistics,\n"
    "                        then a done zeroes it), before (Gymnasium: a done zeroes R\n"
    "                        before the reward is added) or never\n"
    "  --hold-frozen         with --returns and --freeze-after: frozen returns hold but\n"
    "                        for the zeroing at dones (SB3's training = False; default:\n"
    "                        they advance, as Gymnasium's update_running_mean = False)\n"
    "  --stateless           stateless mode: per-element statistics and counts\n"
    "  --stats-dtype T       auto (default: float64 for float64 inputs, float32 for\n"
    "                        the others), float32 or float64 statistics\n"
    "  --freeze-after K      steps after the K-th only normalize (no update)\n"
    "  --backend B           cpu, cuda or auto (default auto: cuda when usable)\n"
    "  --threads N           CPU backend threads (default 0: OpenMP's default)\n"
    "  --load-state FILE     start from a saved state (its options are the defaults)\n"
    "  --save-state FILE     save the final state (atomic)\n"
    "  --out DIR             write the normalized data to DIR/KEY.npy ('/' in KEY -> '.');\n"
    "                        float inputs keep their dtype, integers give float32\n"
    "  --json                print the final statistics as one JSON object on stdout\n"
    "  -h, --help            this help\n"
    "\n"
    "example: vecnorm replay --out normed --json obs=obs.npy reward=reward.npy@1\n";

namespace {

Spec parse_spec(const std::string& arg) {
  const std::string form = "expected KEY=FILE.npy[@FIRST_STEP], got '" + arg + "'";
  const auto eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size()) throw UsageError("input: " + form);
  Spec s;
  s.arg = arg;
  s.key = arg.substr(0, eq);
  s.path = arg.substr(eq + 1);
  if (const auto at = s.path.rfind('@'); at != std::string::npos) {
    const std::string tail = s.path.substr(at + 1);
    const bool digits = !tail.empty() && std::all_of(tail.begin(), tail.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) {
      s.first = parse_int(tail, "@FIRST_STEP of '" + arg + "'", 0);
      s.path.resize(at);
      if (s.path.empty()) throw UsageError("input: " + form);
    } else if (tail.empty()) {
      throw UsageError("input: '@' must be followed by the first step (an integer >= 0); " + form);
    }
  }
  return s;
}

const std::string& non_empty(const std::string& v, const char* option) {
  if (v.empty()) throw UsageError(std::string("option ") + option + " expects a path, got ''");
  return v;
}

/// An option whose value replaces a loaded state's default: `given` records
/// that it was on the command line.
template <class T>
OptionSpec given_option(const char* name, T& field, bool& given, T (*parse)(const std::string&, const std::string&)) {
  return {name, true, [name, &field, &given, parse](const std::string& v) {
            field = parse(v, name);
            given = true;
          }};
}

}  // namespace

Args parse_args(int argc, char** argv, int first) {
  Args a;
  const std::vector<OptionSpec> specs = {
      {"--help", false, [&](const std::string&) { a.help = true; }},
      {"--batch-dims", true, [&](const std::string& v) { a.batch_dims = parse_int(v, "--batch-dims", 0); }},
      given_option("--decay", a.options.decay, a.decay_set, parse_double),
      given_option("--eps", a.options.eps, a.eps_set, parse_double),
      given_option("--estimator", a.options.estimator, a.estimator_set, parse_estimator),
      given_option("--nonfinite", a.options.nonfinite, a.nonfinite_set, parse_nonfinite),
      given_option("--scale", a.options.scale, a.scale_set, parse_scale),
      given_option("--clip", a.options.clip, a.clip_set, parse_double),
      given_option("--max-scale", a.options.max_scale, a.max_scale_set, parse_double),
      given_option("--prior-count", a.options.prior_count, a.prior_set, parse_double),
      {"--unbiased", false, [&](const std::string&) { a.options.unbiased = a.unbiased_set = true; }},
      {"--no-center", false,
       [&](const std::string&) {
         a.options.center = false;
         a.center_set = true;
       }},
      {"--until", true,
       [&](const std::string& v) {
         a.options.until = parse_int(v, "--until", 0);
         a.until_set = true;
       }},
      {"--until-strict", false,
       [&](const std::string&) {
         a.options.until_strict = true;
         a.until_strict_set = true;
       }},
      {"--reduce-batch-dims", false, [&](const std::string&) { a.options.reduce_batch_dims = true; }},
      {"--stateless", false, [&](const std::string&) { a.stateless = true; }},
      given_option("--stats-dtype", a.options.stats_dtype, a.stats_set, parse_stats_dtype),
      {"--freeze-after", true, [&](const std::string& v) { a.freeze_after = parse_int(v, "--freeze-after", 0); }},
      {"--backend", true, [&](const std::string& v) { a.backend = parse_backend(v, "--backend"); }},
      {"--threads", true,
       [&](const std::string& v) {
         const std::int64_t n = parse_int(v, "--threads", 0);
         if (n > 4096) throw UsageError("option --threads expects at most 4096, got " + v);
         a.options.cpu_threads = static_cast<int>(n);
       }},
      {"--load-state", true, [&](const std::string& v) { a.load_state = non_empty(v, "--load-state"); }},
      {"--save-state", true, [&](const std::string& v) { a.save_state = non_empty(v, "--save-state"); }},
      {"--out", true, [&](const std::string& v) { a.out_dir = non_empty(v, "--out"); }},
      {"--mask", true, [&](const std::string& v) { a.mask = non_empty(v, "--mask"); }},
      {"--returns", true,
       [&](const std::string& v) {
         const double g = parse_double(v, "--returns");
         if (!(g >= 0.0 && g <= 1.0)) throw UsageError("option --returns expects a discount 0 <= GAMMA <= 1, got " + v);
         a.gamma = g;
       }},
      {"--dones", true, [&](const std::string& v) { a.dones = non_empty(v, "--dones"); }},
      {"--reset", true,
       [&](const std::string& v) {
         if (v == "after") a.reset = vecnorm::ReturnReset::after;
         else if (v == "before") a.reset = vecnorm::ReturnReset::before;
         else if (v == "never") a.reset = vecnorm::ReturnReset::never;
         else throw UsageError("option --reset expects after, before or never, got '" + v + "'");
         a.reset_set = true;
       }},
      {"--hold-frozen", false, [&](const std::string&) { a.hold_frozen = true; }},
      {"--json", false, [&](const std::string&) { a.json = true; }},
  };
  const auto positional = parse_options(argc, argv, first, "replay", specs);
  if (a.help) return a;
  for (const auto& p : positional) a.inputs.push_back(parse_spec(p));
  if (a.inputs.empty()) throw UsageError("replay: no input; expected KEY=FILE.npy[@FIRST_STEP] ... (see 'vecnorm replay --help')");
  for (std::size_t i = 0; i < a.inputs.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (a.inputs[i].key == a.inputs[j].key)
        throw UsageError("replay: key '" + a.inputs[i].key + "' is given twice ('" + a.inputs[j].arg + "' and '" +
                         a.inputs[i].arg + "')");
  if (a.stateless && a.options.reduce_batch_dims)
    throw UsageError("--stateless and --reduce-batch-dims cannot be combined: stateless statistics are per element "
                     "(pooling is stateful only)");
  if (!a.gamma) {
    const char* needs = !a.dones.empty() ? "--dones"
                        : a.reset_set    ? "--reset"
                        : a.hold_frozen  ? "--hold-frozen"
                                         : nullptr;
    if (needs != nullptr)
      throw UsageError(std::string(needs) + " needs --returns GAMMA (reward scaling by the discounted return)");
  } else {
    if (a.stateless)
      throw UsageError("--returns and --stateless cannot be combined: a reward's statistics are pooled over the "
                       "environments (stateful)");
    if (a.hold_frozen && !a.freeze_after)
      throw UsageError("--hold-frozen needs --freeze-after K (it says what frozen returns do)");
    if (!a.dones.empty() && a.reset_set && a.reset == vecnorm::ReturnReset::never)
      throw UsageError("--dones with --reset never: no done would reset a return (leave out one or the other)");
    if (!a.center_set) a.options.center = false;  // (given explicitly, --no-center is the same)
    a.options.reduce_batch_dims = true;
    // SB3's return statistics, unless given (a loaded state's replace them).
  }
  if (a.stateless && a.options.until > 0)
    throw UsageError("--stateless and --until cannot be combined: stateless statistics count per element (the "
                     "bound is on a key's one count)");
  return a;
}

}  // namespace vncli::replay
