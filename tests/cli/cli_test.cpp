// tests/cli/cli_test.cpp -- the `vecnorm` command, run as a child process.
//
// Inputs are .npy files written here (by this file's own writer, not the
// command's), the command is started with posix_spawn, and its outputs are
// compared with the double-precision reference (tests/reference) through the
// tolerance model of tests/support/check.hpp. No expected value ever comes
// from the command's own output.
//
// Groups:
//   Replay*     every mode (per-element, pooled, stateless) x both estimators,
//               --freeze-after, @FIRST_STEP keys, integer / float64 / float16
//               inputs, batch dims 0 and 2, nested keys, default options,
//               float64 statistics, .npy versions 2 and 3
//   State*      --save-state, inspect (table and JSON), --load-state round trips
//   BadInput*   one test per bad input: non-zero exit, one line on stderr that
//               names the problem, and no file left in --out
//   Demo, Help, Interrupt, Emulated* (the CUDA path under the SIMT emulator)
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <vecnorm/checkpoint.hpp>
#include <vecnorm/reward.hpp>
#include <vecnorm/tensor.hpp>

#include "reference/reference.hpp"
#include "support/check.hpp"
#include "support/data.hpp"
#include "support/dtypes.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using vecnorm::DType;

// ---------------------------------------------------------------- processes

struct RunResult {
  int code = -1;  ///< exit status, or 128 + signal
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Starts `exe args...` with stdout/stderr redirected to files in `dir`.
pid_t spawn(const std::string& exe, const std::vector<std::string>& args, const fs::path& dir) {
  std::vector<std::string> all = {exe};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const std::string out = (dir / "stdout.txt").string(), err = (dir / "stderr.txt").string();
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("posix_spawn " + exe + ": " + std::strerror(rc));
  return pid;
}

/// Runs `exe args...` with stderr on a pseudo-terminal; returns what it wrote
/// there, or nothing when this machine has no pseudo-terminals.
std::optional<std::string> run_with_terminal_stderr(const std::string& exe, const std::vector<std::string>& args,
                                                    const fs::path& dir, int& code) {
  int master = -1, slave = -1;
  if (openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) return std::nullopt;
  std::vector<std::string> all = {exe};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  const std::string out = (dir / "stdout.txt").string();
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, slave, 2);
  posix_spawn_file_actions_addclose(&fa, master);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(slave);
  if (rc != 0) throw std::runtime_error("posix_spawn " + exe + ": " + std::strerror(rc));
  std::string text;
  for (;;) {  // drain the terminal until the child has closed it
    pollfd p{master, POLLIN, 0};
    if (poll(&p, 1, 20000) <= 0) break;
    char buf[4096];
    const ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  close(master);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return text;
}

RunResult wait_for(pid_t pid, const fs::path& dir) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  RunResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(dir / "stdout.txt");
  r.err = slurp(dir / "stderr.txt");
  return r;
}

RunResult run_exe(const std::string& exe, const std::vector<std::string>& args, const fs::path& dir) {
  return wait_for(spawn(exe, args, dir), dir);
}

std::string describe(const RunResult& r) {
  return "exit " + std::to_string(r.code) + "\n--- stdout (" + std::to_string(r.out.size()) + " bytes)\n" +
         r.out.substr(0, 2000) + "\n--- stderr\n" + r.err;
}

/// A fresh directory, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "vecnorm_cli_XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// ---------------------------------------------------------------- .npy files (the test's own writer and reader)

std::string descr_of(DType d) {
  switch (d) {
    case DType::float16: return "<f2";
    case DType::float32: return "<f4";
    case DType::float64: return "<f8";
    case DType::int32: return "<i4";
    case DType::int64: return "<i8";
    case DType::uint8: return "|u1";
    default: throw std::runtime_error("no .npy descr");
  }
}

std::string shape_tuple(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

/// A .npy file: preamble of `version`, the dict text, padding to 64 bytes.
std::string npy_bytes(const std::string& dict, const std::string& data, int version = 1) {
  const std::size_t pre = version == 1 ? 10 : 12;
  std::string header = dict;
  while ((pre + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  const std::size_t len = header.size();
  out += static_cast<char>(len & 0xff);
  out += static_cast<char>((len >> 8) & 0xff);
  if (version != 1) {
    out += static_cast<char>((len >> 16) & 0xff);
    out += static_cast<char>((len >> 24) & 0xff);
  }
  return out + header + data;
}

std::string dict_of(const std::string& descr, bool fortran, const std::vector<std::int64_t>& shape) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
         ", 'shape': " + shape_tuple(shape) + ", }";
}

std::string data_bytes(DType d, const std::vector<double>& values) {
  const auto b = vntest::encode(d, values);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

void write_npy(const std::string& path, DType d, const std::vector<std::int64_t>& shape,
               const std::vector<double>& values, int version = 1) {
  write_file(path, npy_bytes(dict_of(descr_of(d), false, shape), data_bytes(d, values), version));
}

struct NpyContent {
  std::string descr;
  std::vector<std::int64_t> shape;
  std::vector<double> values;
  bool ok = false;
  std::string error;
};

/// Reads a .npy the command wrote (version 1, our descrs only).
NpyContent read_npy(const std::string& path) {
  NpyContent c;
  const std::string b = slurp(path);
  if (b.size() < 10 || b.compare(0, 6, "\x93NUMPY") != 0 || b[6] != 1 || b[7] != 0) {
    c.error = "bad preamble";
    return c;
  }
  const std::size_t len = static_cast<unsigned char>(b[8]) | static_cast<std::size_t>(static_cast<unsigned char>(b[9])) << 8;
  if ((10 + len) % 64 != 0 || b.size() < 10 + len) {
    c.error = "header length " + std::to_string(len) + " not 64-aligned or past the end";
    return c;
  }
  const std::string h = b.substr(10, len);
  const auto d = h.find("'descr': '");
  const auto s = h.find("'shape': (");
  if (d == std::string::npos || s == std::string::npos || h.find("'fortran_order': False") == std::string::npos ||
      h.back() != '\n') {
    c.error = "unexpected header " + h;
    return c;
  }
  c.descr = h.substr(d + 10, h.find('\'', d + 10) - d - 10);
  std::string dims = h.substr(s + 10, h.find(')', s) - s - 10);
  std::stringstream ss(dims);
  std::string item;
  while (std::getline(ss, item, ','))
    if (item.find_first_not_of(' ') != std::string::npos) c.shape.push_back(std::stoll(item));
  DType dt;
  if (c.descr == "<f4") dt = DType::float32;
  else if (c.descr == "<f8") dt = DType::float64;
  else if (c.descr == "<f2") dt = DType::float16;
  else {
    c.error = "unexpected descr " + c.descr;
    return c;
  }
  std::size_t numel = 1;
  for (auto v : c.shape) numel *= static_cast<std::size_t>(v);
  if (b.size() != 10 + len + numel * vecnorm::dtype_size(dt)) {
    c.error = "file size " + std::to_string(b.size()) + " does not match the header";
    return c;
  }
  std::vector<std::byte> bytes(numel * vecnorm::dtype_size(dt));
  std::memcpy(bytes.data(), b.data() + 10 + len, bytes.size());
  c.values = vntest::decode(dt, bytes);
  c.ok = true;
  return c;
}

// ---------------------------------------------------------------- a small JSON reader

struct Json {
  enum class Kind { null, boolean, number, string, array, object } kind = Kind::null;
  double num = 0;
  bool flag = false;
  std::string str;
  std::vector<Json> items;        ///< array items, or object values
  std::vector<std::string> names; ///< object member names (parallel to items)

  const Json& operator[](const std::string& key) const {
    for (std::size_t i = 0; i < names.size(); ++i)
      if (names[i] == key) return items[i];
    throw std::runtime_error("JSON: no field '" + key + "'");
  }
  bool has(const std::string& key) const { return std::find(names.begin(), names.end(), key) != names.end(); }
  std::vector<double> numbers() const {
    std::vector<double> v;
    for (const auto& i : items) v.push_back(i.kind == Kind::null ? NAN : i.num);
    return v;
  }
  std::vector<std::int64_t> ints() const {
    std::vector<std::int64_t> v;
    for (const auto& i : items) v.push_back(static_cast<std::int64_t>(i.num));
    return v;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}
  Json parse() {
    Json v = value();
    ws();
    if (i_ != s_.size()) fail("trailing text");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(i_));
  }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  std::string string() {
    if (!eat('"')) fail("expected a string");
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (s_[i_] == '\\') {
        ++i_;
        const char e = s_[i_];
        if (e == 'n') out += '\n';
        else if (e == 't') out += '\t';
        else if (e == 'u') {
          out += static_cast<char>(std::stoi(s_.substr(i_ + 1, 4), nullptr, 16));
          i_ += 4;
        } else out += e;
        ++i_;
      } else {
        out += s_[i_++];
      }
    }
    if (!eat('"')) fail("unterminated string");
    return out;
  }
  Json value() {
    ws();
    Json v;
    if (i_ >= s_.size()) fail("unexpected end");
    const char c = s_[i_];
    if (c == '{') {
      ++i_;
      v.kind = Json::Kind::object;
      if (eat('}')) return v;
      do {
        ws();
        v.names.push_back(string());
        if (!eat(':')) fail("expected ':'");
        v.items.push_back(value());
      } while (eat(','));
      if (!eat('}')) fail("expected '}'");
    } else if (c == '[') {
      ++i_;
      v.kind = Json::Kind::array;
      if (eat(']')) return v;
      do v.items.push_back(value());
      while (eat(','));
      if (!eat(']')) fail("expected ']'");
    } else if (c == '"') {
      v.kind = Json::Kind::string;
      v.str = string();
    } else if (s_.compare(i_, 4, "null") == 0) {
      i_ += 4;
    } else if (s_.compare(i_, 4, "true") == 0) {
      v.kind = Json::Kind::boolean;
      v.flag = true;
      i_ += 4;
    } else if (s_.compare(i_, 5, "false") == 0) {
      v.kind = Json::Kind::boolean;
      i_ += 5;
    } else {
      v.kind = Json::Kind::number;
      std::size_t used = 0;
      v.num = std::stod(s_.substr(i_, 40), &used);
      if (used == 0) fail("expected a value");
      i_ += used;
    }
    return v;
  }
  const std::string& s_;
  std::size_t i_ = 0;
};

Json parse_json(const std::string& s) { return JsonParser(s).parse(); }

// ---------------------------------------------------------------- scenarios and the reference replay

enum class Mode { per_element, pooled, stateless };
const char* mode_name(Mode m) { return m == Mode::per_element ? "per_element" : m == Mode::pooled ? "pooled" : "stateless"; }

struct KeyIn {
  std::string name;
  DType dtype = DType::float32;
  std::vector<std::int64_t> shape;  ///< [rows, *batch, *feature]
  std::int64_t first = 0;
  std::vector<double> values;       ///< exact in dtype
  std::string file;                 ///< set by write_inputs
};

struct Scenario {
  Mode mode = Mode::per_element;
  vnref::Estimator estimator = vnref::Estimator::torchrl;
  double decay = 0.9;
  double eps = 1e-4;
  int batch_dims = 1;
  std::optional<std::int64_t> freeze_after;
  /// --stats-dtype; none (the default, auto): float64 statistics for a
  /// float64 key, float32 for the others (docs/cli.md's rule, written out here).
  std::optional<DType> stats;
  bool pass_decay = true;  ///< false: rely on the command's default decay
};

struct KeyExpect {
  std::vector<double> y, y_tol;  ///< over the whole file, row-major
  std::vector<std::int64_t> stats_shape;
  std::int64_t count = 0;        ///< stateful: the key's count; stateless: every element's count
  std::vector<double> loc, loc_tol, scale, scale_tol;
};

std::int64_t prod(const std::vector<std::int64_t>& v, std::size_t a, std::size_t b) {
  std::int64_t n = 1;
  for (std::size_t i = a; i < b; ++i) n *= v[i];
  return n;
}

/// Random data for a key: `rows` rows of batch + feature.
KeyIn make_key(std::mt19937_64& rng, const std::string& name, DType dtype, std::vector<std::int64_t> shape,
               std::int64_t first = 0, int batch_dims = 1) {
  KeyIn k;
  k.name = name;
  k.dtype = dtype;
  k.shape = std::move(shape);
  k.first = first;
  const std::int64_t feat = prod(k.shape, 1 + static_cast<std::size_t>(batch_dims), k.shape.size());
  const auto dist = vntest::random_distribution(rng, feat);
  k.values = vntest::random_values(rng, dtype, prod(k.shape, 0, 1 + static_cast<std::size_t>(batch_dims)), feat, dist);
  return k;
}

/// What the command must compute for `keys` under `s`, from steps [t_begin, T).
/// Rows before t_begin still go through the reference (they are what a
/// --load-state'd run has already seen); expected outputs cover rows from t_begin.
std::map<std::string, KeyExpect> reference_replay(const Scenario& s, const std::vector<KeyIn>& keys) {
  vnref::Config cfg;
  cfg.estimator = s.estimator;
  cfg.decay = s.decay;
  cfg.eps = s.eps;
  const std::size_t nb = static_cast<std::size_t>(s.batch_dims);
  std::int64_t T = 0;
  for (const auto& k : keys) T = std::max(T, k.first + k.shape[0]);
  std::map<std::string, KeyExpect> out;
  for (const auto& k : keys) {
    const DType key_stats = s.stats ? *s.stats : k.dtype == DType::float64 ? DType::float64 : DType::float32;
    const double rtol = vntest::rtol_for(key_stats, static_cast<int>(T));
    const std::int64_t m = prod(k.shape, 1, 1 + nb), F = prod(k.shape, 1 + nb, k.shape.size());
    const std::size_t row = static_cast<std::size_t>(m * F);
    const bool pooled = s.mode == Mode::pooled && nb > 0;
    std::optional<vnref::StatefulKey> sk;
    vnref::StatelessStats ss;
    if (s.mode == Mode::stateless) ss = vnref::StatelessStats::zeros(m * F);
    else sk.emplace(cfg, pooled, F, m);
    KeyExpect e;
    e.y.resize(k.values.size());
    e.y_tol.resize(k.values.size());
    std::vector<vnref::Readout> r;
    for (std::int64_t t = k.first; t < T; ++t) {
      const bool frozen = s.freeze_after && t >= *s.freeze_after;
      const std::size_t at = static_cast<std::size_t>(t - k.first) * row;
      const std::vector<double> stored(k.values.begin() + static_cast<std::ptrdiff_t>(at),
                                       k.values.begin() + static_cast<std::ptrdiff_t>(at + row));
      const std::vector<double> x = vntest::computed_inputs(k.dtype, stored);
      std::vector<double> y;
      if (sk) {
        if (!frozen) sk->update(x, m);
        y = sk->normalize(x, m);
        r = sk->readouts();
      } else {
        if (!frozen) vnref::stateless_update(cfg, ss, x);
        y = vnref::stateless_normalize(cfg, ss, x);
        r = vnref::stateless_readouts(cfg, ss);
      }
      const auto tol = vntest::y_tolerances(r, pooled, F, x, rtol, s.eps, vecnorm::output_dtype(k.dtype));
      std::copy(y.begin(), y.end(), e.y.begin() + static_cast<std::ptrdiff_t>(at));
      std::copy(tol.begin(), tol.end(), e.y_tol.begin() + static_cast<std::ptrdiff_t>(at));
    }
    if (pooled) e.stats_shape.assign(k.shape.begin() + 1 + static_cast<std::ptrdiff_t>(nb), k.shape.end());
    else e.stats_shape.assign(k.shape.begin() + 1, k.shape.end());
    e.count = sk ? sk->count() : (ss.count.empty() ? 0 : ss.count.front());
    if (e.count > 0) {
      if (r.empty()) r = sk ? sk->readouts() : vnref::stateless_readouts(cfg, ss);
      for (const auto& one : r) {
        e.loc.push_back(one.mu);
        e.scale.push_back(one.scale);
      }
      e.loc_tol = vntest::mu_tolerances(r, rtol);
      e.scale_tol = vntest::scale_tolerances(r, rtol, s.eps);
    }
    out[k.name] = std::move(e);
  }
  return out;
}

std::string file_name_of(const std::string& key) {
  std::string n = key;
  for (char& c : n)
    if (c == '/') c = '.';
  return n + ".npy";
}

void write_inputs(const TempDir& dir, std::vector<KeyIn>& keys, int version = 1) {
  for (auto& k : keys) {
    k.file = dir / ("in_" + file_name_of(k.name));
    write_npy(k.file, k.dtype, k.shape, k.values, version);
  }
}

std::string num_str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::vector<std::string> replay_args(const Scenario& s, const std::vector<KeyIn>& keys) {
  std::vector<std::string> a = {"replay"};
  if (s.pass_decay) a.insert(a.end(), {"--decay", num_str(s.decay)});
  if (s.eps != 1e-4) a.insert(a.end(), {"--eps", num_str(s.eps)});
  if (s.estimator == vnref::Estimator::stable) a.insert(a.end(), {"--estimator", "stable"});
  if (s.mode == Mode::pooled) a.push_back("--reduce-batch-dims");
  if (s.mode == Mode::stateless) a.push_back("--stateless");
  if (s.batch_dims != 1) a.insert(a.end(), {"--batch-dims", std::to_string(s.batch_dims)});
  if (s.freeze_after) a.insert(a.end(), {"--freeze-after", std::to_string(*s.freeze_after)});
  if (s.stats) a.insert(a.end(), {"--stats-dtype", vecnorm::to_string(*s.stats)});
  for (const auto& k : keys) a.push_back(k.name + "=" + k.file + (k.first ? "@" + std::to_string(k.first) : ""));
  return a;
}

/// The outputs in `out_dir` against the reference: dtype, shape, values.
void check_outputs(const std::string& out_dir, const std::vector<KeyIn>& keys,
                   const std::map<std::string, KeyExpect>& expect) {
  for (const auto& k : keys) {
    SCOPED_TRACE("key " + k.name);
    const NpyContent c = read_npy(out_dir + "/" + file_name_of(k.name));
    ASSERT_TRUE(c.ok) << c.error;
    EXPECT_EQ(c.descr, descr_of(vecnorm::output_dtype(k.dtype)));
    EXPECT_EQ(c.shape, k.shape);
    const KeyExpect& e = expect.at(k.name);
    EXPECT_TRUE(vntest::AllClose("output of " + k.name, e.y, c.values, e.y_tol));
  }
}

/// The --json object against the reference.
void check_json(const std::string& text, const std::vector<KeyIn>& keys, const std::map<std::string, KeyExpect>& expect,
                bool stateless) {
  Json j;
  ASSERT_NO_THROW(j = parse_json(text)) << text.substr(0, 500);
  ASSERT_EQ(j.kind, Json::Kind::object);
  EXPECT_EQ(j.names.size(), keys.size());
  for (const auto& k : keys) {
    SCOPED_TRACE("JSON key " + k.name);
    ASSERT_TRUE(j.has(k.name));
    const Json& o = j[k.name];
    const KeyExpect& e = expect.at(k.name);
    EXPECT_EQ(o["shape"].ints(), e.stats_shape);
    if (stateless) {
      ASSERT_EQ(o["count"].kind, Json::Kind::array);
      const std::size_t n = static_cast<std::size_t>(prod(e.stats_shape, 0, e.stats_shape.size()));
      EXPECT_EQ(o["count"].ints(), std::vector<std::int64_t>(n, e.count));
    } else {
      ASSERT_EQ(o["count"].kind, Json::Kind::number);
      EXPECT_EQ(static_cast<std::int64_t>(o["count"].num), e.count);
    }
    EXPECT_TRUE(vntest::AllClose("loc of " + k.name, e.loc, o["loc"].numbers(), e.loc_tol));
    EXPECT_TRUE(vntest::AllClose("scale of " + k.name, e.scale, o["scale"].numbers(), e.scale_tol));
  }
}

const std::string kCli = VECNORM_CLI;

RunResult run(const TempDir& dir, const std::vector<std::string>& args) { return run_exe(kCli, args, dir.path()); }

/// An observation (batch 3, feature [2, 2]) and a reward absent on step 0.
std::vector<KeyIn> obs_and_reward(std::uint64_t seed, std::int64_t T = 12) {
  std::mt19937_64 rng(seed);
  return {make_key(rng, "observation", DType::float32, {T, 3, 2, 2}),
          make_key(rng, "reward", DType::float32, {T - 1, 3}, 1)};
}

/// Runs one replay with --out and --json and checks everything.
void replay_and_check(const std::string& exe, const Scenario& s, std::vector<KeyIn> keys,
                      const std::vector<std::string>& extra = {}) {
  TempDir dir;
  write_inputs(dir, keys);
  auto args = replay_args(s, keys);
  const std::string out = dir / "out";
  args.insert(args.begin() + 1, {"--out", out, "--json"});
  args.insert(args.begin() + 1, extra.begin(), extra.end());
  const RunResult r = run_exe(exe, args, dir.path());
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_EQ(r.err, "");
  const auto expect = reference_replay(s, keys);
  check_outputs(out, keys, expect);
  check_json(r.out, keys, expect, s.mode == Mode::stateless);
  // Nothing but the outputs in --out (no temporary files).
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(out)) {
    ++files;
    EXPECT_EQ(e.path().extension(), ".npy") << e.path();
  }
  EXPECT_EQ(files, keys.size());
}

