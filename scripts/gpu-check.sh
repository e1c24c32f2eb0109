#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU (docs/testing.md, "On a GPU").
#
#   bash scripts/gpu-check.sh            # on the GPU machine, from the repository root
#
# 1. builds the library, the core tests, the GPU tests and the GPU benchmarks
#    for the compute capability of the GPU it finds (build-gpu/);
# 2. runs on the device: the bit-identity suite (CPU and GPU compute the same
#    bits, tests/core/bits_test.cpp), every core case on Backend::cuda against
#    the reference, the `gpu` label (CUDA-graph capture, launches per step), the
#    distributed pooled step with 4 thread ranks on the device and the NCCL
#    adapter (`nccl` label, when the toolkit has NCCL);
# 3. runs the GPU benchmarks (CUDA events, L2 flushed before every iteration,
#    bytes moved, fraction of the measured copy bandwidth, eager launches and
#    CUDA-graph replay, the Isaac shapes of docs/benchmarks.md);
# 4. writes docs/gpu-report.md (device, driver, every figure), and copies it and
#    the raw results to $OUT when that is set (the device tool brings them back).
# Without a GPU it prints one line and exits 0. Needs CMake, ninja, nvcc, and
# GoogleTest and Google Benchmark: found installed, or unpacked from the Debian
# packages that `bash scripts/gpu-deps.sh` downloads into .gpu-deps/ beforehand
# (for a machine that reaches no package registry; carry that folder there).
# It is sized to finish within 10 minutes on an H100/H200-class machine.
# VECNORM_GPU_CHECK_DRY_RUN=1 runs every step without a GPU (for sm_90, or
# VECNORM_GPU_CHECK_CC): the tests then skip and nothing is measured; it checks
# the script itself (the report says so).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
dry=${VECNORM_GPU_CHECK_DRY_RUN:-0}
if [[ $dry != 1 ]] && { ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; }; then
  echo "gpu-check: no NVIDIA GPU on this machine (nvidia-smi found none): nothing to check"
  exit 0
fi
log() { printf 'gpu-check: [%3d s] %s\n' $((SECONDS - start)) "$*"; }

# ---- the device
if [[ $dry == 1 ]]; then
  gpu_name="none (dry run: VECNORM_GPU_CHECK_DRY_RUN=1, nothing measured)"
  driver="none"
  cc=${VECNORM_GPU_CHECK_CC:-90}
else
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
fi
log "device: $gpu_name, driver $driver, compute capability ${cc:0:${#cc}-1}.${cc: -1}"
results=build-gpu/results
mkdir -p "$results"
nvidia-smi > "$results/nvidia-smi.txt" 2>&1 || true
nvcc --version > "$results/nvcc.txt" 2>&1 || true

# ---- GoogleTest / Google Benchmark: installed, or from .gpu-deps/*.deb
prefix_args=()
if [[ -d .gpu-deps ]] && compgen -G ".gpu-deps/*.deb" >/dev/null; then
  deps=/tmp/vecnorm-gpu-deps
  rm -rf "$deps" && mkdir -p "$deps"
  for f in .gpu-deps/*.deb; do dpkg -x "$f" "$deps"; done
  prefix_args=(-DCMAKE_PREFIX_PATH="$deps/usr" -DCMAKE_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu")
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  log "using GoogleTest/Google Benchmark unpacked from .gpu-deps/"
fi

# ---- build for this GPU
jobs=$(nproc)
log "configuring for sm_$cc"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$cc" \
  -DVECNORM_TEST_EMULATED=OFF -DVECNORM_BUILD_APPS=OFF "${prefix_args[@]}" > "$results/configure.txt" 2>&1 ||
  { cat "$results/configure.txt"; exit 1; }
log "building (library, core and GPU tests, GPU benchmarks) with $jobs jobs"
targets=(vecnorm_core_tests vecnorm_api_tests vecnorm_gpu_tests vecnorm_bench_gpu)
grep -q "vecnorm_nccl_tests" build-gpu/build.ninja && targets+=(vecnorm_nccl_tests)
cmake --build build-gpu -j "$jobs" --target "${targets[@]}" \
  > "$results/build.txt" 2>&1 || { tail -40 "$results/build.txt"; exit 1; }

# ---- tests on the device
status=0
log "bit-identity suite (CPU vs GPU) and every core case on the GPU"
./build-gpu/tests/vecnorm_core_tests --gtest_filter='All/SameBits.*:All/PooledBits.*:*cuda*' \
  --gtest_output=xml:"$results/core.xml" > "$results/core.txt" 2>&1 || status=1
tail -3 "$results/core.txt"
log "gpu label (CUDA graphs, launches per step)"
./build-gpu/tests/gpu/vecnorm_gpu_tests --gtest_output=xml:"$results/gpu.xml" > "$results/gpu.txt" 2>&1 || status=1
tail -3 "$results/gpu.txt"
log "pooled statistics across ranks on the GPU (thread ranks) and the NCCL adapter"
./build-gpu/tests/vecnorm_api_tests --gtest_filter='All/Collective.*cuda*' \
  --gtest_output=xml:"$results/collective.xml" > "$results/collective.txt" 2>&1 || status=1
tail -3 "$results/collective.txt"
if [[ -x build-gpu/tests/nccl/vecnorm_nccl_tests ]]; then
  ./build-gpu/tests/nccl/vecnorm_nccl_tests --gtest_output=xml:"$results/nccl.xml" > "$results/nccl.txt" 2>&1 || status=1
  tail -3 "$results/nccl.txt"
fi

# ---- benchmarks
log "GPU benchmarks"
./build-gpu/bench/vecnorm_bench_gpu --benchmark_filter='/torchrl/' --benchmark_min_time=0.2 \
  --benchmark_out="$results/bench_gpu.json" --benchmark_out_format=json > "$results/bench.txt" 2>&1 || status=1
tail -2 "$results/bench.txt"

# ---- the report
report=docs/gpu-report.md
[[ $dry == 1 ]] && report=build-gpu/gpu-report.dry-run.md  # a dry run never replaces a real report
python3 scripts/gpu_report.py --results "$results" --name "$gpu_name" --driver "$driver" --cc "$cc" \
  --seconds $((SECONDS - start)) --out "$report"
log "wrote $report"
if [[ -n ${OUT:-} ]]; then
  cp "$report" "$OUT/gpu-report.md"
  tar -czf "$OUT/gpu-results.tar.gz" -C build-gpu results
fi
log "done (status $status)"
exit $status
