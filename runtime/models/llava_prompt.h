// runtime/models/llava_prompt.h: a LLaVA prompt with its images: each image placeholder token expanded to
// one token per image feature (as transformers' LlavaProcessor expands "<image>"), and the splice that puts
// the features at those positions (LlamaModel::set_embedding_splice).
#pragma once
#include <vector>

#include "runtime/models/llama.h"
#include "runtime/models/llava_config.h"

namespace strata {

struct ImagePrompt {
  std::vector<int32_t> ids;  // expanded
  EmbeddingSplice splice;
};

// `features` [images * features_per_image, text_hidden] (LlavaVision::encode). The prompt holds either
// one placeholder (config.image_token_id) per image, expanded here, or already every expanded token;
// anything else is an error naming the counts.
ImagePrompt expand_image_prompt(const std::vector<int32_t>& ids, const LlavaConfig& config, const Tensor& features);
// The same expansion for `images` images without their features (splice.rows stays undefined): what a
// pipeline stage that never embeds tokens (not the first) needs of an image prompt.
ImagePrompt expand_image_placeholders(const std::vector<int32_t>& ids, const LlavaConfig& config, int64_t images);

}  // namespace strata
