// runtime/models/llava_prompt.cpp: placeholder expansion and the feature splice of a LLaVA prompt.
#include "runtime/models/llava_prompt.h"

#include <algorithm>

#include "runtime/error.h"

namespace strata {

ImagePrompt expand_image_prompt(const std::vector<int32_t>& ids, const LlavaConfig& config, const Tensor& features,
                                const std::vector<vision::Resolution>& sizes) {
  int64_t total = 0;
  for (const vision::Resolution& s : sizes) total += config.features_for(s.height, s.width);
  STRATA_CHECK(features.rank() == 2 && features.dim(1) == config.text_hidden && features.dim(0) == total,
               "image features ", shape_str(features.shape()), " are not [", total, ", ", config.text_hidden,
               "] (the features of ", sizes.size(), " image(s))");
  ImagePrompt out = expand_image_placeholders(ids, config, sizes);
  out.splice.rows = features;
  return out;
}

ImagePrompt expand_image_placeholders(const std::vector<int32_t>& ids, const LlavaConfig& config,
                                      const std::vector<vision::Resolution>& sizes) {
  const int32_t token = config.image_token_id;
  const auto images = static_cast<int64_t>(sizes.size());
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (const vision::Resolution& s : sizes) total += counts.emplace_back(config.features_for(s.height, s.width));
  const auto placeholders = static_cast<int64_t>(std::count(ids.begin(), ids.end(), token));
  // Already expanded: as many placeholder tokens as features (and not also one per image).
  const bool expanded = placeholders == total && placeholders != images;
  STRATA_CHECK(placeholders == images || expanded, "the prompt holds ", placeholders, " image placeholder tokens (id ",
               token, ") for ", images, " image(s) of ", total, " features; put one placeholder (e.g. <image>) where ",
               "each image goes");
  ImagePrompt out;
  size_t next = 0;
  for (int32_t id : ids) {
    const int64_t copies = id == token && !expanded ? counts[next++] : 1;
    for (int64_t c = 0; c < copies; ++c) {
      if (id == token) out.splice.positions.push_back(static_cast<int32_t>(out.ids.size()));
      out.ids.push_back(id);
    }
  }
  return out;
}

}  // namespace strata
