#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build Release, write a
# sample document of DOC_TOKENS bytes (default 1M; byte = token), and run it through the
# built-in model sharded over RANKS MPI ranks (default 4):
#   mpirun -np 4 longctx run --model builtin:tiny --input doc.txt --out DIR
# then print the run's summary (DIR/report.json has the details). Finally a short check of the
# attention kernel against the float64 reference.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
DOC_TOKENS="${DOC_TOKENS:-1048576}"
RANKS="${RANKS:-4}"

"$ROOT/launch/install-deps.sh" run
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLONGCTX_BUILD_TESTS=OFF
cmake --build "$BUILD_DIR" -j "$(nproc)" --target longctx
LONGCTX="$BUILD_DIR/launch/longctx"
WORK="${WORK:-$BUILD_DIR/quickstart}"
mkdir -p "$WORK"

"$ROOT/launch/make_document.sh" "$DOC_TOKENS" "$WORK/doc.txt"
MPIRUN=(mpirun -np "$RANKS" --oversubscribe --mca btl self,vader,tcp --mca btl_tcp_if_include lo
        --mca oob_tcp_if_include lo --mca pml ob1)
if [[ $(id -u) -eq 0 ]]; then MPIRUN+=(--allow-run-as-root); fi
# One thread per rank when ranks outnumber the cores.
THREADS=$(( $(nproc) / RANKS )); (( THREADS >= 1 )) || THREADS=1
# The document, a question and 16 generated tokens; each rank keeps 8 MiB of its KV cache in
# compute memory and demotes the rest (int8) to its host tier while the prefill goes on.
"${MPIRUN[@]}" "$LONGCTX" run --model builtin:tiny --input "$WORK/doc.txt" --out "$WORK/run" \
  --threads "$THREADS" --progress on --query "Who pays for the goods of lot 7? " --generate 16 \
  --kv-device-budget 8M --kv-codec int8
echo "quickstart: $WORK/run/report.json, tokens.npy, globals.npy and generated.txt written"

"$LONGCTX" attention --make-sample "$WORK/attn" --n 4096 --heads 8 --kv-heads 2 --head-dim 64 >/dev/null
"$LONGCTX" attention --q "$WORK/attn/q.npy" --k "$WORK/attn/k.npy" --v "$WORK/attn/v.npy" \
  --globals "$WORK/attn/globals.npy" --window 256 --out "$WORK/attn/o.npy" --lse "$WORK/attn/lse.npy" --check
