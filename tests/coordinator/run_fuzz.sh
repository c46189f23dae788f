#!/usr/bin/env bash
# Builds the control plane's libFuzzer target (coordinator/fuzz/fuzz_frame.cpp) with clang and
# runs it for a bounded time. Passes when the fuzzer ran the whole time without a crash, leak or
# sanitizer report. Usage: run_fuzz.sh SOURCE_DIR [SECONDS]   (default 30)
set -uo pipefail
src=${1:?usage: run_fuzz.sh SOURCE_DIR [SECONDS]}
seconds=${2:-30}
command -v clang++ >/dev/null || { echo "run_fuzz: FAIL: clang++ not found (launch/install-deps.sh)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

protoc -I "$src/coordinator/proto" --cpp_out="$work" "$src/coordinator/proto/control.proto" || {
  echo "run_fuzz: FAIL: protoc"; exit 1; }
# The generated code and longctx's own sources are instrumented alike (coverage + ASan/UBSan).
timeout 600 clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=undefined -I "$work" -I "$src/coordinator/include" \
  -I "$src/core/include" \
  "$src/coordinator/fuzz/fuzz_frame.cpp" "$src/coordinator/src/frame.cpp" \
  "$src/core/src/status.cpp" "$work/control.pb.cc" \
  -lprotobuf -lfmt -lpthread -o "$work/fuzz_frame" || { echo "run_fuzz: FAIL: build"; exit 1; }

mkdir -p "$work/corpus"
# Seeds: a frame header announcing a small body, and one announcing too much.
printf '\x00\x00\x00\x00\x04\x08\x01' >"$work/corpus/seed1"
printf '\x03\x7f\xff\xff\xff' >"$work/corpus/seed2"
timeout $((seconds + 120)) "$work/fuzz_frame" -max_total_time="$seconds" -rss_limit_mb=2048 \
  -max_len=4096 "$work/corpus" >"$work/log" 2>&1
rc=$?
tail -n 5 "$work/log"
if ((rc != 0)); then
  echo "run_fuzz: FAIL: the fuzzer exited $rc"
  grep -m 20 -E "ERROR|SUMMARY|Test unit written" "$work/log"
  exit 1
fi
runs=$(grep -oE "Done [0-9]+ runs" "$work/log" | grep -oE "[0-9]+")
[[ -n $runs && $runs -gt 1000 ]] || { echo "run_fuzz: FAIL: only '${runs:-0}' runs"; exit 1; }
echo "run_fuzz: PASS: $runs inputs in ${seconds} s, no crash"
