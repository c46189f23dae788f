// Tokenizers (DESIGN.md §5): text <-> token ids. The byte tokenizer of the built-in models
// (id = byte value) and a Hugging Face `tokenizer.json` reader that encodes and decodes exactly
// as the `tokenizers` library does (BPE models, byte-level or SentencePiece-style; see
// docs/models.md for the supported components).
//
// Text is UTF-8. Bytes that are not valid UTF-8 are replaced before tokenizing, each maximal
// ill-formed subsequence by one U+FFFD (the WHATWG / Unicode "maximal subpart" practice, the same
// as Rust's String::from_utf8_lossy, Python's errors="replace" and Node's Buffer.toString), so
// the ids equal the reference's on the text those decoders would hand it. The byte tokenizer
// takes any bytes as they are. Decode always returns valid UTF-8 for HF tokenizers (their
// decoders replace broken byte sequences by U+FFFD, as the library does).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::model {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`; add_special_tokens: let the post-processor add its tokens (BOS ...),
  // as `tokenizers`' encode(text, add_special_tokens).
  virtual Result<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const = 0;
  // Text of `ids` (kOutOfRange for an id outside the vocabulary).
  virtual Result<std::string> Decode(std::span<const int32_t> ids,
                                     bool skip_special_tokens) const = 0;
  // The decoded text of one token alone (empty for an unknown id): what the global-token rule
  // reads (DESIGN.md §1). For the byte tokenizer: that byte.
  virtual std::string TokenText(int32_t id) const = 0;
  // One more than the largest id the tokenizer can return or decode.
  virtual int64_t vocab_size() const = 0;
  // Beginning / end of sequence ids, -1 / empty when the tokenizer names none.
  virtual int32_t bos_id() const { return -1; }
  virtual std::vector<int32_t> eos_ids() const { return {}; }
  // True for the byte tokenizer (id = byte): token i of a text is byte i.
  virtual bool is_byte_level() const { return false; }
  // A short description for logs: "bytes" or "tokenizer.json (BPE, 128256 tokens)".
  virtual std::string Describe() const = 0;
};

// id = byte value (0..255); decodes ids below 256 as their byte, other ids fail.
class ByteTokenizer final : public Tokenizer {
 public:
  explicit ByteTokenizer(int64_t vocab_size = 256) : vocab_size_(vocab_size) {}
  Result<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const override;
  Result<std::string> Decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  std::string TokenText(int32_t id) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  bool is_byte_level() const override { return true; }
  std::string Describe() const override { return "bytes"; }

 private:
  int64_t vocab_size_;
};

// A Hugging Face tokenizer.json. Load() fails with one line naming what it cannot read (an
// unknown model / normalizer / pre-tokenizer / post-processor / decoder type, a merge naming an
// unknown token, a truncated or non-JSON file). BOS/EOS come from a tokenizer_config.json next to
// the file when there is one (else BOS from the TemplateProcessing post-processor); a config.json
// there adds its "eos_token_id" (a number or a list) to the EOS ids.
class HfTokenizer final : public Tokenizer {
 public:
  static Result<std::unique_ptr<HfTokenizer>> Load(const std::string& path);
  // From the JSON text itself (`name` for error messages).
  static Result<std::unique_ptr<HfTokenizer>> FromJson(std::string_view json,
                                                       const std::string& name);
  ~HfTokenizer() override;

  Result<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const override;
  Result<std::string> Decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  std::string TokenText(int32_t id) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  std::vector<int32_t> eos_ids() const override;
  std::string Describe() const override;

  // The id of a token string (vocabulary or added token), -1 when absent.
  int32_t TokenToId(std::string_view token) const;
  // Encode(text, add_special_tokens) on `threads` threads, with the same result: added tokens
  // and normalization run first; a pre-tokenizer that starts with an Isolated regex Split
  // (forward-only pattern) has its matches found in parallel chunks resynchronized at the cuts;
  // the resulting pieces (which the library also pre-tokenizes and merges independently) are
  // encoded in contiguous runs, one per thread. Other pre-tokenizers split only at added tokens.
  Result<std::vector<int32_t>> EncodeParallel(std::string_view text, bool add_special_tokens,
                                              int threads) const;

  struct Impl;

 private:
  explicit HfTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `path` is a tokenizer.json or a directory holding one.
Result<std::unique_ptr<HfTokenizer>> LoadHfTokenizer(const std::string& path);

// "bytes": the byte tokenizer; otherwise LoadHfTokenizer(spec).
Result<std::unique_ptr<Tokenizer>> OpenTokenizer(const std::string& spec);

// Replaces ill-formed UTF-8 as the header comment says; returns `text` unchanged when valid.
std::string ToValidUtf8(std::string_view text);
bool IsValidUtf8(std::string_view text);

}  // namespace longctx::model
