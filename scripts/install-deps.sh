#!/usr/bin/env bash
# Installs, from Debian's packages, whatever this machine lacks to build and test
# vecnorm. Idempotent: a machine that has everything installs nothing.
# The CUDA toolkit is optional (the CUDA backend is built when nvcc is found).

#   --fuzz   also clang and libFuzzer (for fuzz/run.sh; CI step 6)
set -euo pipefail

pkgs=(cmake ninja-build g++ libgtest-dev libgmock-dev libbenchmark-dev libboost-context-dev libdlpack-dev python3
      libopenmpi-dev openmpi-bin)
for a in "$@"; do
  case "$a" in
    --fuzz) pkgs+=(clang libclang-rt-dev) ;;
    *) echo "install-deps: unknown option '$a' (expected --fuzz)" >&2; exit 2 ;;
  esac
done

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in "${pkgs[@]}"; do
  have_pkg "$pkg" || need+=("$pkg")
done

if ((${#need[@]} == 0)); then
  echo "install-deps: everything needed is installed"
  exit 0
fi
echo "install-deps: installing ${need[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
