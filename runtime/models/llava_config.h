// runtime/models/llava_config.h: the hyper-parameters of a LLaVA-style vision-language model
// (Hugging Face LlavaForConditionalGeneration, and LlavaNextForConditionalGeneration's anyres tiling): the
// CLIP vision tower, which of its hidden states feed the projector, the projector, and the image
// placeholder token. The language model's own config is the
// text_config object, read by the Llama-family parser.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/vision/preprocess.h"

namespace strata {

struct ClipVisionConfig {
  int64_t hidden = 768;  // CLIPVisionConfig's defaults: transformers omits fields left at them
  int64_t ffn = 3072;
  int64_t n_layers = 12;
  int64_t n_heads = 12;
  int64_t image_size = 224;
  int64_t patch_size = 32;
  int64_t channels = 3;
  float layer_norm_eps = 1e-5f;
  Activation act = Activation::kQuickGelu;

  int64_t head_dim() const { return hidden / n_heads; }
  int64_t patches_per_side() const { return image_size / patch_size; }
  int64_t n_patches() const { return patches_per_side() * patches_per_side(); }
  int64_t n_positions() const { return n_patches() + 1; }  // the class token first
};

enum class FeatureSelect : uint8_t { kDefault, kFull };  // default drops the class token

struct LlavaConfig {
  ClipVisionConfig vision;
  int64_t text_hidden = 0;  // the projector's output width (text_config.hidden_size)
  // Which of the tower's n_layers + 1 hidden states feeds the projector (0 = the embeddings after the
  // pre-LayerNorm, i = after layer i), resolved from vision_feature_layer (negative counts from the end).
  int64_t feature_layer = 0;
  FeatureSelect select = FeatureSelect::kDefault;
  Activation projector_act = Activation::kGeluErf;
  bool projector_bias = true;
  int32_t image_token_id = 32000;
  std::string text_config_json;  // the text_config object, serialized (for the language model's parser)
  // LLaVA-NeXT (model_type llava_next): each image is tiled into the best of these resolutions (height,
  // width; multiples of the tower's image_size), its features unpadded and closed row by row with the
  // image_newline vector. Empty for LLaVA-1.5.
  std::vector<vision::Resolution> grid_pinpoints;
  bool anyres() const { return !grid_pinpoints.empty(); }

  // The sizes of the model description's clip_vision, llava_projector and llava_next slots: the vision
  // sizes, the text hidden size the projector outputs, and whether image_newline exists (anyres).
  ModelConfig description_sizes() const;
  // Image features (tokens) one tile yields: every image's of LLaVA-1.5.
  int64_t features_per_image() const {
    return vision.n_patches() + (select == FeatureSelect::kFull ? 1 : 0);
  }
  // Features (prompt positions) an image of this size in pixels yields: with anyres, the base tile's, then
  // the unpadded grid's with one image_newline per row (the count LlavaNextProcessor expands <image> to).
  int64_t features_for(int64_t height, int64_t width) const;
  // Tiles (vision tower inputs) of such an image: 1 without anyres, else the base tile plus the grid's.
  int64_t tiles_for(int64_t height, int64_t width) const;
};

// Maps transformers' hidden_act names: "gelu" (erf), "gelu_new"/"gelu_pytorch_tanh" (tanh), "quick_gelu".
Activation parse_activation(const std::string& name, const std::string& source);

// Parses a LlavaForConditionalGeneration or LlavaNextForConditionalGeneration config.json; `source` names the file in errors (kFormat).
LlavaConfig parse_llava_config(const std::string& json_text, const std::string& source);

}  // namespace strata
