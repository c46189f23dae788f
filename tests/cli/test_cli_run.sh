#!/usr/bin/env bash
# `longctx run` and `longctx mkmodel` end to end: a run from a written model directory and from
# pre-tokenized ids gives the same hidden states as from the text, and every kind of bad input
# (document, ids, config.json, safetensors, flags) is one error line and a non-zero exit.
# Usage: test_cli_run.sh path/to/longctx
set -uo pipefail
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
PY=/usr/bin/python3
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The BLAS checks below set OPENBLAS_CORETYPE themselves; one inherited from the environment
# (some machines export one) would make every run a "user" choice.
unset OPENBLAS_CORETYPE

printf 'First clause: the buyer pays. Second, the seller ships!\n\nNotes; see above? Yes.' >"$T/doc.txt"
"$BIN" mkmodel --out "$T/m" --preset tiny --dtype bf16 --seed 3 >/dev/null && ok "mkmodel" || bad "mkmodel"
[[ -f "$T/m/config.json" && -f "$T/m/model.safetensors" ]] && ok "HF layout written" || bad "mkmodel files"
R=(run --progress off --threads 1)
"$BIN" "${R[@]}" --model "$T/m" --input "$T/doc.txt" --out "$T/a" --dump-hidden >/dev/null 2>&1 \
  && ok "run from a model directory" || bad "run from a model directory"
"$PY" -c "import numpy as np; np.save('$T/ids.npy', np.frombuffer(open('$T/doc.txt','rb').read(), np.uint8).astype(np.int64))"
"$BIN" "${R[@]}" --model "$T/m" --input-ids "$T/ids.npy" --out "$T/b" --dump-hidden >/dev/null 2>&1 \
  && cmp -s "$T/a/hidden.npy" "$T/b/hidden.npy" && cmp -s "$T/a/globals.npy" "$T/b/globals.npy" \
  && ok "--input-ids gives the same hidden states and globals" || bad "--input-ids differs"
"$PY" - "$T/a" <<'PYEOF' && ok "report.json fields" || bad "report.json fields"
import json, sys
r = json.load(open(sys.argv[1] + "/report.json"))
for k in ("tokens", "ranks", "globals", "shards", "seconds", "tokens_per_second", "per_rank"):
    assert k in r, k
assert r["per_rank"][0]["peak_rss_bytes"] > 0
assert r["blas"]["kernel"] and r["blas"]["library"].startswith("OpenBLAS"), r["blas"]
PYEOF

# The BLAS kernel: a generic kernel on an AVX2/AVX-512 CPU is replaced by re-executing with
# OPENBLAS_CORETYPE (LONGCTX_TEST_BLAS_KERNEL pretends the library detected Prescott); a core
# type the user set is never overridden; the report says who chose.
blas_of() { "$PY" -c "import json,sys; b=json.load(open(sys.argv[1]+'/report.json'))['blas']; print(b['kernel'] + '|' + b['chosen_by'] + '|' + b['cpu_best'])" "$1"; }
LONGCTX_TEST_BLAS_KERNEL=Prescott "$BIN" "${R[@]}" --model "$T/m" --input "$T/doc.txt" --out "$T/blas1" --dump-hidden >/dev/null 2>&1
b1="$(blas_of "$T/blas1" 2>/dev/null)"
case "$b1" in
  *"|longctx (library chose Prescott)|avx512") [[ "${b1%%|*}" == SkylakeX ]] ;;
  *"|longctx (library chose Prescott)|avx2") [[ "${b1%%|*}" == Haswell || "${b1%%|*}" == Zen ]] ;;
  *"|library|generic") true ;;  # a CPU without AVX2: nothing better to choose
  *) false ;;
esac && cmp -s "$T/a/hidden.npy" "$T/blas1/hidden.npy" \
  && ok "a misdetected kernel is replaced and the run is unchanged: $b1" || bad "BLAS auto-choice: '$b1'"
