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
/// "avx512", "avx2" or "baseline" (x86-64 SSE2): the widest the CPU runs.
/// VECNORM_CPU_ISA=avx2 or =baseline caps it. Every build gives the same bits.
const char* cpu_isa() noexcept;
}  // namespace vecnorm
