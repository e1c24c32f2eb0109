// simt_runtime.cpp -- the SIMT emulator's runtime, compiled once into every executable that uses
// the emulator (the CMake target vecnorm::simt adds this file to each target linking it, with that
// target's compile options, so sanitizer flags and SIMT_* definitions always match its kernels).
#include "simt.hpp"

#if !defined(SIMT_HEADER_ONLY)  // header-only builds have the runtime inline already
#include "simt_runtime_impl.hpp"
#endif
