// runtime/models/llava_vision.h: the vision side of a LLaVA model on any Backend: the CLIP ViT tower
// (patch embedding as a GEMM over im2col rows, class and position embeddings, pre-LayerNorm, encoder
// layers of LayerNorm, bidirectional multi-head attention with biases and a QuickGELU/GELU MLP), the
// hidden state that vision_feature_layer names with vision_feature_select_strategy applied, and the
// two-layer GELU projector into the language model's embedding width.
//
// Under tensor parallelism (a `tp` group of more than one rank) the encoder layers split as the language
// model's do: each rank runs its share of the heads and of the MLP columns (VisionShard) over every image
// token, and the out-projection's and fc2's partial sums are all-reduced, so every rank of the group ends
// each layer with the whole hidden state. Embeddings, norms and the projector are replicated. Where the
// group does not divide the heads and MLP columns, every rank runs the whole tower (make_vision_shard).
#pragma once
#include <vector>

#include "runtime/backend.h"
#include "runtime/collective.h"
#include "runtime/models/llava_config.h"
#include "runtime/models/llava_vision_weights.h"

namespace strata {

class LlavaVision {
 public:
  // Loads the vision weights at `dir` (a LlavaForConditionalGeneration directory or an mmproj GGUF file,
  // load_llava_vision_weights) onto `backend`: this rank's
  // slices when `tp` (optional; null or a group of one: the whole tower) splits the tower. Every rank of
  // the group must then call encode() with the same images, as it runs the group's all-reduces.
  LlavaVision(const LlavaConfig& config, Backend& backend, const std::string& dir, Collective* tp = nullptr);
  // `weights` as load_llava_vision_weights(..., shard) read them; tp is the group `shard` splits over.
  LlavaVision(const LlavaConfig& config, Backend& backend, LlavaVisionWeights weights, const VisionShard& shard = {},
              Collective* tp = nullptr);

  const LlavaConfig& config() const { return config_; }
  // This rank's part of the tower (split false: the whole tower).
  const VisionShard& shard() const { return shard_; }
  // Image features of a batch of images, each pixel_values [3, image_size, image_size] (f32, host, as
  // preprocess_image gives): [images * features_per_image, text_hidden] on the backend, image by image.
  Tensor encode(const std::vector<Tensor>& pixel_values);
  // Features of whole images, as the language model reads them: encode() for LLaVA-1.5; with anyres
  // (LLaVA-NeXT) each pixel_values is [tiles, 3, image_size, image_size], every image's tiles go through
  // the tower in one batch, and each image's features are packed for its size (height, width) in pixels,
  // sizes[i] (pack_anyres_features). [sum of features_for(size), text_hidden], image by image.
  Tensor encode_images(const std::vector<Tensor>& pixel_values, const std::vector<vision::Resolution>& sizes);
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
  VisionShard shard_;
  Collective* tp_ = nullptr;  // set only while shard_.split
  Tensor class_embedding_;     // [1, hidden], activation dtype
  Tensor position_embedding_;  // [n_positions, hidden], activation dtype
  Tensor image_newline_;       // [1, text_hidden], activation dtype (LLaVA-NeXT)
};

}  // namespace strata
