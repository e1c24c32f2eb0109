// apps/cli.cpp -- see cli.hpp.
#include "cli.hpp"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace vncli {

Interrupted::Interrupted(int signal)
    : std::runtime_error(std::string("interrupted by ") +
                         (signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : signal == SIGHUP ? "SIGHUP" : "a signal") +
                         "; no output was written"),
      signal_(signal) {}

std::string library_message(const std::exception& e) {
  std::string_view m = e.what();
  constexpr std::string_view prefix = "vecnorm: ";
  if (m.substr(0, prefix.size()) == prefix) m.remove_prefix(prefix.size());
  return std::string(m);
}

// ---------------------------------------------------------------- options

std::vector<std::string> parse_options(int argc, char** argv, int first, const std::string& command,
                                       const std::vector<OptionSpec>& specs) {
  std::vector<std::string> positional;
  const std::string see = " (see 'vecnorm " + command + " --help')";
  bool options_done = false;
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    std::string name = arg, value;
    bool has_value = false;
    if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (name == "-h") name = "--help";
    const OptionSpec* spec = nullptr;
    for (const auto& s : specs)
      if (s.name == name) spec = &s;
    if (spec == nullptr) throw UsageError("unknown option '" + name + "' for 'vecnorm " + command + "'" + see);
    if (spec->takes_value) {
      if (!has_value) {
        if (i + 1 >= argc) throw UsageError("option " + name + " expects a value" + see);
        value = argv[++i];
      }
    } else if (has_value) {
      throw UsageError("option " + name + " takes no value, got '" + value + "'" + see);
    }
    spec->apply(value);
  }
  return positional;
}

std::int64_t parse_int(const std::string& text, const std::string& option, std::int64_t min_value) {
  std::int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || ptr != end || v < min_value)
    throw UsageError("option " + option + " expects an integer >= " + std::to_string(min_value) + ", got '" + text +
                     "'");
  return v;
}

double parse_double(const std::string& text, const std::string& option) {
  // strtod accepts leading spaces, hex and "nan"; require a plain finite decimal number.
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) || end != text.c_str() + text.size() ||
      !std::isfinite(v))
    throw UsageError("option " + option + " expects a finite number, got '" + text + "'");
  return v;
}

vecnorm::Estimator parse_estimator(const std::string& text, const std::string& option) {
  if (text == "torchrl") return vecnorm::Estimator::torchrl;
  if (text == "stable") return vecnorm::Estimator::stable;
  throw UsageError("option " + option + " expects torchrl or stable, got '" + text + "'");
}

vecnorm::NonFinite parse_nonfinite(const std::string& text, const std::string& option) {
  if (text == "propagate") return vecnorm::NonFinite::propagate;
  if (text == "skip") return vecnorm::NonFinite::skip;
  if (text == "error") return vecnorm::NonFinite::error;
  throw UsageError("option " + option + " expects propagate, skip or error, got '" + text + "'");
}

vecnorm::ScaleForm parse_scale(const std::string& text, const std::string& option) {
  if (text == "clamp") return vecnorm::ScaleForm::clamp;
  if (text == "sqrt_var_plus_eps") return vecnorm::ScaleForm::sqrt_var_plus_eps;
  if (text == "std_plus_eps") return vecnorm::ScaleForm::std_plus_eps;
  throw UsageError("option " + option + " expects clamp, sqrt_var_plus_eps or std_plus_eps, got '" + text + "'");
}

vecnorm::Backend parse_backend(const std::string& text, const std::string& option) {
  if (text == "cpu") return vecnorm::Backend::cpu;
  if (text == "cuda") return vecnorm::Backend::cuda;
  if (text == "auto") return vecnorm::Backend::automatic;
  throw UsageError("option " + option + " expects cpu, cuda or auto, got '" + text + "'");
}

std::optional<vecnorm::DType> parse_stats_dtype(const std::string& text, const std::string& option) {
  if (text == "float32") return vecnorm::DType::float32;
  if (text == "float64") return vecnorm::DType::float64;
  if (text == "auto") return std::nullopt;
  throw UsageError("option " + option + " expects auto, float32 or float64, got '" + text + "'");
}

