#!/usr/bin/env bash
# The Python environment of vecnorm's package and its tests: a virtual
# environment with torch, torchrl, tensordict, onnx, onnxruntime and pytest from
# PyPI (torch's wheel is the CUDA build, several GB: installed once, reused by
# every script and clone), and the anchor libraries of
# tests/python/anchor_refs.py. Prints the environment's python on its last line.
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
# The anchor libraries that tests/python/anchor_refs.py wraps (conformance of the
# presets; docs/anchors.md), pinned to the versions that docs/anchors.md read.
# gymnasium and stable-baselines3 install with their (light) dependencies; the
# others with --no-deps, which keeps them from pulling onnxscript, GitPython,
# tensorboardX, pygame, watchdog and the like: their normalizer imports need only
# torch, plus tensorboard and absl-py (rsl_rl's package __init__ imports
# torch.utils.tensorboard). torch and numpy are never replaced.
anchors=(gymnasium==1.4.0 stable-baselines3==2.9.2)
anchors_nodeps=(rsl-rl-lib==5.5.1 rl-games==1.6.5 skrl==2.1.1 tensorboard==2.21.0 absl-py==2.5.1)
if ! "$venv/bin/python" -c "import stable_baselines3.common.vec_env, gymnasium.wrappers.vector, rsl_rl.modules.normalization, rl_games.algos_torch.running_mean_std, skrl.resources.preprocessors.torch" >/dev/null 2>&1; then
  echo "python-env: installing the anchors ${anchors[*]} ${anchors_nodeps[*]} (--no-deps) into $venv" >&2
  "$venv/bin/python" -m pip install -q --progress-bar off "${anchors[@]}" >&2
  "$venv/bin/python" -m pip install -q --progress-bar off --no-deps "${anchors_nodeps[@]}" >&2
fi
# brax, the jax anchor: with its own dependencies (jax and jaxlib for the CPU,
# flax, mujoco: its package __init__ imports them), in a call of its own whose
# resolution holds what is installed above at its version (torch, numpy and
# the packages the tests import with them). A failure stops this script.
brax=(brax==0.14.2 jax==0.10.2 jaxlib==0.10.2)
if ! "$venv/bin/python" -c "import brax.training.acme.running_statistics" >/dev/null 2>&1; then
  echo "python-env: installing the jax anchor ${brax[*]} into $venv" >&2
  held=$(mktemp)
  trap 'rm -f "$held"' EXIT
  "$venv/bin/python" - > "$held" <<'PY'
from importlib import metadata
for name in ("torch", "numpy", "torchrl", "tensordict", "onnx", "onnxruntime", "protobuf", "tensorboard"):
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
PY
  "$venv/bin/python" -m pip install -q --progress-bar off -c "$held" "${brax[@]}" >&2
fi
echo "$venv/bin/python"
