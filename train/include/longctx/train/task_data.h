// Synthetic long-context training and evaluation data (DESIGN.md §6): passkey retrieval
// (Landmark Attention), RULER's single and multi-key needle in a haystack and variable tracking,
// and plain language modelling, each over real English prose so that the global-token rule
// (§1: sentence ends, paragraph boundaries) sees ordinary prose rather than a flood of short
// sentences. Tokens are byte-level (token id = byte value, as `longctx run` reads a text file);
// every length below is in bytes = tokens. Everything is deterministic in its inputs (the
// random draws use only std::mt19937_64's output, which the standard fixes, never the
// implementation-defined std:: distributions), so a data set is reproduced from its seeds.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::train {

enum class Task : uint8_t { kPasskey, kNiah, kMultikey, kVt, kLm };

// "passkey", "niah", "multikey", "vt", "lm"; ParseTask names the valid ones on a bad name.
Result<Task> ParseTask(std::string_view name);
std::string_view TaskName(Task task);

// Held-out data: every paragraph of a FillerCorpus belongs to exactly one split, decided by a
// hash of its text (about 10% eval), so evaluation documents share no filler paragraph with
// training documents, whatever the files' order or the seeds.
enum class Split : uint8_t { kTrain, kEval };
Result<Split> ParseSplit(std::string_view name);  // "train", "eval"
std::string_view SplitName(Split split);

// Real English prose used as filler, held as paragraphs (UTF-8, whitespace collapsed to single
// spaces, no markup, no newline inside a paragraph); exact duplicate paragraphs are kept once.
class FillerCorpus {
 public:
  // Where LoadDefault looks: the English HTML of the Debian package `debian-handbook` ("The
  // Debian Administrator's Handbook", GPL-2+ or CC-BY-SA-3.0, Debian main), installed by
  // launch/install-deps.sh. See docs/training.md "Task data" for the choice.
  static constexpr const char* kDefaultDir = "/usr/share/doc/debian-handbook/html/en-US";
  static Result<FillerCorpus> LoadDefault();
  // Plain-text files: paragraphs are separated by blank lines, and the lines of a paragraph are
  // joined with spaces (hard-wrapped text is unwrapped). A file named *.html or *.htm instead
  // contributes the text of its <p> and <div class="para"> elements that hold no block markup
  // (code listings, tables and lists are left out) and end a sentence, tags stripped and
  // entities decoded. kNotFound for a missing file; kInvalidArgument when either split would
  // be empty (the message says how many paragraphs were found).
  static Result<FillerCorpus> Load(std::span<const std::string> files);

  // Appends filler of exactly `bytes` bytes (>= 0) to *out: paragraphs of `split` in corpus
  // order, separated by "\n\n", from a paragraph chosen by rng, wrapping around at the end. The
  // last paragraph is cut on a word boundary (on a UTF-8 character boundary when a word is
  // longer than 32 bytes) and padded with spaces to the exact size; the filler never ends with
  // a newline.
  void Append(std::mt19937_64& rng, int64_t bytes, std::string* out,
              Split split = Split::kTrain) const;

  int64_t paragraphs(Split split) const;  // paragraphs in a split
  int64_t bytes(Split split) const;       // their bytes, without separators
  // The paragraphs of a split in corpus order (for tests and statistics).
  std::vector<std::string_view> Paragraphs(Split split) const;

 private:
  std::vector<std::string> paragraphs_;  // every paragraph, in file order
  std::vector<int32_t> train_, eval_;    // indices into paragraphs_ per split
  int64_t train_bytes_ = 0, eval_bytes_ = 0;
};

