// simt_runtime.hpp -- the interface of the SIMT emulator's runtime: settings, launch, dynamic
// shared memory, and the entry points the CUDA device functions call. Include simt.hpp, not this.
//
// The runtime itself (fibers, scheduler, barriers, warp rendezvous) is in simt_runtime_impl.hpp.
// It is compiled once per executable from simt_runtime.cpp (the vecnorm::simt CMake target adds
// that file to every target linking it), or inline in every translation unit when
// SIMT_HEADER_ONLY is defined (one-file builds: g++ -DSIMT_HEADER_ONLY test.cpp -lboost_context).
#pragma once
#ifndef SIMT_INSIDE_SIMT_HPP
#error "include simt.hpp, not simt_runtime.hpp"
#endif

#if defined(SIMT_HEADER_ONLY)
#define SIMT_API inline
#else
#define SIMT_API
#endif

namespace simt {

/// Order in which the ready threads of a block run (and blocks are dealt to workers).
enum class Order : std::uint8_t {
  forward,  ///< lanes and warps by increasing index; blocks by increasing linear index
  reverse,  ///< the mirror image of forward
  shuffle,  ///< seeded pseudo-random order of the block's threads, renewed at every pass; blocks permuted
};

namespace detail {
#if SIMT_ASAN
inline constexpr std::size_t kDefaultStackBytes = 256 * 1024;
#elif SIMT_TSAN
inline constexpr std::size_t kDefaultStackBytes = 128 * 1024;
#else
inline constexpr std::size_t kDefaultStackBytes = 64 * 1024;
#endif
}  // namespace detail

/// Emulator settings. Initialized from the environment on first use:
///   SIMT_WORKERS=N        worker OS threads per launch (default 2; 1 with SIMT_SINGLE_WORKER)
///   SIMT_REVERSE=1        Order::reverse (any value but 0)
///   SIMT_SHUFFLE_SEED=N   Order::shuffle with seed N (wins over SIMT_REVERSE)
///   SIMT_STACK_KB=N       fiber stack size in KiB (default 64; 128 under TSan, 256 under ASan)
struct Config {
  unsigned workers = 2;
  Order order = Order::forward;
  std::uint64_t seed = 0;
  std::size_t stack_bytes = detail::kDefaultStackBytes;
};

/// The settings the next launch uses.
SIMT_API Config get_config();
/// Replaces the settings (for later launches of every host thread). Throws std::invalid_argument
/// for 0 workers or stacks under 16 KiB.
SIMT_API void set_config(const Config& c);

/// Sets a configuration for the lifetime of the object, then restores the previous one.
class ScopedConfig {
 public:
  explicit ScopedConfig(const Config& c) : saved_(get_config()) { set_config(c); }
  ~ScopedConfig() { set_config(saved_); }
  ScopedConfig(const ScopedConfig&) = delete;
  ScopedConfig& operator=(const ScopedConfig&) = delete;