// ---------------------------------------------------------------- replay: modes x estimators

using ModeEstimator = std::tuple<Mode, vnref::Estimator>;
std::string mode_estimator_name(const ::testing::TestParamInfo<ModeEstimator>& p) {
  return std::string(mode_name(std::get<0>(p.param))) +
         (std::get<1>(p.param) == vnref::Estimator::torchrl ? "_torchrl" : "_stable");
}

class Replay : public ::testing::TestWithParam<ModeEstimator> {};

TEST_P(Replay, OutputsAndJsonMatchReference) {
  Scenario s;
  s.mode = std::get<0>(GetParam());
  s.estimator = std::get<1>(GetParam());
  replay_and_check(kCli, s, obs_and_reward(11 + static_cast<int>(s.mode)), {"--backend", "cpu"});
}

TEST_P(Replay, FreezeAfter) {
  Scenario s;
  s.mode = std::get<0>(GetParam());
  s.estimator = std::get<1>(GetParam());
  s.freeze_after = 5;
  replay_and_check(kCli, s, obs_and_reward(21));
}

TEST_P(Replay, TwoBatchDimsNestedKey) {
  Scenario s;
  s.mode = std::get<0>(GetParam());
  s.estimator = std::get<1>(GetParam());
  s.batch_dims = 2;
  std::mt19937_64 rng(31);
  replay_and_check(kCli, s,
                   {make_key(rng, "agents/observation", DType::float32, {9, 2, 3, 4}, 0, 2),
                    make_key(rng, "agents/reward", DType::float32, {7, 2, 3}, 2, 2)});
}

