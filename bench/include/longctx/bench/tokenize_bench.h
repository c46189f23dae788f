// `longctx bench tokenize`: encode speed of a tokenizer.json on a large text (about 4 MB, ~1M
// tokens), one thread, against the Rust `tokenizers` library through its Node binding measured in
// the same run on the same text (its ids must equal ours), plus our parallel encode
// (HfTokenizer::EncodeParallel) on --threads threads.
#pragma once

#include <string>

#include "longctx/core/status.h"

namespace longctx::bench {

struct TokenizeBenchOptions {
  std::string tokenizer;  // tokenizer.json or a directory holding one
  std::string input;      // the text
  int reps = 3;           // encodes per measurement; the best is reported
  int threads = 4;        // the parallel encode's threads (1: skip it)
  // node_modules holding `tokenizers` (tests/tokenizer/install_reference.sh installs it); empty:
  // $LONGCTX_TOKENIZER_REFERENCE, else no reference (said so in the output).
  std::string reference;
  std::string node = "node";
  std::string json;       // also write the results here
};

Status RunTokenizeBench(const TokenizeBenchOptions& options);

}  // namespace longctx::bench
