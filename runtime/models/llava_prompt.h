// runtime/models/llava_prompt.h: a LLaVA prompt with its images: each image placeholder token expanded to
// one token per image feature (as transformers' LlavaProcessor and LlavaNextProcessor expand "<image>"; a
// LLaVA-NeXT image's count depends on its size), and the splice that puts the features at those positions
// (LlamaModel::set_embedding_splice).
#pragma once
#include <vector>

#include "runtime/models/llama.h"
#include "runtime/models/llava_config.h"

namespace strata {

struct ImagePrompt {
  std::vector<int32_t> ids;  // expanded
  EmbeddingSplice splice;
};

// `features` [sum of features_for(size), text_hidden] (LlavaVision::encode_images) of images of `sizes`
// (height, width in pixels). The prompt holds either one placeholder (config.image_token_id) per image,
// expanded here, or already every expanded token; anything else is an error naming the counts.
ImagePrompt expand_image_prompt(const std::vector<int32_t>& ids, const LlavaConfig& config, const Tensor& features,
                                const std::vector<vision::Resolution>& sizes);
// The same expansion without the features (splice.rows stays undefined): what a pipeline stage that never
// embeds tokens (not the first) needs of an image prompt.
ImagePrompt expand_image_placeholders(const std::vector<int32_t>& ids, const LlavaConfig& config,
                                      const std::vector<vision::Resolution>& sizes);

}  // namespace strata
