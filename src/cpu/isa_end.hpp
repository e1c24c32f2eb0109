// src/cpu/isa_end.hpp -- closes what isa_begin.hpp opened.
#if defined(VECNORM_CPU_AVX2_BUILD) || defined(VECNORM_CPU_AVX512_BUILD)
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
