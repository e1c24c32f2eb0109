// src/cuda/cuda_stub.cpp -- the CUDA backend's entry points in a build without
// it (no CUDA compiler, or VECNORM_ENABLE_CUDA=OFF): nothing is usable.
#include "../backends.hpp"
#include "../errors.hpp"
#include "vecnorm/version.hpp"

namespace vecnorm {

bool cuda_built() noexcept { return false; }
bool cuda_available() noexcept { return false; }

namespace detail::cuda {
namespace {
[[noreturn]] void unavailable() {
  fail(ErrorCode::backend_unavailable,
       "backend cuda: this build of vecnorm has no CUDA backend (configure with a CUDA compiler and "
       "VECNORM_ENABLE_CUDA=ON); use backend cpu or auto");
}
}  // namespace

bool available() noexcept { return false; }
int current_device() { unavailable(); }
void* alloc(std::size_t) { unavailable(); }
void release(void*) noexcept {}
void copy(void*, const void*, std::size_t, Stream, bool) { unavailable(); }
void zero(void*, std::size_t, Stream) { unavailable(); }
void synchronize(Stream) { unavailable(); }
void put_message(double*, const double*, std::size_t, Stream) { unavailable(); }
void run(const Plan&, Scratch&, Stream) { unavailable(); }
std::size_t scratch_bytes(const Plan&) { unavailable(); }
std::int64_t first_nonfinite(const void*, DType, std::int64_t, std::int64_t, const std::uint8_t*, Stream, Scratch&) {
  unavailable();
}
void returns(const ReturnPass&, Stream) { unavailable(); }

}  // namespace detail::cuda
}  // namespace vecnorm