TEST_P(Replay, StateRoundTrip) {
  // Steps 0..6 saved, inspected, then steps 7..11 from the saved state: the
  // same outputs and statistics as one replay of steps 0..11.
  Scenario s;
  s.mode = std::get<0>(GetParam());
  s.estimator = std::get<1>(GetParam());
  const std::int64_t T = 12, T1 = 7;
  const auto keys = obs_and_reward(41, T);
  const auto expect = reference_replay(s, keys);
  TempDir dir;
  // First part: rows [0, T1) of observation, [0, T1-1) of reward (from step 1).
  std::vector<KeyIn> first = keys, second = keys;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const std::int64_t rows1 = T1 - keys[i].first;
    const std::size_t row = keys[i].values.size() / static_cast<std::size_t>(keys[i].shape[0]);
    first[i].shape[0] = rows1;
    first[i].values.resize(static_cast<std::size_t>(rows1) * row);
    second[i].shape[0] = keys[i].shape[0] - rows1;
    second[i].first = 0;
    second[i].values.erase(second[i].values.begin(), second[i].values.begin() + static_cast<std::ptrdiff_t>(rows1 * row));
    first[i].file = dir / ("a_" + keys[i].name + ".npy");
    second[i].file = dir / ("b_" + keys[i].name + ".npy");
    write_npy(first[i].file, first[i].dtype, first[i].shape, first[i].values);
    write_npy(second[i].file, second[i].dtype, second[i].shape, second[i].values);
  }
  const std::string state = dir / "state.vnck";
  auto args1 = replay_args(s, first);
  args1.insert(args1.begin() + 1, {"--save-state", state});
  const RunResult r1 = run(dir, args1);
  ASSERT_EQ(r1.code, 0) << describe(r1);

  // inspect --json: the statistics after T1 steps.
  Scenario s1 = s;
  const auto expect1 = reference_replay(s1, first);
  const RunResult ri = run(dir, {"inspect", "--json", state});
  ASSERT_EQ(ri.code, 0) << describe(ri);
  Json j;
  ASSERT_NO_THROW(j = parse_json(ri.out)) << ri.out;
  EXPECT_EQ(j["estimator"].str, s.estimator == vnref::Estimator::torchrl ? "torchrl" : "stable");
  EXPECT_DOUBLE_EQ(j["decay"].num, s.decay);
  EXPECT_EQ(j["reduce_batch_dims"].flag, s.mode == Mode::pooled);
  EXPECT_EQ(j["stats_dtype"].str, "float32");
  EXPECT_EQ(j["batch_shape"].ints(), std::vector<std::int64_t>{3});
  for (const auto& k : first) {
    SCOPED_TRACE("inspect " + k.name);
    const Json& o = j["keys"][k.name];
    const KeyExpect& e = expect1.at(k.name);
    EXPECT_EQ(o["dtype"].str, "float32");
    EXPECT_EQ(o["shape"].ints(), e.stats_shape);
    EXPECT_EQ(static_cast<std::int64_t>(o["count"].num), e.count);
    EXPECT_TRUE(vntest::AllClose("loc", e.loc, o["loc"].numbers(), e.loc_tol));
    EXPECT_TRUE(vntest::AllClose("scale", e.scale, o["scale"].numbers(), e.scale_tol));
  }
  // The table names every key and its count.
  const RunResult rt = run(dir, {"inspect", state});
  ASSERT_EQ(rt.code, 0) << describe(rt);
  EXPECT_NE(rt.out.find(s.estimator == vnref::Estimator::torchrl ? "torchrl" : "stable"), std::string::npos) << rt.out;
  for (const auto& k : first) {
    const std::string head = "key '" + k.name + "'";
    EXPECT_NE(rt.out.find(head), std::string::npos) << rt.out;
    EXPECT_NE(rt.out.find("count " + std::to_string(expect1.at(k.name).count)), std::string::npos) << rt.out;
  }

  // Second part from the state; no --estimator/--decay/--reduce-batch-dims:
  // they come from the state file.
  std::vector<std::string> args2 = {"replay", "--load-state", state, "--out", dir / "out", "--json"};
  if (s.mode == Mode::stateless) args2.push_back("--stateless");
  for (const auto& k : second) args2.push_back(k.name + "=" + k.file);
  const RunResult r2 = run(dir, args2);
  ASSERT_EQ(r2.code, 0) << describe(r2);
  // Expected outputs: the rows of the full replay from step T1 on.
  std::map<std::string, KeyExpect> tail = expect;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    KeyExpect& e = tail[keys[i].name];
    const std::size_t skip = first[i].values.size();
    e.y.erase(e.y.begin(), e.y.begin() + static_cast<std::ptrdiff_t>(skip));
    e.y_tol.erase(e.y_tol.begin(), e.y_tol.begin() + static_cast<std::ptrdiff_t>(skip));
  }
  check_outputs(dir / "out", second, tail);
  check_json(r2.out, second, expect, s.mode == Mode::stateless);
}

INSTANTIATE_TEST_SUITE_P(Cli, Replay,
                         ::testing::Combine(::testing::Values(Mode::per_element, Mode::pooled, Mode::stateless),
                                            ::testing::Values(vnref::Estimator::torchrl, vnref::Estimator::stable)),
                         mode_estimator_name);

// ---------------------------------------------------------------- replay: dtypes and options

TEST(ReplayDtypes, IntegerInputsGiveFloat32) {
  std::mt19937_64 rng(51);
  Scenario s;
  replay_and_check(kCli, s,
                   {make_key(rng, "i32", DType::int32, {8, 4, 3}), make_key(rng, "i64", DType::int64, {8, 4, 2}),
                    make_key(rng, "u8", DType::uint8, {8, 4, 5})});
}

TEST(ReplayDtypes, IntegerInputsStatelessStable) {
  std::mt19937_64 rng(52);
  Scenario s;
  s.mode = Mode::stateless;
  s.estimator = vnref::Estimator::stable;
  replay_and_check(kCli, s, {make_key(rng, "i64", DType::int64, {8, 4, 2}), make_key(rng, "u8", DType::uint8, {8, 4})});
}

TEST(ReplayDtypes, Float64AndFloat16KeepTheirDtype) {
  std::mt19937_64 rng(53);
  Scenario s;
  replay_and_check(kCli, s,
                   {make_key(rng, "f64", DType::float64, {10, 5, 3}), make_key(rng, "f16", DType::float16, {10, 5, 3}),
                    make_key(rng, "f16_reward", DType::float16, {9, 5}, 1)});
}

TEST(ReplayDtypes, Float16Pooled) {
  std::mt19937_64 rng(54);
  Scenario s;
  s.mode = Mode::pooled;
  s.estimator = vnref::Estimator::stable;
  replay_and_check(kCli, s, {make_key(rng, "f16", DType::float16, {10, 6, 2}), make_key(rng, "f64", DType::float64, {10, 6})});
}

TEST(ReplayOptions, NoBatchDims) {
  std::mt19937_64 rng(61);
  Scenario s;
  s.batch_dims = 0;
  replay_and_check(kCli, s, {make_key(rng, "obs", DType::float32, {10, 5}, 0, 0)});
}

TEST(ReplayOptions, DefaultDecayAndEps) {
  Scenario s;
  s.decay = 0.9999;
  s.pass_decay = false;
  replay_and_check(kCli, s, obs_and_reward(62), {"--threads", "1"});
}

TEST(ReplayOptions, CumulativeDecayAndLargeEps) {
  Scenario s;
  s.decay = 1.0;
  s.eps = 0.5;
  s.estimator = vnref::Estimator::stable;
  replay_and_check(kCli, s, obs_and_reward(63));
}

TEST(ReplayOptions, Float64Statistics) {
  for (Mode m : {Mode::per_element, Mode::pooled, Mode::stateless}) {
    SCOPED_TRACE(mode_name(m));
    Scenario s;
    s.mode = m;
    s.stats = DType::float64;
    std::mt19937_64 rng(64);
    replay_and_check(kCli, s, {make_key(rng, "obs", DType::float64, {10, 4, 3})});
  }
}

// --stats-dtype float32 pins float32 statistics on a float64 key (auto, the
// default, gives it float64: ReplayDtypes above).
TEST(ReplayOptions, Float32StatisticsPinned) {
  Scenario s;
  s.stats = DType::float32;
  std::mt19937_64 rng(66);
  replay_and_check(kCli, s, {make_key(rng, "obs", DType::float64, {10, 4, 3})});
}

TEST(ReplayOptions, NpyVersions2And3) {
  for (int version : {2, 3}) {
    SCOPED_TRACE("version " + std::to_string(version));
    auto keys = obs_and_reward(65);
    TempDir dir;
    write_inputs(dir, keys, version);
    Scenario s;
    auto args = replay_args(s, keys);
    args.insert(args.begin() + 1, {"--out", dir / "out"});
    const RunResult r = run(dir, args);
    ASSERT_EQ(r.code, 0) << describe(r);
    check_outputs(dir / "out", keys, reference_replay(s, keys));
  }
}

TEST(ReplayOptions, HeaderFormattingVariants) {
  // Double quotes, no trailing comma, Python 2 long ints, keys in another order.
  std::mt19937_64 rng(66);
  std::vector<KeyIn> keys = {make_key(rng, "obs", DType::float32, {6, 2, 3})};
  TempDir dir;
  keys[0].file = dir / "obs.npy";
  write_file(keys[0].file, npy_bytes("{\"shape\": (6L, 2L, 3L), \"fortran_order\": False, \"descr\": \"<f4\"}",
                                     data_bytes(DType::float32, keys[0].values)));
  Scenario s;
  auto args = replay_args(s, keys);
  args.insert(args.begin() + 1, {"--out", dir / "out"});
  const RunResult r = run(dir, args);
  ASSERT_EQ(r.code, 0) << describe(r);
  check_outputs(dir / "out", keys, reference_replay(s, keys));
}

TEST(ReplayOptions, SummaryWithoutJson) {
  auto keys = obs_and_reward(67);
  TempDir dir;
  write_inputs(dir, keys);
  const RunResult r = run(dir, replay_args(Scenario{}, keys));
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_NE(r.out.find("12 steps of 2 keys"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");  // no progress line when stderr is not a terminal
}

TEST(ReplayOptions, ExistingOutputsAreReplaced) {
  auto keys = obs_and_reward(68);
  TempDir dir;
  write_inputs(dir, keys);
  fs::create_directory(dir / "out");
  write_file(dir / "out/observation.npy", "old");
  Scenario s;
  auto args = replay_args(s, keys);
  args.insert(args.begin() + 1, {"--out", dir / "out"});
  const RunResult r = run(dir, args);
  ASSERT_EQ(r.code, 0) << describe(r);
  check_outputs(dir / "out", keys, reference_replay(s, keys));
}

TEST(ReplayOptions, BackendCudaWorksOrFailsCleanly) {
  auto keys = obs_and_reward(69);
  TempDir dir;
  write_inputs(dir, keys);
  Scenario s;
  auto args = replay_args(s, keys);
  args.insert(args.begin() + 1, {"--backend", "cuda", "--out", dir / "out"});
  const RunResult r = run(dir, args);
  if (r.code == 0) {
    check_outputs(dir / "out", keys, reference_replay(s, keys));
  } else {
    EXPECT_EQ(r.code, 1) << describe(r);
    EXPECT_NE(r.err.find("--backend cuda"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "out"));
  }
}

// ---------------------------------------------------------------- the CUDA path under the emulator

#ifdef VECNORM_CLI_EMULATED
class EmulatedReplay : public ::testing::TestWithParam<ModeEstimator> {};

TEST_P(EmulatedReplay, CudaBackendMatchesReference) {
  Scenario s;
  s.mode = std::get<0>(GetParam());
  s.estimator = std::get<1>(GetParam());
  s.freeze_after = 9;
  std::mt19937_64 rng(71);
  replay_and_check(VECNORM_CLI_EMULATED, s,
                   {make_key(rng, "observation", DType::float32, {11, 3, 2}),
                    make_key(rng, "reward", DType::float16, {10, 3}, 1), make_key(rng, "u8", DType::uint8, {11, 3, 2})},
                   {"--backend", "cuda"});
}

INSTANTIATE_TEST_SUITE_P(Cli, EmulatedReplay,
                         ::testing::Combine(::testing::Values(Mode::per_element, Mode::pooled, Mode::stateless),
                                            ::testing::Values(vnref::Estimator::torchrl, vnref::Estimator::stable)),
                         mode_estimator_name);
#endif

// ---------------------------------------------------------------- bad input

/// A failed run: exit `code`, exactly one line "vecnorm: ..." on stderr that
/// contains every one of `words`, nothing on stdout, and nothing in `out_dir`.
void expect_failure(const RunResult& r, int code, const std::vector<std::string>& words, const std::string& out_dir) {
  EXPECT_EQ(r.code, code) << describe(r);
  EXPECT_EQ(r.out, "") << describe(r);
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.rfind("vecnorm: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.back(), '\n') << r.err;
  for (const auto& w : words) EXPECT_NE(r.err.find(w), std::string::npos) << "'" << w << "' not in: " << r.err;
  if (!out_dir.empty() && fs::exists(out_dir)) {
    for (const auto& e : fs::directory_iterator(out_dir))
      ADD_FAILURE() << "left behind in --out: " << e.path().filename();
  }
}

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    keys_ = obs_and_reward(81);
    write_inputs(dir_, keys_);
  }
  /// A replay of observation=<file> (and the good reward) with --out.
  RunResult replay_with(const std::string& obs_file, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"replay", "--out", out()};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("observation=" + obs_file);
    args.push_back("reward=" + keys_[1].file + "@1");
    return run(dir_, args);
  }
  std::string good_obs_bytes() const {
    return npy_bytes(dict_of("<f4", false, keys_[0].shape), data_bytes(DType::float32, keys_[0].values));
  }
  std::string out() const { return dir_ / "out"; }
  TempDir dir_;
  std::vector<KeyIn> keys_;
};

TEST_F(BadInput, TruncatedHeader) {
  const std::string f = dir_ / "trunc_header.npy";
  write_file(f, good_obs_bytes().substr(0, 40));
  expect_failure(replay_with(f), 1, {"trunc_header.npy", "truncated header"}, out());
}

TEST_F(BadInput, TruncatedPreamble) {
  const std::string f = dir_ / "trunc_pre.npy";
  write_file(f, good_obs_bytes().substr(0, 8));
  expect_failure(replay_with(f), 1, {"trunc_pre.npy", "truncated header"}, out());
}

TEST_F(BadInput, TruncatedData) {
  const std::string f = dir_ / "trunc_data.npy";
  const std::string b = good_obs_bytes();
  write_file(f, b.substr(0, b.size() - 5));
  expect_failure(replay_with(f), 1, {"trunc_data.npy", "truncated data"}, out());
}

