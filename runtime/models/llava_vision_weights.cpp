// runtime/models/llava_vision_weights.cpp: the LLaVA vision tensor table and its safetensors loader.
#include "runtime/models/llava_vision_weights.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "runtime/error.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/formats/safetensors.h"
#include "runtime/vision/vision_json.h"

namespace strata {
namespace {

using R = VisionRole;
using P = VisionPart;
using D = VisionDim;
constexpr D kH = D::kHidden, kF = D::kFfn, kPos = D::kPositions, kC = D::kChannels, kPt = D::kPatch,
            kT = D::kTextHidden;

// The one table: every tensor the vision side reads, in VisionRole order.
constexpr VisionTensorSlot kSlots[] = {
    {R::kClassEmbedding, P::kTower, "embeddings.class_embedding", false, 1, {kH}, false},
    {R::kPatchEmbedding, P::kTower, "embeddings.patch_embedding.weight", false, 4, {kH, kC, kPt, kPt}, false},
    {R::kPositionEmbedding, P::kTower, "embeddings.position_embedding.weight", false, 2, {kPos, kH}, false},
    {R::kPreNormWeight, P::kTower, "pre_layrnorm.weight", false, 1, {kH}, false},  // sic: CLIP's spelling
    {R::kPreNormBias, P::kTower, "pre_layrnorm.bias", false, 1, {kH}, false},
    {R::kNorm1Weight, P::kTower, "layer_norm1.weight", true, 1, {kH}, false},
    {R::kNorm1Bias, P::kTower, "layer_norm1.bias", true, 1, {kH}, false},
    {R::kQWeight, P::kTower, "self_attn.q_proj.weight", true, 2, {kH, kH}, false},
    {R::kQBias, P::kTower, "self_attn.q_proj.bias", true, 1, {kH}, false},
    {R::kKWeight, P::kTower, "self_attn.k_proj.weight", true, 2, {kH, kH}, false},
    {R::kKBias, P::kTower, "self_attn.k_proj.bias", true, 1, {kH}, false},
    {R::kVWeight, P::kTower, "self_attn.v_proj.weight", true, 2, {kH, kH}, false},
    {R::kVBias, P::kTower, "self_attn.v_proj.bias", true, 1, {kH}, false},
    {R::kOutWeight, P::kTower, "self_attn.out_proj.weight", true, 2, {kH, kH}, false},
    {R::kOutBias, P::kTower, "self_attn.out_proj.bias", true, 1, {kH}, false},
    {R::kNorm2Weight, P::kTower, "layer_norm2.weight", true, 1, {kH}, false},
    {R::kNorm2Bias, P::kTower, "layer_norm2.bias", true, 1, {kH}, false},
    {R::kFc1Weight, P::kTower, "mlp.fc1.weight", true, 2, {kF, kH}, false},
    {R::kFc1Bias, P::kTower, "mlp.fc1.bias", true, 1, {kF}, false},
    {R::kFc2Weight, P::kTower, "mlp.fc2.weight", true, 2, {kH, kF}, false},
    {R::kFc2Bias, P::kTower, "mlp.fc2.bias", true, 1, {kH}, false},
    {R::kProj1Weight, P::kProjector, "linear_1.weight", false, 2, {kT, kH}, false},
    {R::kProj1Bias, P::kProjector, "linear_1.bias", false, 1, {kT}, true},
    {R::kProj2Weight, P::kProjector, "linear_2.weight", false, 2, {kT, kT}, false},
    {R::kProj2Bias, P::kProjector, "linear_2.bias", false, 1, {kT}, true},
};
static_assert(std::size(kSlots) == kVisionRoles, "one slot per VisionRole");

constexpr bool slots_in_role_order() {
  for (size_t i = 0; i < std::size(kSlots); ++i)
    if (static_cast<size_t>(kSlots[i].role) != i) return false;
  return true;
}
static_assert(slots_in_role_order(), "kSlots must list the roles in VisionRole order");

// Where checkpoints keep the tower and the projector. transformers 4 wrote "vision_tower.vision_model." and
// "multi_modal_projector."; its later releases (and re-saved hub checkpoints) put both under "model.";
// transformers 5 drops CLIPVisionModel's "vision_model." level (in memory, and in what save_pretrained
// writes, without "model."). Each part's prefix is found on its own.
const char* const kTowerPrefixes[] = {"vision_tower.vision_model.", "model.vision_tower.vision_model.",
                                      "vision_tower.", "model.vision_tower."};
const char* const kProjectorPrefixes[] = {"multi_modal_projector.", "model.multi_modal_projector."};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK_KIND(ErrorKind::kIo, in.good(), "cannot read '", path, "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The safetensors tensors of a model directory by name, each a view into its file's mapping.
struct TensorDirectory {
  struct Located {
    Tensor view;
    std::string file;
  };
  std::map<std::string, Located> tensors;
};

TensorDirectory map_safetensors_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> shards;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const boost::json::value root = vision::parse_json_object(read_text(index.string()), index.string());
    const boost::json::value* wm = root.get_object().if_contains("weight_map");
    STRATA_CHECK_KIND(ErrorKind::kFormat, wm != nullptr && wm->is_object(), index.string(), ": no 'weight_map' object");
    for (const auto& kv : wm->get_object()) {
      STRATA_CHECK_KIND(ErrorKind::kFormat, kv.value().is_string(), index.string(), ": weight_map entry '",
                        std::string(kv.key()), "' is not a file name");
      const std::string shard(kv.value().get_string());
      STRATA_CHECK_KIND(ErrorKind::kFormat, shard.find('/') == std::string::npos && !shard.empty() && shard != "..",
                        index.string(), ": shard name '", shard, "' must be a file in the model directory");
      if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
    }
  } else {
    STRATA_CHECK_KIND(ErrorKind::kFormat, fs::exists(fs::path(dir) / "model.safetensors"), dir,
                      ": neither model.safetensors nor model.safetensors.index.json is present");
    shards.push_back("model.safetensors");
  }
  TensorDirectory out;
  for (const std::string& shard : shards) {
    const std::string path = (fs::path(dir) / shard).string();
    auto file = std::make_shared<MappedFile>(path);
    const SafetensorsHeader header = parse_safetensors_header(file->data(), file->size(), path);
    for (const SafetensorsTensor& t : header.tensors) {
      void* data = const_cast<uint8_t*>(file->data() + t.offset);  // read-only mapping; views are never written
      out.tensors[t.name] = {Tensor::view(data, t.shape, t.dtype, Device::kCpu, file), path};
    }
  }
  return out;
}

}  // namespace

