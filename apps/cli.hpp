// apps/cli.hpp -- what the subcommands of the `vecnorm` command share: the
// error kinds (and so the exit codes), option parsing, a progress line,
// interrupt handling, JSON output and aligned host memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <vecnorm/vecnorm.hpp>

namespace vncli {

// ---------------------------------------------------------------- errors
// main() prints every error as one line "vecnorm: <message>" on stderr and
// exits with the code of its kind (docs/cli.md).

inline constexpr int kExitOk = 0;
inline constexpr int kExitInput = 1;  ///< bad input, runtime failure
inline constexpr int kExitUsage = 2;  ///< bad command line

/// A bad command line (unknown option, missing or malformed value): exit 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Bad input data or a failed file operation: exit 1.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The run was stopped by SIGINT / SIGTERM / SIGHUP: exit 128 + signal.
class Interrupted : public std::runtime_error {
 public:
  explicit Interrupted(int signal);
  int signal() const noexcept { return signal_; }

 private:
  int signal_;
};

/// A library message without its "vecnorm: " prefix (main adds its own).
std::string library_message(const std::exception& e);

// ---------------------------------------------------------------- options

/// One option of a subcommand. `takes_value` options accept "--name VALUE" and
/// "--name=VALUE"; flags accept neither a value nor '='.
struct OptionSpec {
  std::string name;  ///< "--decay"
  bool takes_value = false;
  std::function<void(const std::string& value)> apply;
};

/// Parses argv[first..argc) for `command` ("replay"): applies the options in
/// order and returns the positional arguments. "--" ends the options.
/// Throws UsageError for unknown options and missing or unexpected values.
std::vector<std::string> parse_options(int argc, char** argv, int first, const std::string& command,
                                       const std::vector<OptionSpec>& specs);

/// Strict number parsing for option values: the whole text must be a number.
std::int64_t parse_int(const std::string& text, const std::string& option, std::int64_t min_value);
double parse_double(const std::string& text, const std::string& option);
vecnorm::Estimator parse_estimator(const std::string& text, const std::string& option);
vecnorm::NonFinite parse_nonfinite(const std::string& text, const std::string& option);
vecnorm::ScaleForm parse_scale(const std::string& text, const std::string& option);
vecnorm::Backend parse_backend(const std::string& text, const std::string& option);
/// "auto" (each key's from its input: Options::stats_dtype none), "float32" or "float64".
std::optional<vecnorm::DType> parse_stats_dtype(const std::string& text, const std::string& option);

/// Backend::automatic resolved the way the library resolves it; Backend::cuda
/// without a usable device is an InputError saying why.
vecnorm::Backend resolve_backend(vecnorm::Backend requested);

// ---------------------------------------------------------------- progress

/// A progress line on stderr, redrawn in place at most ~10 times a second.
/// Disabled (prints nothing) unless `enabled`; callers pass is_terminal(2).
class Progress {
 public:
  Progress(std::string label, std::int64_t total, bool enabled);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  /// `done` of `total` units are finished.
  void update(std::int64_t done);
  /// Erases the line (before other output on the same terminal).
  void clear();
  bool enabled() const noexcept { return enabled_; }

 private:
  void draw(std::int64_t done);
  std::string label_;
  std::int64_t total_;
  bool enabled_;
  bool drawn_ = false;
  double start_ = 0, last_ = -1;
  std::int64_t last_done_ = -1;
};

/// isatty(fd).
bool is_terminal(int fd);
/// Seconds on a monotonic clock.
double now_seconds();

// ---------------------------------------------------------------- interrupts

/// From now on SIGINT, SIGTERM and SIGHUP only set a flag that
/// check_interrupt() turns into an Interrupted exception (so that temporary
/// files are removed). The destructor restores the previous handlers.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
};
/// Throws Interrupted when a signal arrived since an InterruptGuard was made.
void check_interrupt();

// ---------------------------------------------------------------- JSON

/// Appends `s` as a JSON string (quoted, escaped).
void json_string(std::string& out, std::string_view s);
/// Appends a number in the shortest form that reads back to the same double;
/// NaN and infinities (not JSON) become null.
void json_number(std::string& out, double v);
void json_int(std::string& out, std::int64_t v);
/// The shortest text that reads back to `v` ("0.9999", "1e-05", "nan").
std::string shortest(double v);
/// [d0, d1, ...]
void json_shape(std::string& out, const vecnorm::Shape& shape);
void json_numbers(std::string& out, const std::vector<double>& values);
void json_ints(std::string& out, const std::vector<std::int64_t>& values);

// ---------------------------------------------------------------- memory

/// Zero-initialized host memory aligned to 64 bytes (never null, even for 0 bytes).
class HostBytes {
 public:
  HostBytes() = default;
  explicit HostBytes(std::size_t bytes);
  std::byte* data() noexcept { return data_.get(); }
  const std::byte* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }

 private:
  struct Free {
    void operator()(std::byte* p) const noexcept;
  };
  std::unique_ptr<std::byte, Free> data_;
  std::size_t size_ = 0;
};

// ---------------------------------------------------------------- small helpers

/// "[4096, 64]" for a vector of dims.
std::string dims_str(const std::vector<std::int64_t>& dims);
/// Shape from dims [first, last).
vecnorm::Shape shape_of(const std::vector<std::int64_t>& dims, std::size_t first, std::size_t last);

}  // namespace vncli
