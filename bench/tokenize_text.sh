#!/usr/bin/env bash
# Writes the ~4 MB text of `longctx bench tokenize` (bench/results/tokenize.md): English prose
# (the Debian Administrator's Handbook, en-US, tags stripped; debian-handbook is installed by
# launch/install-deps.sh), Python source with its comments (the python3.11 standard library),
# and the multilingual test corpus (tests/tokenizer/corpus.json) repeated, cut at 4,000,000 bytes.
# Usage: bench/tokenize_text.sh OUT.txt
set -euo pipefail
OUT="${1:?usage: tokenize_text.sh OUT.txt}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
/usr/bin/python3 - "$OUT" "$ROOT/tests/tokenizer/corpus.json" <<'PY'
import glob, html, json, re, sys
parts = []
for f in sorted(glob.glob("/usr/share/doc/debian-handbook/html/en-US/*.html")):
    s = open(f, encoding="utf-8", errors="replace").read()
    s = re.sub(r"(?s)<(script|style).*?</\1>", "", s)
    s = html.unescape(re.sub(r"<[^>]+>", "", s))
    parts.append(re.sub(r"\n\s*\n+", "\n\n", s))
for f in sorted(glob.glob("/usr/lib/python3.11/*.py")):
    parts.append(open(f, encoding="utf-8", errors="replace").read())
    if sum(len(p.encode()) for p in parts) > 3_400_000:
        break
multi = "\n".join(e["text"] for e in json.load(open(sys.argv[2])) if "text" in e)
text = "\n".join(parts)
while len(text.encode()) < 4_000_000:
    text += "\n" + multi
data = text.encode()[:4_000_000].decode("utf-8", errors="ignore")
open(sys.argv[1], "w", encoding="utf-8").write(data)
print(f"wrote {sys.argv[1]}: {len(data.encode())} bytes")
PY
