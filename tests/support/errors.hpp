// tests/support/errors.hpp -- the message of the vecnorm::Error a call throws.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "vecnorm/error.hpp"

namespace vntest {

/// What f throws (its Error's message, its code expected to be `code`), or "no error".
inline std::string message_of(const std::function<void()>& f, vecnorm::ErrorCode code) {
  try {
    f();
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  return "no error";
}

}  // namespace vntest
