#!/usr/bin/env bash
# Writes a sample "contract" of exactly BYTES bytes (= tokens for the byte-level tokenizer):
# numbered clauses in sentences with commas, semicolons and colons, questions and exclamations,
# and a blank line between paragraphs — the structure global selection feeds on.
# Usage: make_document.sh BYTES OUT
set -euo pipefail
export LC_ALL=C  # byte counts
bytes="$1"
out="$2"
awk -v target="$bytes" 'BEGIN {
  split("supplier buyer licensor licensee agent trustee", who, " ");
  split("deliver inspect replace certify insure store", act, " ");
  n = 0; i = 0;
  while (n < target) {
    i++;
    s = sprintf("Clause %d: the %s shall %s the goods of lot %d, at its own cost; notice is due within %d days.", i, who[i % 6 + 1], act[i % 6 + 1], i * 7 % 1000, i % 90 + 1);
    if (i % 7 == 0) s = s " Is the " who[i % 6 + 1] " liable if the seal is broken? It is!";
    if (i % 5 == 0) s = s "\n\n"; else s = s " ";
    if (n + length(s) > target) s = substr(s, 1, target - n);
    printf "%s", s; n += length(s);
  }
}' > "$out"
