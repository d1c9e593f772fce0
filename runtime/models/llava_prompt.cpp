// runtime/models/llava_prompt.cpp: placeholder expansion and the feature splice of a LLaVA prompt.
#include "runtime/models/llava_prompt.h"

#include <algorithm>

#include "runtime/error.h"

namespace strata {

ImagePrompt expand_image_prompt(const std::vector<int32_t>& ids, const LlavaConfig& config, const Tensor& features) {
  const int64_t per_image = config.features_per_image();
  STRATA_CHECK(features.rank() == 2 && features.dim(1) == config.text_hidden && features.dim(0) % per_image == 0,
               "image features ", shape_str(features.shape()), " are not [images x ", per_image, ", ",
               config.text_hidden, "]");
  ImagePrompt out = expand_image_placeholders(ids, config, features.dim(0) / per_image);
  out.splice.rows = features;
  return out;
}

ImagePrompt expand_image_placeholders(const std::vector<int32_t>& ids, const LlavaConfig& config, int64_t images) {
  const int64_t per_image = config.features_per_image();
  const int32_t token = config.image_token_id;
  const auto placeholders = static_cast<int64_t>(std::count(ids.begin(), ids.end(), token));
  const bool expanded = placeholders == images * per_image;
  STRATA_CHECK(placeholders == images || expanded, "the prompt holds ", placeholders, " image placeholder tokens (id ",
               token, ") for ", images, " image(s); put one placeholder (e.g. <image>) where each image goes");
  ImagePrompt out;
  for (int32_t id : ids) {
    const int64_t copies = id == token ? (expanded ? 1 : per_image) : 1;
    for (int64_t c = 0; c < copies; ++c) {
      if (id == token) out.splice.positions.push_back(static_cast<int32_t>(out.ids.size()));
      out.ids.push_back(id);
    }
  }
  return out;
}

}  // namespace strata
