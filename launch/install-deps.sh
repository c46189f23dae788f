#!/usr/bin/env bash
# Installs, with apt-get, the Debian 12 packages longctx builds, tests and runs with — only
# those missing, so a machine that has them all is left untouched (and needs no network).
# Used by launch/quickstart.sh and tests/run.sh. Needs root (or sudo) when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev
  libopenblas-dev libfmt-dev libspdlog-dev libcli11-dev nlohmann-json3-dev
  openmpi-bin libopenmpi-dev            # the MPI communicator (comm/)
  python3 python3-numpy python3-torch   # independent float64 reference in tests, bench peers
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