TEST_F(BadInput, TrailingBytes) {
  const std::string f = dir_ / "long.npy";
  write_file(f, good_obs_bytes() + "xyz");
  expect_failure(replay_with(f), 1, {"long.npy", "3 unexpected bytes after the data"}, out());
}

TEST_F(BadInput, WrongMagic) {
  const std::string f = dir_ / "magic.npy";
  std::string b = good_obs_bytes();
  b[5] = 'X';
  write_file(f, b);
  expect_failure(replay_with(f), 1, {"magic.npy", "not a .npy file"}, out());
}

TEST_F(BadInput, TextFile) {
  const std::string f = dir_ / "notes.txt";
  write_file(f, "hello, world\n");
  expect_failure(replay_with(f), 1, {"notes.txt", "not a .npy file"}, out());
}

TEST_F(BadInput, EmptyFile) {
  const std::string f = dir_ / "empty.npy";
  write_file(f, "");
  expect_failure(replay_with(f), 1, {"empty.npy", "not a .npy file"}, out());
}

TEST_F(BadInput, UnsupportedVersion) {
  const std::string f = dir_ / "v4.npy";
  std::string b = good_obs_bytes();
  b[6] = 4;
  write_file(f, b);
  expect_failure(replay_with(f), 1, {"v4.npy", "version 4.0"}, out());
}

TEST_F(BadInput, BigEndian) {
  const std::string f = dir_ / "big.npy";
  std::string data = data_bytes(DType::float32, keys_[0].values);
  for (std::size_t i = 0; i + 3 < data.size(); i += 4) {
    std::swap(data[i], data[i + 3]);
    std::swap(data[i + 1], data[i + 2]);
  }
  write_file(f, npy_bytes(dict_of(">f4", false, keys_[0].shape), data));
  expect_failure(replay_with(f), 1, {"big.npy", "big-endian", ">f4"}, out());
}

TEST_F(BadInput, FortranOrder) {
  const std::string f = dir_ / "fortran.npy";
  write_file(f, npy_bytes(dict_of("<f4", true, keys_[0].shape), data_bytes(DType::float32, keys_[0].values)));
  expect_failure(replay_with(f), 1, {"fortran.npy", "Fortran"}, out());
}

TEST_F(BadInput, ObjectDtype) {
  const std::string f = dir_ / "object.npy";
  // numpy writes a pickle after the header of an object array; its content does not matter here.
  write_file(f, npy_bytes(dict_of("|O", false, keys_[0].shape), std::string(64, '\x80')));
  expect_failure(replay_with(f), 1, {"object.npy", "object dtype"}, out());
}

TEST_F(BadInput, UnsupportedDtype) {
  const std::string f = dir_ / "int16.npy";
  write_file(f, npy_bytes(dict_of("<i2", false, {12, 3}), std::string(72, '\0')));
  expect_failure(replay_with(f), 1, {"int16.npy", "unsupported dtype '<i2'"}, out());
}

TEST_F(BadInput, StructuredDtype) {
  const std::string f = dir_ / "struct.npy";
  write_file(f, npy_bytes("{'descr': [('a', '<f4'), ('b', '<f4')], 'fortran_order': False, 'shape': (12, 3), }",
                          std::string(288, '\0')));
  expect_failure(replay_with(f), 1, {"struct.npy", "structured"}, out());
}

TEST_F(BadInput, MalformedHeaderDict) {
  const std::string f = dir_ / "noshape.npy";
  write_file(f, npy_bytes("{'descr': '<f4', 'fortran_order': False, }", ""));
  expect_failure(replay_with(f), 1, {"noshape.npy", "no 'shape'"}, out());
  const std::string g = dir_ / "garbage.npy";
  write_file(g, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (12, 3, 2, 2), nonsense", ""));
  expect_failure(replay_with(g), 1, {"garbage.npy", "malformed header"}, out());
}

TEST_F(BadInput, MismatchedT) {
  std::mt19937_64 rng(82);
  KeyIn reward = make_key(rng, "reward", DType::float32, {12, 3});  // 12 rows from step 1: ends at 13
  reward.file = dir_ / "long_reward.npy";
  write_npy(reward.file, reward.dtype, reward.shape, reward.values);
  const RunResult r =
      run(dir_, {"replay", "--out", out(), "observation=" + keys_[0].file, "reward=" + reward.file + "@1"});
  expect_failure(r, 1, {"mismatched number of steps", "key 'observation'", "ends at step 12", "13"}, out());
}

TEST_F(BadInput, MismatchedBatchShape) {
  std::mt19937_64 rng(83);
  KeyIn reward = make_key(rng, "reward", DType::float32, {11, 4});
  reward.file = dir_ / "wide_reward.npy";
  write_npy(reward.file, reward.dtype, reward.shape, reward.values);
  const RunResult r =
      run(dir_, {"replay", "--out", out(), "observation=" + keys_[0].file, "reward=" + reward.file + "@1"});
  expect_failure(r, 1, {"mismatched batch shapes", "key 'reward'", "[4]", "[3]"}, out());
}

TEST_F(BadInput, TooFewDims) {
  std::mt19937_64 rng(84);
  KeyIn flat = make_key(rng, "flat", DType::float32, {12}, 0, 0);
  flat.file = dir_ / "flat.npy";
  write_npy(flat.file, flat.dtype, flat.shape, flat.values);
  const RunResult r = run(dir_, {"replay", "--out", out(), "flat=" + flat.file});
  expect_failure(r, 1, {"key 'flat'", "expected at least 2 dims"}, out());
}

TEST_F(BadInput, MissingFile) {
  expect_failure(replay_with(dir_ / "nope.npy"), 1, {"nope.npy", "cannot open"}, out());
}

TEST_F(BadInput, UnknownOption) {
  expect_failure(replay_with(keys_[0].file, {"--frobnicate"}), 2, {"unknown option '--frobnicate'"}, out());
}

TEST_F(BadInput, BadOptionValues) {
  expect_failure(replay_with(keys_[0].file, {"--decay", "fast"}), 2, {"--decay", "'fast'"}, out());
  expect_failure(replay_with(keys_[0].file, {"--decay", "1.5"}), 2, {"decay", "1.5"}, out());
  expect_failure(replay_with(keys_[0].file, {"--estimator", "welford"}), 2, {"--estimator", "welford"}, out());
  expect_failure(replay_with(keys_[0].file, {"--batch-dims", "-1"}), 2, {"--batch-dims"}, out());
  expect_failure(replay_with(keys_[0].file, {"--json=yes"}), 2, {"--json", "takes no value"}, out());
  expect_failure(replay_with(keys_[0].file, {"--backend", "tpu"}), 2, {"--backend", "tpu"}, out());
}

TEST_F(BadInput, MalformedKeyArguments) {
  expect_failure(run(dir_, {"replay", "--out", out(), keys_[0].file}), 2, {"KEY=FILE.npy"}, out());
  expect_failure(run(dir_, {"replay", "--out", out(), "obs=" + keys_[0].file + "@"}), 2, {"'@'"}, out());
  expect_failure(run(dir_, {"replay", "--out", out(), "obs=" + keys_[0].file, "obs=" + keys_[0].file}), 2,
                 {"key 'obs' is given twice"}, out());
  expect_failure(run(dir_, {"replay", "--out", out()}), 2, {"no input"}, out());
  expect_failure(run(dir_, {"replay", "--out", out(), "a/b=" + keys_[0].file, "a.b=" + keys_[0].file}), 2,
                 {"'a/b'", "'a.b'", "a.b.npy"}, out());
  expect_failure(run(dir_, {"replay", "--out", out(), "a//b=" + keys_[0].file}), 2, {"a//b"}, out());
}

TEST_F(BadInput, StatelessWithReduceBatchDims) {
  expect_failure(replay_with(keys_[0].file, {"--stateless", "--reduce-batch-dims"}), 2,
                 {"--stateless", "--reduce-batch-dims"}, out());
}

TEST_F(BadInput, StateDoesNotMatchTheKeys) {
  const std::string state = dir_ / "state.vnck";
  const RunResult save = run(dir_, {"replay", "--save-state", state, "observation=" + keys_[0].file,
                                    "reward=" + keys_[1].file + "@1"});
  ASSERT_EQ(save.code, 0) << describe(save);
  // A different key name.
  expect_failure(run(dir_, {"replay", "--out", out(), "--load-state", state, "obs=" + keys_[0].file,
                            "reward=" + keys_[1].file + "@1"}),
                 1, {"--load-state", "does not match", "'observation'", "'obs'"}, out());
  // One key fewer.
  expect_failure(run(dir_, {"replay", "--out", out(), "--load-state", state, "observation=" + keys_[0].file}), 1,
                 {"does not match", "number of keys"}, out());
  // Another feature shape.
  std::mt19937_64 rng(85);
  KeyIn other = make_key(rng, "observation", DType::float32, {12, 3, 4});
  other.file = dir_ / "other_obs.npy";
  write_npy(other.file, other.dtype, other.shape, other.values);
  expect_failure(run(dir_, {"replay", "--out", out(), "--load-state", state, "observation=" + other.file,
                            "reward=" + keys_[1].file + "@1"}),
                 1, {"does not match", "key 'observation'", "feature shape", "[4]", "[2, 2]"}, out());
  // Another estimator given explicitly.
  expect_failure(replay_with(keys_[0].file, {"--load-state", state, "--estimator", "stable"}), 1,
                 {"does not match", "estimator"}, out());
  // Another dtype.
  KeyIn f64 = keys_[0];
  f64.file = dir_ / "obs64.npy";
  write_npy(f64.file, DType::float64, f64.shape, f64.values);
  expect_failure(replay_with(f64.file, {"--load-state", state}), 1, {"does not match", "dtype", "float64"}, out());
}

TEST_F(BadInput, BadStateFile) {
  const std::string bad = dir_ / "bad.vnck";
  write_file(bad, "VNRMCKPT but not really a checkpoint");
  expect_failure(replay_with(keys_[0].file, {"--load-state", bad}), 1, {"bad.vnck"}, out());
  expect_failure(run(dir_, {"inspect", bad}), 1, {"bad.vnck"}, "");
  expect_failure(run(dir_, {"inspect", dir_ / "missing.vnck"}), 1, {"missing.vnck"}, "");
  expect_failure(run(dir_, {"inspect"}), 2, {"expected one state FILE"}, "");
}

TEST_F(BadInput, FrozenBeforeAnyUpdate) {
  expect_failure(replay_with(keys_[0].file, {"--freeze-after", "0"}), 1, {"step 0", "observation"}, out());
  expect_failure(replay_with(keys_[0].file, {"--freeze-after", "1"}), 1, {"step 1", "reward"}, out());
  expect_failure(replay_with(keys_[0].file, {"--freeze-after", "0", "--stateless"}), 1, {"step 0", "observation"},
                 out());
}

TEST_F(BadInput, OutIsNotADirectory) {
  const std::string file = dir_ / "a_file";
  write_file(file, "x");
  const RunResult r = run(dir_, {"replay", "--out", file, "observation=" + keys_[0].file});
  expect_failure(r, 1, {"--out", "not a directory"}, "");
  EXPECT_EQ(slurp(file), "x");
}

TEST_F(BadInput, ExistingOutputsUntouchedOnError) {
  fs::create_directory(out());
  write_file(out() + "/observation.npy", "previous");
  const std::string f = dir_ / "trunc_data.npy";
  const std::string b = good_obs_bytes();
  write_file(f, b.substr(0, b.size() - 1));
  const RunResult r = replay_with(f);
  EXPECT_EQ(r.code, 1) << describe(r);
  EXPECT_EQ(slurp(out() + "/observation.npy"), "previous");
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(out())) ++n;
  EXPECT_EQ(n, 1u);
}

TEST_F(BadInput, UnknownCommand) {
  expect_failure(run(dir_, {"normalize"}), 2, {"unknown command 'normalize'"}, "");
  expect_failure(run(dir_, {"demo", "--envs", "0"}), 2, {"--envs"}, "");
  expect_failure(run(dir_, {"inspect", "--verbose", "x"}), 2, {"unknown option '--verbose'"}, "");
}

// ---------------------------------------------------------------- anchor options

