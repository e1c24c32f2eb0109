#!/usr/bin/env bash
# fuzz/run.sh -- build the decode_state fuzzer with clang (libFuzzer + ASan +
# UBSan), seed a corpus with valid checkpoints and fuzz for a bounded time.
#
#   fuzz/run.sh                      # 60 s
#   FUZZ_SECONDS=600 fuzz/run.sh     # longer
#   FUZZ_BUILD_DIR=/tmp/f fuzz/run.sh
#
# Needs clang++ and libFuzzer (Debian: clang-14 + libclang-rt-14-dev, which
# holds libclang_rt.fuzzer-x86_64.a). Compiles include/ + every .cpp of src/
# and its folders (the CPU loops in their baseline build, src/cuda/cuda_stub.cpp)
# directly (no CMake); the
# objects are reused while their sources are unchanged. Exits non-zero when the
# fuzzer finds a crash (the reproducer is left in the build dir as crash-*).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
SECONDS_TO_RUN="${FUZZ_SECONDS:-60}"
JOBS="${FUZZ_JOBS:-2}"
CXX="${CXX:-clang++}"
case "$("$CXX" --version 2>/dev/null | head -1)" in
  *clang*) ;;
  *) echo "fuzz/run.sh: expected a clang++ compiler, got CXX=$CXX" >&2; exit 2 ;;
esac

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CXXFLAGS="-std=c++20 -O1 -g $SAN -I$ROOT/include -w"
mkdir -p "$BUILD/obj" "$BUILD/corpus" "$BUILD/seeds"

# The library, instrumented for coverage (fuzzer-no-link) and sanitizers.
# (Not src/torch/: the PyTorch adapter is built by pip against torch; not
# src/mpi/, src/nccl/: the collective adapters are libraries of their own.)
SOURCES=()
for src in "$ROOT"/src/*.cpp "$ROOT"/src/*/*.cpp; do
  case "$src" in
    "$ROOT"/src/torch/* | "$ROOT"/src/mpi/* | "$ROOT"/src/nccl/*) ;;
    *) SOURCES+=("$src") ;;
  esac
done
# One object per source, named by its path under src/ (folders may repeat a file name).
obj_of() { local rel="${1#"$ROOT"/src/}"; rel="${rel//\//_}"; echo "$BUILD/obj/${rel%.cpp}.o"; }
todo=()
OBJS=()
for src in "${SOURCES[@]}"; do
  obj="$(obj_of "$src")"
  OBJS+=("$obj")
  if [[ ! -f "$obj" || "$src" -nt "$obj" || -n "$(find "$ROOT/include" "$ROOT/src" -name '*.hpp' -newer "$obj" -print -quit)" ]]; then
    todo+=("$src|$obj")
  fi
done
if ((${#todo[@]})); then
  echo "fuzz/run.sh: compiling ${#todo[@]} sources with $CXX"
  printf '%s\n' "${todo[@]}" | xargs -P "$JOBS" -I{} sh -c \
    'pair="{}"; "$0" $1 -fsanitize=fuzzer-no-link -c "${pair%%|*}" -o "${pair#*|}"' "$CXX" "$CXXFLAGS"
fi
"$CXX" $CXXFLAGS -fsanitize=fuzzer "$ROOT/fuzz/fuzz_decode_state.cpp" "${OBJS[@]}" -lpthread -o "$BUILD/fuzz_decode_state"
"$CXX" $CXXFLAGS -fsanitize=fuzzer-no-link "$ROOT/fuzz/make_seeds.cpp" "${OBJS[@]}" -lpthread -o "$BUILD/make_seeds"

"$BUILD/make_seeds" "$BUILD/seeds"

# -malloc_limit_mb: a corrupt length must never cause a big allocation (inputs are <= 4 KiB).
# -timeout: a corrupt count must never cause a hang.
echo "fuzz/run.sh: fuzzing decode_state for ${SECONDS_TO_RUN}s"
set +e
"$BUILD/fuzz_decode_state" -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -malloc_limit_mb=64 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="$BUILD/" "$BUILD/corpus" "$BUILD/seeds" 2>&1 | tee "$BUILD/fuzz.log" | \
  grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::|ERROR|SUMMARY|Test unit written|Done [0-9]+ runs"
rc=${PIPESTATUS[0]}
set -e
runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$BUILD/fuzz.log" | tail -1)"
echo "fuzz/run.sh: executions: ${runs:-unknown} in ${SECONDS_TO_RUN}s; corpus: $(ls "$BUILD/corpus" | wc -l) inputs; exit status $rc"
exit "$rc"
