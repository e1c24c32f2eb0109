// apps/replay_io.cpp -- see replay_io.hpp.
#include "replay_io.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vncli::replay {
namespace {

std::string out_name(const std::string& key) {
  std::string n = key;
  std::replace(n.begin(), n.end(), '/', '.');
  return n + ".npy";
}

std::string join(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

/// "key 'obs' (obs.npy)", "key 'reward' (reward.npy@1)".
std::string label_of(const Spec& s) {
  std::string label = "key '" + s.key + "' (" + s.path;
  if (s.first) {
    label += '@';
    label += std::to_string(s.first);
  }
  label += ")";
  return label;
}

/// Opens one input and splits its shape [T, *batch, *feature].
std::unique_ptr<Input> open_input(const Spec& s, std::size_t nb) {
  auto in = std::make_unique<Input>();
  in->spec = s;
  in->label = label_of(s);
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
  return in;
}

}  // namespace

void Input::allocate_slices(bool writes_output) {
  constexpr std::size_t kSliceBytes = std::size_t{8} << 20;
  const std::size_t row = std::max<std::size_t>({in_row, out_row, 1});
  chunk_rows = std::clamp<std::int64_t>(static_cast<std::int64_t>(kSliceBytes / row), 1, std::max<std::int64_t>(rows, 1));
  in_chunk = HostBytes(in_row * static_cast<std::size_t>(chunk_rows));
  out_chunk = HostBytes(out_row * static_cast<std::size_t>(writes_output ? chunk_rows : 1));
}

const std::byte* Input::input_row(std::int64_t r) {
  if (r >= in_begin + in_count) {
    in_begin = r;
    in_count = std::min(chunk_rows, rows - r);
    reader->read(static_cast<std::uint64_t>(r) * in_row, in_chunk.data(), in_row * static_cast<std::size_t>(in_count));
  }
  return in_chunk.data() + static_cast<std::size_t>(r - in_begin) * in_row;
}

std::byte* Input::output_row() { return out_chunk.data() + static_cast<std::size_t>(out_pending) * out_row; }

void Input::output_done(bool last_step) {
  if (!writer) return;
  if (++out_pending == chunk_rows || last_step) {
    writer->write(out_chunk.data(), out_row * static_cast<std::size_t>(out_pending));
    out_pending = 0;
  }
}

Inputs open_inputs(const std::vector<Spec>& specs, std::int64_t batch_dims) {
  const std::size_t nb = static_cast<std::size_t>(batch_dims);
  Inputs inputs;
  for (const Spec& s : specs) {
    auto in = open_input(s, nb);
    if (!inputs.empty() && in->batch != inputs.front()->batch)
      throw InputError("mismatched batch shapes: " + in->label + " has batch " + in->batch.str() + " (shape " +
                       dims_str(in->file_shape) + "), expected " + inputs.front()->batch.str() + " like " +
                       inputs.front()->label + " (shape " + dims_str(inputs.front()->file_shape) + ", --batch-dims " +
                       std::to_string(nb) + ")");
    inputs.push_back(std::move(in));
  }
  return inputs;
}

std::int64_t common_end(const Inputs& inputs) {
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

void check_output_names(const Inputs& inputs, const std::string& dir) {
  for (std::size_t i = 0; i < inputs.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (out_name(inputs[i]->spec.key) == out_name(inputs[j]->spec.key))
        throw UsageError("keys '" + inputs[j]->spec.key + "' and '" + inputs[i]->spec.key +
                         "' would both be written to " + join(dir, out_name(inputs[i]->spec.key)));
}

OutDir::OutDir(std::string dir) : dir_(std::move(dir)) {
  struct stat st {};
  if (::stat(dir_.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw InputError("--out " + dir_ + ": exists and is not a directory");
    return;
  }
  if (errno != ENOENT) throw InputError("--out " + dir_ + ": " + std::strerror(errno));
  if (::mkdir(dir_.c_str(), 0777) != 0) throw InputError("--out " + dir_ + ": cannot create: " + std::strerror(errno));
  created_ = true;
}

OutDir::~OutDir() {
  if (created_ && !keep_) ::rmdir(dir_.c_str());
}

void open_outputs(Inputs& inputs, const std::string& dir) {
  for (auto& in : inputs)
    in->writer = std::make_unique<NpyWriter>(join(dir, out_name(in->spec.key)), in->out_dtype, in->file_shape);
}

void finish_outputs(Inputs& inputs) {
  for (auto& in : inputs)
    if (in->writer) in->writer->finish();
}

void commit_outputs(Inputs& inputs, std::optional<OutDir>& dir) {
  for (auto& in : inputs)
    if (in->writer) in->writer->commit();
  if (dir) {
    dir->keep();
    sync_directory(dir->path());
  }
}

}  // namespace vncli::replay
