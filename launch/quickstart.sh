#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build Release, write a
# document of DOC_TOKENS tokens (default 1M; byte = token) of real prose with a pass key hidden
# at a random depth (`longctx data`, held-out prose), and ask the trained model
# models/hybrid-tiny for it, sharded over RANKS MPI ranks (default 4):
#   mpirun -np 4 longctx run --model models/hybrid-tiny --input doc.txt \
#     --query "What is the pass key? The pass key is" --generate 8 \
#     --kv-device-budget 16M --kv-codec int8
# then print the answer, whether it is right, the time and the memory per rank (DIR/report.json
# has the details). Finally a short check of the attention kernel against the float64 reference.
# Environment: DOC_TOKENS, RANKS, SEED (of the document; default: random), MODEL, BUILD_DIR, WORK.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
DOC_TOKENS="${DOC_TOKENS:-1048576}"
RANKS="${RANKS:-4}"
SEED="${SEED:-$(( (RANDOM << 15) | RANDOM ))}"
MODEL="${MODEL:-$ROOT/models/hybrid-tiny}"
QUERY="What is the pass key? The pass key is"

"$ROOT/launch/install-deps.sh" run
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLONGCTX_BUILD_TESTS=OFF
cmake --build "$BUILD_DIR" -j "$(nproc)" --target longctx
LONGCTX="$BUILD_DIR/launch/longctx"
WORK="${WORK:-$BUILD_DIR/quickstart}"
rm -rf "$WORK/data" "$WORK/run"
mkdir -p "$WORK"

# A document of held-out prose (no paragraph of it was seen in training) with the needle
# "The pass key is NNNNN. Remember it. NNNNN is the pass key." at a random depth.
"$LONGCTX" data --task passkey --tokens "$DOC_TOKENS" --count 1 --split eval --seed "$SEED" \
  --out "$WORK/data" >/dev/null
MPIRUN=(mpirun -np "$RANKS" --oversubscribe --mca btl self,vader,tcp --mca btl_tcp_if_include lo
        --mca oob_tcp_if_include lo --mca pml ob1)
if [[ $(id -u) -eq 0 ]]; then MPIRUN+=(--allow-run-as-root); fi
# One thread per rank when ranks outnumber the cores.
THREADS=$(( $(nproc) / RANKS )); (( THREADS >= 1 )) || THREADS=1
# Each rank keeps 16 MiB of its KV cache (of 512 MiB at 1M: the persistent set of global-token
# blocks, window and tails needs about 10 MiB on rank 0) in compute memory and demotes the rest (int8) to its
# host tier while the prefill goes on; the question's tokens are global (they read every token).
start=$(date +%s.%N)
"${MPIRUN[@]}" "$LONGCTX" run --model "$MODEL" --input "$WORK/data/doc-0.txt" --out "$WORK/run" \
  --threads "$THREADS" --progress on --query "$QUERY" --generate 8 \
  --kv-device-budget 16M --kv-codec int8
end=$(date +%s.%N)

python3 - "$WORK/data/index.jsonl" "$WORK/run" "$start" "$end" "$SEED" <<'EOF'
import json, sys
doc = json.loads(open(sys.argv[1]).readline())
run = sys.argv[2]
report = json.load(open(run + "/report.json"))
generated = open(run + "/generated.txt", encoding="utf-8", errors="replace").read()
truth = doc["answer"].strip().rstrip(".")
right = generated.strip().startswith(truth)
s = report["seconds"]
doc_tokens = report["per_rank"][-1]["tokens"][1]
print(f"\nquickstart: a {doc_tokens}-token document on {report['ranks']} ranks, pass key at depth "
      f"{100 * doc['depths'][0]:.1f}% (document seed {sys.argv[5]})")
print(f"  question : {doc['question'].strip()!r}")
print(f"  generated: {generated!r}")
print(f"  truth    : {truth!r} -> {'RIGHT' if right else 'WRONG'}")
print(f"  time     : prefill {s['prefill']:.1f} s ({report['tokens_per_second']:.0f} tokens/s), "
      f"answer {s['decode']:.2f} s, whole run {float(sys.argv[4]) - float(sys.argv[3]):.1f} s "
      f"(mpirun, load and write included)")
for r in report["per_rank"]:
    kv = r["kv"]
    print(f"  rank {r['rank']}   : tokens [{r['tokens'][0]}, {r['tokens'][1]}), peak RSS "
          f"{r['peak_rss_bytes'] / 2**20:.0f} MiB, KV cache {r['kv_cache_bytes'] / 2**20:.1f} MiB "
          f"(device {kv['device']['bytes'] / 2**20:.1f} MiB, host {kv['host']['bytes'] / 2**20:.1f} "
          f"MiB int8)")
print(f"  details  : {run}/report.json")
EOF

"$LONGCTX" attention --make-sample "$WORK/attn" --n 4096 --heads 8 --kv-heads 2 --head-dim 64 >/dev/null
"$LONGCTX" attention --q "$WORK/attn/q.npy" --k "$WORK/attn/k.npy" --v "$WORK/attn/v.npy" \
  --globals "$WORK/attn/globals.npy" --window 256 --out "$WORK/attn/o.npy" --lse "$WORK/attn/lse.npy" --check
