#include "longctx/attention/spec.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>

namespace longctx::attention {

float AttentionSpec::ResolvedScale(int64_t head_dim) const {
  return scale != 0.0f ? scale : float(1.0 / std::sqrt(double(head_dim)));
}

std::string AttentionSpec::ToString() const {
  std::string f = fusion == Fusion::kUnion ? "union" : fmt::format("weighted:{}", alpha);
  return fmt::format("window={} {} fusion={} scale={}", window,
                     causal ? "causal" : "bidirectional", f,
                     scale == 0.0f ? std::string("1/sqrt(d)") : fmt::format("{}", scale));
}

Status ParseFusion(std::string_view text, AttentionSpec* spec) {
  if (text == "union") {
    spec->fusion = Fusion::kUnion;
    return Status::Ok();
  }
  constexpr std::string_view kPrefix = "weighted:";
  if (text.substr(0, kPrefix.size()) == kPrefix) {
    const std::string num(text.substr(kPrefix.size()));
    char* end = nullptr;
    errno = 0;
    const double a = std::strtod(num.c_str(), &end);
    if (!num.empty() && end == num.c_str() + num.size() && errno == 0 && a >= 0.0 && a <= 1.0) {
      spec->fusion = Fusion::kWeighted;
      spec->alpha = float(a);
      return Status::Ok();
    }
    return InvalidArgument("fusion '{}': A in weighted:A must be a number in [0, 1]", text);
  }
  return InvalidArgument("fusion '{}': expected 'union' or 'weighted:A' with A in [0, 1]", text);
}

}  // namespace longctx::attention
