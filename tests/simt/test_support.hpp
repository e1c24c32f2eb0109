// test_support.hpp -- shared by the emulator's test files.
#pragma once

#include "simt.hpp"
#include "test_kernels.cuh"

#include <gtest/gtest.h>

namespace simt_test {

// ThreadSanitizer makes every synchronization cost O(number of fibers it ever saw): sanitizer
// builds run the same checks on smaller problems.
inline constexpr bool kTsan = SIMT_TSAN != 0;
inline constexpr unsigned kBigBlock = kTsan ? 256 : 1024;

template <class T>
T lane_value(unsigned i) {  // distinct, exactly representable per lane
  return static_cast<T>(3 * i + 1);
}

}  // namespace simt_test
