#!/usr/bin/env bash
# Builds and installs the Python package into the environment of
# scripts/python-env.sh (pip install --no-build-isolation ., the way a user
# installs it), then runs its tests (tests/python, pytest).
# Extra arguments go to pytest (e.g. -k compile -x).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/python-env.sh | tail -n 1)
echo "python-test: pip install --no-build-isolation . (build dir build/py, kept between installs)"
"$python" -m pip install -q --no-build-isolation . 
# From outside the source tree, so that the installed package is what is tested.
cd tests/python
"$python" -m pytest -q -ra "$@"
