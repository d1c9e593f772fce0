// runtime/models/model_description.cpp: the Llama family's tensor table and what derives from it.
#include "runtime/models/model_description.h"

#include "runtime/error.h"

namespace strata {

const char* tp_split_name(TpSplit split) {
  switch (split) {
    case TpSplit::kReplicated: return "replicated";
    case TpSplit::kRows: return "rows";
    case TpSplit::kCols: return "cols";
    case TpSplit::kExpert: return "expert";
  }
  return "?";
}

int64_t dim_size(Dim dim, const ModelConfig& c) {
  switch (dim) {
    case Dim::kHidden: return c.hidden;
    case Dim::kVocab: return c.vocab_size;
    case Dim::kQ: return c.n_heads * c.head_dim;
    case Dim::kKv: return c.n_kv_heads * c.head_dim;
    case Dim::kFfn: return c.ffn;
    case Dim::kHeadDim: return c.head_dim;
    case Dim::kExperts: return c.moe.n_experts;
    case Dim::kExpertFfn: return c.moe.expert_ffn;
    case Dim::kSharedFfn: return c.moe.shared_ffn;
    case Dim::kOne: return 1;
    case Dim::kVisionHidden: return c.vision.hidden;
    case Dim::kVisionFfn: return c.vision.ffn;
    case Dim::kVisionPositions: return c.vision.positions;
    case Dim::kVisionChannels: return c.vision.channels;
    case Dim::kVisionPatch: return c.vision.patch;
  }
  return 0;
}

const char* dim_name(Dim dim) {
  switch (dim) {
    case Dim::kHidden: return "hidden";
    case Dim::kVocab: return "vocab";
    case Dim::kQ: return "n_heads * head_dim";
    case Dim::kKv: return "n_kv_heads * head_dim";
    case Dim::kFfn: return "ffn";
    case Dim::kHeadDim: return "head_dim";
    case Dim::kExperts: return "num_experts";
    case Dim::kExpertFfn: return "moe_intermediate_size";
    case Dim::kSharedFfn: return "shared_expert_intermediate_size";
    case Dim::kOne: return "1";
    case Dim::kVisionHidden: return "vision hidden";
    case Dim::kVisionFfn: return "vision ffn";
    case Dim::kVisionPositions: return "vision patches + 1";
    case Dim::kVisionChannels: return "image channels";
    case Dim::kVisionPatch: return "patch size";
  }
  return "?";
}

bool TensorSlot::present(const ModelConfig& c) const {
  switch (presence) {
    case SlotPresence::kAlways: return true;
    case SlotPresence::kQkvBias: return c.qkv_bias;
    case SlotPresence::kUntiedHead: return !c.tied_embeddings;
    case SlotPresence::kQkNorm: return c.qk_norm;
    case SlotPresence::kDenseLayer:
      for (int64_t l = 0; l < c.n_layers; ++l)
        if (!c.moe.sparse_layer(l)) return true;
      return false;
    case SlotPresence::kExpertLayer: return c.moe.enabled();
    case SlotPresence::kSharedExpert: return c.moe.enabled() && c.moe.shared_ffn > 0;
    case SlotPresence::kProjectorBias: return c.vision.projector_bias;
    case SlotPresence::kImageNewline: return c.vision.image_newline;
  }
  return false;
}

bool TensorSlot::present_in_layer(const ModelConfig& c, int64_t layer) const {
  switch (presence) {
    case SlotPresence::kDenseLayer: return !c.moe.sparse_layer(layer);
    case SlotPresence::kExpertLayer: return c.moe.sparse_layer(layer);
    case SlotPresence::kSharedExpert: return c.moe.sparse_layer(layer) && c.moe.shared_ffn > 0;
    default: return present(c);
  }
}

std::string expert_instance(std::string_view pattern, int64_t expert) {
  const size_t hash = pattern.find('#');
  return cat(pattern.substr(0, hash), expert, pattern.substr(hash + 1));
}

int64_t match_expert_pattern(std::string_view pattern, std::string_view text) {
  const size_t hash = pattern.find('#');
  if (hash == std::string_view::npos) return -1;
  const std::string_view head = pattern.substr(0, hash), tail = pattern.substr(hash + 1);
  if (text.size() <= head.size() + tail.size() || text.substr(0, head.size()) != head ||
      text.substr(text.size() - tail.size()) != tail)
    return -1;
  const std::string_view digits = text.substr(head.size(), text.size() - head.size() - tail.size());
  if (digits.size() > 9 || (digits.size() > 1 && digits[0] == '0')) return -1;
  int64_t n = 0;
  for (char ch : digits) {
    if (ch < '0' || ch > '9') return -1;
    n = n * 10 + (ch - '0');
  }
  return n;
}

Shape TensorSlot::full_shape(const ModelConfig& c) const {
  Shape out;
  for (Dim d : shape) out.push_back(dim_size(d, c));
  return out;
}

namespace {

using D = Dim;
using L = LayerWeights;
using G = GlobalWeights;

TensorSlot global(std::string_view name, std::string_view hf_name, SlotRole role, std::vector<Dim> shape, TpSplit split, SlotPresence presence,
                  Tensor G::*field) {
  return TensorSlot{name, hf_name, false, role, std::move(shape), split, presence, nullptr, field};
}

TensorSlot layer(std::string_view name, std::string_view hf_name, SlotRole role, std::vector<Dim> shape, TpSplit split, Tensor L::*field,
                 SlotPresence presence = SlotPresence::kAlways) {
  return TensorSlot{name, hf_name, true, role, std::move(shape), split, presence, field, nullptr};
}

// Llama, Mistral and Qwen2 (q/k/v biases): RMSNorm, GQA attention, SwiGLU MLP. Column-parallel q/k/v
// (by head), gate and up; row-parallel attention output and down; vocab-parallel embedding and head.
ModelDescription llama_family() {
  using R = SlotRole;
  using S = TpSplit;
  return ModelDescription{
      "llama",
      "model.layers.",
      {
          global("token_embd.weight", "model.embed_tokens.weight", R::kEmbedding, {D::kVocab, D::kHidden}, S::kRows,
                 SlotPresence::kAlways, &G::embed),
          global("output_norm.weight", "model.norm.weight", R::kNorm, {D::kHidden}, S::kReplicated,
                 SlotPresence::kAlways, &G::output_norm),
          global("output.weight", "lm_head.weight", R::kHead, {D::kVocab, D::kHidden}, S::kRows,
                 SlotPresence::kUntiedHead, &G::output),
          layer("attn_norm.weight", "input_layernorm.weight", R::kNorm, {D::kHidden}, S::kReplicated, &L::attn_norm),
          layer("attn_q.weight", "self_attn.q_proj.weight", R::kAttention, {D::kQ, D::kHidden}, S::kRows, &L::wq),
          layer("attn_k.weight", "self_attn.k_proj.weight", R::kAttention, {D::kKv, D::kHidden}, S::kRows, &L::wk),
          layer("attn_v.weight", "self_attn.v_proj.weight", R::kAttention, {D::kKv, D::kHidden}, S::kRows, &L::wv),
          layer("attn_q.bias", "self_attn.q_proj.bias", R::kBias, {D::kQ}, S::kRows, &L::bq, SlotPresence::kQkvBias),
          layer("attn_k.bias", "self_attn.k_proj.bias", R::kBias, {D::kKv}, S::kRows, &L::bk, SlotPresence::kQkvBias),
          layer("attn_v.bias", "self_attn.v_proj.bias", R::kBias, {D::kKv}, S::kRows, &L::bv, SlotPresence::kQkvBias),
          layer("attn_output.weight", "self_attn.o_proj.weight", R::kAttention, {D::kHidden, D::kQ}, S::kCols, &L::wo),
          layer("ffn_norm.weight", "post_attention_layernorm.weight", R::kNorm, {D::kHidden}, S::kReplicated,
                &L::ffn_norm),
          layer("ffn_gate.weight", "mlp.gate_proj.weight", R::kMlp, {D::kFfn, D::kHidden}, S::kRows, &L::w_gate),
          layer("ffn_up.weight", "mlp.up_proj.weight", R::kMlp, {D::kFfn, D::kHidden}, S::kRows, &L::w_up),
          layer("ffn_down.weight", "mlp.down_proj.weight", R::kMlp, {D::kHidden, D::kFfn}, S::kCols, &L::w_down),
      }};
}

TensorSlot expert(std::string_view name, std::string_view hf_name, std::vector<Dim> shape,
                  std::vector<Tensor> L::*field) {
  TensorSlot s{name, hf_name, true, SlotRole::kExpert, std::move(shape), TpSplit::kExpert,
               SlotPresence::kExpertLayer, nullptr, nullptr};
  s.per_expert = true;
  s.expert_field = field;
  return s;
}

// The Llama family's slots with the dense MLP only in layers without experts, then `extra` (per-head q/k
// norms after the attention's projections; the router and experts after the MLP).
ModelDescription moe_family(std::string_view family, std::vector<TensorSlot> attention_extra,
                            std::vector<TensorSlot> moe) {
  ModelDescription d = llama_family();
  d.family = family;
  std::vector<TensorSlot> slots;
  for (TensorSlot& s : d.slots) {
    if (s.role == SlotRole::kMlp) s.presence = SlotPresence::kDenseLayer;
    if (s.name == "attn_output.weight")
      for (TensorSlot& extra : attention_extra) slots.push_back(std::move(extra));
    slots.push_back(std::move(s));
  }
  for (TensorSlot& s : moe) slots.push_back(std::move(s));
  d.slots = std::move(slots);
  return d;
}

// Mixtral: every layer's MLP is 8 (or n) routed SwiGLU experts, w1/w3/w2 = gate/up/down.
ModelDescription mixtral_family() {
  using R = SlotRole;
  using S = TpSplit;
  return moe_family(
      "mixtral", {},
      {layer("ffn_gate_inp.weight", "block_sparse_moe.gate.weight", R::kRouter, {D::kExperts, D::kHidden},
             S::kReplicated, &L::router, SlotPresence::kExpertLayer),
       expert("ffn_gate.#.weight", "block_sparse_moe.experts.#.w1.weight", {D::kExpertFfn, D::kHidden},
              &L::expert_gate),
       expert("ffn_up.#.weight", "block_sparse_moe.experts.#.w3.weight", {D::kExpertFfn, D::kHidden}, &L::expert_up),
       expert("ffn_down.#.weight", "block_sparse_moe.experts.#.w2.weight", {D::kHidden, D::kExpertFfn},
              &L::expert_down)});
}

// Qwen2-MoE and Qwen3-MoE: routed experts in the layers decoder_sparse_step / mlp_only_layers pick, a dense
// MLP elsewhere; Qwen2-MoE adds a shared expert (split over the expert group like a dense MLP) and its
// sigmoid gate, Qwen3-MoE per-head q/k RMSNorms.
ModelDescription qwen_moe_family() {
  using R = SlotRole;
  using S = TpSplit;
  using P = SlotPresence;
  return moe_family(
      "qwen_moe",
      {layer("attn_q_norm.weight", "self_attn.q_norm.weight", R::kNorm, {D::kHeadDim}, S::kReplicated, &L::q_norm,
             P::kQkNorm),
       layer("attn_k_norm.weight", "self_attn.k_norm.weight", R::kNorm, {D::kHeadDim}, S::kReplicated, &L::k_norm,
             P::kQkNorm)},
      {layer("ffn_gate_inp.weight", "mlp.gate.weight", R::kRouter, {D::kExperts, D::kHidden}, S::kReplicated,
             &L::router, P::kExpertLayer),
       expert("ffn_gate.#.weight", "mlp.experts.#.gate_proj.weight", {D::kExpertFfn, D::kHidden}, &L::expert_gate),
       expert("ffn_up.#.weight", "mlp.experts.#.up_proj.weight", {D::kExpertFfn, D::kHidden}, &L::expert_up),
       expert("ffn_down.#.weight", "mlp.experts.#.down_proj.weight", {D::kHidden, D::kExpertFfn}, &L::expert_down),
       layer("ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight", R::kRouter, {D::kOne, D::kHidden},
             S::kReplicated, &L::shared_router, P::kSharedExpert),
       layer("ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight", R::kMlp, {D::kSharedFfn, D::kHidden},
             S::kRows, &L::shared_gate, P::kSharedExpert),
       layer("ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight", R::kMlp, {D::kSharedFfn, D::kHidden},
             S::kRows, &L::shared_up, P::kSharedExpert),
       layer("ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight", R::kMlp, {D::kHidden, D::kSharedFfn},
             S::kCols, &L::shared_down, P::kSharedExpert)});
}

// A CLIP ViT tower (LLaVA's vision_tower): conv patch embedding, class and position embeddings,
// pre-LayerNorm, encoder layers of LayerNorm + attention with biases + a GELU-family MLP. Under tensor
// parallelism the layers split as the language model's do: q/k/v rows and out-projection columns by head,
// fc1 rows and fc2 columns by MLP column, and the out-projection and fc2 partial sums are all-reduced (their
// biases added once). Which heads and columns a rank holds is VisionShard's (runtime/models/
// llava_vision_weights.h), not ShardSpec's; embeddings and norms are replicated.
ModelDescription clip_vision() {
  using R = SlotRole;
  constexpr TpSplit rep = TpSplit::kReplicated;
  auto g = [](std::string_view name, std::string_view hf, R role, std::vector<Dim> shape) {
    return global(name, hf, role, std::move(shape), rep, SlotPresence::kAlways, nullptr);
  };
  auto l = [](std::string_view name, std::string_view hf, R role, std::vector<Dim> shape,
              TpSplit split = TpSplit::kReplicated) { return layer(name, hf, role, std::move(shape), split, nullptr); };
  constexpr D H = D::kVisionHidden, F = D::kVisionFfn;
  constexpr TpSplit rows = TpSplit::kRows, cols = TpSplit::kCols;
  return ModelDescription{
      "clip_vision",
      "encoder.layers.",
      {
          g("v.class_embd", "embeddings.class_embedding", R::kEmbedding, {H}),
          g("v.patch_embd.weight", "embeddings.patch_embedding.weight", R::kEmbedding,
            {H, D::kVisionChannels, D::kVisionPatch, D::kVisionPatch}),
          g("v.position_embd.weight", "embeddings.position_embedding.weight", R::kEmbedding, {D::kVisionPositions, H}),
          g("v.pre_ln.weight", "pre_layrnorm.weight", R::kNorm, {H}),  // sic: CLIP's spelling
          g("v.pre_ln.bias", "pre_layrnorm.bias", R::kNorm, {H}),
          l("ln1.weight", "layer_norm1.weight", R::kNorm, {H}),
          l("ln1.bias", "layer_norm1.bias", R::kNorm, {H}),
          l("attn_q.weight", "self_attn.q_proj.weight", R::kAttention, {H, H}, rows),
          l("attn_q.bias", "self_attn.q_proj.bias", R::kBias, {H}, rows),
          l("attn_k.weight", "self_attn.k_proj.weight", R::kAttention, {H, H}, rows),
          l("attn_k.bias", "self_attn.k_proj.bias", R::kBias, {H}, rows),
          l("attn_v.weight", "self_attn.v_proj.weight", R::kAttention, {H, H}, rows),
          l("attn_v.bias", "self_attn.v_proj.bias", R::kBias, {H}, rows),
          l("attn_out.weight", "self_attn.out_proj.weight", R::kAttention, {H, H}, cols),
          l("attn_out.bias", "self_attn.out_proj.bias", R::kBias, {H}),
          l("ln2.weight", "layer_norm2.weight", R::kNorm, {H}),
          l("ln2.bias", "layer_norm2.bias", R::kNorm, {H}),
          l("ffn_up.weight", "mlp.fc1.weight", R::kMlp, {F, H}, rows),
          l("ffn_up.bias", "mlp.fc1.bias", R::kBias, {F}, rows),
          l("ffn_down.weight", "mlp.fc2.weight", R::kMlp, {H, F}, cols),
          l("ffn_down.bias", "mlp.fc2.bias", R::kBias, {H}),
      },
      "v.blk."};
}

// LLaVA's projector: linear (vision hidden -> text hidden), GELU, linear (text hidden -> text hidden).
ModelDescription llava_projector() {
  using R = SlotRole;
  constexpr TpSplit rep = TpSplit::kReplicated;
  return ModelDescription{
      "llava_projector",
      "",
      {
          global("mm.0.weight", "linear_1.weight", R::kMlp, {D::kHidden, D::kVisionHidden}, rep, SlotPresence::kAlways,
                 nullptr),
          global("mm.0.bias", "linear_1.bias", R::kBias, {D::kHidden}, rep, SlotPresence::kProjectorBias, nullptr),
          global("mm.2.weight", "linear_2.weight", R::kMlp, {D::kHidden, D::kHidden}, rep, SlotPresence::kAlways,
                 nullptr),
          global("mm.2.bias", "linear_2.bias", R::kBias, {D::kHidden}, rep, SlotPresence::kProjectorBias, nullptr),
      }};
}

// LLaVA-NeXT's addition beside the projector: the learned vector that closes each row of an image's feature
// grid. Hugging Face checkpoints keep it at the model's top level ("image_newline", or "model.image_newline"
// where the projector is "model.multi_modal_projector."); the canonical name is the one llama.cpp's mmproj
// loader reads (its legacy converter writes "model.image_newline", which the mmproj reader maps here).
ModelDescription llava_next() {
  return ModelDescription{"llava_next",
                          "",
                          {global("v.image_newline", "image_newline", SlotRole::kEmbedding, {D::kHidden},
                                  TpSplit::kReplicated, SlotPresence::kImageNewline, nullptr)}};
}

std::string layer_prefix(int64_t layer) { return cat("blk.", layer, "."); }

const TensorSlot& global_slot(const ModelDescription& d, std::string_view name) {
  for (const TensorSlot& s : d.slots)
    if (!s.per_layer && s.name == name) return s;
  STRATA_THROW(ErrorKind::kInternal, "model description '", d.family, "' has no slot ", name);
}

}  // namespace

const ModelDescription& model_description(std::string_view arch) {
  static const ModelDescription llama = llama_family();
  static const ModelDescription mixtral = mixtral_family();
  static const ModelDescription qwen_moe = qwen_moe_family();
  static const ModelDescription clip = clip_vision();
  static const ModelDescription projector = llava_projector();
  static const ModelDescription next = llava_next();
  if (arch == "llama" || arch == "mistral" || arch == "qwen2") return llama;
  if (arch == "mixtral") return mixtral;
  if (arch == "qwen2_moe" || arch == "qwen3_moe") return qwen_moe;
  if (arch == "clip_vision") return clip;
  if (arch == "llava_projector") return projector;
  if (arch == "llava_next") return next;
  STRATA_THROW(ErrorKind::kConfig, "architecture '", arch,
               "' has no model description; supported: llama, mistral, qwen2, mixtral, qwen2_moe, qwen3_moe (and the "
               "vision parts clip_vision, llava_projector, llava_next)");
}

int64_t tensor_layer_index(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return -1;
  int64_t n = 0;
  size_t i = 4;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && i < 14; ++i) n = n * 10 + (name[i] - '0');
  return (i == 4 || i >= name.size() || name[i] != '.') ? -1 : n;
}

