// src/cpu/isa_begin.hpp -- opens the instruction set of a CPU loop file.
//
// Each file of CPU loops (elementwise.cpp, pooled.cpp, maps.cpp, returns.cpp) is compiled
// (CMakeLists.txt) as itself for baseline x86-64 and with VECNORM_CPU_AVX2_BUILD
// for AVX2; elementwise.cpp also with VECNORM_CPU_AVX512_BUILD for AVX-512;
// each into its own namespace (VECNORM_CPU_ISA: baseline / avx2 / avx512). Include this after every header
// of external linkage (includes.hpp): the AVX2 and AVX-512 builds switch the target
// here, so every inline function of such a header (shared by all object files)
// stays baseline code (no AVX2 or AVX-512 instruction can reach another CPU
// through the linker's choice of one copy), while the file's own functions and
// the loop headers included after this one (loops.hpp, map_loops.hpp,
// coeff_memo.hpp: all in an unnamed namespace inside the per-ISA one, so of
// internal linkage) become AVX2 code that inlines them. The arithmetic is the same IEEE operations in the
// same order in every build (no FMA contraction: the targets do not enable
// FMA, and CMake compiles these files with -ffp-contract=off), so all give
// the same bits; src/cpu/isa.cpp picks one at run time. Close with isa_end.hpp.
#ifndef VECNORM_CPU_ISA
#define VECNORM_CPU_ISA baseline
#endif
#if defined(__clang__)
// Clang ignores `#pragma GCC target`: the same targets as an attribute of
// every function defined from here to isa_end.hpp (its tuning flag for
// 512-bit vectors is a command-line option, -mprefer-vector-width, which
// CMakeLists.txt gives the AVX-512 build).
#if defined(VECNORM_CPU_AVX2_BUILD)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#elif defined(VECNORM_CPU_AVX512_BUILD)
#pragma clang attribute push(__attribute__((target("avx2,avx512f,avx512vl,avx512dq,avx512bw"))), apply_to = function)
#endif
#elif defined(VECNORM_CPU_AVX2_BUILD)
#pragma GCC push_options
#pragma GCC target("avx2")
#elif defined(VECNORM_CPU_AVX512_BUILD)
// x86-64-v4's AVX-512 subsets, 512-bit vectors preferred (GCC's tuning would
// otherwise keep 256-bit ones): the divide and square root of a per-element
// normalization are the loops' bound, and they run twice as wide.
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512vl,avx512dq,avx512bw,prefer-vector-width=512")
#endif
