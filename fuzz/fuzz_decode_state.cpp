// fuzz/fuzz_decode_state.cpp -- libFuzzer target of vecnorm::decode_state.
//
// Each input is decoded twice: as it is (the checksum rejects almost every
// mutation), and with its size field and CRC-32C trailer rewritten to match
// (so the mutations reach the record parser and State::validate()). Any
// vecnorm::Error is a correct rejection; anything else (another exception, a
// crash, a sanitizer report, a huge allocation, a hang) is a bug. An accepted
// input of the current version must re-encode to exactly the same bytes (the
// format is canonical); one of an older version re-encodes to a current one
// that decodes and re-encodes to itself.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "vecnorm/checkpoint.hpp"
#include "vecnorm/error.hpp"

namespace {

void check(std::span<const std::uint8_t> bytes) {
  try {
    const vecnorm::State s = vecnorm::decode_state(bytes);
    s.validate();
    const std::vector<std::uint8_t> again = vecnorm::encode_state(s);
    if (bytes[8] == vecnorm::kCheckpointFormatVersion) {  // accepted: at least the 12 bytes of magic + version
      if (again.size() != bytes.size() || std::memcmp(again.data(), bytes.data(), bytes.size()) != 0) std::abort();
    } else if (vecnorm::encode_state(vecnorm::decode_state(again)) != again) {
      std::abort();
    }
  } catch (const vecnorm::Error&) {
    // rejected: fine
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  check(std::span<const std::uint8_t>(data, size));
  if (size >= 28) {  // fixed header + checksum: forge a consistent size field and CRC
    std::vector<std::uint8_t> b(data, data + size);
    for (int i = 0; i < 8; ++i) b[16 + i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(size) >> (8 * i));
    const std::uint32_t crc = vecnorm::crc32c(std::span<const std::uint8_t>(b.data(), size - 4));
    for (int i = 0; i < 4; ++i) b[size - 4 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
    check(b);
  }
  return 0;
}