const TensorSlot* find_slot(const ModelConfig& config, std::string_view name, int64_t* layer_out) {
  const int64_t layer = tensor_layer_index(name);
  const std::string_view rest = layer < 0 ? name : name.substr(name.find('.', 4) + 1);
  if (layer_out != nullptr) *layer_out = layer;
  for (const TensorSlot& s : model_description(config).slots) {
    if (s.per_layer != (layer >= 0)) continue;
    if (s.name == rest) return &s;
    if (const int64_t e = s.per_expert ? match_expert_pattern(s.name, rest) : -1; e >= 0 && e < config.moe.n_experts)
      return &s;
  }
  return nullptr;
}

std::vector<TensorRef> model_tensors(const ModelConfig& config) {
  const ModelDescription& d = model_description(config);
  std::vector<TensorRef> out;
  out.push_back({"token_embd.weight", -1, &global_slot(d, "token_embd.weight")});
  for (int64_t l = 0; l < config.n_layers; ++l)
    for (TensorRef& t : layer_tensors(config, l)) out.push_back(std::move(t));
  for (const TensorSlot& s : d.slots)
    if (!s.per_layer && s.role != SlotRole::kEmbedding && s.present(config)) out.push_back({std::string(s.name), -1, &s});
  return out;
}

std::vector<TensorRef> layer_tensors(const ModelConfig& config, int64_t layer, const ShardSpec* spec) {
  std::vector<TensorRef> out;
  for (const TensorSlot& s : model_description(config).slots) {
    if (!s.per_layer || !s.present_in_layer(config, layer)) continue;
    if (!s.per_expert) {
      out.push_back({layer_prefix(layer) + std::string(s.name), layer, &s});
      continue;
    }
    const int64_t begin = spec != nullptr ? spec->expert_begin : 0;
    const int64_t end = spec != nullptr ? begin + spec->expert_count : config.moe.n_experts;
    for (int64_t e = begin; e < end; ++e)
      out.push_back({layer_prefix(layer) + expert_instance(s.name, e), layer, &s, e});
  }
  return out;
}

