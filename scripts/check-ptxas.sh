#!/usr/bin/env bash
# Compile evidence for the CUDA kernels, for each architecture:
#  1. ptxas: every kernel compiled with verbose output; fails on any register
#     spill or local-memory use, and prints the registers per kernel;
#  2. PTX: the kernels' arithmetic is the emulator's and the CPU's (docs/numerics.md,
#     "The same bits on every backend"); fails on a contracted multiply-add
#     (fma/mad on floating point: the build passes --fmad=false and the core asks
#     for none), an approximate or flush-to-zero instruction (.approx: ex2, lg2,
#     rcp, sqrt, sin...; div.full; .ftz) or a call (the device math library, e.g.
#     for a std:: function the core did not replace), and prints what the PTX
#     holds of each.
#   scripts/check-ptxas.sh [out_dir]      (default build/ptxas)
# The flags are the library's (CMakeLists.txt, target vecnorm: CUDA options).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/ptxas}
archs=${VECNORM_PTXAS_ARCHS:-"80 90"}
if ! command -v nvcc >/dev/null; then
  echo "check-ptxas: nvcc not found: skipped (no CUDA toolkit on this machine)"
  exit 0
fi
mkdir -p "$out"
flags=(-std=c++20 --expt-relaxed-constexpr -O3 --fmad=false -ftz=false -prec-div=true -prec-sqrt=true -Iinclude)
pids=()
for a in $archs; do
  nvcc "${flags[@]}" -arch=sm_$a -Xptxas=-v,-warn-spills,-warn-lmem-usage \
    -c src/cuda/cuda_backend.cu -o "$out/cuda_backend.sm_$a.o" 2> "$out/ptxas.sm_$a.txt" &
  pids+=($!)
  nvcc "${flags[@]}" -arch=sm_$a -ptx src/cuda/cuda_backend.cu -o "$out/cuda_backend.sm_$a.ptx" 2> "$out/ptx.sm_$a.txt" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

status=0
for a in $archs; do
  report="$out/ptxas.sm_$a.txt"
  kernels=$(grep -c "Compiling entry function" "$report" || true)
  bad=$(grep -E "Registers are spilled|Local memory used|[1-9][0-9]* bytes spill (stores|loads)|[1-9][0-9]* bytes stack frame" "$report" || true)
  regs=$(grep -o "Used [0-9]* registers" "$report" | awk '{print $2}' | sort -n | uniq -c | awk '{printf "%s%sx%s", sep, $1, $2; sep=", "}')
  echo "check-ptxas: sm_$a: $kernels kernels compiled; registers per thread (count x regs): $regs"
  if [[ -n $bad ]]; then
    echo "check-ptxas: sm_$a: spills or local memory:" >&2
    echo "$bad" >&2
    status=1
  fi

  ptx="$out/cuda_backend.sm_$a.ptx"
  # Instructions as they stand in the PTX (first word of a statement).
  count() { grep -cE "^[[:space:]]*(@!?%p[0-9]+[[:space:]]+)?$1" "$ptx" || true; }
  fused=$(count '(fma|mad)\.[a-z.]*f(16|32|64)')
  approx=$(count '([a-z0-9]+(\.[a-z0-9]+)*\.(approx|ftz)|div\.full)')
  calls=$(count 'call')
  echo "check-ptxas: sm_$a: PTX: $fused contracted multiply-adds, $approx approximate instructions, $calls calls;" \
    "IEEE divisions/reciprocals $(count '(div|rcp)\.rn'), square roots $(count 'sqrt\.rn')"
  if ((fused + approx + calls > 0)); then
    echo "check-ptxas: sm_$a: the PTX must hold no fused multiply-add, approximate instruction or call:" >&2
    grep -m 5 -nE "^[[:space:]]*(@!?%p[0-9]+[[:space:]]+)?((fma|mad)\.[a-z.]*f(16|32|64)|[a-z0-9]+(\.[a-z0-9]+)*\.(approx|ftz)|div\.full|call)" "$ptx" >&2
    status=1
  fi
done
if ((status == 0)); then
  echo "check-ptxas: no register spills, no local memory, no contracted or approximate arithmetic in any kernel"
fi
exit $status
