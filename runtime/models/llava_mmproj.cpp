// runtime/models/llava_mmproj.cpp: llama.cpp's mmproj GGUF -> LlavaConfig, image processor and vision weights
// (the key mapping is in the header).
#include "runtime/models/llava_mmproj.h"

#include <array>
#include <memory>
#include <utility>
#include <vector>

#include "runtime/error.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/gguf_metadata.h"
#include "runtime/formats/mapped_file.h"
#include "runtime/log.h"
#include "runtime/vision/anyres.h"

namespace strata {
namespace {

struct MmprojFile {
  std::shared_ptr<MappedFile> file;
  GgufFile gguf;
  std::string path;

  explicit MmprojFile(const std::string& p)
      : file(std::make_shared<MappedFile>(p)), gguf(parse_gguf_buffer(file->data(), file->size(), p)), path(p) {
    const GgufMetadata md(gguf, path);
    const std::string arch = md.string("general.architecture", "");
    STRATA_CHECK_KIND(ErrorKind::kFormat, arch == "clip", path, ": general.architecture is '", arch,
                      "', not 'clip'; --mmproj takes llama.cpp's vision projector GGUF (mmproj-*.gguf), and --model "
                      "the language model");
    STRATA_CHECK_KIND(ErrorKind::kFormat, md.boolean("clip.has_vision_encoder", true), path,
                      ": clip.has_vision_encoder is false; the file holds no vision tower");
  }
  const GgufTensorInfo* tensor(const std::string& name) const {
    for (const GgufTensorInfo& t : gguf.tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
};

std::array<float, 3> rgb_triple(const GgufMetadata& md, const std::string& key, const std::array<float, 3>& fallback) {
  const GgufValue* v = md.array(key, GgufType::kF32);
  if (v == nullptr) return fallback;
  STRATA_CHECK_KIND(ErrorKind::kFormat, v->floats.size() == 3, md.source(), ": metadata '", key, "' has ",
                    v->floats.size(), " values; one per RGB channel (3) is expected");
  return {static_cast<float>(v->floats[0]), static_cast<float>(v->floats[1]), static_cast<float>(v->floats[2])};
}

// LLaVA-NeXT's tiling (llava-1.6 files): the resolutions an image may be tiled into, flattened (width, height)
// pairs as llama.cpp's loader reads clip.vision.image_grid_pinpoints, returned as (height, width) Resolutions
// like transformers' config lists them; empty for a LLaVA-1.5 file. Only the packing transformers' LLaVA-NeXT
// does (spatial_unpad: the grid cropped to the image, image_newline closing each row) is accepted.
std::vector<vision::Resolution> read_pinpoints(const GgufMetadata& md, int64_t tile) {
  const std::string& path = md.source();
  const char* const key = "clip.vision.image_grid_pinpoints";
  const std::string merge = md.string("clip.vision.mm_patch_merge_type", "");
  const std::string aspect = md.string("clip.vision.image_aspect_ratio", "");
  STRATA_CHECK_KIND(ErrorKind::kFormat, tile > 0, path, ": clip.vision.image_size is ", tile, "; it must be positive");
  const GgufValue* pins = md.array(key, GgufType::kI32);
  if (pins == nullptr) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, merge != "spatial_unpad" && aspect.rfind("anyres", 0) != 0, path,
                      ": metadata '", key, "' is missing, but clip.vision.",
                      merge == "spatial_unpad" ? "mm_patch_merge_type is 'spatial_unpad'"
                                               : "image_aspect_ratio is '" + aspect + "'",
                      ": a LLaVA-NeXT (llava-1.6) mmproj needs the grid resolutions its images are tiled into "
                      "(llama.cpp's converter copies them from image_grid_pinpoints of the vision config.json)");
    return {};
  }
  const std::vector<int64_t>& v = pins->ints;
  STRATA_CHECK_KIND(ErrorKind::kFormat, !v.empty() && v.size() % 2 == 0, path, ": metadata '", key, "' holds ",
                    v.size(), " values; it must be a non-empty list of (width, height) pairs, flattened");
  std::vector<vision::Resolution> out;
  for (size_t i = 0; i < v.size(); i += 2) {
    const vision::Resolution r{v[i + 1], v[i]};
    STRATA_CHECK_KIND(ErrorKind::kFormat, vision::valid_pinpoint(r, tile), path, ": metadata '", key, "' entry ", i / 2,
                      " (width ", r.width, ", height ", r.height, ") is not a whole number of ", tile,
                      "-pixel tiles (clip.vision.image_size), at most ", vision::kMaxPinpointTiles, " of them");
    out.push_back(r);
  }
  STRATA_CHECK_KIND(ErrorKind::kFormat, merge == "spatial_unpad", path, ": has ", key,
                    " but clip.vision.mm_patch_merge_type is '", merge.empty() ? "(missing: flat)" : merge,
                    "'; strata packs LLaVA-NeXT's tiles as transformers does ('spatial_unpad': the grid cropped to "
                    "the image, image_newline ending each row)");
  // "anyres_max_N" (LLaVA-OneVision) also downsamples large grids, which LLaVA-NeXT does not.
  STRATA_CHECK_KIND(ErrorKind::kFormat, aspect.empty() || aspect == "anyres", path, ": has ", key,
                    " but clip.vision.image_aspect_ratio is '", aspect,
                    "'; strata tiles as LLaVA-NeXT does ('anyres')");
  return out;
}

}  // namespace

LlavaConfig read_mmproj_config(const std::string& path, int64_t text_hidden, int32_t image_token_id,
                               const std::string& text_source) {
  const MmprojFile f(path);
  const GgufMetadata md(f.gguf, path);
  std::string projector = md.string("clip.projector_type", "");
  if (projector.empty()) projector = md.string("clip.vision.projector_type", "");
  if (projector.empty() && md.boolean("clip.has_llava_projector", false)) projector = "mlp";  // the oldest files
  STRATA_CHECK_KIND(ErrorKind::kFormat, projector == "mlp", path, ": clip.projector_type is '", projector,
                    "'; strata reads LLaVA-1.5's two-layer MLP projector ('mlp') only");
  STRATA_CHECK_KIND(ErrorKind::kFormat, !md.boolean("clip.use_silu", false), path,
                    ": clip.use_silu is set; the CLIP tower's MLP is GELU (clip.use_gelu) or QuickGELU");

  LlavaConfig c;
  ClipVisionConfig& v = c.vision;
  v.image_size = md.integer("clip.vision.image_size");
  v.patch_size = md.integer("clip.vision.patch_size");
  v.hidden = md.integer("clip.vision.embedding_length");
  v.ffn = md.integer("clip.vision.feed_forward_length");
  v.n_layers = md.integer("clip.vision.block_count");
  v.n_heads = md.integer("clip.vision.attention.head_count");
  v.layer_norm_eps = static_cast<float>(md.number("clip.vision.attention.layer_norm_epsilon", 1e-5));
  v.act = md.boolean("clip.use_gelu", false) ? Activation::kGeluErf : Activation::kQuickGelu;
  STRATA_CHECK_KIND(ErrorKind::kFormat,
                    v.hidden > 0 && v.ffn > 0 && v.n_layers > 0 && v.n_heads > 0 && v.hidden % v.n_heads == 0, path,
                    ": clip.vision.embedding_length ", v.hidden, " must be a positive multiple of "
                    "clip.vision.attention.head_count ", v.n_heads, " (and block_count, feed_forward_length positive)");
  STRATA_CHECK_KIND(ErrorKind::kFormat, v.patch_size > 0 && v.image_size > 0 && v.image_size % v.patch_size == 0,
                    path, ": clip.vision.image_size ", v.image_size, " is not a whole number of ", v.patch_size,
                    "-pixel patches (clip.vision.patch_size)");

  c.feature_layer = v.n_layers;  // the converter kept only the layers up to the feature layer
  if (const GgufValue* layers = md.array("clip.vision.feature_layer", GgufType::kI32)) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, layers->ints.size() == 1, path, ": clip.vision.feature_layer lists ",
                      layers->ints.size(), " layers; strata takes the features of one layer (concatenating several, "
                      "as Granite Vision does, is not supported)");
    c.feature_layer = layers->ints[0];
    STRATA_CHECK_KIND(ErrorKind::kFormat, c.feature_layer >= 0 && c.feature_layer <= v.n_layers, path,
                      ": clip.vision.feature_layer ", c.feature_layer, " is outside the tower's ", v.n_layers + 1,
                      " hidden states (clip.vision.block_count ", v.n_layers, ")");
  }
  c.select = FeatureSelect::kDefault;
  c.grid_pinpoints = read_pinpoints(md, v.image_size);
  c.projector_act = Activation::kGeluErf;
  c.projector_bias = f.tensor("mm.0.bias") != nullptr;
  c.image_token_id = image_token_id;

  // The projector's output width must be the language model's embedding width.
  const GgufTensorInfo* out = f.tensor("mm.2.weight");
  STRATA_CHECK_KIND(ErrorKind::kFormat, out != nullptr && out->shape.size() == 2, path,
                    ": tensor 'mm.2.weight' (the projector's second linear layer) is missing or not 2-D; an "
                    "'mlp' projector has mm.0.weight and mm.2.weight");
  STRATA_CHECK_KIND(ErrorKind::kFormat, out->shape[0] == text_hidden, path, ": the projector outputs ",
                    out->shape[0], "-wide embeddings (tensor 'mm.2.weight' is ", shape_str(out->shape),
                    ") but the language model ", text_source, " has embedding width ", text_hidden,
                    "; the mmproj and the model GGUF do not belong together");
  c.text_hidden = text_hidden;
  return c;
}

