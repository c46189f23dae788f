#!/usr/bin/env bash
# `longctx train` and `longctx grad` end to end: a short run writes HF checkpoints that `longctx
# run` loads as they are, train.jsonl and the loss-curve PNG; --resume from step-N continues with
# a loss curve and final weights bitwise equal to the uninterrupted run; 2 ranks (sequence
# parallel) and --dp 2 run; every kind of bad input is one error line and a non-zero exit, and
# a failed run leaves the saved checkpoints intact.
# Usage: test_cli_train.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MPIRUN=(timeout 300 mpirun --oversubscribe --allow-run-as-root --mca btl self,vader,tcp
        --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo --mca pml ob1)

BASE=(train --model builtin:tiny --threads 1 --progress off --lr 3e-3)
TR=("${BASE[@]}" --tasks passkey,lm)
# A document for `run` on the checkpoints (the train logs may be empty).
printf 'The pass key is 12345. Remember it. 12345 is the pass key.\n\nThe grass grew; the sun set.' >"$T/doc.txt"
"$BIN" "${TR[@]}" --curriculum 400:4,600:2 --save-every 3 --out "$T/a" >"$T/a.log" 2>&1 \
  && ok "train: 2 stages, 6 steps" || bad "train: $(tail -3 "$T/a.log")"
[[ -f "$T/a/final/config.json" && -f "$T/a/final/model.safetensors" && -f "$T/a/final/optimizer.safetensors" \
   && -f "$T/a/final/state.json" && -d "$T/a/step-3" && -d "$T/a/step-6" ]] \
  && ok "checkpoints step-3, step-6, final" || bad "checkpoint files: $(ls -R "$T/a" | head -20)"
[[ $(wc -l <"$T/a/train.jsonl") -eq 6 ]] && ok "train.jsonl has 6 lines" || bad "train.jsonl lines"
[[ -s "$T/a/train.png" && "$(head -c 4 "$T/a/train.png" | tail -c 3)" == PNG ]] && ok "train.png" || bad "no train.png"
"$PY" - "$T/a/train.jsonl" <<'PYEOF' && ok "train.jsonl fields" || bad "train.jsonl fields"
import json, sys, math
rows = [json.loads(l) for l in open(sys.argv[1])]
for k in ("step", "stage", "seq_len", "lr", "loss", "ce", "grad_norm", "tokens_per_s", "peak_rss"):
    assert k in rows[0], k
assert [r["stage"] for r in rows] == [1, 1, 1, 1, 2, 2], [r["stage"] for r in rows]
assert [r["seq_len"] for r in rows] == [400] * 4 + [600] * 2
assert all(math.isfinite(r["loss"]) for r in rows)
PYEOF
"$BIN" run --progress off --threads 1 --model "$T/a/final" --input "$T/doc.txt" --out "$T/r" \
  --query "What is the pass key? The pass key is" --generate 4 >/dev/null 2>&1 \
  && ok "run loads the final checkpoint as it is" || bad "run on the checkpoint"

# Resume from step-3: the same losses, bitwise, and the same final weights.
"$BIN" "${TR[@]}" --curriculum 400:4,600:2 --save-every 3 --resume "$T/a/step-3" --out "$T/b" \
  >"$T/b.log" 2>&1 && ok "resume from step-3" || bad "resume: $(tail -3 "$T/b.log")"
"$PY" - "$T/a/train.jsonl" "$T/b/train.jsonl" <<'PYEOF' && ok "resumed loss curve is bitwise equal" || bad "resumed losses differ"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in b] == [4, 5, 6], [r["step"] for r in b]
for x, y in zip(a[3:], b):
    assert x["loss"] == y["loss"] and x["grad_norm"] == y["grad_norm"] and x["lr"] == y["lr"], (x, y)
PYEOF
cmp -s "$T/a/final/model.safetensors" "$T/b/final/model.safetensors" \
  && cmp -s "$T/a/final/optimizer.safetensors" "$T/b/final/optimizer.safetensors" \
  && ok "resumed final weights and moments are bitwise equal" || bad "resumed final checkpoint differs"

