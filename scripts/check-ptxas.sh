#!/usr/bin/env bash
# Compile evidence for the CUDA kernels: nvcc builds every kernel for each
# architecture with ptxas verbose output; the check fails on any register spill
# or local-memory use, and prints registers per kernel.
#   scripts/check-ptxas.sh [out_dir]      (default build/ptxas)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/ptxas}
archs=${VECNORM_PTXAS_ARCHS:-"80 90"}
if ! command -v nvcc >/dev/null; then
  echo "check-ptxas: nvcc not found: skipped (no CUDA toolkit on this machine)"
  exit 0
fi
mkdir -p "$out"
pids=()
for a in $archs; do
  nvcc -std=c++20 --expt-relaxed-constexpr -O3 -arch=sm_$a -Xptxas=-v,-warn-spills,-warn-lmem-usage \
    -Iinclude -c src/cuda/cuda_backend.cu -o "$out/cuda_backend.sm_$a.o" 2> "$out/ptxas.sm_$a.txt" &
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
done
if ((status == 0)); then echo "check-ptxas: no register spills and no local memory in any kernel"; fi
exit $status
