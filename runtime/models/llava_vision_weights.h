// runtime/models/llava_vision_weights.h: the weights of a LLaVA model's vision side (CLIP tower, projector,
// LLaVA-NeXT's image_newline) and their loader. Which tensors exist, their names and shapes come from the
// model description's "clip_vision", "llava_projector" and "llava_next" tables (model_description.h); this
// file only binds each slot to the field the forward reads. Checkpoints name the parts under
// transformers 4 prefixes ("vision_tower.vision_model.", "multi_modal_projector."), their later
// "model."-prefixed form, or transformers 5's (no "vision_model." level).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/models/llava_config.h"
#include "runtime/models/model_description.h"
#include "runtime/tensor.h"

namespace strata {

struct ClipLayerWeights {
  Tensor norm1_w, norm1_b, wq, bq, wk, bk, wv, bv, wo, bo, norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

struct LlavaVisionWeights {
  Tensor class_embedding, patch_embedding, position_embedding, pre_norm_w, pre_norm_b;
  std::vector<ClipLayerWeights> layers;  // the layers that run (up to the feature layer)
  Tensor proj1_w, proj1_b, proj2_w, proj2_b;  // biases undefined without multimodal_projector_bias
  Tensor image_newline;  // [1, text_hidden]: LLaVA-NeXT's row separator; undefined for LLaVA-1.5
};

// Where a checkpoint keeps the two parts (found by looking for their first slots).
struct VisionNaming {
  std::string tower_prefix;      // e.g. "vision_tower.vision_model." (transformers 4), "vision_tower." (5)
  std::string projector_prefix;  // "multi_modal_projector." or "model.multi_modal_projector."
  std::string model_prefix;      // LLaVA-NeXT's image_newline: "" or "model."
};

// Which part of the tower's layers one tensor-parallel rank holds: heads [head_begin, +heads) of the
// attention (q/k/v rows, out-projection columns) and columns [ffn_begin, +ffn_count) of the MLP (fc1 rows,
// fc2 columns): the description's kRows/kCols slots. With split false the rank holds every layer whole.
struct VisionShard {
  int tp_rank = 0, tp_size = 1;
  bool split = false;
  int64_t head_begin = 0, heads = 0, ffn_begin = 0, ffn_count = 0;
};

// The split of `config`'s tower over tp_size ranks: equal parts of the heads and of the MLP columns where
// tp_size divides both; otherwise every rank runs the whole tower (split false; LlavaVision logs why). A
// tower is small next to its language model, so uneven parts are not worth their bookkeeping.
VisionShard make_vision_shard(const LlavaConfig& config, int tp_rank, int tp_size);

// Reads the vision side at `path` onto `backend`: a LlavaForConditionalGeneration directory (model.safetensors
// or a sharded index), or an mmproj GGUF file (llava_mmproj.h). The tower's layers up to config.feature_layer
// (later layers never feed the projector) and the projector. Every slot's presence, shape and dtype
// (f32/f16/bf16) is checked against the description; errors name the file, the tensor and the expected shape.
// With a split `shard`, the kRows/kCols slots are read as that rank's slices (only those bytes reach the
// backend).
LlavaVisionWeights load_llava_vision_weights(const std::string& path, const LlavaConfig& config, Backend& backend,
                                             const VisionShard& shard = {});

// One checkpoint's vision tensors as host views into its files, and how it names each description slot.
// Each format's reader fills one; bind_vision_weights does the rest for all of them.
struct VisionTensorSet {
  struct Located {
    Tensor view;
    std::string file;
  };
  std::map<std::string, Located> tensors;
  std::string source;         // the checkpoint, for errors
  std::string config_source;  // where the expected shapes come from, for errors ("config.json")
  std::string bias_hint;      // why the projector biases are expected, for errors
  // The name of (description, slot, layer; -1 for globals) in `tensors`.
  std::function<std::string(const ModelDescription&, const TensorSlot&, int64_t)> name_of;
};

// Checks every slot of the clip_vision (up to config.feature_layer), llava_projector and llava_next tables
// against `files` (presence, shape, dtype) and uploads them to `backend`, split as `shard` says.
LlavaVisionWeights bind_vision_weights(const VisionTensorSet& files, const LlavaConfig& config, Backend& backend,
                                       const VisionShard& shard = {});

}  // namespace strata
