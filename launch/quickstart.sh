#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build Release, then run
# hybrid attention on a built-in sample (8K tokens, 8 query / 2 kv heads, d=64, 4 sinks plus a
# global every 97 tokens) and check it against the float64 reference.
# (The model pipeline, `longctx run`, replaces this demo when it lands.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"

"$ROOT/launch/install-deps.sh"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j "$(nproc)" --target longctx
LONGCTX="$BUILD_DIR/launch/longctx"
WORK="${WORK:-$BUILD_DIR/quickstart}"
mkdir -p "$WORK"

"$LONGCTX" attention --make-sample "$WORK" --n 8192 --heads 8 --kv-heads 2 --head-dim 64
"$LONGCTX" attention --q "$WORK/q.npy" --k "$WORK/k.npy" --v "$WORK/v.npy" \
  --globals "$WORK/globals.npy" --window 256 --fusion union \
  --out "$WORK/o.npy" --lse "$WORK/lse.npy" --check
echo "quickstart: wrote $WORK/o.npy [8192, 8, 64] and $WORK/lse.npy [8192, 8]"
