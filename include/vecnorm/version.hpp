// vecnorm/version.hpp
#pragma once

#define VECNORM_VERSION_MAJOR 0
#define VECNORM_VERSION_MINOR 1
#define VECNORM_VERSION_PATCH 0

namespace vecnorm {
/// "0.1.0"
const char* version() noexcept;
/// True when this build of the library contains the CUDA backend.
bool cuda_built() noexcept;
/// True when the CUDA backend is built and a device is usable now.
bool cuda_available() noexcept;
/// The instruction set the CPU backend's loops run with on this machine:
/// "avx2" or "baseline" (x86-64 SSE2). VECNORM_CPU_ISA=baseline forces the latter.
const char* cpu_isa() noexcept;
}  // namespace vecnorm