# Sequence parallel (2 ranks) and data parallel (--dp 2) runs.
"${MPIRUN[@]}" -np 2 "$BIN" "${TR[@]}" --curriculum 400:3 --out "$T/p2" >"$T/p2.log" 2>&1 \
  && [[ $(wc -l <"$T/p2/train.jsonl") -eq 3 ]] && ok "mpirun -np 2 train" || bad "np 2: $(tail -3 "$T/p2.log")"
"$PY" - "$T/a/train.jsonl" "$T/p2/train.jsonl" <<'PYEOF' && ok "2 ranks: first step's loss equals 1 rank's within 1e-5" || bad "2-rank loss differs"
import json, sys
a = json.loads(open(sys.argv[1]).readline())["loss"]
b = json.loads(open(sys.argv[2]).readline())["loss"]
assert abs(a - b) <= 1e-5 * abs(a), (a, b)
PYEOF
"${MPIRUN[@]}" -np 2 "$BIN" "${TR[@]}" --curriculum 400:2 --dp 2 --out "$T/dp" >"$T/dp.log" 2>&1 \
  && [[ -d "$T/dp/final" ]] && ok "mpirun -np 2 --dp 2" || bad "dp 2: $(tail -3 "$T/dp.log")"

# grad: outputs, and its loss equals train's first step on the same sequence kind of input.
"$PY" -c "import numpy as np; np.save('$T/ids.npy', np.frombuffer(b'The cat sat. It slept, then woke.\n\nA new day! ' * 8, np.uint8).astype(np.int32))"
"$BIN" grad --model builtin:tiny --input-ids "$T/ids.npy" --out "$T/g" --loss ce,length:0.1,entropy:0.01,cache-l1:0.1 \
  >/dev/null 2>&1 && [[ -f "$T/g/grads.safetensors" && -f "$T/g/globals.npy" && -f "$T/g/report.json" ]] \
  && ok "grad writes grads.safetensors, globals.npy, report.json" || bad "grad outputs"

# The length head: trained with --loss ...,length, `run --generate auto` lets it decide.
"$BIN" "${TR[@]}" --curriculum 400:3 --loss ce,length:0.5 --out "$T/lh" >/dev/null 2>&1 \
  && "$BIN" run --progress off --threads 1 --model "$T/lh/final" --input "$T/doc.txt" --out "$T/lr" \
       --query "What is the pass key? The pass key is" --generate auto >/dev/null 2>&1 \
  && "$PY" -c "import json,sys; n=json.load(open('$T/lr/report.json'))['generated_tokens']; sys.exit(0 if 1 <= n <= 256 else 1)" \
  && ok "run --generate auto with a length head" || bad "run --generate auto"
expect_error "--generate auto without a length head" run --progress off --model builtin:tiny \
  --input "$T/doc.txt" --query "What?" --generate auto --out "$T/x"

# Simulated dilution and the positional skip (docs/training.md): at N = n both are no-ops, so
# the run is bitwise the plain one; at 1M they change the loss; on 2 ranks they run.
PK=("${BASE[@]}" --tasks passkey --curriculum 400:2 --seed 5)
loss_of() { "$PY" -c "import json,sys; print(' '.join(repr(json.loads(l)['loss']) for l in open(sys.argv[1] + '/train.jsonl')))" "$1"; }
"$BIN" "${PK[@]}" --out "$T/plain" >/dev/null 2>&1 \
  && "$BIN" "${PK[@]}" --dilute-to 400 --position-skip-to 400 --out "$T/same" >/dev/null 2>&1 \
  && [[ "$(loss_of "$T/plain")" == "$(loss_of "$T/same")" ]] \
  && cmp -s "$T/plain/final/model.safetensors" "$T/same/final/model.safetensors" \
  && ok "--dilute-to/--position-skip-to at the sequence length: bitwise the plain run" \
  || bad "dilution/skip at N = n changed the run"
"${MPIRUN[@]}" -np 2 "$BIN" "${PK[@]}" --dilute-to 1M --position-skip-to 1M --out "$T/dil" >/dev/null 2>&1 \
  && [[ "$(loss_of "$T/plain")" != "$(loss_of "$T/dil")" ]] \
  && "$PY" -c "import json,math,sys; sys.exit(0 if all(math.isfinite(json.loads(l)['loss']) for l in open('$T/dil/train.jsonl')) else 1)" \
  && ok "--dilute-to 1M --position-skip-to 1M on 2 ranks: finite, different losses" \
  || bad "dilution/skip at 1M on 2 ranks"

