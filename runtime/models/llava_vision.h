// runtime/models/llava_vision.h: the vision side of a LLaVA model on any Backend: the CLIP ViT tower
// (patch embedding as a GEMM over im2col rows, class and position embeddings, pre-LayerNorm, encoder
// layers of LayerNorm, bidirectional multi-head attention with biases and a QuickGELU/GELU MLP), the
// hidden state that vision_feature_layer names with vision_feature_select_strategy applied, and the
// two-layer GELU projector into the language model's embedding width.
#pragma once
#include <vector>

#include "runtime/backend.h"
#include "runtime/models/llava_config.h"
#include "runtime/models/llava_vision_weights.h"

namespace strata {

class LlavaVision {
 public:
  // Loads the vision weights of the LlavaForConditionalGeneration directory `dir` onto `backend`.
  LlavaVision(const LlavaConfig& config, Backend& backend, const std::string& dir);
  LlavaVision(const LlavaConfig& config, Backend& backend, LlavaVisionWeights weights);

  const LlavaConfig& config() const { return config_; }
  // Image features of a batch of images, each pixel_values [3, image_size, image_size] (f32, host, as
  // preprocess_image gives): [images * features_per_image, text_hidden] on the backend, image by image.
  Tensor encode(const std::vector<Tensor>& pixel_values);
  // The tower's hidden state config.feature_layer before selection and projection:
  // [images * n_positions, hidden] on the backend.
  Tensor tower_hidden(const std::vector<Tensor>& pixel_values);

 private:
  // im2col: each image's patches as rows [images * n_patches, channels * patch * patch], in the order
  // (channel, row, column) that the convolution weight flattens to.
  Tensor patch_rows(const std::vector<Tensor>& pixel_values) const;
  void encoder_layer(int64_t layer, Tensor& hidden, int64_t images);
  Tensor scratch(const Shape& shape) { return backend_.alloc(shape, backend_.activation_dtype()); }

  LlavaConfig config_;
  Backend& backend_;
  LlavaVisionWeights w_;
  Tensor class_embedding_;     // [1, hidden], activation dtype
  Tensor position_embedding_;  // [n_positions, hidden], activation dtype
};

}  // namespace strata