// --scale, --clip, --prior-count, --unbiased reach the normalizer (SB3's
// settings, pooled: one batch of 5 rows of [-2, -1, 0, 1, 10] per step), the
// saved state keeps them (inspect), and a bad value is named.
TEST(AnchorFlags, ReplayUsesThemAndTheStateKeepsThem) {
  TempDir dir;
  const std::int64_t T = 3, B = 5;
  const double row[B] = {-2.0, -1.0, 0.0, 1.0, 10.0};
  std::vector<double> v;
  for (std::int64_t t = 0; t < T; ++t) v.insert(v.end(), row, row + B);
  const std::string in = dir / "obs.npy", out = dir / "out", state = dir / "s.vnck";
  write_npy(in, DType::float32, {T, B}, v);
  const RunResult r = run(dir, {"replay", "--estimator", "stable", "--decay", "1", "--reduce-batch-dims", "--scale",
                                "sqrt_var_plus_eps", "--eps", "1e-8", "--clip", "1.5", "--prior-count", "1e-4",
                                "--unbiased", "--save-state", state, "--out", out, "obs=" + in});
  ASSERT_EQ(r.code, 0) << describe(r);
  // The naive reference: the prior (1e-4, 0, 1) merged with 3 batches of mean
  // 1.6 and unbiased variance sum((x - 1.6)^2) / 4 = 93.2 / 4.
  double n = 1e-4, mean = 0.0, var = 1.0;
  for (std::int64_t t = 0; t < T; ++t) {
    const double bm = 1.6, bv = 93.2 / 4.0, m = 5.0, tot = n + m, d = bm - mean;
    const double m2 = var * n + bv * m + d * d * n * m / tot;
    mean += d * m / tot;
    var = m2 / tot;
    n = tot;
  }
  const NpyContent c = read_npy(out + "/obs.npy");
  ASSERT_TRUE(c.ok) << c.error;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < B; ++i) {
      const double want = std::clamp((row[i] - mean) / std::sqrt(var + 1e-8), -1.5, 1.5);
      // Step t normalizes with the statistics after t + 1 batches: compare the last step only.
      if (t == T - 1) {
        EXPECT_NEAR(c.values[static_cast<std::size_t>(t * B + i)], want, 1e-5) << "row " << i;
      }
    }
  const RunResult ri = run(dir, {"inspect", "--json", state});
  ASSERT_EQ(ri.code, 0) << describe(ri);
  Json j;
  ASSERT_NO_THROW(j = parse_json(ri.out)) << ri.out;
  EXPECT_EQ(j["scale"].str, "sqrt_var_plus_eps");
  EXPECT_DOUBLE_EQ(j["clip"].num, 1.5);
  EXPECT_DOUBLE_EQ(j["prior_count"].num, 1e-4);
  EXPECT_TRUE(j["unbiased"].flag);
  expect_failure(run(dir, {"replay", "--scale", "std", "obs=" + in}), 2,
                 {"--scale expects clamp, sqrt_var_plus_eps or std_plus_eps, got 'std'"}, "");
  expect_failure(run(dir, {"replay", "--prior-count", "1", "obs=" + in}), 2,
                 {"prior_count: expected 0 with estimator torchrl"}, "");
}

// With a prior, a key never updated has the prior's map: --freeze-after 0
// normalizes every step with it (x / sqrt(1 + eps)), the report and inspect
// give loc 0 and scale sqrt(1 + eps); without a prior that run fails.
TEST(AnchorFlags, APriorNormalizesBeforeTheFirstUpdate) {
  TempDir dir;
  const std::int64_t T = 2, B = 4;
  const std::vector<double> v = {-2.0, 0.5, 3.0, 100.0, 1.0, -1.0, 0.25, 7.0};
  const std::string in = dir / "obs.npy", out = dir / "out", state = dir / "s.vnck";
  write_npy(in, DType::float32, {T, B}, v);
  const RunResult r = run(dir, {"replay", "--estimator", "stable", "--decay", "1", "--reduce-batch-dims", "--scale",
                                "sqrt_var_plus_eps", "--eps", "1e-8", "--prior-count", "1e-4", "--freeze-after", "0",
                                "--save-state", state, "--out", out, "--json", "obs=" + in});
  ASSERT_EQ(r.code, 0) << describe(r);
  const NpyContent c = read_npy(out + "/obs.npy");
  ASSERT_TRUE(c.ok) << c.error;
  for (std::size_t j = 0; j < v.size(); ++j) EXPECT_NEAR(c.values[j], v[j] / std::sqrt(1.0 + 1e-8), 1e-6) << j;
  Json rj;
  ASSERT_NO_THROW(rj = parse_json(r.out)) << r.out;
  EXPECT_EQ(rj["obs"]["count"].num, 0.0);
  ASSERT_EQ(rj["obs"]["loc"].items.size(), 1u) << r.out;
  EXPECT_EQ(rj["obs"]["loc"].items[0].num, 0.0) << r.out;
  EXPECT_NEAR(rj["obs"]["scale"].items[0].num, std::sqrt(1.0 + 1e-8), 1e-7) << r.out;  // (float32 statistics)
  const RunResult ri = run(dir, {"inspect", "--json", state});
  ASSERT_EQ(ri.code, 0) << describe(ri);
  Json j;
  ASSERT_NO_THROW(j = parse_json(ri.out)) << ri.out;
  EXPECT_EQ(j["keys"]["obs"]["loc"].items[0].num, 0.0) << ri.out;
  const RunResult rt = run(dir, {"inspect", state});
  ASSERT_EQ(rt.code, 0) << describe(rt);
  EXPECT_EQ(rt.out.find("never updated"), std::string::npos) << rt.out;
  expect_failure(run(dir, {"replay", "--freeze-after", "0", "--out", dir / "bad", "obs=" + in}), 1,
                 {"cannot normalize: expected count > 0, got 0"}, dir / "bad");
}

// --until reaches the normalizer (pooled, 5 rows a step, bound 7: steps 0 and
// 1 are merged, count 10, then no more), the saved state keeps it, and
// --stateless refuses it naming the option.
TEST(AnchorFlags, UntilStopsTheUpdatesAndTheStateKeepsIt) {
  TempDir dir;
  const std::int64_t T = 4, B = 5;
  const double row[B] = {-2.0, -1.0, 0.0, 1.0, 10.0};
  std::vector<double> v;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < B; ++i) v.push_back(row[i] + 10.0 * static_cast<double>(t));
  const std::string in = dir / "obs.npy", out = dir / "out", state = dir / "s.vnck";
  write_npy(in, DType::float32, {T, B}, v);
  const RunResult r = run(dir, {"replay", "--estimator", "stable", "--decay", "1", "--reduce-batch-dims", "--scale",
                                "sqrt_var_plus_eps", "--eps", "1e-8", "--until", "7", "--save-state", state, "--out",
                                out, "obs=" + in});
  ASSERT_EQ(r.code, 0) << describe(r);
  // The naive reference: the mean and population variance of steps 0 and 1.
  double mean = 0.0, var = 0.0;
  for (std::int64_t i = 0; i < 2 * B; ++i) mean += v[static_cast<std::size_t>(i)] / (2.0 * B);
  for (std::int64_t i = 0; i < 2 * B; ++i) {
    const double d = v[static_cast<std::size_t>(i)] - mean;
    var += d * d / (2.0 * B);
  }
  const NpyContent c = read_npy(out + "/obs.npy");
  ASSERT_TRUE(c.ok) << c.error;
  for (std::int64_t t = 1; t < T; ++t)
    for (std::int64_t i = 0; i < B; ++i) {
      const std::size_t j = static_cast<std::size_t>(t * B + i);
      EXPECT_NEAR(c.values[j], (v[j] - mean) / std::sqrt(var + 1e-8), 1e-5) << "step " << t << " row " << i;
    }
  const RunResult ri = run(dir, {"inspect", "--json", state});
  ASSERT_EQ(ri.code, 0) << describe(ri);
  Json j;
  ASSERT_NO_THROW(j = parse_json(ri.out)) << ri.out;
  EXPECT_DOUBLE_EQ(j["until"].num, 7.0);
  expect_failure(run(dir, {"replay", "--stateless", "--until", "7", "obs=" + in}), 2,
                 {"--stateless and --until cannot be combined"}, "");
  expect_failure(run(dir, {"replay", "--until", "-1", "obs=" + in}), 2, {"--until"}, "");
}

// --no-center reaches the normalizer (outputs x / scale, SB3's reward map),
// the saved state keeps it (inspect says so), and a replay that loads the
// state divides without centring as well.
TEST(AnchorFlags, NoCenterDividesOnlyAndTheStateKeepsIt) {
  TempDir dir;
  const std::int64_t T = 3, B = 4;
  const double row[B] = {3.0, 5.0, 6.0, 10.0};
  std::vector<double> v;
  for (std::int64_t t = 0; t < T; ++t) v.insert(v.end(), row, row + B);
  const std::string in = dir / "obs.npy", out = dir / "out", out2 = dir / "out2", state = dir / "s.vnck";
  write_npy(in, DType::float32, {T, B}, v);
  const RunResult r = run(dir, {"replay", "--estimator", "stable", "--decay", "1", "--reduce-batch-dims", "--scale",
                                "sqrt_var_plus_eps", "--eps", "1e-8", "--no-center", "--save-state", state, "--out",
                                out, "obs=" + in});
  ASSERT_EQ(r.code, 0) << describe(r);
  // The naive reference: every step has the same rows, so the statistics
  // after any step are the rows' mean 6 and population variance 6.5.
  const NpyContent c = read_npy(out + "/obs.npy");
  ASSERT_TRUE(c.ok) << c.error;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < B; ++i)
      EXPECT_NEAR(c.values[static_cast<std::size_t>(t * B + i)], row[i] / std::sqrt(6.5 + 1e-8), 1e-6)
          << "step " << t << " row " << i;
  const RunResult ri = run(dir, {"inspect", "--json", state});
  ASSERT_EQ(ri.code, 0) << describe(ri);
  Json j;
  ASSERT_NO_THROW(j = parse_json(ri.out)) << ri.out;
  EXPECT_FALSE(j["center"].flag);
  const RunResult rt = run(dir, {"inspect", state});
  ASSERT_EQ(rt.code, 0) << describe(rt);
  EXPECT_NE(rt.out.find("center        no (y = x / scale)"), std::string::npos) << rt.out;
  // Loaded: the state's map, the same statistics (count 12 + 12, same rows).
  const RunResult r2 = run(dir, {"replay", "--load-state", state, "--out", out2, "obs=" + in});
  ASSERT_EQ(r2.code, 0) << describe(r2);
  const NpyContent c2 = read_npy(out2 + "/obs.npy");
  ASSERT_TRUE(c2.ok) << c2.error;
  for (std::int64_t i = 0; i < B; ++i)
    EXPECT_NEAR(c2.values[static_cast<std::size_t>(i)], row[i] / std::sqrt(6.5 + 1e-8), 1e-6) << "row " << i;
}

// brax's bounds: --max-scale caps the scale, --until-strict leaves out the
// batch that would take the count past --until; the state keeps both.
TEST(AnchorFlags, MaxScaleAndUntilStrictAndTheStateKeepsThem) {
  TempDir dir;
  const std::int64_t T = 4, B = 4;
  const double row[B] = {3.0, 5.0, 6.0, 10.0};  // mean 6, population variance 6.5 (std 2.55)
  std::vector<double> v;
  for (std::int64_t t = 0; t < T; ++t) v.insert(v.end(), row, row + B);
  const std::string in = dir / "obs.npy", out = dir / "out", state = dir / "s.vnck";
  write_npy(in, DType::float32, {T, B}, v);
  for (const bool strict : {false, true}) {
    std::vector<std::string> args = {"replay", "--estimator", "stable", "--decay", "1", "--reduce-batch-dims",
                                     "--max-scale", "2", "--until", "10", "--save-state", state, "--out", out, "--json"};
    if (strict) args.push_back("--until-strict");
    args.push_back("obs=" + in);
    const RunResult r = run(dir, args);
    ASSERT_EQ(r.code, 0) << describe(r);
    // Counts 4, 8, then 12: merged whole (rsl_rl's rule) or left out (strict).
    Json j;
    ASSERT_NO_THROW(j = parse_json(r.out)) << r.out;
    EXPECT_EQ(static_cast<std::int64_t>(j["obs"]["count"].num), strict ? 8 : 12);
    const NpyContent c = read_npy(out + "/obs.npy");
    ASSERT_TRUE(c.ok) << c.error;
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t i = 0; i < B; ++i)
        EXPECT_NEAR(c.values[static_cast<std::size_t>(t * B + i)], (row[i] - 6.0) / 2.0, 1e-6)
            << "step " << t << " row " << i << ": the scale 2.55 bounded to 2";
  }
  const RunResult ri = run(dir, {"inspect", "--json", state});
  ASSERT_EQ(ri.code, 0) << describe(ri);
  Json j;
  ASSERT_NO_THROW(j = parse_json(ri.out)) << ri.out;
  EXPECT_TRUE(j["until_strict"].flag);
  EXPECT_EQ(j["max_scale"].num, 2.0);
  const RunResult rt = run(dir, {"inspect", state});
  ASSERT_EQ(rt.code, 0) << describe(rt);
  EXPECT_NE(rt.out.find("max scale     2"), std::string::npos) << rt.out;
  EXPECT_NE(rt.out.find("until         10 samples (strict"), std::string::npos) << rt.out;
  // --until-strict alone is refused by name.
  const RunResult bad = run(dir, {"replay", "--until-strict", "obs=" + in});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("until_strict"), std::string::npos) << describe(bad);
}