# Bad input: one line, non-zero, nothing saved lost.
expect_error "bad --dilute-to" "${TR[@]}" --dilute-to lots --out "$T/x"
expect_error "bad --position-skip-to" "${TR[@]}" --position-skip-to -5 --out "$T/x"
expect_error "dilution with the entropy loss" "${PK[@]}" --dilute-to 1M --loss ce,entropy:0.1 --out "$T/x"
expect_error "bad curriculum" "${TR[@]}" --curriculum 400:x --out "$T/x"
expect_error "stage shorter than a task" train --model builtin:tiny --tasks vt --curriculum 100:2 --out "$T/x"
expect_error "bad loss" "${TR[@]}" --loss ce,foo --out "$T/x"
expect_error "bad task" "${BASE[@]}" --tasks passkey,nope --out "$T/x"
expect_error "bad mining" "${TR[@]}" --mining maybe --out "$T/x"
expect_error "dp does not divide" "${TR[@]}" --dp 3 --out "$T/x"
expect_error "resume from nothing" "${TR[@]}" --resume "$T/nope" --out "$T/x"
expect_error "resume with another curriculum" "${TR[@]}" --curriculum 400:5 --resume "$T/a/step-3" --out "$T/x"
cp -r "$T/a/step-3" "$T/corrupt"
head -c 100 "$T/a/step-3/optimizer.safetensors" >"$T/corrupt/optimizer.safetensors"
expect_error "corrupt optimizer state" "${TR[@]}" --curriculum 400:4,600:2 --resume "$T/corrupt" --out "$T/x"
echo '{"format": "longctx-train-state/1", "step": "x"}' >"$T/corrupt/state.json"
expect_error "malformed state.json" "${TR[@]}" --curriculum 400:4,600:2 --resume "$T/corrupt" --out "$T/x"
expect_error "data file missing" "${BASE[@]}" --tasks lm --data "$T/nope.txt" --out "$T/x"
"$PY" -c "import numpy as np; np.save('$T/big.npy', np.array([1, 2, 300] * 200, np.int32))"
expect_error "token id beyond the vocabulary in --data" "${BASE[@]}" --tasks lm --curriculum 64:2 --data "$T/big.npy" --out "$T/x"
# A NaN loss stops the run, names the step and keeps the saved checkpoint.
cp -r "$T/a/step-3" "$T/nan"
"$PY" - "$T/nan/model.safetensors" <<'PYEOF'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
a, _ = h["model.norm.weight"]["data_offsets"]
b[8 + n + a:8 + n + a + 4] = struct.pack("<f", float("nan"))
open(p, "wb").write(bytes(b))
PYEOF
expect_error "NaN loss names the step" "${TR[@]}" --curriculum 400:4,600:2 --resume "$T/nan" --out "$T/nan-out"
grep -q "step 4" "$T/stderr" && ok "the NaN error names step 4" || bad "NaN error: $(cat "$T/stderr")"
[[ -f "$T/a/step-3/model.safetensors" && -f "$T/a/step-6/model.safetensors" ]] && ok "saved checkpoints intact" || bad "checkpoints lost"
expect_error "grad: no ids" grad --model builtin:tiny --out "$T/x"
"$PY" -c "import numpy as np; np.save('$T/m.npy', np.ones(3, np.int32))"
expect_error "grad: mask of the wrong length" grad --model builtin:tiny --input-ids "$T/ids.npy" --loss-mask "$T/m.npy" --out "$T/x"
expect_error "grad: malformed --handicap" grad --model builtin:tiny --input-ids "$T/ids.npy" --handicap 2@5 --out "$T/x"
expect_error "grad: --handicap span out of range" grad --model builtin:tiny --input-ids "$T/ids.npy" --handicap 2@5:100000 --out "$T/x"
expect_error "grad: negative --handicap" grad --model builtin:tiny --input-ids "$T/ids.npy" --handicap -1@1:3 --out "$T/x"
expect_error "grad: negative --position-skip" grad --model builtin:tiny --input-ids "$T/ids.npy" --position-skip 3 -7 --out "$T/x"
expect_error "grad: bad loss" grad --model builtin:tiny --input-ids "$T/ids.npy" --loss entropy:-1 --out "$T/x"

finish
