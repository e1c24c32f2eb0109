// src/cpu/isa_begin.hpp -- opens the instruction set of a CPU loop file.
//
// Each file of CPU loops (elementwise.cpp, pooled.cpp, maps.cpp) is compiled
// twice (CMakeLists.txt): as itself for baseline x86-64, and with
// VECNORM_CPU_AVX2_BUILD for AVX2, each into its own namespace
// (VECNORM_CPU_ISA: baseline / avx2). Include this after every other header:
// the AVX2 build switches the target with a pragma here, so every inline
// function of a header (shared by both object files) stays baseline code (no
// AVX2 instruction can reach another CPU through the linker's choice of one
// copy), while the file's own functions, all of internal linkage, become AVX2
// code that inlines them. The arithmetic is the same IEEE operations in the
// same order in both builds (no FMA contraction: the target does not enable
// FMA, and CMake compiles these files with -ffp-contract=off), so both give
// the same bits; src/cpu/isa.cpp picks one at run time. Close with isa_end.hpp.
#ifndef VECNORM_CPU_ISA
#define VECNORM_CPU_ISA baseline
#endif
#if defined(VECNORM_CPU_AVX2_BUILD)
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
