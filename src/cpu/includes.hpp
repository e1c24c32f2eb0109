// src/cpu/includes.hpp -- every header a CPU loop file includes, before
// src/cpu/isa_begin.hpp (see there why the order matters).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <type_traits>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../plan.hpp"
#include "../workspace.hpp"
#include "entries.hpp"
#include "pool.hpp"
#include "vecnorm/core/numerics.hpp"
