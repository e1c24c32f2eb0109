// apps/replay_io.hpp -- the files of `vecnorm replay`: each key's input .npy
// read, and its --out .npy written, in slices of host rows; the --out
// directory. Outputs are temporary files until commit_outputs().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <vecnorm/vecnorm.hpp>

#include "cli.hpp"
#include "npy.hpp"
#include "replay_args.hpp"

namespace vncli::replay {

/// One key being replayed: its input file and, with --out, its output file.
struct Input {
  Spec spec;
  std::string label;  ///< "key 'obs' (obs.npy)" for messages
  std::optional<NpyReader> reader;
  vecnorm::DType in_dtype = vecnorm::DType::float32, out_dtype = vecnorm::DType::float32;
  std::vector<std::int64_t> file_shape;
  vecnorm::Shape batch, feature, step_shape;
  std::int64_t rows = 0;
  std::size_t in_row = 0, out_row = 0;  ///< bytes

  // Slices of rows on the host.
  std::int64_t chunk_rows = 1;
  HostBytes in_chunk, out_chunk;
  std::int64_t in_begin = 0, in_count = 0;
  std::int64_t out_pending = 0;
  std::unique_ptr<NpyWriter> writer;

  bool present(std::int64_t t) const { return t >= spec.first && t < spec.first + rows; }

  /// Sizes the slices to about 8 MiB; the output slice holds one row unless
  /// the rows are written to a file.
  void allocate_slices(bool writes_output);
  /// Row `r` of the input; rows are asked for in order, so each slice is read once.
  const std::byte* input_row(std::int64_t r);
  /// Where the output row of this step goes.
  std::byte* output_row();
  /// The output row of this step is complete: the pending rows go to the file
  /// when the slice is full or at the last step.
  void output_done(bool last_step);
};

using Inputs = std::vector<std::unique_ptr<Input>>;

/// Opens every input and checks that their batch shapes agree.
Inputs open_inputs(const std::vector<Spec>& specs, std::int64_t batch_dims);
/// The number of steps T, checking that every key ends at it.
std::int64_t common_end(const Inputs& inputs);

/// Checks that no two keys would be written to the same file of `dir`.
void check_output_names(const Inputs& inputs, const std::string& dir);

/// Creates --out DIR when missing and removes it again on failure when it is
/// still empty (so that a failed run leaves nothing behind).
class OutDir {
 public:
  explicit OutDir(std::string dir);
  ~OutDir();
  OutDir(const OutDir&) = delete;
  OutDir& operator=(const OutDir&) = delete;
  void keep() { keep_ = true; }
  const std::string& path() const { return dir_; }

 private:
  std::string dir_;
  bool created_ = false, keep_ = false;
};

/// Starts each key's output file in `dir` (as a temporary file).
void open_outputs(Inputs& inputs, const std::string& dir);
/// Checks and flushes the output files to disk.
void finish_outputs(Inputs& inputs);
/// Renames the finished output files into place and keeps the directory.
void commit_outputs(Inputs& inputs, std::optional<OutDir>& dir);

}  // namespace vncli::replay