 private:
  Config saved_;
};

/// Thrown by simt::launch for a launch configuration CUDA rejects (cudaErrorInvalidConfiguration).
struct launch_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

namespace detail {

/// A call site in kernel source (a pointer to a static object per call site).
using Loc = std::source_location;

/// Warp-synchronous operations; the result is computed once all lanes of the mask arrived.
enum class Op : std::uint8_t {
  syncwarp, shfl, ballot, match_any, match_all,
  reduce_add, reduce_min_u, reduce_min_i, reduce_max_u, reduce_max_i, reduce_and, reduce_or, reduce_xor,
};
enum class BarrierOp : std::uint8_t { sync, count, all, any };
enum class ShflMode : std::uint8_t { idx, up, down, bfly };

/// Shuffle operand: the mode, the width and the low 5 bits of the lane / delta / lane mask argument.
constexpr std::uint32_t shfl_spec(ShflMode mode, unsigned arg, int width) noexcept {
  return (static_cast<std::uint32_t>(mode) << 16) | (static_cast<std::uint32_t>(width) << 8) | (arg & 31u);
}

struct Worker;
/// The worker the calling OS thread runs for (null outside launches).
inline thread_local constinit Worker* tls_worker = nullptr;

/// A warp-synchronous call by the running lane: waits until every lane named in `mask` made the
/// same call (same call site, same mask), then returns this lane's result. `value` is this lane's
/// operand; for shuffles `spec` (shfl_spec) says which lane's operand this lane gets.
SIMT_API std::uint64_t warp_sync_op(Op op, const char* api, std::uint32_t mask, std::uint64_t value, std::uint32_t spec,
                                    const Loc& loc);
/// A block barrier (with its reduction: count, and, or).
SIMT_API int block_barrier(BarrierOp op, int predicate, const Loc& loc);
/// __activemask: the lanes of this warp that reach this call together.
SIMT_API std::uint32_t activemask_op(const Loc& loc);
/// Lets the other ready threads of the block run.
SIMT_API void yield_op();
SIMT_API void* dynamic_shared_base();
SIMT_API std::size_t dynamic_shared_bytes();
[[noreturn]] SIMT_API void trap_op(const Loc& loc);
[[noreturn]] SIMT_API void bad_shfl_width(const char* api, int width, const Loc& loc);
/// The settings the environment asks for (aborts on malformed values).
SIMT_API Config config_from_environment();
/// Runs a whole grid; `invoke(payload)` runs the kernel for the current thread.
SIMT_API void run_grid(dim3 grid, dim3 block, std::size_t dynamic_shared_bytes, void (*invoke)(const void*), const void* payload);

template <class Payload>
void invoke_kernel(const void* p) {
  const Payload& pl = *static_cast<const Payload*>(p);
  std::apply([&pl](const auto&... a) { pl.kernel(a...); }, pl.args);
}

}  // namespace detail

/// Runs kernel(args...) for every thread of every block of the grid and returns when all are done.
/// Arguments are copied once (as CUDA copies kernel parameters); each thread receives them by
/// value. An exception thrown by a thread stops the grid (the rest of its block does not run on,
/// blocks not yet started are skipped) and is rethrown here. Emulator errors (divergent barrier,
/// bad warp mask, deadlock) abort the process with a message. Throws launch_error for a launch
/// configuration CUDA rejects.
template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, std::size_t dynamic_shared_bytes, Kernel&& kernel, Args&&... args) {
  using K = std::decay_t<Kernel>;
  static_assert(std::is_invocable_v<const K&, const std::decay_t<Args>&...>,
                "simt::launch: the kernel cannot be called with these arguments");
  static_assert(std::is_void_v<std::invoke_result_t<const K&, const std::decay_t<Args>&...>>,
                "simt::launch: a kernel returns void");
  struct Payload {
    K kernel;
    std::tuple<std::decay_t<Args>...> args;
  };
  const Payload payload{std::forward<Kernel>(kernel), std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)};
  detail::run_grid(grid, block, dynamic_shared_bytes, &detail::invoke_kernel<Payload>, &payload);
}

/// This block's dynamic shared memory (the size given to launch), 16-byte aligned. Every call in
/// a block returns the same address, as every `extern __shared__` array of a CUDA kernel starts
/// at the same address. Filled with 0xFF bytes when the block starts.
template <class T = unsigned char>
T* dynamic_shared() {
  return static_cast<T*>(detail::dynamic_shared_base());
}

/// Size in bytes of this block's dynamic shared memory.
inline std::size_t dynamic_shared_size() { return detail::dynamic_shared_bytes(); }

}  // namespace simt

/// Declares `name` as a `T*` to the block's dynamic shared memory. A kernel-side spelling that also
/// compiles under nvcc is in README.md (`extern __shared__ T name[];` cannot be emulated).
#define SIMT_DYNAMIC_SHARED(T, name) T* const name = ::simt::dynamic_shared<T>()
