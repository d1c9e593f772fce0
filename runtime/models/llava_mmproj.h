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
// - LLaVA-NeXT (llava-1.6 files, from llama.cpp's legacy converter with a vision config that carries LLaVA's
//   tiling keys): clip.vision.image_grid_pinpoints, flattened (width, height) pairs as llama.cpp's loader reads
//   them (transformers' config lists (height, width); LLaVA's own configs and this key, (width, height)), become
//   LlavaConfig::grid_pinpoints, so the anyres tiling, unpadding and feature packing are transformers'
//   LlavaNext ones. clip.vision.mm_patch_merge_type must be "spatial_unpad" (the packing with image_newline;
//   "flat" is refused) and clip.vision.image_aspect_ratio, when present, "anyres"; a file with either but no
//   pinpoints is refused. image_newline is read as "v.image_newline" (llama.cpp's loader's name) or
//   "model.image_newline" (its legacy converter's). llama.cpp's mtmd slices such files its own way (llava_uhd
//   slices, image_newline unused by its "mlp" graph, padding of the mean colour); strata follows transformers.
// - Images are preprocessed as CLIPImageProcessor does at image_size (shortest edge, bicubic, center crop,
//   rescale) with clip.vision.image_mean / image_std; with pinpoints, as LlavaNextImageProcessor tiles them.
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
// key or tensor: not an mmproj, a projector type other than "mlp", malformed or incomplete LLaVA-NeXT tiling
// keys, several feature layers, a projector whose output width is not text_hidden.
LlavaConfig read_mmproj_config(const std::string& path, int64_t text_hidden, int32_t image_token_id,
                               const std::string& text_source);

// CLIPImageProcessor at the file's image_size with its image_mean / image_std (LlavaNextImageProcessor's
// tiling with the file's pinpoints, for LLaVA-NeXT).
vision::ImageProcessorConfig mmproj_image_processor(const std::string& path);

// The tower (up to config.feature_layer) and projector of the mmproj GGUF `path` (see
// load_llava_vision_weights, which dispatches here for a file).
LlavaVisionWeights load_mmproj_vision_weights(const std::string& path, const LlavaConfig& config, Backend& backend,
                                              const VisionShard& shard = {});

}  // namespace strata
