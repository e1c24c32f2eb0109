#!/usr/bin/env bash
# Downloads (does not install) the Debian packages of GoogleTest and Google
# Benchmark into .gpu-deps/, for scripts/gpu-check.sh on a GPU machine that
# reaches no package registry: carry .gpu-deps there, and gpu-check.sh unpacks
# them into a private prefix. .gpu-deps/ is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu-deps
cd .gpu-deps
rm -f ./*.deb
apt-get download libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian 2>&1 | tail -1 ||
  { apt-get update -qq && apt-get download libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian; }
ls -l ./*.deb
