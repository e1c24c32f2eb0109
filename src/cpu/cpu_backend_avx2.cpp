// src/cpu/cpu_backend_avx2.cpp -- the CPU backend compiled for AVX2 (the
// target switch is a pragma inside cpu_backend.cpp, after its includes).
// Selected at run time by src/cpu/cpu_dispatch.cpp on CPUs that have AVX2.
#define VECNORM_CPU_ISA avx2
#define VECNORM_CPU_AVX2_BUILD 1
#include "cpu_backend.cpp"
