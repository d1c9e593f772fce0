// runtime/models/llava_vision_weights.cpp: the LLaVA vision side's loader, driven by the model description's
// clip_vision, llava_projector and llava_next tables: the safetensors naming here, the binding shared with the mmproj
// GGUF reader (llava_mmproj.cpp).
#include "runtime/models/llava_vision_weights.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "runtime/error.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/formats/safetensors.h"
#include "runtime/models/llava_mmproj.h"
#include "runtime/models/model_description.h"
#include "runtime/tokenizer/file_bytes.h"
#include "runtime/vision/vision_json.h"

namespace strata {
namespace {

// Where checkpoints keep the tower and the projector. transformers 4 wrote "vision_tower.vision_model." and
// "multi_modal_projector."; its later releases (and re-saved hub checkpoints) put both under "model.";
// transformers 5 drops CLIPVisionModel's "vision_model." level (in memory, and in what save_pretrained
// writes, without "model."). Each part's prefix is found on its own.
const char* const kTowerPrefixes[] = {"vision_tower.vision_model.", "model.vision_tower.vision_model.",
                                      "vision_tower.", "model.vision_tower."};
const char* const kProjectorPrefixes[] = {"multi_modal_projector.", "model.multi_modal_projector."};

std::string read_text(const std::string& path) { return read_file_bytes(path, "model file"); }

// The safetensors tensors of a model directory by name, each a view into its file's mapping.
VisionTensorSet map_safetensors_dir(const std::string& dir) {
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
  VisionTensorSet out;
  out.source = dir;
  out.config_source = "config.json";
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

// The rank's slice of a split slot's full host tensor: a row range is a view, a column range a gathered copy.
Tensor shard_slice(const Tensor& full, const TensorSlot& slot, const ClipVisionConfig& v, const VisionShard& shard) {
  const int dim = slot.split_dim();
  if (!shard.split || dim < 0) return full;
  const Dim split_dim = slot.shape[static_cast<size_t>(dim)];
  STRATA_CHECK_KIND(ErrorKind::kInternal, split_dim == Dim::kVisionHidden || split_dim == Dim::kVisionFfn, "slot ",
                    slot.name, " splits ", dim_name(split_dim), ", which the vision tower keeps whole");
  const int64_t begin = split_dim == Dim::kVisionHidden ? shard.head_begin * v.head_dim() : shard.ffn_begin;
  const int64_t count = split_dim == Dim::kVisionHidden ? shard.heads * v.head_dim() : shard.ffn_count;
  if (dim == 0) return full.rows(begin, count);
  const int64_t n = full.dim(0), row_bytes = dtype_bytes(full.dtype(), full.dim(1));
  const int64_t skip = dtype_bytes(full.dtype(), begin), take = dtype_bytes(full.dtype(), count);
  Tensor out = Tensor::empty({n, count}, full.dtype());
  const auto* src = static_cast<const uint8_t*>(full.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t r = 0; r < n; ++r) std::memcpy(dst + r * take, src + r * row_bytes + skip, static_cast<size_t>(take));
  return out;
}

}  // namespace

VisionShard make_vision_shard(const LlavaConfig& config, int tp_rank, int tp_size) {
  const ClipVisionConfig& v = config.vision;
  STRATA_CHECK(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "vision shard: rank ", tp_rank, " of ", tp_size);
  VisionShard s;
  s.tp_rank = tp_rank;
  s.tp_size = tp_size;
  if (tp_size == 1) return s;
  if (v.n_heads % tp_size != 0 || v.ffn % tp_size != 0) return s;  // replicated (LlavaVision logs it)
  s.split = true;
  s.heads = v.n_heads / tp_size;
  s.head_begin = tp_rank * s.heads;
  s.ffn_count = v.ffn / tp_size;
  s.ffn_begin = tp_rank * s.ffn_count;
  return s;
}

LlavaVisionWeights load_llava_vision_weights(const std::string& path, const LlavaConfig& config, Backend& backend,
                                             const VisionShard& shard) {
  if (std::filesystem::is_regular_file(path)) return load_mmproj_vision_weights(path, config, backend, shard);
  const std::string& dir = path;
  VisionTensorSet files = map_safetensors_dir(dir);
  const ModelDescription& tower = model_description("clip_vision");
  const ModelDescription& projector = model_description("llava_projector");
  const ModelDescription& next = model_description("llava_next");

  VisionNaming naming;
  const std::string first_tower(tower.slots.front().hf_name), first_projector(projector.slots.front().hf_name);
  for (const char* prefix : kTowerPrefixes)
    if (naming.tower_prefix.empty() && files.tensors.count(prefix + first_tower)) naming.tower_prefix = prefix;
  for (const char* prefix : kProjectorPrefixes)
    if (naming.projector_prefix.empty() && files.tensors.count(prefix + first_projector))
      naming.projector_prefix = prefix;
  STRATA_CHECK_KIND(ErrorKind::kFormat, !naming.tower_prefix.empty() && !naming.projector_prefix.empty(), dir,
                    ": no LLaVA vision tower and projector found (looked for '", kTowerPrefixes[0], first_tower, "', '",
                    kProjectorPrefixes[0], first_projector, "' and their later forms); is this a "
                    "LlavaForConditionalGeneration checkpoint?");
  // LLaVA-NeXT's image_newline sits at the model's top level: "image_newline", or "model.image_newline".
  const std::string newline(next.slots.front().hf_name);
  naming.model_prefix = !files.tensors.count(newline) && files.tensors.count("model." + newline) ? "model." : "";
  files.name_of = [naming, &tower, &projector](const ModelDescription& d, const TensorSlot& slot, int64_t layer) {
    const std::string& prefix = &d == &tower       ? naming.tower_prefix
                                : &d == &projector ? naming.projector_prefix
                                                   : naming.model_prefix;
    return slot.per_layer ? cat(prefix, d.hf_layer_prefix, layer, ".", slot.hf_name) : cat(prefix, slot.hf_name);
  };
  files.bias_hint = " (config.json sets multimodal_projector_bias)";
  return bind_vision_weights(files, config, backend, shard);
}

LlavaVisionWeights bind_vision_weights(const VisionTensorSet& files, const LlavaConfig& config, Backend& backend,
                                       const VisionShard& shard) {
  const ModelDescription& tower = model_description("clip_vision");
  const ModelDescription& projector = model_description("llava_projector");
  const ModelDescription& next = model_description("llava_next");
  const ModelConfig sizes = config.description_sizes();

  // Every present slot of the tables, under its canonical name.
  std::map<std::string, Tensor> loaded;
  auto load = [&](const ModelDescription& d, const TensorSlot& slot, int64_t layer) {
    if (!slot.present(sizes)) return;
    const std::string name = files.name_of(d, slot, layer);
    auto it = files.tensors.find(name);
    const std::string hint = slot.presence == SlotPresence::kProjectorBias ? files.bias_hint
                             : slot.presence == SlotPresence::kImageNewline
                                 ? cat(" (", files.config_source, " tiles images as LLaVA-NeXT does, and each row of "
                                       "their features ends with this vector)")
                                 : std::string();
    STRATA_CHECK_KIND(ErrorKind::kFormat, it != files.tensors.end(), files.source, ": tensor '", name, "' is missing",
                      hint, "; a LLaVA vision side needs every tensor of the CLIP tower (up to the feature layer), the "
                      "two-layer projector and, for LLaVA-NeXT, image_newline");
    const Tensor& t = it->second.view;
    const Shape want = slot.full_shape(sizes);
    STRATA_CHECK_KIND(ErrorKind::kFormat, t.shape() == want, it->second.file, ": tensor '", name, "' is ",
                      shape_str(t.shape()), ", but ", files.config_source, " implies ", shape_str(want));
    STRATA_CHECK_KIND(ErrorKind::kFormat,
                      t.dtype() == DType::kF32 || t.dtype() == DType::kF16 || t.dtype() == DType::kBF16,
                      it->second.file, ": tensor '", name, "' is ", dtype_name(t.dtype()),
                      "; the vision side reads f32, f16 or bf16");
    const std::string canonical = slot.per_layer ? cat(d.layer_prefix, layer, ".", slot.name) : std::string(slot.name);
    loaded[canonical] = backend.upload_weight(slot.per_layer ? shard_slice(t, slot, config.vision, shard) : t);
  };
  for (const TensorSlot& slot : tower.slots) {
    if (!slot.per_layer) load(tower, slot, -1);
    for (int64_t l = 0; slot.per_layer && l < config.feature_layer; ++l) load(tower, slot, l);
  }
  for (const ModelDescription* d : {&projector, &next})
    for (const TensorSlot& slot : d->slots) load(*d, slot, -1);

  // Bind the slots to the fields the forward reads.
  auto take = [&](const std::string& canonical, bool optional = false) -> Tensor {
    auto it = loaded.find(canonical);
    STRATA_CHECK_KIND(ErrorKind::kInternal, it != loaded.end() || optional, "vision weights: no slot '", canonical,
                      "' in the model description");
    return it != loaded.end() ? it->second : Tensor();
  };
  LlavaVisionWeights w;
  w.class_embedding = take("v.class_embd");
  w.patch_embedding = take("v.patch_embd.weight");
  w.position_embedding = take("v.position_embd.weight");
  w.pre_norm_w = take("v.pre_ln.weight");
  w.pre_norm_b = take("v.pre_ln.bias");
  for (int64_t l = 0; l < config.feature_layer; ++l) {
    auto lt = [&](const char* name) { return take(cat(tower.layer_prefix, l, ".", name)); };
    w.layers.push_back({lt("ln1.weight"), lt("ln1.bias"), lt("attn_q.weight"), lt("attn_q.bias"), lt("attn_k.weight"),
                        lt("attn_k.bias"), lt("attn_v.weight"), lt("attn_v.bias"), lt("attn_out.weight"),
                        lt("attn_out.bias"), lt("ln2.weight"), lt("ln2.bias"), lt("ffn_up.weight"), lt("ffn_up.bias"),
                        lt("ffn_down.weight"), lt("ffn_down.bias")});
  }
  w.proj1_w = take("mm.0.weight");
  w.proj1_b = take("mm.0.bias", /*optional=*/true);
  w.proj2_w = take("mm.2.weight");
  w.proj2_b = take("mm.2.bias", /*optional=*/true);
  const Tensor newline = take("v.image_newline", /*optional=*/true);
  if (newline.defined()) w.image_newline = newline.reshape({1, config.text_hidden});
  return w;
}

}  // namespace strata
