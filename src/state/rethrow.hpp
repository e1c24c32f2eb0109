// src/state/rethrow.hpp -- an Error passed on with more context before its
// message (the path of a file, the function that was called).
#pragma once

#include <string>
#include <string_view>

#include "../errors.hpp"

namespace vecnorm::detail {

/// The message of `e` without its "vecnorm: " prefix.
inline std::string bare(const Error& e) {
  std::string_view m = e.what();
  constexpr std::string_view p = "vecnorm: ";
  if (m.substr(0, p.size()) == p) m.remove_prefix(p.size());
  return std::string(m);
}

/// Throws `e` again, same code, with `prefix` before its message.
[[noreturn]] inline void rethrow_prefixed(const Error& e, const std::string& prefix) {
  fail(e.code(), prefix + bare(e));
}

}  // namespace vecnorm::detail
