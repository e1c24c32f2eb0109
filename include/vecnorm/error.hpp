// vecnorm/error.hpp -- the one exception type of the library.
#pragma once

#include <stdexcept>
#include <string>

namespace vecnorm {

/// What kind of mistake an Error reports. Messages always name the key (when
/// there is one), the expected and the actual value.
enum class ErrorCode {
  invalid_option,       ///< an Options field is out of range
  invalid_key_table,    ///< bad key name, duplicate key, bad shape in the key table
  unknown_key,          ///< a step names a key the table does not have
  duplicate_key,        ///< a step names the same key twice
  shape_mismatch,       ///< a view's shape differs from what the key table implies
  dtype_mismatch,       ///< a view's dtype differs from what is expected
  device_mismatch,      ///< a view lives on a device the backend cannot use
  invalid_argument,     ///< other bad arguments (null data, overlapping buffers...)
  zero_count,           ///< normalizing with statistics that were never updated
  state_mismatch,       ///< a state does not fit the normalizer it is loaded into
  not_configured,       ///< the normalizer has no key table yet
  backend_unavailable,  ///< the requested backend is not built or has no device
  cuda_error,           ///< a CUDA runtime call failed
  nonfinite_input,      ///< NonFinite::error: an update met a NaN or an infinity
  collective_error,     ///< a distributed step: another rank failed, disagreed, or did not answer in time
};

/// Name of an ErrorCode, e.g. "shape_mismatch".
const char* to_string(ErrorCode code) noexcept;

/// Thrown for every user mistake and every runtime failure. Library code never
/// prints and never exits.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace vecnorm
