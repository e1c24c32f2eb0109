#!/usr/bin/env bash
# scripts/check-isa-objects.sh BUILD_DIR -- the builds of the CPU loops hold
# the instructions of their instruction set (src/cpu/isa_begin.hpp):
#   * the AVX2 build (vecnorm_cpu_avx2) uses 256-bit registers and no 512-bit ones;
#   * the AVX-512 build (vecnorm_cpu_avx512) uses 512-bit registers;
#   * the baseline build of the same files (vecnorm_objects) uses neither.
# A compiler that ignores the target pragma or attribute (Clang ignores
# `#pragma GCC target`) builds baseline code into all three: this fails then.
# Run by ctest (isa.objects) and by CI on a Clang build (.ci/run).
set -euo pipefail
build="${1:?usage: check-isa-objects.sh BUILD_DIR}"
OBJDUMP="${OBJDUMP:-objdump}"
loops=(elementwise pooled maps returns)
fail=0

# count REGISTER_PREFIX OBJECT: instructions that name such a register.
count() { "$OBJDUMP" -d --no-show-raw-insn "$2" | grep -c "%$1[0-9]" || true; }

check() {  # check OBJECT WHAT YMM_RULE ZMM_RULE  (rules: "none" or "some")
  local obj="$1" what="$2" y z
  if [[ ! -f "$obj" ]]; then
    echo "check-isa-objects: $what: $obj is missing (build the library first)" >&2
    fail=1
    return
  fi
  y=$(count ymm "$obj")
  z=$(count zmm "$obj")
  local ok=1
  [[ "$3" == some && "$y" -eq 0 ]] && ok=0
  [[ "$3" == none && "$y" -ne 0 ]] && ok=0
  [[ "$4" == some && "$z" -eq 0 ]] && ok=0
  [[ "$4" == none && "$z" -ne 0 ]] && ok=0
  if [[ "$ok" -eq 1 ]]; then
    echo "check-isa-objects: $what: $(basename "$obj"): $y ymm, $z zmm instructions"
  else
    echo "check-isa-objects: $what: $(basename "$obj"): expected $3 ymm and $4 zmm instructions, got $y and $z" >&2
    fail=1
  fi
}

for f in "${loops[@]}"; do
  check "$build/CMakeFiles/vecnorm_objects.dir/src/cpu/$f.cpp.o" baseline none none
  check "$build/CMakeFiles/vecnorm_cpu_avx2.dir/src/cpu/$f.cpp.o" avx2 some none
done
check "$build/CMakeFiles/vecnorm_cpu_avx512.dir/src/cpu/elementwise.cpp.o" avx512 any some

if [[ "$fail" -ne 0 ]]; then
  echo "check-isa-objects: FAILED" >&2
  exit 1
fi
echo "check-isa-objects: every build of the CPU loops holds its instruction set"