SliceRange slot_slice(const TensorSlot& slot, const ModelConfig& c, const ShardSpec& spec) {
  const int dim = slot.split_dim();
  if (dim < 0) return {0, dim_size(slot.shape[0], c)};
  switch (slot.shape[static_cast<size_t>(dim)]) {
    case Dim::kQ: return {spec.q_head_begin * c.head_dim, spec.q_heads * c.head_dim};
    case Dim::kKv: return {spec.kv_head_begin * c.head_dim, spec.kv_heads * c.head_dim};
    case Dim::kFfn: return {spec.ffn_begin, spec.ffn_count};
    case Dim::kVocab: return {spec.vocab_begin, spec.vocab_count};
    case Dim::kSharedFfn: return {spec.shared_begin, spec.shared_count};
    default: break;
    case Dim::kHidden: break;
    case Dim::kVisionHidden:
    case Dim::kVisionFfn:
    case Dim::kVisionPositions:
    case Dim::kVisionChannels:
    case Dim::kVisionPatch:
      STRATA_THROW(ErrorKind::kInternal, "slot ", slot.name, ": a vision tower's TP slices are VisionShard's "
                   "(runtime/models/llava_vision_weights.h), not a ShardSpec's");
  }
  STRATA_THROW(ErrorKind::kInternal, "slot ", slot.name, " splits dimension ",
               dim_name(slot.shape[static_cast<size_t>(dim)]), ", which TP keeps whole");
}

