#include "longctx/model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace longctx::model {
namespace {

// YaRN's attention scale for a context stretched `scale` times: 0.1 * m * ln(scale) + 1.
double YarnMscale(double scale, double m) {
  return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
}

// The dimension (of d) whose wavelength turns `rotations` times over `length` positions.
double YarnCorrectionDim(double rotations, double d, double theta, double length) {
  return d * std::log(length / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(theta));
}

}  // namespace

RopeFrequencies ComputeRopeFrequencies(const ModelConfig& c, int64_t seq_len) {
  const RopeScaling& rs = c.rope;
  const int64_t d = c.head_dim, half = d / 2;
  double theta = c.rope_theta;
  const double f = rs.factor;
  const double l0 = double(rs.original_max_position_embeddings.value_or(0));
  if (rs.type == RopeType::kDynamic && double(seq_len) > l0) {
    theta *= std::pow(f * double(seq_len) / l0 - (f - 1.0), double(d) / double(d - 2));
  }
  RopeFrequencies out;
  out.inv_freq.resize(size_t(half));
  for (int64_t i = 0; i < half; ++i) {
    out.inv_freq[size_t(i)] = std::pow(theta, -2.0 * double(i) / double(d));
  }
  switch (rs.type) {
    case RopeType::kDefault:
    case RopeType::kDynamic:
      break;
    case RopeType::kLinear:
      for (double& x : out.inv_freq) x /= f;
      break;
    case RopeType::kLlama3: {
      const double low_wavelen = l0 / rs.low_freq_factor;    // longer: fully scaled
      const double high_wavelen = l0 / rs.high_freq_factor;  // shorter: unchanged
      for (double& x : out.inv_freq) {
        const double wavelen = 2.0 * std::numbers::pi / x;
        if (wavelen < high_wavelen) continue;
        if (wavelen > low_wavelen) {
          x /= f;
          continue;
        }
        const double s = (l0 / wavelen - rs.low_freq_factor) /
                         (rs.high_freq_factor - rs.low_freq_factor);
        x = (1.0 - s) * x / f + s * x;
      }
      break;
    }
    case RopeType::kYarn: {
      double low = YarnCorrectionDim(rs.beta_fast, double(d), theta, l0);
      double high = YarnCorrectionDim(rs.beta_slow, double(d), theta, l0);
      if (rs.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, double(d - 1));
      if (low == high) high += 0.001;  // a zero-width ramp
      for (int64_t i = 0; i < half; ++i) {
        // ramp 0: extrapolate (keep inv), 1: interpolate (inv / f).
        const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
        double& x = out.inv_freq[size_t(i)];
        x = x / f * ramp + x * (1.0 - ramp);
      }
      if (rs.attention_factor) {
        out.attention_scaling = *rs.attention_factor;
      } else if (rs.mscale.value_or(0.0) != 0.0 && rs.mscale_all_dim.value_or(0.0) != 0.0) {
        out.attention_scaling = YarnMscale(f, *rs.mscale) / YarnMscale(f, *rs.mscale_all_dim);
      } else {
        out.attention_scaling = YarnMscale(f, 1.0);
      }
      break;
    }
  }
  return out;
}

}  // namespace longctx::model
