#!/usr/bin/env bash
# Quick start, command 1: build vecnorm and run the main job (`vecnorm demo`).
# Extra arguments go to the demo (e.g. --pooled, --estimator torchrl, --steps 500).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default --target vecnorm_cli
exec ./build/apps/vecnorm demo "$@"
