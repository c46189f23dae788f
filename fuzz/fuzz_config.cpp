// libFuzzer target for config.json parsing (model/src/config.cpp): the input is the JSON text.
// A config that parses must pass ValidateModelConfig and survive ToJson -> ParseModelConfig
// unchanged (the documented round trip; the window source may read back as kLongctx). The
// input is also tried as a --fusion value. Every rejection is a one-line Status.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "longctx/model/config.h"

using longctx::fuzz::Check;
namespace model = longctx::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  bool weighted = false;
  double alpha = 0;
  if (model::ParseFusionText(text, &weighted, &alpha).ok() && weighted) {
    Check(alpha >= 0 && alpha <= 1);
  }
  longctx::Result<model::ModelConfig> config = model::ParseModelConfig(text, "fuzz/config.json");
  if (!config.ok()) {
    const std::string& message = config.status().message();
    Check(!message.empty() && message.find('\n') == std::string::npos);
    return 0;
  }
  Check(model::ValidateModelConfig(*config, "fuzz").ok());
  const std::string json = model::ToJson(*config);
  longctx::Result<model::ModelConfig> again = model::ParseModelConfig(json, "fuzz/again.json");
  Check(again.ok());
  again->hybrid.window_source = config->hybrid.window_source;
  Check(*again == *config);
  return 0;
}
