#!/usr/bin/env bash
# Reproduces models/hybrid-tiny from random weights: the exact commands of its model card
# (README.md here), phase after phase, each phase starting from the previous one's final/.
# Usage: models/hybrid-tiny/train.sh OUT_DIR [theta|window]
#   (no 2nd argument) the shipped model: rope_theta 3e8, phases 1-5 and 8-10
#   theta   the positional-scheme comparison arm: rope_theta 1e4, phases 1-3 and the first 60
#           steps (the 16K stage) of phase 4, the same data as the shipped model's
#   window  the window-only baseline: no budgeted globals, the question local, phases 1-2
#   logn    the log-length scaling experiment (docs/training.md), from the shipped weights
#           OUT/p5/final (run the shipped arm into the same OUT first): phases 6-7, not shipped
# Needs a built longctx (BUILD_DIR, default build/) and mpirun for phases 4-5 (2 ranks).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
B="${BUILD_DIR:-$ROOT/build}/launch/longctx"
OUT="$1"
ARM="${2:-}"
mkdir -p "$OUT"
MPIRUN=(mpirun -np 2 --oversubscribe --mca btl self,vader,tcp --mca btl_tcp_if_include lo
        --mca oob_tcp_if_include lo --mca pml ob1)
if [[ $(id -u) -eq 0 ]]; then MPIRUN+=(--allow-run-as-root); fi
COMMON=(--batch 4 --threads 1 --progress off --save-every 500)

INIT_FLAGS=()
case "$ARM" in
  "") ;;
  theta) INIT_FLAGS=(--rope-theta 10000) ;;
  window) INIT_FLAGS=(--global-max 0 --sinks 0 --query-globals off) ;;
  logn) ;;
  *) echo "train.sh: unknown arm '$ARM' (theta, window, logn)" >&2; exit 2 ;;
esac

# Phase 0: the initial weights (the hybrid-tiny preset: 4 layers, hidden 128, rope_theta 3e8).
if [[ "$ARM" == logn ]]; then
  # Phase 6: the shipped weights fine-tuned with the global queries' logits scaled by
  # max(1, ln(p+1)/ln 2048) (longctx.logn_base, written into the checkpoints' config).
  "${MPIRUN[@]}" -x LONGCTX_COMM_TIMEOUT_S=900 "$B" train --model "$OUT/p5/final" --logn-base 2048 \
    --tasks passkey,niah --curriculum 2K:150,16K:60,64K:40 --lr 1e-3 --min-lr 1e-4 --mining on \
    --seed 8 --batch 2 --threads 1 --progress off --save-every 50 --out "$OUT/p6"
  # Phase 7: 256K tokens.
  "${MPIRUN[@]}" -x LONGCTX_COMM_TIMEOUT_S=900 "$B" train --model "$OUT/p6/final" \
    --tasks passkey,niah --curriculum 256K:16 --lr 5e-4 --min-lr 1e-4 --mining on --seed 9 \
    --batch 2 --threads 1 --progress off --save-every 8 --out "$OUT/p7"
  exit 0
fi
"$B" mkmodel --preset hybrid-tiny --seed 0 --out "$OUT/init"
# Phase 1: the pass key alone in 180-token documents — short enough that a needle is often
# within the question's window, so the answer format and the reading are learned first.
"$B" train --model "$OUT/init" "${INIT_FLAGS[@]}" --tasks passkey --curriculum 180:4000 \
  --batch 8 --lr 3e-3 --min-lr 3e-4 --threads 1 --seed 3 --save-every 500 --progress off \
  --out "$OUT/p1"
# Phase 2: 300 tokens, pass key, single needle and variable tracking.
"$B" train --model "$OUT/p1/final" --tasks passkey,niah,vt --curriculum 300:1500 \
  --lr 2e-3 --min-lr 2e-4 --mining on --seed 4 "${COMMON[@]}" --out "$OUT/p2"
[[ "$ARM" != window ]] || exit 0
# Phase 3: every task (multi-key needles need 533 tokens), 600 then 2K tokens.
"$B" train --model "$OUT/p2/final" --tasks passkey,niah,multikey,vt \
  --curriculum 600:1500,2K:600 --lr 2e-3 --min-lr 2e-4 --mining on --seed 5 "${COMMON[@]}" \
  --out "$OUT/p3"
# Phase 4: long documents, sequence parallel on 2 ranks: 16K, 64K then 256K tokens.
"${MPIRUN[@]}" -x LONGCTX_COMM_TIMEOUT_S=900 "$B" train --model "$OUT/p3/final" \
  --tasks passkey,niah,multikey,vt --curriculum 16K:60,64K:16,256K:4 --lr 1e-3 --min-lr 1e-4 \
  --mining on --seed 6 --batch 4 --threads 1 --progress off --save-every 20 --out "$OUT/p4" \
  $([[ "$ARM" == theta ]] && echo --max-steps 60)
[[ -z "$ARM" ]] || exit 0
# Phase 5: the pass key (and single needles) in long documents, 2 ranks: 64K tokens.
"${MPIRUN[@]}" -x LONGCTX_COMM_TIMEOUT_S=900 "$B" train --model "$OUT/p4/final" \
  --tasks passkey,niah --curriculum 64K:60,256K:12 --lr 1e-3 --min-lr 1e-4 --mining on --seed 7 \
  --batch 2 --threads 1 --progress off --save-every 12 --max-steps 60 --out "$OUT/p5"
# Phases 6-7 are the logn arm (above). Phases 8-10: a million tokens, trained at 16K-64K
# (docs/training.md "Training for a million tokens at 64K").
# Phase 8: simulated dilution — the needle's keys handicapped by ln(1M/n) nats in the global
# queries' softmax, so the margin a 16K document needs is the one a 1M document needs.
"${MPIRUN[@]}" -x LONGCTX_COMM_TIMEOUT_S=900 "$B" train --model "$OUT/p5/final" \
  --tasks passkey,niah --curriculum 16K:80 --dilute-to 1M --lr 1e-3 --min-lr 1e-4 --mining on \
  --seed 31 --batch 2 --threads 1 --progress off --save-every 20 --out "$OUT/p8"
# Phase 9: the globals a 1M run has (the 4 sinks and the question: global_max 4, written into
# the config) and the distances (RoPE positions skipped by up to 1M between needle and question).
"${MPIRUN[@]}" -x LONGCTX_COMM_TIMEOUT_S=900 "$B" train --model "$OUT/p8/final" --global-max 4 \
  --tasks passkey,niah --curriculum 16K:120 --dilute-to 1M --position-skip-to 1M --lr 1e-3 \
  --min-lr 1e-4 --mining on --seed 41 --batch 2 --threads 1 --progress off --save-every 40 \
  --out "$OUT/p9"
# Phase 10: more of it, with a margin (dilution to 2M), then 64K-token documents.
"${MPIRUN[@]}" -x LONGCTX_COMM_TIMEOUT_S=900 "$B" train --model "$OUT/p9/final" \
  --tasks passkey,niah --curriculum 16K:150,64K:24 --dilute-to 2M --position-skip-to 1M \
  --lr 7e-4 --min-lr 7e-5 --mining on --seed 51 --batch 2 --threads 1 --progress off \
  --save-every 50 --out "$OUT/p10"
# The shipped weights are $OUT/p10/final.