std::span<const VisionTensorSlot> vision_tensor_slots() { return kSlots; }

Shape vision_slot_shape(const VisionTensorSlot& slot, const LlavaConfig& config) {
  Shape shape;
  for (int i = 0; i < slot.rank; ++i) {
    switch (slot.dims[static_cast<size_t>(i)]) {
      case D::kHidden: shape.push_back(config.vision.hidden); break;
      case D::kFfn: shape.push_back(config.vision.ffn); break;
      case D::kPositions: shape.push_back(config.vision.n_positions()); break;
      case D::kChannels: shape.push_back(config.vision.channels); break;
      case D::kPatch: shape.push_back(config.vision.patch_size); break;
      case D::kTextHidden: shape.push_back(config.text_hidden); break;
    }
  }
  return shape;
}

std::string vision_tensor_name(const VisionTensorSlot& slot, const VisionNaming& naming, int64_t layer) {
  if (slot.part == VisionPart::kProjector) return naming.projector_prefix + slot.name;
  if (slot.per_layer) return cat(naming.tower_prefix, "encoder.layers.", layer, ".", slot.name);
  return naming.tower_prefix + slot.name;
}

LlavaVisionWeights load_llava_vision_weights(const std::string& dir, const LlavaConfig& config, Backend& backend) {
  const TensorDirectory files = map_safetensors_dir(dir);
  VisionNaming naming;
  for (const char* prefix : kTowerPrefixes)
    if (naming.tower_prefix.empty() && files.tensors.count(prefix + std::string(kSlots[0].name)))
      naming.tower_prefix = prefix;
  for (const char* prefix : kProjectorPrefixes)
    if (naming.projector_prefix.empty() && files.tensors.count(prefix + std::string("linear_1.weight")))
      naming.projector_prefix = prefix;
  STRATA_CHECK_KIND(ErrorKind::kFormat, !naming.tower_prefix.empty() && !naming.projector_prefix.empty(), dir,
                    ": no LLaVA vision tower and projector found (looked for '", kTowerPrefixes[0], kSlots[0].name,
                    "', '", kProjectorPrefixes[0], "linear_1.weight' and their transformers 5 forms); is this a "
                    "LlavaForConditionalGeneration checkpoint?");

  auto load = [&](const VisionTensorSlot& slot, int64_t layer) -> Tensor {
    const std::string name = vision_tensor_name(slot, naming, layer);
    auto it = files.tensors.find(name);
    if (it == files.tensors.end()) {
      STRATA_CHECK_KIND(ErrorKind::kFormat, slot.is_projector_bias && !config.projector_bias, dir, ": tensor '", name,
                        "' is missing", slot.is_projector_bias ? " (config.json sets multimodal_projector_bias)" : "");
      return Tensor();
    }
    const Tensor& t = it->second.view;
    const Shape want = vision_slot_shape(slot, config);
    STRATA_CHECK_KIND(ErrorKind::kFormat, t.shape() == want, it->second.file, ": tensor '", name, "' is ",
                      shape_str(t.shape()), ", but config.json implies ", shape_str(want));
    STRATA_CHECK_KIND(ErrorKind::kFormat,
                      t.dtype() == DType::kF32 || t.dtype() == DType::kF16 || t.dtype() == DType::kBF16,
                      it->second.file, ": tensor '", name, "' is ", dtype_name(t.dtype()),
                      "; the vision side reads f32, f16 or bf16");
    return backend.upload_weight(t);
  };

  LlavaVisionWeights w;
  w.layers.resize(static_cast<size_t>(config.feature_layer));
  for (const VisionTensorSlot& slot : kSlots) {
    if (!slot.per_layer) {
      w.global[static_cast<size_t>(slot.role)] = load(slot, -1);
      continue;
    }
    for (int64_t l = 0; l < config.feature_layer; ++l)
      w.layers[static_cast<size_t>(l)][static_cast<size_t>(slot.role)] = load(slot, l);
  }
  return w;
}

}  // namespace strata
