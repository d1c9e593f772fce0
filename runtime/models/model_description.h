// runtime/models/model_description.h: the table of tensor slots of an architecture, the one place
// that says which tensors a model has, their shapes, how each splits under tensor parallelism and which
// layouts it may take. The checkpoint check (required names, shapes, dtypes), the shard reader, the
// offload layout, the partition and `plan --check` all derive from it: a new tensor is a new row.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/model_config.h"
#include "runtime/shard_spec.h"
#include "runtime/tensor.h"
#include "runtime/weights.h"

namespace strata {

// How a tensor is split over a tensor-parallel group. Weights are logical [out, in].
enum class TpSplit : uint8_t {
  kReplicated,  // every rank holds the whole tensor (norms)
  kRows,        // column-parallel: a range of dim 0 (output features, heads, vocab rows)
  kCols,        // row-parallel: a range of dim 1 (input features); the outputs are all-reduced
  kExpert,      // one routed expert's whole tensor, held by one rank of the stage's expert group
};
const char* tp_split_name(TpSplit split);

// A symbolic size of the config, so the table states shapes once for every model of the family.
// kQ = n_heads * head_dim, kKv likewise. kExperts, kExpertFfn and kSharedFfn are MoeConfig's sizes; under
// tensor parallelism kSharedFfn splits over the expert group (tensor x expert ranks), the others over TP.
// The kVision* sizes are ModelConfig::vision's (a multimodal model's vision tower); kHidden is also what its
// projector outputs.
enum class Dim : uint8_t {
  kHidden, kVocab, kQ, kKv, kFfn,
  kHeadDim, kExperts, kExpertFfn, kSharedFfn, kOne,
  kVisionHidden, kVisionFfn, kVisionPositions, kVisionChannels, kVisionPatch
};
int64_t dim_size(Dim dim, const ModelConfig& config);
const char* dim_name(Dim dim);  // as the config names it: "hidden", "n_heads * head_dim", "ffn", ...

// What a tensor is for: offload groups by it (attention resident first, norms pinned) and the dtype
// rules follow it (vectors stay float).
enum class SlotRole : uint8_t { kEmbedding, kHead, kNorm, kBias, kAttention, kMlp, kRouter, kExpert };

// When a slot exists in a model of the family (and, for the MLP's slots, in which layers: the dense MLP in
// layers without experts, the router, experts and shared expert in the others; MoeConfig::sparse_layer).
enum class SlotPresence : uint8_t {
  kAlways, kQkvBias, kUntiedHead, kProjectorBias, kImageNewline, kQkNorm, kDenseLayer, kExpertLayer, kSharedExpert
};

struct TensorSlot {
  std::string_view name;  // canonical (GGUF) name; per-layer slots without their "blk.N." prefix
  std::string_view hf_name;  // Hugging Face name; per-layer slots without the family's layer prefix
  bool per_layer = false;
  SlotRole role = SlotRole::kMlp;
  std::vector<Dim> shape;             // logical row-major: [out, in] for matrices, [n] for vectors
  TpSplit split = TpSplit::kReplicated;
  SlotPresence presence = SlotPresence::kAlways;
  Tensor LayerWeights::*layer_field = nullptr;   // where the model finds it (per-layer slots)
  Tensor GlobalWeights::*global_field = nullptr;  // (global slots)
  // One tensor per routed expert: name and hf_name hold '#' where the expert index goes
  // ("ffn_gate.#.weight", "mlp.experts.#.gate_proj.weight"), and expert_field is the weights' list.
  std::vector<Tensor> LayerWeights::*expert_field = nullptr;
  bool per_expert = false;

  // In some layer of the model; present_in_layer says which.
  bool present(const ModelConfig& config) const;
  bool present_in_layer(const ModelConfig& config, int64_t layer) const;
  bool is_vector() const { return shape.size() == 1; }
  // Matrices may take block-quantized layouts; norms and biases stay f32/f16/bf16.
  bool may_quantize() const { return !is_vector(); }
  Shape full_shape(const ModelConfig& config) const;
  // The dimension a TP rank holds a range of (0 for kRows, 1 for kCols), -1 when replicated.
  int split_dim() const { return split == TpSplit::kRows ? 0 : split == TpSplit::kCols ? 1 : -1; }
};

struct ModelDescription {
  std::string_view family;           // "llama"
  std::string_view hf_layer_prefix;  // "model.layers." (then the layer index, '.', the slot's hf_name)
  std::vector<TensorSlot> slots;   // globals then per-layer slots, each in model order
  std::string_view layer_prefix = "blk.";  // canonical per-layer prefix (then the layer index and '.')
};

// The description of an architecture (config.arch: llama, mistral, qwen2, mixtral, qwen2_moe, qwen3_moe), or
// of a multimodal model's vision parts: "clip_vision" (a CLIP ViT tower; Hugging Face names relative to the
// tower's prefix, canonical names those of llama.cpp's mmproj files), "llava_projector" (relative to the
// projector's prefix) and "llava_next" (LLaVA-NeXT's image_newline, relative to the model's prefix). Throws
// kConfig naming the descriptions known.
const ModelDescription& model_description(std::string_view arch);
inline const ModelDescription& model_description(const ModelConfig& config) { return model_description(config.arch); }

// One tensor of a model instance: a slot, at a layer (-1 for globals), under its canonical name.
struct TensorRef {
  std::string name;
  int64_t layer = -1;
  const TensorSlot* slot = nullptr;
  int64_t expert = -1;  // per-expert slots: the expert's global index
};

// A per-expert name pattern with the index filled in: ("ffn_gate.#.weight", 3) -> "ffn_gate.3.weight".
std::string expert_instance(std::string_view pattern, int64_t expert);
// The expert index `text` fills the pattern with (decimal, no leading zeros), -1 when it does not match.
int64_t match_expert_pattern(std::string_view pattern, std::string_view text);

// The slot a canonical name refers to, with its layer; nullptr when the model reads no such tensor.
const TensorSlot* find_slot(const ModelConfig& config, std::string_view name, int64_t* layer = nullptr);
// Every tensor the model reads, in model order: embedding, layer 0 ... n-1, final norm, head.
std::vector<TensorRef> model_tensors(const ModelConfig& config);
// The tensors of one layer, in model order; with `spec`, only the routed experts that rank holds.
std::vector<TensorRef> layer_tensors(const ModelConfig& config, int64_t layer, const ShardSpec* spec = nullptr);
// The layer index of "blk.N.*", -1 for anything else.
int64_t tensor_layer_index(std::string_view name);

// The range of a slot's split dimension that a rank holds: [offset, offset + count). For replicated
// slots the whole first dimension.
struct SliceRange {
  int64_t offset = 0, count = 0;
};
SliceRange slot_slice(const TensorSlot& slot, const ModelConfig& config, const ShardSpec& spec);
// The rank's shape of the slot: the full shape with the split dimension cut to slot_slice's count.
Shape local_shape(const TensorSlot& slot, const ModelConfig& config, const ShardSpec& spec);

// The tensors one rank holds, in model order: the embedding (first stage; also the last stage when the
// head is tied to it: the head's own copy), the stage's layers, the final norm and the head (last stage).
std::vector<TensorRef> rank_tensors(const ModelConfig& config, const ShardSpec& spec);

// The weights structs' fields of a tensor (for readers that fill LayerWeights / GlobalWeights).
Tensor& slot_field(const TensorRef& ref, LayerWeights& layer);
Tensor& slot_field(const TensorRef& ref, GlobalWeights& globals);

}  // namespace strata