vecnorm::Backend resolve_backend(vecnorm::Backend requested) {
  switch (requested) {
    case vecnorm::Backend::cpu:
      return vecnorm::Backend::cpu;
    case vecnorm::Backend::automatic:
      return vecnorm::cuda_available() ? vecnorm::Backend::cuda : vecnorm::Backend::cpu;
    case vecnorm::Backend::cuda:
      break;
  }
  if (!vecnorm::cuda_built())
    throw InputError("--backend cuda: this build of vecnorm has no CUDA backend (use --backend cpu or auto)");
  if (!vecnorm::cuda_available())
    throw InputError("--backend cuda: no usable CUDA device (use --backend cpu or auto)");
  return vecnorm::Backend::cuda;
}

// ---------------------------------------------------------------- progress

bool is_terminal(int fd) { return ::isatty(fd) == 1; }

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string label, std::int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled && total > 0), start_(now_seconds()) {}

Progress::~Progress() { clear(); }

void Progress::update(std::int64_t done) {
  if (!enabled_) return;
  const double t = now_seconds();
  if (done < total_ && t - last_ < 0.1) return;
  if (done == last_done_) return;
  last_ = t;
  last_done_ = done;
  draw(done);
}

void Progress::draw(std::int64_t done) {
  constexpr int width = 30;
  const double frac = static_cast<double>(done) / static_cast<double>(total_);
  const int filled = static_cast<int>(frac * width);
  char bar[width + 1];
  for (int i = 0; i < width; ++i) bar[i] = i < filled ? '#' : '.';
  bar[width] = '\0';
  const double elapsed = now_seconds() - start_;
  char eta[48] = "";
  if (done > 0 && done < total_) {
    const double left = elapsed / static_cast<double>(done) * static_cast<double>(total_ - done);
    std::snprintf(eta, sizeof eta, ", %.0f s left", std::ceil(left));
  }
  std::fprintf(stderr, "\r\033[K%s [%s] %3d%% %lld/%lld steps%s", label_.c_str(), bar, static_cast<int>(frac * 100),
               static_cast<long long>(done), static_cast<long long>(total_), eta);
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::clear() {
  if (!drawn_) return;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  drawn_ = false;
  last_ = -1;
  last_done_ = -1;
}

// ---------------------------------------------------------------- interrupts

namespace {
volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_signal(int sig) { g_signal = sig; }
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_old[3];
}  // namespace

InterruptGuard::InterruptGuard() {
  g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &sa, &g_old[i]);
}

InterruptGuard::~InterruptGuard() {
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &g_old[i], nullptr);
}

void check_interrupt() {
  if (g_signal != 0) throw Interrupted(g_signal);
}

// ---------------------------------------------------------------- JSON

void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

void json_number(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[32];
  const auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc() ? ptr : buf);
}

std::string shortest(double v) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  const auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, ec == std::errc() ? ptr : buf);
}

void json_int(std::string& out, std::int64_t v) {
  char buf[24];
  const auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc() ? ptr : buf);
}

void json_shape(std::string& out, const vecnorm::Shape& shape) {
  out += '[';
  for (int i = 0; i < shape.ndim(); ++i) {
    if (i) out += ", ";
    json_int(out, shape[i]);
  }
  out += ']';
}

void json_numbers(std::string& out, const std::vector<double>& values) {
  out += '[';
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out += ", ";
    json_number(out, values[i]);
  }
  out += ']';
}

void json_ints(std::string& out, const std::vector<std::int64_t>& values) {
  out += '[';
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out += ", ";
    json_int(out, values[i]);
  }
  out += ']';
}

// ---------------------------------------------------------------- memory

HostBytes::HostBytes(std::size_t bytes) : size_(bytes) {
  constexpr std::size_t align = 64;
  const std::size_t alloc = (bytes + align - 1) / align * align + align;  // never 0
  void* p = std::aligned_alloc(align, alloc);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, alloc);
  data_.reset(static_cast<std::byte*>(p));
}

void HostBytes::Free::operator()(std::byte* p) const noexcept { std::free(p); }

// ---------------------------------------------------------------- helpers

std::string dims_str(const std::vector<std::int64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

vecnorm::Shape shape_of(const std::vector<std::int64_t>& dims, std::size_t first, std::size_t last) {
  return vecnorm::Shape::from(dims.data() + first, static_cast<int>(last - first));
}

}  // namespace vncli
