// `longctx mkmodel`: writes a built-in model as a real Hugging Face layout directory
// (config.json + model.safetensors, and tokenizer.json for the family presets or --tokenizer),
// loadable by longctx and by other tools.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>

#include <fmt/format.h>

#include "commands.h"
#include "longctx/model/builtin.h"
#include "longctx/model/tokenizer.h"

namespace longctx::cli {

Runner AddMkmodelCommand(CLI::App& app) {
  struct Flags {
    std::string out, preset = "tiny", dtype = "f32", tokenizer;
    uint64_t seed = model::kDefaultBuiltinSeed;
  };
  auto f = std::make_shared<Flags>();
  app.add_option("--out", f->out, "directory to write")->required();
  app.add_option("--preset", f->preset,
                 "tiny | small | hybrid-tiny | llama3 | qwen2 | qwen3 | mistral")
      ->capture_default_str();
  app.add_option("--seed", f->seed, "weight seed")->capture_default_str();
  app.add_option("--dtype", f->dtype, "f32 | f16 | bf16")->capture_default_str();
  app.add_option("--tokenizer", f->tokenizer,
                 "a tokenizer.json (or a directory holding one) to copy in; vocab_size becomes "
                 "its vocabulary's and eos_token_id its EOS ids");
  return [f]() -> Status {
    DType dtype;
    if (f->dtype == "f32") dtype = DType::kF32;
    else if (f->dtype == "f16") dtype = DType::kF16;
    else if (f->dtype == "bf16") dtype = DType::kBF16;
    else return InvalidArgument("--dtype must be f32, f16 or bf16, got '{}'", f->dtype);
    ASSIGN_OR_RETURN(model::ModelConfig config, model::PresetConfig(f->preset));
    std::string tokenizer_json;
    if (!f->tokenizer.empty()) {
      ASSIGN_OR_RETURN(std::unique_ptr<model::Tokenizer> tok, model::OpenTokenizer(f->tokenizer));
      if (tok->is_byte_level()) {
        return InvalidArgument("--tokenizer {}: give a tokenizer.json or a directory holding one",
                               f->tokenizer);
      }
      std::error_code ec;
      std::string path = f->tokenizer;
      if (std::filesystem::is_directory(path, ec)) path += "/tokenizer.json";
      std::ifstream in(path, std::ios::binary);
      tokenizer_json.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (!in.good() && !in.eof()) return DataLoss("{}: read error", path);
      config.vocab_size = std::max<int64_t>(tok->vocab_size(), 256);
      config.eos_token_ids.clear();
      for (int32_t id : tok->eos_ids()) config.eos_token_ids.push_back(id);
    } else if (model::IsFamilyPreset(f->preset)) {
      tokenizer_json = model::PresetTokenizerJson();
    }
    RETURN_IF_ERROR(model::WriteModelDir(f->out, config, f->seed, dtype));
    if (!tokenizer_json.empty()) RETURN_IF_ERROR(model::WriteTokenizerJson(f->out, tokenizer_json));
    fmt::print("wrote {}/config.json and {}/model.safetensors{}: preset {}, seed {}, {}\n", f->out,
               f->out, tokenizer_json.empty() ? "" : fmt::format(" and {}/tokenizer.json", f->out),
               f->preset, f->seed, f->dtype);
    return Status::Ok();
  };
}

}  // namespace longctx::cli
