// apps/npy.hpp -- a strict reader and an atomic writer of NumPy .npy files.
//
// Reads format versions 1.0, 2.0 and 3.0: little-endian ('<', or '|' for one
// byte), C order, dtypes float16/32/64, int32/64 and uint8. The header's dict
// is parsed as the Python literal it is (string keys 'descr', 'fortran_order'
// and 'shape', each exactly once). Everything else (big-endian, Fortran order,
// object or structured dtypes, truncated header or data, trailing bytes) is
// rejected with an InputError that names the file and what is wrong.
//
// Data are read in slices (pread), so a file is never held in memory whole.
//
// The writer writes version 1.0 files to "<path>.tmp.<pid>", and only
// commit() renames that over <path>; a writer destroyed before commit()
// removes its temporary file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <vecnorm/tensor.hpp>

namespace vncli {

/// What a .npy header says.
struct NpyHeader {
  int major_version = 1;
  vecnorm::DType dtype = vecnorm::DType::float32;
  std::vector<std::int64_t> shape;
  std::uint64_t data_offset = 0;  ///< bytes before the data
  std::uint64_t data_bytes = 0;   ///< numel * itemsize
};

/// Parses the header at the start of `bytes` (which hold at least the whole
/// header, or the whole file when it is shorter) of a file of `file_size`
/// bytes, and checks that the file holds exactly the data the header implies.
/// `name` is used in error messages. Throws InputError.
NpyHeader parse_npy(std::string_view name, const std::uint8_t* bytes, std::size_t available,
                    std::uint64_t file_size);

/// The .npy type string of a dtype: "<f4", "|u1", ...
const char* npy_descr(vecnorm::DType dtype);

/// An open .npy file whose header has been validated.
class NpyReader {
 public:
  /// Opens and validates `path` (InputError on any problem).
  explicit NpyReader(const std::string& path);
  ~NpyReader();
  NpyReader(NpyReader&& other) noexcept;
  NpyReader& operator=(NpyReader&&) = delete;
  NpyReader(const NpyReader&) = delete;
  NpyReader& operator=(const NpyReader&) = delete;

  const std::string& path() const noexcept { return path_; }
  const NpyHeader& header() const noexcept { return header_; }
  /// Copies `bytes` bytes of the data, starting `offset` bytes into the data.
  void read(std::uint64_t offset, void* dst, std::size_t bytes) const;

 private:
  std::string path_;
  int fd_ = -1;
  NpyHeader header_;
};

/// Writes one .npy file through a temporary file.
class NpyWriter {
 public:
  /// Creates "<path>.tmp.<pid>" and writes the header of a [shape] array of `dtype`.
  NpyWriter(std::string path, vecnorm::DType dtype, const std::vector<std::int64_t>& shape);
  ~NpyWriter();  ///< removes the temporary file unless committed
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;

  /// Appends data bytes.
  void write(const void* data, std::size_t bytes);
  /// Checks that exactly the data the header announces were written, then
  /// flushes the file to disk (fsync) and closes it.
  void finish();
  /// Renames the finished temporary file over the final path.
  void commit();

  const std::string& path() const noexcept { return path_; }
  const std::string& temp_path() const noexcept { return temp_; }

 private:
  std::string path_, temp_;
  int fd_ = -1;
  std::uint64_t expected_ = 0, written_ = 0;
  bool committed_ = false;
};

/// The bytes of a version 1.0 header (magic through the padded dict) for an
/// array of `dtype` and `shape`; its length is a multiple of 64.
std::string npy_header_bytes(vecnorm::DType dtype, const std::vector<std::int64_t>& shape);

/// fsync of a directory (after renames into it); errors are ignored.
void sync_directory(const std::string& dir);

}  // namespace vncli
