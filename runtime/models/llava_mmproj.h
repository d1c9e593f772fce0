// runtime/models/llava_mmproj.h: the vision side of a LLaVA model from llama.cpp's "mmproj" GGUF (the file
// llama.cpp users hold beside the language model's GGUF): general.architecture "clip", clip.* metadata, the
// tower's tensors under v.* and the projector's under mm.* (the canonical names of the model description's
// clip_vision and llava_projector tables).
//
// How the file's keys map onto LlavaConfig, so the pair computes what the Hugging Face checkpoint does:
// - clip.vision.{image_size, patch_size, embedding_length, feed_forward_length, block_count,
//   attention.head_count, attention.layer_norm_epsilon}: the CLIP tower's sizes.
// - clip.projector_type (or clip.vision.projector_type) must be "mlp": LLaVA-1.5's two linear layers with a
//   GELU between (exact GELU, as transformers' projector_hidden_act "gelu"; the file has no key for it).
// - clip.use_gelu: the tower's MLP uses GELU (transformers' hidden_act "gelu"), else QuickGELU; clip.use_silu
//   is refused.
// - The feature layer: clip.vision.feature_layer, a list of hidden-state indices (0 = the embeddings after
//   the pre-LayerNorm, i = after layer i), when present, must hold one index; without it llama.cpp's
//   converter has already dropped the layers after vision_feature_layer (block_count = layers - 1 for
//   LLaVA-1.5's -2), so the feature is the output of the last stored layer. (llama.cpp's own graph runs one
//   layer fewer than stored here, its issue #25817; strata follows transformers.)
// - The class token is dropped (vision_feature_select_strategy "default"): the file has no key for "full".
// - Older converters named CLIP's fc1 "ffn_down" and fc2 "ffn_up"; such files (ffn_down's input is the
//   hidden width) are read with the two swapped back, as llama.cpp's loader does.
// - Images are preprocessed as CLIPImageProcessor does at image_size (shortest edge, bicubic, center crop,
//   rescale) with clip.vision.image_mean / image_std.
#pragma once
#include <cstdint>
#include <string>

#include "runtime/backend.h"
#include "runtime/models/llava_config.h"
#include "runtime/models/llava_vision_weights.h"
#include "runtime/vision/preprocess.h"

namespace strata {

// The LlavaConfig of the mmproj GGUF `path` for a language model `text_source` of embedding width
// `text_hidden` whose image placeholder token is `image_token_id`. Errors (kFormat) name the file and the
// key or tensor: not an mmproj, a projector type other than "mlp", LLaVA-NeXT tiling keys, several feature
// layers, a projector whose output width is not text_hidden.
LlavaConfig read_mmproj_config(const std::string& path, int64_t text_hidden, int32_t image_token_id,
                               const std::string& text_source);

// CLIPImageProcessor at the file's image_size with its image_mean / image_std.
vision::ImageProcessorConfig mmproj_image_processor(const std::string& path);

// The tower (up to config.feature_layer) and projector of the mmproj GGUF `path` (see
// load_llava_vision_weights, which dispatches here for a file).
LlavaVisionWeights load_mmproj_vision_weights(const std::string& path, const LlavaConfig& config, Backend& backend,
                                              const VisionShard& shard = {});

}  // namespace strata