// A RewardScaler's checkpoint (format 6, written by the library): inspect
// prints its statistics and its returns' options; a VecNorm's file says none.
TEST(AnchorFlags, InspectShowsARewardScalersReturns) {
  TempDir dir;
  vecnorm::Options o;
  o.estimator = vecnorm::Estimator::stable;
  o.decay = 1.0;
  o.prior_count = 1e-4;
  o.scale = vecnorm::ScaleForm::sqrt_var_plus_eps;
  o.eps = 1e-8;
  o.reduce_batch_dims = true;
  o.center = false;
  o.stats_dtype = DType::float64;
  vecnorm::RewardScaler rs(o, {0.9, vecnorm::ReturnReset::before},
                           {vecnorm::Shape{3}, {{"reward", vecnorm::Shape{}, DType::float64}}});
  double r[3] = {1.0, 2.0, 3.0}, y[3] = {};
  rs.step({{"reward", vecnorm::ConstTensorView(r, DType::float64, vecnorm::Shape{3}),
            vecnorm::TensorView{y, DType::float64, vecnorm::Shape{3}}}});
  const std::string state = dir / "reward.vnck", plain = dir / "plain.vnck";
  vecnorm::save_state(rs, state);
  vecnorm::save_state(rs.statistics(), plain);
  const RunResult ri = run(dir, {"inspect", "--json", state});
  ASSERT_EQ(ri.code, 0) << describe(ri);
  Json j;
  ASSERT_NO_THROW(j = parse_json(ri.out)) << ri.out;
  EXPECT_EQ(j["returns"]["gamma"].num, 0.9);
  EXPECT_EQ(j["returns"]["reset"].str, "before");
  EXPECT_EQ(j["keys"]["reward"]["count"].num, 3.0);
  const RunResult rt = run(dir, {"inspect", state});
  ASSERT_EQ(rt.code, 0) << describe(rt);
  EXPECT_NE(rt.out.find("returns       a reward scaler's: gamma 0.9, reset before, one per environment of batch [3]"),
            std::string::npos)
      << rt.out;
  const RunResult rp = run(dir, {"inspect", "--json", plain});
  ASSERT_EQ(rp.code, 0) << describe(rp);
  ASSERT_NO_THROW(j = parse_json(rp.out)) << rp.out;
  EXPECT_EQ(j["returns"].kind, Json::Kind::null);
}

// A state whose keys' statistics dtypes differ (the default: a float64 key
// keeps float64 statistics): inspect says so per key, in text and JSON;
// replay takes --stats-dtype auto and names it among the choices.
TEST(AnchorFlags, InspectShowsEachKeysStatisticsDType) {
  TempDir dir;
  vecnorm::VecNorm vn(vecnorm::Options{}, {vecnorm::Shape{2}, {{"pos", vecnorm::Shape{}, DType::float64},
                                                                {"obs", vecnorm::Shape{}, DType::float32}}});
  const double p[2] = {1.0, 2.0};
  const float q[2] = {1.0f, 2.0f};
  double yp[2];
  float yq[2];
  vn.step({{"pos", vecnorm::ConstTensorView(p, DType::float64, vecnorm::Shape{2}), vecnorm::TensorView{yp, DType::float64, vecnorm::Shape{2}}},
           {"obs", vecnorm::ConstTensorView(q, DType::float32, vecnorm::Shape{2}), vecnorm::TensorView{yq, DType::float32, vecnorm::Shape{2}}}});
  const std::string state = dir / "mixed.vnck";
  vecnorm::save_state(vn, state);
  const RunResult ri = run(dir, {"inspect", "--json", state});
  ASSERT_EQ(ri.code, 0) << describe(ri);
  Json j;
  ASSERT_NO_THROW(j = parse_json(ri.out)) << ri.out;
  EXPECT_EQ(j["stats_dtype"].str, "auto");
  EXPECT_EQ(j["keys"]["pos"]["stats_dtype"].str, "float64");
  EXPECT_EQ(j["keys"]["obs"]["stats_dtype"].str, "float32");
  const RunResult rt = run(dir, {"inspect", state});
  ASSERT_EQ(rt.code, 0) << describe(rt);
  EXPECT_NE(rt.out.find("stats dtype   auto (float64 for float64 inputs, float32 for the others)"), std::string::npos)
      << rt.out;
  EXPECT_NE(rt.out.find("key 'pos': float64, feature [], statistics [2] of float64"), std::string::npos) << rt.out;
  EXPECT_NE(rt.out.find("key 'obs': float32, feature [], statistics [2] of float32"), std::string::npos) << rt.out;
  const RunResult rb = run(dir, {"replay", "--stats-dtype", "float16", "obs=" + (dir / "none.npy")});
  EXPECT_NE(rb.code, 0);
  EXPECT_NE(rb.err.find("expects auto, float32 or float64, got 'float16'"), std::string::npos) << describe(rb);
}

/// The builds of the command a test runs, each with its extra arguments: this
/// one, and the one against the emulated CUDA library with --backend cuda
/// where that build exists.
std::vector<std::pair<std::string, std::vector<std::string>>> cli_builds() {
  std::vector<std::pair<std::string, std::vector<std::string>>> runs = {{kCli, {}}};
#ifdef VECNORM_CLI_EMULATED
  runs.push_back({VECNORM_CLI_EMULATED, {"--backend", "cuda"}});
#endif
  return runs;
}

/// A replay's arguments before its inputs: pooled cumulative statistics
/// (stable, decay 1, sqrt(var + 1e-8)) under --mask `mask`, to `out`, with
/// --json, then `extra`.
std::vector<std::string> pooled_masked_replay(const std::string& mask, const std::string& out,
                                              const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"replay", "--estimator", "stable", "--decay", "1", "--reduce-batch-dims",
                                   "--scale", "sqrt_var_plus_eps", "--eps", "1e-8", "--mask", mask, "--out", out,
                                   "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// --mask: a [T, *batch] uint8 row mask; rows with 0 are left out of every
// key's update and still normalized. Against the naive reference (the
// estimator stable at decay 1: the mean and population variance of every kept
// row so far), a step leaving out every row, left-out rows holding NaN; on the
// CPU, and on the CUDA backend under the emulator where that build exists.
/// T steps of B rows of F float32 values (3 (f + row_shift i) + 2 z) and
/// their row mask: step 2 leaves out every row, others the rows with
/// (t + i) % 3 == 0 (none at step 0 when keep_first); left-out rows hold NaN at step 3.
void masked_rows(std::int64_t T, std::int64_t B, std::int64_t F, std::mt19937_64& rng, bool keep_first,
                 double row_shift, std::vector<double>& x, std::vector<double>& mask) {
  std::normal_distribution<double> z(0.0, 1.0);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < B; ++i) {
      const bool keep = (keep_first && t == 0) || (t != 2 && (t + i) % 3 != 0);
      mask.push_back(keep ? 1.0 : 0.0);
      for (std::int64_t f = 0; f < F; ++f) {
        const double v = static_cast<double>(static_cast<float>(
            3.0 * (static_cast<double>(f) + row_shift * static_cast<double>(i)) + 2.0 * z(rng)));
        x.push_back(!keep && t == 3 ? std::nan("") : v);
      }
    }
}

TEST(ReplayMask, LeavesTheMaskedRowsOutOfTheUpdates) {
  TempDir dir;
  const std::int64_t T = 5, B = 6, F = 2;
  std::vector<double> x, mask;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> z(0.0, 1.0);
  masked_rows(T, B, F, rng, false, 0.0, x, mask);
  // A second key from step 2 on (a reward absent on the first steps): its
  // row t - 2 takes the mask's row t.
  std::vector<double> rew;
  for (std::int64_t t = 2; t < T; ++t)
    for (std::int64_t i = 0; i < B; ++i) rew.push_back(static_cast<double>(static_cast<float>(1.0 + z(rng))));
  const std::string in = dir / "obs.npy", m = dir / "mask.npy", rin = dir / "rew.npy";
  write_npy(in, DType::float32, {T, B, F}, x);
  write_npy(rin, DType::float32, {T - 2, B}, rew);
  write_npy(m, DType::uint8, {T, B}, mask);
  const auto runs = cli_builds();
  for (const auto& [cli, extra] : runs) {
    const std::string out = dir / ("out" + std::to_string(extra.size()));
    std::vector<std::string> args = pooled_masked_replay(m, out, extra);
    args.push_back("obs=" + in);
    args.push_back("rew=" + rin + "@2");
    const RunResult r = run_exe(cli, args, dir.path());
    ASSERT_EQ(r.code, 0) << describe(r);
    const NpyContent c = read_npy(out + "/obs.npy");
    ASSERT_TRUE(c.ok) << c.error;
    std::vector<double> kept[F];
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t i = 0; i < B; ++i)
        if (mask[static_cast<std::size_t>(t * B + i)] != 0.0)
          for (std::int64_t f = 0; f < F; ++f) kept[f].push_back(x[static_cast<std::size_t>((t * B + i) * F + f)]);
      for (std::int64_t f = 0; f < F; ++f) {
        double mean = 0.0, var = 0.0;
        for (const double v : kept[f]) mean += v / static_cast<double>(kept[f].size());
        for (const double v : kept[f]) var += (v - mean) * (v - mean) / static_cast<double>(kept[f].size());
        for (std::int64_t i = 0; i < B; ++i) {
          const std::size_t j = static_cast<std::size_t>((t * B + i) * F + f);
          if (std::isnan(x[j])) {
            EXPECT_TRUE(std::isnan(c.values[j])) << "step " << t << " row " << i;  // still produced
            continue;
          }
          EXPECT_NEAR(c.values[j], (x[j] - mean) / std::sqrt(var + 1e-8), 1e-5)
              << cli << " step " << t << " row " << i << " feature " << f;
        }
      }
    }
    const NpyContent cr = read_npy(out + "/rew.npy");
    ASSERT_TRUE(cr.ok) << cr.error;
    std::vector<double> rkept;
    for (std::int64_t t = 2; t < T; ++t) {
      for (std::int64_t i = 0; i < B; ++i)
        if (mask[static_cast<std::size_t>(t * B + i)] != 0.0) rkept.push_back(rew[static_cast<std::size_t>((t - 2) * B + i)]);
      if (rkept.empty()) continue;  // never updated yet: nothing to compare with
      double mean = 0.0, var = 0.0;
      for (const double v : rkept) mean += v / static_cast<double>(rkept.size());
      for (const double v : rkept) var += (v - mean) * (v - mean) / static_cast<double>(rkept.size());
      for (std::int64_t i = 0; i < B; ++i) {
        const std::size_t j = static_cast<std::size_t>((t - 2) * B + i);
        EXPECT_NEAR(cr.values[j], (rew[j] - mean) / std::sqrt(var + 1e-8), 1e-5) << cli << " rew step " << t << " row " << i;
      }
    }
    Json j;
    ASSERT_NO_THROW(j = parse_json(r.out)) << r.out;
    EXPECT_EQ(static_cast<std::int64_t>(j["obs"]["count"].num), static_cast<std::int64_t>(kept[0].size()));
    EXPECT_EQ(static_cast<std::int64_t>(j["rew"]["count"].num), static_cast<std::int64_t>(rkept.size()));
  }
  // A mask of another shape or dtype: one line naming it, nothing written.
  const std::string m3 = dir / "m3.npy", mf = dir / "mf.npy";
  write_npy(m3, DType::uint8, {T, B + 1}, std::vector<double>(static_cast<std::size_t>(T * (B + 1)), 1.0));
  write_npy(mf, DType::float32, {T, B}, mask);
  expect_failure(run(dir, {"replay", "--reduce-batch-dims", "--mask", m3, "--out", dir / "bad", "obs=" + in}), 1,
                 {"--mask", "shape [5, 7], expected [5, 6]"}, dir / "bad");
  expect_failure(run(dir, {"replay", "--reduce-batch-dims", "--mask", mf, "--out", dir / "bad", "obs=" + in}), 1,
                 {"--mask", "dtype float32, expected uint8 '|u1' (numpy: mask.astype(np.uint8)) or int32"},
                 dir / "bad");
  expect_failure(run(dir, {"replay", "--reduce-batch-dims", "--mask", dir / "none.npy", "obs=" + in}), 1,
                 {"--mask: ", "none.npy", "astype(np.uint8)"}, "");
}

