// runtime/models/llava_vision_weights.h: the tensors of a LLaVA model's vision side (CLIP tower and
// projector) as ONE table of slots (role, name, per-layer or not, shape in config dimensions), and the
// loader that reads them from a Hugging Face safetensors directory under transformers 4 names
// ("vision_tower.vision_model...", "multi_modal_projector..."), their "model."-prefixed later form, or
// transformers 5's (no "vision_model." level). Everything about names and shapes lives in the table, so moving it
// into the project's model description is a matter of moving rows.
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/models/llava_config.h"
#include "runtime/tensor.h"

namespace strata {

enum class VisionRole : uint8_t {
  // Tower, once.
  kClassEmbedding, kPatchEmbedding, kPositionEmbedding, kPreNormWeight, kPreNormBias,
  // Tower, each encoder layer.
  kNorm1Weight, kNorm1Bias, kQWeight, kQBias, kKWeight, kKBias, kVWeight, kVBias, kOutWeight, kOutBias,
  kNorm2Weight, kNorm2Bias, kFc1Weight, kFc1Bias, kFc2Weight, kFc2Bias,
  // Projector.
  kProj1Weight, kProj1Bias, kProj2Weight, kProj2Bias,
  kCount
};
constexpr size_t kVisionRoles = static_cast<size_t>(VisionRole::kCount);

enum class VisionPart : uint8_t { kTower, kProjector };
// Symbolic dimensions of a slot's shape, resolved against LlavaConfig.
enum class VisionDim : uint8_t { kHidden, kFfn, kPositions, kChannels, kPatch, kTextHidden };

struct VisionTensorSlot {
  VisionRole role;
  VisionPart part;
  const char* name;    // under the part's prefix; per-layer names sit under "encoder.layers.N."
  bool per_layer;
  int rank;
  std::array<VisionDim, 4> dims;
  bool is_projector_bias;  // absent when multimodal_projector_bias is false
};

// The table, indexed by VisionRole.
std::span<const VisionTensorSlot> vision_tensor_slots();
// A slot's shape under `config`.
Shape vision_slot_shape(const VisionTensorSlot& slot, const LlavaConfig& config);

// Where a checkpoint keeps the two parts (the naming generation it was saved with).
struct VisionNaming {
  std::string tower_prefix;      // e.g. "vision_tower.vision_model." (transformers 4), "vision_tower." (5)
  std::string projector_prefix;  // "multi_modal_projector." or "model.multi_modal_projector."
};
// The checkpoint name of `slot` (of encoder layer `layer` for per-layer slots).
std::string vision_tensor_name(const VisionTensorSlot& slot, const VisionNaming& naming, int64_t layer = -1);

struct LlavaVisionWeights {
  std::array<Tensor, kVisionRoles> global;                 // tower-once and projector slots
  std::vector<std::array<Tensor, kVisionRoles>> layers;    // per-layer slots of the layers that run
  const Tensor& operator[](VisionRole r) const { return global[static_cast<size_t>(r)]; }
  const Tensor& at(int64_t layer, VisionRole r) const { return layers[static_cast<size_t>(layer)][static_cast<size_t>(r)]; }
};

// Reads the vision side of the LlavaForConditionalGeneration directory `dir` (model.safetensors or a
// sharded index) onto `backend`: the tower's layers up to config.feature_layer (later layers never feed
// the projector) and the projector. Every slot's presence, shape and dtype (f32/f16/bf16) is checked;
// errors name the file, the tensor and the expected shape.
LlavaVisionWeights load_llava_vision_weights(const std::string& dir, const LlavaConfig& config, Backend& backend);

}  // namespace strata