vision::ImageProcessorConfig mmproj_image_processor(const std::string& path) {
  const MmprojFile f(path);
  const GgufMetadata md(f.gguf, path);
  vision::ImageProcessorConfig p;
  const int64_t size = md.integer("clip.vision.image_size");
  p.shortest_edge = size;
  p.crop_height = size;
  p.crop_width = size;
  p.image_mean = rgb_triple(md, "clip.vision.image_mean", p.image_mean);
  p.image_std = rgb_triple(md, "clip.vision.image_std", p.image_std);
  p.grid_pinpoints = read_pinpoints(md, size);  // LlavaNextImageProcessor's tiling, for LLaVA-NeXT files
  if (p.anyres()) p.processor_type = "LlavaNextImageProcessor";
  return p;
}

LlavaVisionWeights load_mmproj_vision_weights(const std::string& path, const LlavaConfig& config, Backend& backend,
                                              const VisionShard& shard) {
  const MmprojFile f(path);
  VisionTensorSet files;
  files.source = path;
  files.config_source = "its clip.vision.* metadata";
  files.bias_hint = " (mm.0.bias is present, so the projector has biases)";
  for (const GgufTensorInfo& t : f.gguf.tensors) {
    void* data = const_cast<uint8_t*>(f.file->data() + t.offset);  // read-only mapping; views are never written
    files.tensors[t.name] = {Tensor::view(data, t.shape, t.dtype, Device::kCpu, f.file), path};
  }
  if (files.tensors.count("v.post_ln.weight"))
    LOG_WARN(path, ": has v.post_ln.* (the tower's post-LayerNorm); LLaVA's features are taken before it, so it is "
             "not applied");
  // Older converters wrote CLIP's fc1 as ffn_down and fc2 as ffn_up: fc1 is the one whose input is the
  // hidden width. Put them back under the description's names (llama.cpp's loader swaps them the same way,
  // and, as there, a tower whose MLP is as wide as its hidden size is read as the older naming).
  for (int64_t l = 0; l < config.vision.n_layers; ++l) {
    const std::string up = cat("v.blk.", l, ".ffn_up."), down = cat("v.blk.", l, ".ffn_down.");
    auto d = files.tensors.find(down + "weight");
    if (d == files.tensors.end() || !files.tensors.count(up + "weight") || d->second.view.rank() != 2 ||
        d->second.view.dim(1) != config.vision.hidden)
      continue;
    for (const char* part : {"weight", "bias"}) {
      auto a = files.tensors.find(up + part), b = files.tensors.find(down + part);
      if (a != files.tensors.end() && b != files.tensors.end()) std::swap(a->second, b->second);
    }
  }
  // llama.cpp's legacy converter writes LLaVA-NeXT's image_newline as "model.image_newline"; its loader (and the
  // description) name it "v.image_newline".
  if (!files.tensors.count("v.image_newline")) {
    auto legacy = files.tensors.find("model.image_newline");
    if (legacy != files.tensors.end()) files.tensors["v.image_newline"] = legacy->second;
  }
  files.name_of = [](const ModelDescription& d, const TensorSlot& slot, int64_t layer) {
    return slot.per_layer ? cat(d.layer_prefix, layer, ".", slot.name) : std::string(slot.name);
  };
  return bind_vision_weights(files, config, backend, shard);
}

}  // namespace strata