// --mask with int32 row weights (pooled statistics): a row of weight w counts
// w times, against the weighted mean and population variance of every row so
// far (stable, decay 1); a row of weight 0 holding NaN is never read; on the
// CPU and on the CUDA backend under the emulator where that build exists.
// Per-element statistics refuse the weights, naming the key; nothing written.
TEST(ReplayMask, Int32RowWeightsCountEachRowWTimes) {
  TempDir dir;
  const std::int64_t T = 4, B = 7, F = 3;
  std::vector<double> x, w;
  std::mt19937_64 rng(9);
  std::normal_distribution<double> z(0.0, 1.0);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < B; ++i) {
      w.push_back(static_cast<double>((t + 2 * i) % 4));  // 0..3
      for (std::int64_t f = 0; f < F; ++f) {
        const double v = static_cast<double>(static_cast<float>(5.0 * static_cast<double>(f) + (1.0 + f) * z(rng)));
        x.push_back(w.back() == 0.0 && f == 1 ? std::nan("") : v);
      }
    }
  const std::string in = dir / "obs.npy", m = dir / "weights.npy";
  write_npy(in, DType::float32, {T, B, F}, x);
  write_npy(m, DType::int32, {T, B}, w);
  const auto runs = cli_builds();
  for (const auto& [cli, extra] : runs) {
    const std::string out = dir / ("out" + std::to_string(extra.size()));
    std::vector<std::string> args = pooled_masked_replay(m, out, extra);
    args.push_back("obs=" + in);
    const RunResult r = run_exe(cli, args, dir.path());
    ASSERT_EQ(r.code, 0) << describe(r);
    const NpyContent c = read_npy(out + "/obs.npy");
    ASSERT_TRUE(c.ok) << c.error;
    double total = 0.0;
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t i = 0; i < B; ++i) total += w[static_cast<std::size_t>(t * B + i)];
      for (std::int64_t f = 0; f < F; ++f) {
        double mean = 0.0, var = 0.0;
        for (std::int64_t u = 0; u <= t; ++u)
          for (std::int64_t i = 0; i < B; ++i) {
            const double wi = w[static_cast<std::size_t>(u * B + i)];
            if (wi > 0) mean += wi * x[static_cast<std::size_t>((u * B + i) * F + f)] / total;
          }
        for (std::int64_t u = 0; u <= t; ++u)
          for (std::int64_t i = 0; i < B; ++i) {
            const double wi = w[static_cast<std::size_t>(u * B + i)];
            const double d = x[static_cast<std::size_t>((u * B + i) * F + f)] - mean;
            if (wi > 0) var += wi * d * d / total;
          }
        for (std::int64_t i = 0; i < B; ++i) {
          const std::size_t j = static_cast<std::size_t>((t * B + i) * F + f);
          if (std::isnan(x[j])) continue;
          EXPECT_NEAR(c.values[j], (x[j] - mean) / std::sqrt(var + 1e-8), 1e-5)
              << cli << " step " << t << " row " << i << " feature " << f;
        }
      }
    }
    Json j;
    ASSERT_NO_THROW(j = parse_json(r.out)) << r.out;
    EXPECT_EQ(j["obs"]["count"].num, total);
  }
  expect_failure(run(dir, {"replay", "--mask", m, "--out", dir / "bad", "obs=" + in}), 1,
                 {"key 'obs': mask: int32 row weights need pooled statistics"}, dir / "bad");
}

// --mask with per-element statistics (stateful and --stateless): the elements
// of a masked row keep their statistics and count and are still normalized
// with them. Against the naive reference per element (stable at decay 1: the
// mean and population variance of that element's kept values so far); on the
// CPU and on the CUDA backend under the emulator where that build exists.
TEST(ReplayMask, PerElementAndStatelessKeepEachElementsOwnCount) {
  TempDir dir;
  const std::int64_t T = 6, B = 5, F = 2;
  std::vector<double> x, mask;
  std::mt19937_64 rng(6);
  masked_rows(T, B, F, rng, true, 1.0, x, mask);  // each element its own mean
  const std::string in = dir / "obs.npy", m = dir / "mask.npy";
  write_npy(in, DType::float32, {T, B, F}, x);
  write_npy(m, DType::uint8, {T, B}, mask);
  std::vector<std::pair<std::string, std::vector<std::string>>> runs = {{kCli, {}}, {kCli, {"--stateless"}}};
#ifdef VECNORM_CLI_EMULATED
  runs.push_back({VECNORM_CLI_EMULATED, {"--backend", "cuda"}});
  runs.push_back({VECNORM_CLI_EMULATED, {"--backend", "cuda", "--stateless"}});
#endif
  int n_run = 0;
  for (const auto& [cli, extra] : runs) {
    const std::string out = dir / ("out" + std::to_string(n_run++));
    std::vector<std::string> args = {"replay", "--estimator", "stable", "--decay", "1", "--scale",
                                     "sqrt_var_plus_eps", "--eps", "1e-8", "--mask", m, "--out", out,
                                     "--save-state", out + ".vnck", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("obs=" + in);
    const RunResult r = run_exe(cli, args, dir.path());
    ASSERT_EQ(r.code, 0) << describe(r);
    const NpyContent c = read_npy(out + "/obs.npy");
    ASSERT_TRUE(c.ok) << c.error;
    std::vector<std::vector<double>> kept(static_cast<std::size_t>(B * F));
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t i = 0; i < B; ++i)
        for (std::int64_t f = 0; f < F; ++f) {
          const std::size_t e = static_cast<std::size_t>(i * F + f), j = static_cast<std::size_t>(t * B * F) + e;
          if (mask[static_cast<std::size_t>(t * B + i)] != 0.0) kept[e].push_back(x[j]);
          if (std::isnan(x[j])) {
            EXPECT_TRUE(std::isnan(c.values[j])) << "step " << t << " row " << i;  // still produced
            continue;
          }
          double mean = 0.0, var = 0.0;
          const double n = static_cast<double>(kept[e].size());
          for (const double v : kept[e]) mean += v / n;
          for (const double v : kept[e]) var += (v - mean) * (v - mean) / n;
          const double want = (x[j] - mean) / std::sqrt(var + 1e-8);
          EXPECT_NEAR(c.values[j], want, 1e-6 * std::max(1.0, std::abs(want)))
              << cli << " " << (extra.empty() ? "" : extra.back()) << " step " << t << " row " << i << " feature "
              << f << " (kept " << mask[static_cast<std::size_t>(t * B + i)] << ")";
        }
    // The report: stateless, each element's own count (the steps that kept its row).
    if (!extra.empty() && extra.back() == "--stateless") {
      Json rj;
      ASSERT_NO_THROW(rj = parse_json(r.out)) << r.out;
      const Json& counts = rj["obs"]["count"];
      ASSERT_EQ(counts.items.size(), kept.size()) << r.out;
      for (std::size_t e = 0; e < kept.size(); ++e)
        EXPECT_EQ(static_cast<std::size_t>(counts.items[e].num), kept[e].size()) << "element " << e << ": " << r.out;
    }
    // The saved state: the key's count is its steps, and every element's
    // count less its skips the rows kept for it (stateless too: its arrays
    // become the same per-element state).
    const RunResult ins = run(dir, {"inspect", "--json", out + ".vnck"});
    ASSERT_EQ(ins.code, 0) << describe(ins);
    Json j;
    ASSERT_NO_THROW(j = parse_json(ins.out)) << ins.out;
    EXPECT_EQ(static_cast<std::int64_t>(j["keys"]["obs"]["count"].num), T) << ins.out;
    std::int64_t left_out = 0;
    for (const double k : mask) left_out += k == 0.0 ? F : 0;
    EXPECT_EQ(static_cast<std::int64_t>(j["keys"]["obs"]["skipped"].num), left_out) << ins.out;
  }
}

// ---------------------------------------------------------------- interrupts

TEST(Interrupt, LeavesNoPartialFile) {
  // A replay long enough to be interrupted (about 50 MB in, 50 MB out).
  TempDir dir;
  const std::int64_t T = 200, B = 256, F = 64;
  std::vector<double> v(static_cast<std::size_t>(T * B * F));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i % 97) * 0.25;
  const std::string in = dir / "big.npy", out = dir / "out";
  write_npy(in, DType::float32, {T, B, F}, v);
  const pid_t pid = spawn(kCli, {"replay", "--out", out, "obs=" + in}, dir.path());
  usleep(30000);
  kill(pid, SIGINT);
  const RunResult r = wait_for(pid, dir.path());
  // Either it finished first (a whole output) or it stopped (nothing at all).
  if (r.code == 0) {
    const NpyContent c = read_npy(out + "/obs.npy");
    EXPECT_TRUE(c.ok) << c.error;
  } else {
    EXPECT_EQ(r.code, 128 + SIGINT) << describe(r);
    // Nothing partial: no output at all, or (the signal came after the outputs
    // were committed, while the process exited: a fast replay) the whole one.
    if (fs::exists(out))
      for (const auto& e : fs::directory_iterator(out)) {
        const NpyContent c = read_npy(e.path().string());
        if (!c.ok || c.values.size() != v.size()) ADD_FAILURE() << "left behind: " << e.path() << " " << c.error;
      }
  }
}

// ---------------------------------------------------------------- progress on a terminal

TEST(Progress, ReplayShowsProgressOnATerminalOnly) {
  auto keys = obs_and_reward(91);
  TempDir dir;
  write_inputs(dir, keys);
  int code = -1;
  const auto got = run_with_terminal_stderr(kCli, replay_args(Scenario{}, keys), dir.path(), code);
  if (!got) GTEST_SKIP() << "no pseudo-terminal (openpty failed)";
  const std::string& tty = *got;
  EXPECT_EQ(code, 0) << tty;
  EXPECT_NE(tty.find("vecnorm replay ["), std::string::npos) << tty;
  EXPECT_NE(tty.find("/12 steps"), std::string::npos) << tty;
  EXPECT_NE(tty.find("\r\033[K"), std::string::npos) << "the line is erased at the end: " << tty;
  // Not a terminal: nothing on stderr (SummaryWithoutJson checks the same).
  const RunResult plain = run(dir, replay_args(Scenario{}, keys));
  EXPECT_EQ(plain.err, "");
}

TEST(Progress, DemoShowsABarOnATerminal) {
  TempDir dir;
  int code = -1;
  const auto got = run_with_terminal_stderr(
      kCli, {"demo", "--envs", "32", "--features", "4", "--steps", "12", "--backend", "cpu"}, dir.path(), code);
  if (!got) GTEST_SKIP() << "no pseudo-terminal (openpty failed)";
  const std::string& tty = *got;
  EXPECT_EQ(code, 0) << tty;
  EXPECT_NE(tty.find("vecnorm demo ["), std::string::npos) << tty;
  EXPECT_NE(slurp(dir.path() / "stdout.txt").find("step     12/12"), std::string::npos);
}

// ---------------------------------------------------------------- demo and help

TEST(Demo, RunsAndReports) {
  TempDir dir;
  const RunResult r = run(dir, {"demo", "--envs", "64", "--features", "6", "--steps", "30", "--backend", "cpu"});
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_NE(r.out.find("vecnorm 0."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step     30/30"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("normalized observation"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("steps/s"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");  // not a terminal: no progress bar
}

TEST(Help, EveryCommandHasHelp) {
  TempDir dir;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--help"}, {"help", "replay"}, {"replay", "--help"}, {"inspect", "--help"},
        {"demo", "--help"}, {"replay", "-h"}}) {
    const RunResult r = run(dir, args);
    EXPECT_EQ(r.code, 0) << args[0] << " " << describe(r);
    EXPECT_EQ(r.out.rfind("usage: vecnorm", 0), 0u) << r.out;
    EXPECT_EQ(r.err, "");
  }
  const RunResult v = run(dir, {"--version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.out.rfind("vecnorm 0.", 0), 0u) << v.out;
  const RunResult none = run(dir, {});
  EXPECT_EQ(none.code, 2);
}

}  // namespace