// One training sequence = context + question + answer, laid out back to back.
struct TaskDocument {
  Task task = Task::kLm;
  uint64_t seed = 0;
  std::string text;                // the whole sequence (byte-level tokens)
  std::vector<int32_t> ids;        // = bytes of text (0..255), ids.size() == text.size()
  std::vector<uint8_t> loss_mask;  // [ids.size()]: 1 on predicted targets: the answer's tokens
                                   // for tasks; every token but the first for lm
  int64_t question_begin = 0;      // byte offset of the question (its tokens are global, as
                                   // `longctx run --query` marks them)
  int64_t answer_begin = 0;        // byte offset of the answer (= question end)
  std::string context;             // text[0, question_begin): `longctx run --input`
  std::string question;            // text[question_begin, answer_begin): `longctx run --query`
  std::string answer;              // text[answer_begin, end)
  // Where each needle is, as RULER counts depth: the share of the filler bytes that precede
  // the needle, in [0, 1]. passkey/niah: one; multikey: the queried needle first, then the
  // distractors; vt: the queried chain's VAR statements in order, then the distractor
  // chain's; lm: none.
  std::vector<double> depths;
  std::vector<int64_t> needle_begins;  // byte offset in text of each needle, same order
  std::vector<int64_t> needle_ends;    // one past each needle's last byte, same order
};

struct TaskOptions {
  double depth = -1;  // in [0, 1]: depth of the queried needle (vt: of the queried chain's
                      // first statement); < 0: drawn uniformly
  int64_t keys = 4;   // multikey: distractor needles (other words, other numbers), >= 1
  int64_t hops = 2;   // vt: copies in each chain ("VAR B = A."), >= 1, so hops + 1 variables
  Split split = Split::kTrain;  // which paragraphs of the filler corpus to use
};

// kInvalidArgument naming the option when `options` is out of range for `task` (depth above 1
// or NaN; multikey keys outside [1, 199]; vt hops outside [1, 1000]).
Status CheckTaskOptions(Task task, const TaskOptions& options);

// The smallest `tokens` MakeTaskDocument accepts for this task and options: the fixed text
// (needles, question, answer, with the longest words the task can draw) plus 64 filler bytes;
// 2 for lm. Options out of range are clamped into it here (CheckTaskOptions reports them).
int64_t MinTokens(Task task, const TaskOptions& options = {});

// A document of exactly `tokens` tokens (ids.size() == tokens). Deterministic in (task, tokens,
// seed, options, the corpus's paragraphs). Needles are inserted at sentence boundaries of the
// filler when one lies within 1% of the filler around the drawn depth, else at a word boundary
// or, failing that, at the exact byte. kInvalidArgument for tokens < MinTokens (the message
// names the minimum) or an option out of range.
Result<TaskDocument> MakeTaskDocument(Task task, int64_t tokens, uint64_t seed,
                                      const FillerCorpus& filler, const TaskOptions& options = {});

// The seed of document `index` of a data set made with `seed` (a hash of both, so that data
// sets made with nearby seeds share no document). `longctx data` uses it and records it.
uint64_t DocumentSeed(uint64_t seed, int64_t index);

// The files `longctx data` writes for document `id` in directory `dir`, each atomically:
// doc-<id>.txt (the context, for `longctx run --input`), doc-<id>.ids.npy (int32 ids of the
// whole sequence) and doc-<id>.mask.npy (the loss mask, numpy uint8 '|u1' — which core's .npy
// reader does not take; the mask is also 1 exactly on the last len(answer) tokens for tasks).
Status WriteTaskDocumentFiles(const std::string& dir, int64_t id, const TaskDocument& doc);
// One line of index.jsonl, without the newline: {"id", "task", "tokens", "question", "answer",
// "depths", "seed"} (seed: the document's seed).
std::string IndexJsonLine(int64_t id, const TaskDocument& doc);

// Token ids of a file for training: a .npy of int32 or int64 ids (1-D, each in [0, 2^31)), or
// any other file read as bytes (token id = byte value, as `longctx run --input` reads it).
Result<std::vector<int32_t>> LoadTokenFile(const std::string& path);

}  // namespace longctx::train