OPENBLAS_CORETYPE=Prescott LONGCTX_TEST_BLAS_KERNEL=Prescott "$BIN" "${R[@]}" --model "$T/m" --input "$T/doc.txt" --out "$T/blas2" >/dev/null 2>&1
b2="$(blas_of "$T/blas2" 2>/dev/null)"
[[ "$b2" == "Prescott|user|"* ]] && ok "a core type the user set is kept: $b2" || bad "user core type overridden: '$b2'"

# Bad input.
: >"$T/empty.txt"
expect_error "empty document" "${R[@]}" --input "$T/empty.txt" --out "$T/x"
expect_error "missing document" "${R[@]}" --input "$T/nope.txt" --out "$T/x"
expect_error "no input" "${R[@]}" --out "$T/x"
expect_error "two inputs" "${R[@]}" --input "$T/doc.txt" --input-ids "$T/ids.npy" --out "$T/x"
"$PY" -c "import numpy as np; np.save('$T/big.npy', np.array([1, 2, 300], np.int32))"
expect_error "token id beyond the vocabulary" "${R[@]}" --input-ids "$T/big.npy" --out "$T/x"
"$PY" -c "import numpy as np; np.save('$T/f.npy', np.array([1.0, 2.0], np.float32))"
expect_error "float token ids" "${R[@]}" --input-ids "$T/f.npy" --out "$T/x"
"$PY" -c "import numpy as np; np.save('$T/neg.npy', np.array([1, -2], np.int64))"
expect_error "negative token id" "${R[@]}" --input-ids "$T/neg.npy" --out "$T/x"
expect_error "unknown builtin" "${R[@]}" --model builtin:huge --input "$T/doc.txt" --out "$T/x"
expect_error "missing model dir" "${R[@]}" --model "$T/none" --input "$T/doc.txt" --out "$T/x"
expect_error "window 0" "${R[@]}" --input "$T/doc.txt" --window 0 --out "$T/x"
expect_error "window count" "${R[@]}" --input "$T/doc.txt" --window 8,8,8 --out "$T/x"
expect_error "bad fusion" "${R[@]}" --input "$T/doc.txt" --fusion weighted:7 --out "$T/x"
expect_error "bad global ratio" "${R[@]}" --input "$T/doc.txt" --global-ratio 2 --out "$T/x"
expect_error "bad progress" run --threads 1 --input "$T/doc.txt" --progress sometimes --out "$T/x"
expect_error "unknown flag" "${R[@]}" --input "$T/doc.txt" --frobnicate --out "$T/x"
expect_error "mkmodel bad dtype" mkmodel --out "$T/m2" --dtype f64
expect_error "mkmodel bad preset" mkmodel --out "$T/m2" --preset giant