namespace {

/// SB3's reward scaling in double, independently: per environment R = g R + r
/// (reset before: R = g (1 - done) R + r), the returns' running mean and
/// variance merged per step (Chan, from count 1e-4 of mean 0 and variance 1),
/// y = clip(r / sqrt(var + 1e-8)); reset after: a done then zeroes R. `hold`
/// from step `frozen_from` on: the statistics stay, and the returns with them
/// but for the zeroing at dones (SB3's training = False); otherwise frozen
/// returns advance. Returns the outputs; `returns` holds the final returns.
std::vector<double> sb3_reward_reference(const std::vector<double>& r, const std::vector<double>& done, std::int64_t T,
                                         std::int64_t N, double g, bool before, double clip,
                                         std::int64_t frozen_from, bool hold, std::vector<double>& returns) {
  returns.assign(static_cast<std::size_t>(N), 0.0);
  double mean = 0.0, var = 1.0, count = 1e-4;
  std::vector<double> y;
  for (std::int64_t t = 0; t < T; ++t) {
    const bool frozen = t >= frozen_from;
    for (std::int64_t i = 0; i < N; ++i) {
      double& R = returns[static_cast<std::size_t>(i)];
      const double ri = r[static_cast<std::size_t>(t * N + i)], di = done[static_cast<std::size_t>(t * N + i)];
      if (frozen && hold) continue;
      R = (before && di != 0.0 ? 0.0 : g * R) + ri;
    }
    if (!frozen) {
      double bm = 0.0, bv = 0.0;
      for (const double R : returns) bm += R / static_cast<double>(N);
      for (const double R : returns) bv += (R - bm) * (R - bm) / static_cast<double>(N);
      const double delta = bm - mean, tot = count + static_cast<double>(N);
      const double m2 = var * count + bv * static_cast<double>(N) + delta * delta * count * static_cast<double>(N) / tot;
      mean += delta * static_cast<double>(N) / tot;
      var = m2 / tot;
      count = tot;
    }
    for (std::int64_t i = 0; i < N; ++i) {
      const double v = r[static_cast<std::size_t>(t * N + i)] / std::sqrt(var + 1e-8);
      y.push_back(std::max(-clip, std::min(clip, v)));
      if (!before && done[static_cast<std::size_t>(t * N + i)] != 0.0) returns[static_cast<std::size_t>(i)] = 0.0;
    }
  }
  return y;
}

}  // namespace

// replay --returns: every key a reward scaled by the std of its discounted
// return (SB3's VecNormalize(norm_reward), Gymnasium's NormalizeReward),
// against SB3's formulas in double (above): the SB3 defaults (reset after,
// clip 10, float64 statistics of float32 rewards), --reset before with a
// bound that does not bind, float64 rewards with float32 statistics; on the
// CPU and on the CUDA backend under the emulator where that build exists.
TEST(ReplayReturns, ScalesRewardsAsSb3AndGymnasiumDo) {
  TempDir dir;
  const std::int64_t T = 40, N = 5;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> z(0.5, 2.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> r, done;
  for (std::int64_t j = 0; j < T * N; ++j) {
    r.push_back(static_cast<double>(static_cast<float>(z(rng))));
    done.push_back(u(rng) < 0.15 ? 1.0 : 0.0);
  }
  const std::string rin = dir / "r.npy", r64 = dir / "r64.npy", din = dir / "d.npy";
  write_npy(rin, DType::float32, {T, N}, r);
  write_npy(r64, DType::float64, {T, N}, r);
  write_npy(din, DType::uint8, {T, N}, done);
  struct Case {
    std::vector<std::string> flags;
    std::string file;
    bool before;
    double clip, tol;
  };
  const std::vector<Case> cases = {
      {{}, rin, false, 10.0, 1e-6},
      {{"--reset", "before", "--clip", "1e9"}, rin, true, 1e9, 1e-6},
      {{"--stats-dtype", "float32"}, r64, false, 10.0, 1e-5},
  };
  const auto runs = cli_builds();
  for (const auto& [cli, extra] : runs)
    for (std::size_t c = 0; c < cases.size(); ++c) {
      const Case& k = cases[c];
      const std::string out = dir / ("out" + std::to_string(extra.size()) + "_" + std::to_string(c));
      std::vector<std::string> args = {"replay", "--returns", "0.9", "--dones", din, "--out", out, "--json"};
      args.insert(args.end(), k.flags.begin(), k.flags.end());
      args.insert(args.end(), extra.begin(), extra.end());
      args.push_back("reward=" + k.file);
      const RunResult res = run_exe(cli, args, dir.path());
      ASSERT_EQ(res.code, 0) << describe(res);
      std::vector<double> R;
      const std::vector<double> want = sb3_reward_reference(r, done, T, N, 0.9, k.before, k.clip, T, false, R);
      const NpyContent got = read_npy(out + "/reward.npy");
      ASSERT_TRUE(got.ok) << got.error;
      EXPECT_EQ(got.descr, k.file == r64 ? "<f8" : "<f4");
      ASSERT_EQ(got.values.size(), want.size());
      for (std::size_t j = 0; j < want.size(); ++j)
        EXPECT_NEAR(got.values[j], want[j], k.tol * std::max(1.0, std::abs(want[j]))) << cli << " case " << c << " [" << j << "]";
      Json js;
      ASSERT_NO_THROW(js = parse_json(res.out)) << res.out;
      EXPECT_EQ(js["reward"]["count"].num, static_cast<double>(T * N)) << cli << " case " << c;
    }
}

// replay --returns --save-state, then --load-state: the state holds the
// returns, so two halves replay as the whole (outputs within rounding, the
// returns in the state as SB3's). With --freeze-after and --hold-frozen the
// frozen returns hold but for the zeroing at dones (SB3's eval mode); without
// it they advance (Gymnasium's). Refusals name what is wrong.
TEST(ReplayReturns, StatesKeepTheReturnsAndFrozenReturnsHoldOrAdvance) {
  TempDir dir;
  const std::int64_t T = 30, N = 4, H = 17;
  std::mt19937_64 rng(8);
  std::normal_distribution<double> z(-1.0, 3.0);
  std::vector<double> r, done;
  for (std::int64_t j = 0; j < T * N; ++j) {
    r.push_back(static_cast<double>(static_cast<float>(z(rng))));
    done.push_back(j % 7 == 3 ? 1.0 : 0.0);
  }
  const auto slice = [&](const std::vector<double>& v, std::int64_t t0, std::int64_t t1) {
    return std::vector<double>(v.begin() + t0 * N, v.begin() + t1 * N);
  };
  const std::string r1 = dir / "r1.npy", r2 = dir / "r2.npy", d1 = dir / "d1.npy", d2 = dir / "d2.npy",
                    rall = dir / "r.npy", dall = dir / "d.npy", st = dir / "half.vnck";
  write_npy(r1, DType::float32, {H, N}, slice(r, 0, H));
  write_npy(r2, DType::float32, {T - H, N}, slice(r, H, T));
  write_npy(d1, DType::uint8, {H, N}, slice(done, 0, H));
  write_npy(d2, DType::uint8, {T - H, N}, slice(done, H, T));
  write_npy(rall, DType::float32, {T, N}, r);
  write_npy(dall, DType::uint8, {T, N}, done);
  std::vector<double> R;
  const std::vector<double> want = sb3_reward_reference(r, done, T, N, 0.99, false, 10.0, T, false, R);
  ASSERT_EQ(run(dir, {"replay", "--returns", "0.99", "--dones", d1, "--save-state", st, "rew=" + r1}).code, 0);
  const vecnorm::State half = vecnorm::read_state_file(st);
  ASSERT_TRUE(half.returns.has_value());
  std::vector<double> R_half;
  sb3_reward_reference(r, done, H, N, 0.99, false, 10.0, H, false, R_half);
  std::vector<double> saved(static_cast<std::size_t>(N));
  std::memcpy(saved.data(), half.returns->values[0].data(), saved.size() * sizeof(double));
  for (std::int64_t i = 0; i < N; ++i) EXPECT_NEAR(saved[static_cast<std::size_t>(i)], R_half[static_cast<std::size_t>(i)], 1e-12);
  const RunResult second = run(dir, {"replay", "--returns", "0.99", "--dones", d2, "--load-state", st, "--out",
                                     dir / "second", "rew=" + r2});
  ASSERT_EQ(second.code, 0) << describe(second);
  const NpyContent got = read_npy(dir / "second/rew.npy");
  ASSERT_TRUE(got.ok) << got.error;
  for (std::int64_t j = 0; j < (T - H) * N; ++j)
    EXPECT_NEAR(got.values[static_cast<std::size_t>(j)], want[static_cast<std::size_t>(H * N + j)],
                1e-6 * std::max(1.0, std::abs(want[static_cast<std::size_t>(H * N + j)])))
        << "[" << j << "]";
  // Frozen from step H: the statistics stay; the returns hold (but for dones) or advance.
  for (const bool hold : {true, false}) {
    const std::string fst = dir / (hold ? "hold.vnck" : "advance.vnck"), out = dir / (hold ? "hold" : "advance");
    std::vector<std::string> args = {"replay", "--returns", "0.99", "--dones", dall, "--freeze-after",
                                     std::to_string(H), "--save-state", fst, "--out", out};
    if (hold) args.push_back("--hold-frozen");
    args.push_back("rew=" + rall);
    const RunResult res = run(dir, args);
    ASSERT_EQ(res.code, 0) << describe(res);
    std::vector<double> Rf;
    const std::vector<double> wf = sb3_reward_reference(r, done, T, N, 0.99, false, 10.0, H, hold, Rf);
    const NpyContent y = read_npy(out + "/rew.npy");
    ASSERT_TRUE(y.ok) << y.error;
    for (std::size_t j = 0; j < wf.size(); ++j)
      EXPECT_NEAR(y.values[j], wf[j], 1e-6 * std::max(1.0, std::abs(wf[j]))) << "hold " << hold << " [" << j << "]";
    const vecnorm::State fs = vecnorm::read_state_file(fst);
    std::vector<double> fr(static_cast<std::size_t>(N));
    std::memcpy(fr.data(), fs.returns->values[0].data(), fr.size() * sizeof(double));
    for (std::int64_t i = 0; i < N; ++i)
      EXPECT_NEAR(fr[static_cast<std::size_t>(i)], Rf[static_cast<std::size_t>(i)], 1e-12) << "hold " << hold << " env " << i;
    EXPECT_EQ(fs.keys[0].count, H * N);
  }
  // Refusals, one line each, nothing written.
  expect_failure(run(dir, {"replay", "--dones", dall, "--out", dir / "bad", "rew=" + rall}), 2,
                 {"--dones needs --returns GAMMA"}, dir / "bad");
  expect_failure(run(dir, {"replay", "--returns", "1.5", "rew=" + rall}), 2,
                 {"--returns expects a discount 0 <= GAMMA <= 1, got 1.5"}, "");
  expect_failure(run(dir, {"replay", "--returns", "0.99", "--stateless", "rew=" + rall}), 2,
                 {"--returns and --stateless cannot be combined"}, "");
  expect_failure(run(dir, {"replay", "--returns", "0.99", "--hold-frozen", "rew=" + rall}), 2,
                 {"--hold-frozen needs --freeze-after K"}, "");
  expect_failure(run(dir, {"replay", "--returns", "0.99", "--reset", "never", "--dones", dall, "rew=" + rall}), 2,
                 {"--dones with --reset never"}, "");
  expect_failure(run(dir, {"replay", "--returns", "0.99", "--estimator", "torchrl", "rew=" + rall}), 2,
                 {"RewardScaler: option estimator: expected stable", "got torchrl"}, "");
  const std::string wi = dir / "wi.npy";
  write_npy(wi, DType::int32, {T, N}, std::vector<double>(static_cast<std::size_t>(T * N), 1.0));
  expect_failure(run(dir, {"replay", "--returns", "0.99", "--mask", wi, "--out", dir / "bad", "rew=" + rall}), 1,
                 {"--mask", "dtype int32, expected uint8", "with --returns a mask marks the active rows"}, dir / "bad");
  expect_failure(run(dir, {"replay", "--load-state", st, "--out", dir / "bad", "rew=" + r2}), 1,
                 {"holds a reward scaler's returns (gamma 0.99, reset after): replay it with --returns 0.99"},
                 dir / "bad");
  expect_failure(run(dir, {"replay", "--returns", "0.9", "--load-state", st, "--out", dir / "bad", "rew=" + r2}), 1,
                 {"--returns 0.9 differs from the state's gamma 0.99"}, dir / "bad");
  expect_failure(run(dir, {"replay", "--returns", "0.99", "--dones", rall, "--out", dir / "bad", "rew=" + rall}), 1,
                 {"--dones", "dtype float32, expected uint8 '|u1' (numpy: dones.astype(np.uint8))"}, dir / "bad");
  const std::string ri = dir / "ri.npy";
  write_npy(ri, DType::int32, {T, N}, std::vector<double>(static_cast<std::size_t>(T * N), 1.0));
  expect_failure(run(dir, {"replay", "--returns", "0.99", "--out", dir / "bad", "rew=" + ri}), 1,
                 {"--returns: key 'rew'", "dtype int32, expected float32 or float64 rewards"}, dir / "bad");
}
