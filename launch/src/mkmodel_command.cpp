// `longctx mkmodel`: writes a built-in model as a real Hugging Face layout directory
// (config.json + model.safetensors), loadable by longctx and by other tools.
#include <memory>

#include <fmt/format.h>

#include "commands.h"
#include "longctx/model/builtin.h"

namespace longctx::cli {

Runner AddMkmodelCommand(CLI::App& app) {
  struct Flags {
    std::string out, preset = "tiny", dtype = "f32";
    uint64_t seed = model::kDefaultBuiltinSeed;
  };
  auto f = std::make_shared<Flags>();
  app.add_option("--out", f->out, "directory to write")->required();
  app.add_option("--preset", f->preset, "tiny | small | hybrid-tiny")->capture_default_str();
  app.add_option("--seed", f->seed, "weight seed")->capture_default_str();
  app.add_option("--dtype", f->dtype, "f32 | f16 | bf16")->capture_default_str();
  return [f]() -> Status {
    DType dtype;
    if (f->dtype == "f32") dtype = DType::kF32;
    else if (f->dtype == "f16") dtype = DType::kF16;
    else if (f->dtype == "bf16") dtype = DType::kBF16;
    else return InvalidArgument("--dtype must be f32, f16 or bf16, got '{}'", f->dtype);
    ASSIGN_OR_RETURN(model::ModelConfig config, model::PresetConfig(f->preset));
    RETURN_IF_ERROR(model::WriteModelDir(f->out, config, f->seed, dtype));
    fmt::print("wrote {}/config.json and {}/model.safetensors: preset {}, seed {}, {}\n", f->out,
               f->out, f->preset, f->seed, f->dtype);
    return Status::Ok();
  };
}

}  // namespace longctx::cli
