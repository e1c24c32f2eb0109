// src/errors.hpp -- throwing helpers: every message starts with "vecnorm: ".
#pragma once

#include <string>

#include "vecnorm/error.hpp"

namespace vecnorm::detail {

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) {
  throw Error(code, "vecnorm: " + message);
}

/// "key 'observation': "
inline std::string key_prefix(std::string_view key) { return "key '" + std::string(key) + "': "; }

/// A double in a message, every digit that tells it apart ("%.17g"; src/common.cpp).
std::string num(double v);

}  // namespace vecnorm::detail
