#!/usr/bin/env bash
# Quick start, command 2: build everything and run every test: the C++ suites
# (ctest), then the Python package installed with pip and its pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default
cmake --build --preset default
ctest --preset default
bash scripts/python-test.sh
