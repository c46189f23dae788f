#!/usr/bin/env bash
# Installs, with apt-get, the Debian 12 packages longctx builds, tests and runs with — only
# those missing, so a machine that has them all is left untouched (and needs no network).
# Usage: install-deps.sh [run|all]   (run: build and run only, for launch/quickstart.sh;
# all, the default: also the test suite's, for tests/run.sh). Needs root (or sudo) when
# something is missing.
set -euo pipefail

# What building and running needs (launch/quickstart.sh) ...
PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libopenblas-dev libfmt-dev libspdlog-dev libcli11-dev nlohmann-json3-dev libxxhash-dev
  openmpi-bin libopenmpi-dev            # the MPI communicator (comm/)
  libprotobuf-dev protobuf-compiler libboost-dev  # the coordinator (Protobuf, Boost.Asio)
  libssl-dev openssl  # the coordinator's TLS (Boost.Asio SSL over OpenSSL; the CLI makes test CAs)
  libucx-dev ucx-utils libhiredis-dev   # the UCX KV store; hiredis for `bench kvstore`
  libssl-dev                            # OpenSSL: the KV store token (RAND_bytes, CRYPTO_memcmp)
  python3-matplotlib                    # the plots of `longctx bench matrix`
  libpcre2-dev libicu-dev               # tokenizer.json: Split regexes (\p{L} ...), NFC/NFKC
  debian-handbook                       # English prose: the filler of `longctx data` (docs/training.md)
  pybind11-dev python3-dev python3-numpy  # the Python package `longctx` (docs/python.md)
)
# ... and what the test suite adds (tests/run.sh): GoogleTest, and python3-torch/numpy as the
# independent float64 references of the tests and the bench peers.
if [[ "${1:-all}" != "run" ]]; then
  PACKAGES+=(git libgtest-dev libgmock-dev python3 python3-numpy python3-torch)
  # A real single-node Slurm cluster for the `slurm` tests (started and stopped by the test).
  PACKAGES+=(slurmctld slurmd slurm-client munge libpmix-dev)
  # clang and its libFuzzer runtime for the fuzz targets (fuzz/, tests/fuzz/run_fuzzers.sh).
  PACKAGES+=(clang libclang-rt-14-dev)
  # The `bench kvstore` Redis peer (a private redis-server on loopback).
  PACKAGES+=(redis-server)
  # A real Prometheus server that scrapes /metrics in the `prometheus` test (~96 MB installed).
  PACKAGES+=(prometheus)
fi

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
