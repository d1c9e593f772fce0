// runtime/rope.cpp: inverse frequencies for rotary embeddings, including Llama-3 frequency scaling
// (long wavelengths divided by `factor`, a smooth ramp between the low and high frequency bands).
#include "runtime/rope.h"

#include <cmath>

namespace strata {

std::vector<float> rope_inv_freq(const RopeParams& params, int64_t rot_dim) {
  const int64_t half = rot_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rot_dim);
    inv[static_cast<size_t>(i)] = 1.f / std::pow(params.theta, exponent);
  }
  const RopeScaling& s = params.scaling;
  if (s.factor > 0.f) {
    const float old_len = static_cast<float>(s.original_max_position);
    const float low_wavelen = old_len / s.low_freq_factor;
    const float high_wavelen = old_len / s.high_freq_factor;
    for (float& f : inv) {
      const float wavelen = 2.f * static_cast<float>(M_PI) / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        const float smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1.f - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

}  // namespace strata
