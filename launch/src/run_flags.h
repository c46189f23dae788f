// The flags of `longctx run` and the pieces its one-document path (run_command.cpp) and its
// batch path (run_batch.cpp: several documents per job) share: the tokenizer, reading a
// document, --generate, and one question against a prefilled document.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine_flags.h"
#include "longctx/attention/global_selection.h"
#include "longctx/core/status.h"
#include "longctx/model/tokenizer.h"
#include "longctx/worker/engine.h"

namespace longctx::cli {

struct RunFlags {
  EngineFlags engine;               // model, hybrid overrides, threads, --kv-*
  std::vector<std::string> inputs;  // --input, once per document
  std::string inputs_file;          // --inputs LIST: one document path per line
  int doc_groups = 1;               // --doc-groups G: rank groups prefilling documents concurrently
  std::string input_ids, out = "longctx-run";
  bool dump_hidden = false;
  std::string dump_logits;  // .npy [tokens, vocab] float32: row i = logits after token i
  std::string progress = "auto";
  std::string query;           // appended after the document, every token global
  std::string generate = "0";  // tokens decoded greedily after the document (and the query),
                               // or "auto": as many as the model's length head predicts
  int64_t max_generate = 256;  // the cap of --generate auto
  std::string tokenizer;  // tokenizer.json, a directory holding one, or "bytes"; empty: the model's
  std::string trace;      // a Chrome/Perfetto trace of every rank, merged (trace_output.h)

  // The batch path runs when the job has more than one document, a --inputs list, or groups.
  bool IsBatch() const { return inputs.size() > 1 || !inputs_file.empty() || doc_groups != 1; }
};

// The tokenizer of a run (DESIGN.md §5): --tokenizer, else the model directory's tokenizer.json,
// else bytes (the built-in models).
Result<std::unique_ptr<model::Tokenizer>> RunTokenizer(const RunFlags& f);

// A text document's token ids (the tokenizer's; a tokenizer.json adds its BOS) and their
// classes for the global selection. kNotFound names a file that cannot be opened.
Status ReadDocument(const std::string& path, const model::Tokenizer& tok, std::vector<int32_t>* ids,
                    std::vector<attention::TokenClass>* classes);

// --generate: a token count (>= 0) or "auto" (*is_auto; *count stays 0).
Status ParseGenerate(const std::string& text, int64_t* count, bool* is_auto);

// This process's peak resident set, bytes.
int64_t PeakRssBytes();

// --query and --generate against document `doc_id` (collective over the engine's ranks):
// byte-level tokenizers pass the query as bytes, others their ids with the EOS stops and the
// sentence rule for generated globals. --generate auto asks the length head first (*generate is
// then set to its prediction). *query_tokens: the question's tokens.
Status AnswerDocument(worker::Engine& engine, const model::Tokenizer& tok,
                      const std::string& doc_id, const std::string& query, bool generate_auto,
                      int64_t max_generate, int64_t* generate, int64_t* query_tokens,
                      worker::AnswerResult* answer);

// `longctx run` with several documents (run_batch.cpp; docs/run.md "Several documents").
Status RunBatch(const RunFlags& f);

}  // namespace longctx::cli
