// apps/replay_rows.hpp -- the per-row files of `vecnorm replay`: --mask (a
// uint8 row mask, or int32 row weights) and --dones (uint8 episode ends),
// [T, *batch], one row of the file a step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <vecnorm/vecnorm.hpp>

#include "cli.hpp"
#include "npy.hpp"

namespace vncli::replay {

/// A file of one value per batch row per step, [T, *batch], read a step at a
/// time (and staged on the device when steps run there): --mask's uint8 row
/// mask, or int32 row weights (`weights`: pooled statistics, a row of weight w
/// counts w times); --dones' uint8 episode ends.
class RowMask {
 public:
  RowMask(std::string option, const std::string& path, std::int64_t T, const vecnorm::Shape& batch,
          vecnorm::Backend backend, bool weights)
      : option_(std::move(option)),
        file_(open(option_, path)),
        batch_(batch),
        dtype_(file_.header().dtype),
        row_bytes_(static_cast<std::size_t>(batch.numel()) * vecnorm::dtype_size(dtype_)),
        row_(row_bytes_),
        on_device_(backend == vecnorm::Backend::cuda) {
    const NpyHeader& h = file_.header();
    if (h.dtype != vecnorm::DType::uint8 && (!weights || h.dtype != vecnorm::DType::int32))
      throw InputError(option_ + " " + path + ": dtype " + vecnorm::to_string(h.dtype) +
                       ", expected uint8 '|u1' (numpy: " + option_.substr(2) + ".astype(np.uint8))" +
                       (weights                ? " or int32 '<i4' row weights (mask.astype(np.int32))"
                        : option_ == "--mask" ? " (with --returns a mask marks the active rows: no weights)"
                                              : ""));
    std::vector<std::int64_t> want{T};
    for (int d = 0; d < batch.ndim(); ++d) want.push_back(batch[d]);
    if (h.shape != want)
      throw InputError(option_ + " " + path + ": shape " + dims_str(h.shape) + ", expected " + dims_str(want) +
                       " (the steps, then the inputs' batch shape)");
    if (on_device_) device_ = vecnorm::Buffer(backend, row_bytes_);
  }
  /// Step t's row mask (row t of the file: the global step, whatever the keys' first steps).
  vecnorm::ConstTensorView row(std::int64_t t) {
    file_.read(static_cast<std::uint64_t>(t) * row_bytes_, row_.data(), row_bytes_);
    if (on_device_) {
      if (row_bytes_ > 0) device_.copy_from_host(row_.data(), row_bytes_);
      return std::as_const(device_).view(dtype_, batch_);
    }
    return vecnorm::ConstTensorView{row_.data(), dtype_, batch_};
  }

 private:
  /// The file, its problems named as the option's (a numpy bool array is '|b1').
  static NpyReader open(const std::string& option, const std::string& path) {
    try {
      return NpyReader(path);
    } catch (const InputError& e) {
      throw InputError(option + ": " + e.what() +
                       (option == "--mask" ? " (a mask is uint8: numpy mask.astype(np.uint8); row weights int32)"
                                           : " (" + option.substr(2) + " are uint8: numpy " + option.substr(2) +
                                                 ".astype(np.uint8))"));
    }
  }
  std::string option_;
  NpyReader file_;
  vecnorm::Shape batch_;
  vecnorm::DType dtype_;
  std::size_t row_bytes_;
  std::vector<std::uint8_t> row_;
  bool on_device_;
  vecnorm::Buffer device_;
};

}  // namespace vncli::replay