Shape local_shape(const TensorSlot& slot, const ModelConfig& c, const ShardSpec& spec) {
  Shape shape = slot.full_shape(c);
  if (slot.split_dim() >= 0) shape[static_cast<size_t>(slot.split_dim())] = slot_slice(slot, c, spec).count;
  return shape;
}

std::vector<TensorRef> rank_tensors(const ModelConfig& config, const ShardSpec& spec) {
  const ModelDescription& d = model_description(config);
  std::vector<TensorRef> out;
  if (spec.first_stage || (spec.last_stage && config.tied_embeddings))
    out.push_back({"token_embd.weight", -1, &global_slot(d, "token_embd.weight")});
  for (int64_t l = spec.layer_begin; l < spec.layer_end; ++l)
    for (TensorRef& t : layer_tensors(config, l, &spec)) out.push_back(std::move(t));
  if (spec.last_stage)
    for (const TensorSlot& s : d.slots)
      if (!s.per_layer && s.role != SlotRole::kEmbedding && s.present(config))
        out.push_back({std::string(s.name), -1, &s});
  return out;
}

Tensor& slot_field(const TensorRef& ref, LayerWeights& layer) {
  if (ref.slot->per_expert) {  // the list holds experts [expert_first, ...)
    std::vector<Tensor>& list = layer.*(ref.slot->expert_field);
    const int64_t i = ref.expert - layer.expert_first;
    STRATA_CHECK_KIND(ErrorKind::kInternal, i >= 0, ref.name, " is before this rank's first expert ",
                      layer.expert_first);
    if (list.size() <= static_cast<size_t>(i)) list.resize(static_cast<size_t>(i) + 1);
    return list[static_cast<size_t>(i)];
  }
  STRATA_CHECK_KIND(ErrorKind::kInternal, ref.slot->layer_field != nullptr, ref.name, " is not a layer tensor");
  return layer.*(ref.slot->layer_field);
}

Tensor& slot_field(const TensorRef& ref, GlobalWeights& globals) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, ref.slot->global_field != nullptr, ref.name, " is not a global tensor");
  return globals.*(ref.slot->global_field);
}

}  // namespace strata