cp -r "$T/m" "$T/badjson" && printf '{"hidden_size": 64,' >"$T/badjson/config.json"
expect_error "malformed config.json" "${R[@]}" --model "$T/badjson" --input "$T/doc.txt" --out "$T/x"
cp -r "$T/m" "$T/heads" && "$PY" - "$T/heads/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1])); c["num_key_value_heads"] = 3; json.dump(c, open(sys.argv[1], "w"))
PYEOF
expect_error "kv heads not dividing heads" "${R[@]}" --model "$T/heads" --input "$T/doc.txt" --out "$T/x"
cp -r "$T/m" "$T/trunc" && truncate -s -100 "$T/trunc/model.safetensors"
expect_error "truncated safetensors" "${R[@]}" --model "$T/trunc" --input "$T/doc.txt" --out "$T/x"
cp -r "$T/m" "$T/huge" && printf '\xff\xff\xff\xff\xff\xff\xff\x7f' | dd of="$T/huge/model.safetensors" bs=1 conv=notrunc status=none
expect_error "header length 2^63" "${R[@]}" --model "$T/huge" --input "$T/doc.txt" --out "$T/x"
cp -r "$T/m" "$T/missing" && "$PY" - "$T/missing/model.safetensors" <<'PYEOF'
import json, struct, sys
p = sys.argv[1]; b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); del h["model.norm.weight"]
hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
open(p, "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PYEOF
expect_error "missing tensor" "${R[@]}" --model "$T/missing" --input "$T/doc.txt" --out "$T/x"
cp -r "$T/m" "$T/shape" && "$PY" - "$T/shape/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1])); c["intermediate_size"] = 96; json.dump(c, open(sys.argv[1], "w"))
PYEOF
expect_error "weights of the wrong shape" "${R[@]}" --model "$T/shape" --input "$T/doc.txt" --out "$T/x"

# The model families (docs/models.md): each preset runs; what longctx does not implement is one
# line naming it, never a run on a silently different model.
for preset in llama3 qwen2 qwen3 mistral; do
  if "$BIN" mkmodel --out "$T/f_$preset" --preset $preset >/dev/null 2>&1 &&
      [[ -f "$T/f_$preset/tokenizer.json" ]] &&
      "$BIN" run --model "$T/f_$preset" --input "$T/doc.txt" --out "$T/fo_$preset" \
        --query "Who?" --generate 4 --progress off >"$T/f.txt" 2>&1; then
    ok "family preset $preset: mkmodel + run"
  else
    bad "family preset $preset: $(tail -3 "$T/f.txt")"
  fi
done
# A worker group reads bytes: a model with its own tokenizer is refused before it connects
# (never served on the wrong ids).
printf 'a-test-token-of-enough-length-0123456789abcdef\n' >"$T/wtoken"
chmod 600 "$T/wtoken"
expect_error "worker: a model with a tokenizer.json" worker --coordinator 127.0.0.1:9 \
  --token-file "$T/wtoken" --model "$T/f_llama3"
edit_config() {  # edit_config SRC DST PYTHON-STATEMENTS-ON-c
  rm -rf "$2"; cp -r "$1" "$2"
  "$PY" - "$2/config.json" "$3" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1])); exec(sys.argv[2]); json.dump(c, open(sys.argv[1], "w"))
PYEOF
}
edit_config "$T/f_qwen3" "$T/relabel" 'c["model_type"] = "llama"'
expect_error "a qwen3 checkpoint relabelled llama" run --model "$T/relabel" --input "$T/doc.txt" --out "$T/x"
edit_config "$T/f_llama3" "$T/mt" 'c["model_type"] = "gemma3"'
expect_error "an unknown model_type" run --model "$T/mt" --input "$T/doc.txt" --out "$T/x"
edit_config "$T/f_llama3" "$T/longrope" 'c["rope_scaling"] = {"rope_type": "longrope", "factor": 4, "long_factor": [1] * 8, "short_factor": [1] * 8}'
expect_error "an unsupported rope type" run --model "$T/longrope" --input "$T/doc.txt" --out "$T/x"
edit_config "$T/f_llama3" "$T/extra" 'c["rope_scaling"]["mscale"] = 1.0'
expect_error "a rope key its type does not read" run --model "$T/extra" --input "$T/doc.txt" --out "$T/x"
edit_config "$T/f_qwen2" "$T/qsw" 'c["use_sliding_window"] = True; c["sliding_window"] = 32'
expect_error "qwen's use_sliding_window" run --model "$T/qsw" --input "$T/doc.txt" --out "$T/x"
edit_config "$T/f_llama3" "$T/prf" 'c["partial_rotary_factor"] = 0.5'
expect_error "partial_rotary_factor" run --model "$T/prf" --input "$T/doc.txt" --out "$T/x"
# rope_parameters with rope_theta inside is read (issue 15: it used to run with theta 10000).
edit_config "$T/f_llama3" "$T/rp" 'c["rope_parameters"] = dict(c.pop("rope_scaling"), rope_theta=c.pop("rope_theta"))'
"$BIN" run --model "$T/f_llama3" --input "$T/doc.txt" --out "$T/rp_a" --dump-hidden --progress off >/dev/null 2>&1
"$BIN" run --model "$T/rp" --input "$T/doc.txt" --out "$T/rp_b" --dump-hidden --progress off >/dev/null 2>&1
if cmp -s "$T/rp_a/hidden.npy" "$T/rp_b/hidden.npy"; then
  ok "rope_parameters spelling: the same hidden states as rope_scaling + rope_theta"
else
  bad "rope_parameters spelling computes something else than rope_scaling"
fi

finish
