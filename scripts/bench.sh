#!/usr/bin/env bash
# Runs the benchmarks (bench/) and writes docs/benchmarks.md.
#   bash scripts/bench.sh            all cases, 3 repetitions each (about 25 minutes on 2 cores)
#   bash scripts/bench.sh --quick    the cases of the issue-5 targets only, 3 repetitions
#   bash scripts/bench.sh --python   vecnorm through PyTorch against its Python peers (torchrl's
#                                    VecNormV2, a torch.compile'd normalizer, SB3's RunningMeanStd)
#                                    and the C++ API, one run: writes docs/python-benchmarks.md
#   bash scripts/bench.sh --distributed   the cost of merging pooled statistics across ranks per
#                                    step, gloo (torch.distributed) and MPI at 2 and 4 ranks:
#                                    writes docs/benchmarks-distributed.md
#   bash scripts/bench.sh --under-load N   the CPU cases (f32, torchrl) idle and beside N busy
#                                    processes, default threads and one thread, interleaved
#                                    rounds: writes docs/benchmarks-load.md
# Run it on a quiet machine: other load changes the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
quick=0
python=0
distributed=0
busy=-1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --python) python=1 ;;
    --distributed) distributed=1 ;;
    --under-load) busy=${2:?--under-load needs a number of busy processes}; shift ;;
    *) echo "bench.sh: unknown option '$1' (expected --quick, --python, --distributed or --under-load N)" >&2; exit 2 ;;
  esac
  shift
done
cmake --preset bench >/dev/null
if [ "$distributed" = 1 ]; then
  cmake --build --preset bench --target vecnorm_bench_mpi
  py=$(bash scripts/python-env.sh | tail -n 1)
  "$py" -m pip install -q --no-build-isolation .
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
  {
    echo "# The cost of merging pooled statistics across ranks (CPU)"
    echo
    echo "Written by \`bash scripts/bench.sh --distributed\` on $(date -u +%F), commit $(git rev-parse --short HEAD), $(nproc) cores."
    echo "A pooled training step of an observation [rows, F] and a reward [rows] per rank, float32, one CPU thread per rank,"
    echo "with and without the merge (docs/distributed.md); a round's time is its slowest rank's; medians over rounds, microseconds per step."
    echo "The ranks share this machine's $(nproc) cores (4 ranks oversubscribe 2 cores): these are loopback latencies, not a cluster's."
    echo
    echo "## torch.distributed, gloo (bench/python/bench_distributed.py)"
    echo
    (cd bench/python && "$py" bench_distributed.py --ranks 2,4)
    echo
    echo "## MPI (bench/bench_mpi.cpp)"
    echo
    for n in 2 4; do
      echo "### $n ranks"
      echo
      mpirun -np "$n" --oversubscribe ./build-bench/bench/vecnorm_bench_mpi
      echo
    done
  } | tee docs/benchmarks-distributed.md
  exit 0
fi
if [ "$busy" -ge 0 ]; then
  cmake --build --preset bench --target vecnorm_bench_cpu
  out=build-bench/results-load
  rm -rf "$out" && mkdir -p "$out"
  filter='^vecnorm/.*/torchrl/f32/(1x17|16x17|4096x36|4096x48|4096x64|4096x87|4096x235|8192x157|65536x256)/'
  pids=()
  stop_busy() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); }
  trap stop_busy EXIT
  one() {  # state threads round
    local env=()
    [ "$2" = one ] && env=(VECNORM_NUM_THREADS=1)
    env "${env[@]}" ./build-bench/bench/vecnorm_bench_cpu --benchmark_filter="$filter" --benchmark_repetitions=3 \
      --benchmark_report_aggregates_only=true --benchmark_min_time=0.05 \
      --benchmark_out="$out/$1_$2_$3.json" --benchmark_out_format=json >/dev/null
  }
  for round in $(seq 1 "${BENCH_LOAD_ROUNDS:-5}"); do
    echo "bench: round $round: idle"
    one idle default $round; one idle one $round
    echo "bench: round $round: beside $busy busy processes"
    for ((i = 0; i < busy; ++i)); do bash -c 'while :; do :; done' & pids+=($!); done
    sleep 1
    one loaded default $round; one loaded one $round
    stop_busy
  done
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  python3 scripts/bench_load.py "$out" --busy "$busy" --command "bash scripts/bench.sh --under-load $busy" \
    --commit "$commit" --out docs/benchmarks-load.md
  exit 0
fi
if [ "$python" = 1 ]; then
  cmake --build --preset bench --target vecnorm_bench_cpu
  py=$(bash scripts/python-env.sh | tail -n 1)
  "$py" -m pip install -q stable-baselines3
  "$py" -m pip install -q --no-build-isolation .
  {
    echo "# vecnorm through PyTorch and its peers (CPU)"
    echo
    echo "Written by \`bash scripts/bench.sh --python\` (bench/python/bench_peers.py) on $(date -u +%F), commit $(git rev-parse --short HEAD), $(nproc) cores."
    echo "One training step of an observation [B, F] and a reward [B], float32, decay 0.9999, torchrl estimator; median microseconds per step."
    echo
    (cd bench/python && "$py" bench_peers.py --cpp-bench ../../build-bench/bench/vecnorm_bench_cpu 2>/dev/null)
  } | tee docs/python-benchmarks.md
  exit 0
fi
cmake --build --preset bench --target vecnorm_bench_cpu $(cmake --build --preset bench --target help 2>/dev/null | grep -q vecnorm_bench_gpu && echo vecnorm_bench_gpu)
out=build-bench/results
mkdir -p "$out"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit + uncommitted changes"
filter='.*'
reps=3
if [ "$quick" = 1 ]; then
  filter='f32/(1x17|4096x64|4096x235|65536x256)/'
  reps=3
fi
echo "bench: CPU cases (filter '$filter', $reps repetitions; one line per benchmark as it finishes)"
./build-bench/bench/vecnorm_bench_cpu --benchmark_filter="$filter" --benchmark_repetitions=$reps \
  --benchmark_report_aggregates_only=true --benchmark_min_time=0.1 \
  --benchmark_out="$out/cpu.json" --benchmark_out_format=json
gpu_args=(--gpu-note "no CUDA device on this machine (nvidia-smi/cudart found none)")
if [ -x build-bench/bench/vecnorm_bench_gpu ]; then
  if ./build-bench/bench/vecnorm_bench_gpu --benchmark_filter="$filter" --benchmark_repetitions=$reps \
       --benchmark_report_aggregates_only=true --benchmark_out="$out/gpu.json" --benchmark_out_format=json \
       | tee "$out/gpu.txt" | grep -q "not measured"; then
    :
  elif [ -s "$out/gpu.json" ]; then
    gpu_args=(--gpu "$out/gpu.json")
  fi
else
  gpu_args=(--gpu-note "this build has no CUDA backend")
fi
cmd="bash scripts/bench.sh $*"
python3 scripts/bench_report.py "$out/cpu.json" "${gpu_args[@]}" --command "${cmd% }" --commit "$commit" --out docs/benchmarks.md
echo "bench: wrote docs/benchmarks.md"
