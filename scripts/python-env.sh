#!/usr/bin/env bash
# The Python environment of vecnorm's package and its tests: a virtual
# environment with torch, torchrl, tensordict, onnx, onnxruntime and pytest from
# PyPI (torch's wheel is the CUDA build, several GB: installed once, reused by
# every script and clone). Prints the environment's python on its last line.
#   VECNORM_VENV   where (default: ~/.cache/vecnorm/venv)
set -euo pipefail
venv=${VECNORM_VENV:-$HOME/.cache/vecnorm/venv}
py=${PYTHON:-python3}
if [[ ! -x "$venv/bin/python" ]]; then
  echo "python-env: creating $venv" >&2
  if ! "$py" -m venv "$venv" >&2; then
    echo "python-env: '$py -m venv' failed; installing Debian's python3-venv" >&2
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >&2
    "$py" -m venv "$venv" >&2
  fi
fi
pkgs=(torch torchrl tensordict onnx onnxruntime pytest numpy scikit-build-core ninja)
if ! "$venv/bin/python" -c "import torch, torchrl, tensordict, onnx, onnxruntime, pytest, numpy, scikit_build_core" 2>/dev/null; then
  echo "python-env: installing ${pkgs[*]} from PyPI into $venv (torch is several GB: minutes)" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q --progress-bar off "${pkgs[@]}" >&2
fi
echo "$venv/bin/python"
