// apps/replay_args.hpp -- the command line of `vecnorm replay`: its help, its
// options and its KEY=FILE.npy[@FIRST_STEP] inputs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <vecnorm/vecnorm.hpp>

namespace vncli::replay {

/// `vecnorm replay --help`.
extern const char* const kHelp;

/// One KEY=FILE.npy[@FIRST_STEP] argument.
struct Spec {
  std::string key, path;
  std::int64_t first = 0;
  std::string arg;  ///< as given
};

struct Args {
  std::int64_t batch_dims = 1;
  vecnorm::Options options;
  vecnorm::Backend backend = vecnorm::Backend::automatic;
  bool decay_set = false, eps_set = false, estimator_set = false, stats_set = false, nonfinite_set = false;
  bool scale_set = false, clip_set = false, prior_set = false, unbiased_set = false, until_set = false,
       center_set = false, max_scale_set = false, until_strict_set = false;
  bool stateless = false;
  std::optional<std::int64_t> freeze_after;
  std::string load_state, save_state, out_dir;
  std::string mask;  ///< --mask: a row mask over time, [T, *batch] uint8 or int32 weights (empty: none)
  /// --returns GAMMA: every key is a reward scaled by the std of its
  /// discounted return (a RewardScaler); --reset, --dones, --hold-frozen.
  std::optional<double> gamma;
  vecnorm::ReturnReset reset = vecnorm::ReturnReset::after;
  bool reset_set = false, hold_frozen = false;
  std::string dones;  ///< --dones: episode ends over time, [T, *batch] uint8 (empty: none)
  bool json = false;
  bool help = false;
  std::vector<Spec> inputs;
};

/// Parses argv[first..argc) (UsageError on a bad command line). With --help
/// nothing else is checked.
Args parse_args(int argc, char** argv, int first);

}  // namespace vncli::replay
