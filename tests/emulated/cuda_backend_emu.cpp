// tests/emulated/cuda_backend_emu.cpp -- the CUDA backend, unchanged, compiled
// by the host compiler with the kernels running under the SIMT emulator.
#ifndef VECNORM_EMULATED
#error "build with -DVECNORM_EMULATED (tests/emulated/CMakeLists.txt does)"
#endif
#include "../../src/cuda/cuda_backend.cu"
