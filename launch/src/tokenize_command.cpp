// `longctx tokenize` and `longctx detokenize`: text <-> int32 ids (.npy) with a Hugging Face
// tokenizer.json (or "bytes"), exactly as the `tokenizers` library (DESIGN.md §5).
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "longctx/core/file.h"
#include "longctx/core/npy.h"
#include "longctx/model/tokenizer.h"

namespace longctx::cli {
namespace {

Result<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("{}: cannot open", path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return DataLoss("{}: read error", path);
  return text;
}

}  // namespace

Runner AddTokenizeCommand(CLI::App& app) {
  struct Flags {
    std::string tokenizer, input, out, special = "on";
    int threads = 1;
  };
  auto f = std::make_shared<Flags>();
  app.add_option("--tokenizer", f->tokenizer, "tokenizer.json, a directory holding one, or bytes")
      ->required();
  app.add_option("--input", f->input, "the text (UTF-8; invalid bytes become U+FFFD)")->required();
  app.add_option("--out", f->out, "int32 ids (.npy)")->required();
  app.add_option("--special-tokens", f->special, "on | off: the post-processor's BOS/EOS")
      ->capture_default_str();
  app.add_option("--threads", f->threads, "encode parts of the text in parallel (same ids)")
      ->capture_default_str();
  return [f]() -> Status {
    if (f->special != "on" && f->special != "off") {
      return InvalidArgument("--special-tokens must be on or off, got '{}'", f->special);
    }
    if (f->threads < 1) return InvalidArgument("--threads must be >= 1, got {}", f->threads);
    ASSIGN_OR_RETURN(std::unique_ptr<model::Tokenizer> tok, model::OpenTokenizer(f->tokenizer));
    ASSIGN_OR_RETURN(std::string text, ReadWholeFile(f->input));
    const bool add = f->special == "on";
    std::vector<int32_t> ids;
    if (auto* hf = dynamic_cast<model::HfTokenizer*>(tok.get()); hf && f->threads > 1) {
      ASSIGN_OR_RETURN(ids, hf->EncodeParallel(text, add, f->threads));
    } else {
      ASSIGN_OR_RETURN(ids, tok->Encode(text, add));
    }
    RETURN_IF_ERROR(WriteNpy(f->out, DType::kI32, {int64_t(ids.size())}, ids.data()));
    fmt::print(stderr, "tokenize: {} bytes -> {} tokens ({}), wrote {}\n", text.size(), ids.size(),
               tok->Describe(), f->out);
    return Status::Ok();
  };
}

Runner AddDetokenizeCommand(CLI::App& app) {
  struct Flags {
    std::string tokenizer, input, out;
    bool skip_special = false;
  };
  auto f = std::make_shared<Flags>();
  app.add_option("--tokenizer", f->tokenizer, "tokenizer.json, a directory holding one, or bytes")
      ->required();
  app.add_option("--input", f->input, "token ids: 1-D int32/int64 .npy")->required();
  app.add_option("--out", f->out, "the text")->required();
  app.add_flag("--skip-special-tokens", f->skip_special, "leave special tokens (BOS ...) out");
  return [f]() -> Status {
    ASSIGN_OR_RETURN(std::unique_ptr<model::Tokenizer> tok, model::OpenTokenizer(f->tokenizer));
    ASSIGN_OR_RETURN(NpyArray a, ReadNpy(f->input));
    if (a.shape.size() != 1) {
      return InvalidArgument("{}: token ids must be a 1-D array, got {} dimensions", f->input,
                             a.shape.size());
    }
    std::vector<int32_t> ids(size_t(a.numel()));
    for (int64_t i = 0; i < a.numel(); ++i) {
      int64_t v;
      if (a.dtype == DType::kI32) v = a.as<int32_t>()[i];
      else if (a.dtype == DType::kI64) v = a.as<int64_t>()[i];
      else return InvalidArgument("{}: token ids must be int32 or int64, got {}", f->input, DTypeName(a.dtype));
      if (v < 0 || v >= tok->vocab_size()) {
        return OutOfRange("{}: token id {} at position {} is outside the vocabulary [0, {})",
                          f->input, v, i, tok->vocab_size());
      }
      ids[size_t(i)] = int32_t(v);
    }
    ASSIGN_OR_RETURN(std::string text, tok->Decode(ids, f->skip_special));
    return WriteFileAtomically(f->out, text);
  };
}

}  // namespace longctx::cli
