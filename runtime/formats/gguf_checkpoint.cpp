// runtime/formats/gguf_checkpoint.cpp: a GGUF file as a Checkpoint: ModelConfig from the "{arch}.*"
// keys (llama.cpp's names), TokenizerData from "tokenizer.ggml.*".
#include <cmath>

#include "runtime/error.h"
#include "runtime/formats/checkpoint_builder.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/gguf_metadata.h"
#include "runtime/models/model_description.h"
#include "runtime/log.h"

namespace strata {
namespace {

using Metadata = GgufMetadata;

int32_t token_id(const Metadata& md, const std::string& key, int64_t vocab) {
  const int64_t id = md.integer(key, -1);
  // Converters write "none" as -1 in a u32 (0xffffffff); llama.cpp also tolerates junk pad ids.
  if (id == -1 || id == 0xffffffffll) return -1;
  if (key == "tokenizer.ggml.padding_token_id" && (id < 0 || id >= vocab)) return -1;
  STRATA_CHECK_KIND(ErrorKind::kFormat, id >= -1 && id < vocab, md.source(), ": metadata '", key, "' = ", id,
                    " is outside the vocabulary of ", vocab, " tokens");
  return static_cast<int32_t>(id);
}

std::optional<TokenizerData> read_tokenizer(const Metadata& md, int64_t vocab_size) {
  const std::string model = md.string("tokenizer.ggml.model", "");
  if (model.empty()) {
    LOG_WARN(md.source(), ": no embedded tokenizer (tokenizer.ggml.model); the model can only take token ids");
    return std::nullopt;
  }
  TokenizerData tok;
  if (model == "llama") {
    tok.kind = TokenizerKind::kSentencePiece;
  } else if (model == "gpt2") {
    tok.kind = TokenizerKind::kByteBpe;
    tok.add_space_prefix = false;
    tok.add_bos = false;
  } else {
    LOG_WARN(md.source(), ": tokenizer.ggml.model '", model, "' is not supported (llama, gpt2); ignoring the tokenizer");
    return std::nullopt;
  }
  const GgufValue* tokens = md.array("tokenizer.ggml.tokens", GgufType::kString);
  STRATA_CHECK_KIND(ErrorKind::kFormat, tokens != nullptr, md.source(), ": tokenizer.ggml.tokens is missing");
  const int64_t n = static_cast<int64_t>(tokens->strings.size());
  STRATA_CHECK_KIND(ErrorKind::kFormat, n > 0 && n <= vocab_size, md.source(), ": tokenizer.ggml.tokens has ", n,
                    " tokens but token_embd.weight has ", vocab_size, " rows");
  tok.tokens = tokens->strings;
  if (const GgufValue* s = md.array("tokenizer.ggml.scores", GgufType::kF32)) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, static_cast<int64_t>(s->floats.size()) == n, md.source(),
                      ": tokenizer.ggml.scores has ", s->floats.size(), " entries for ", n, " tokens");
    tok.scores.assign(s->floats.begin(), s->floats.end());
  }
  if (const GgufValue* t = md.array("tokenizer.ggml.token_type", GgufType::kI32)) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, static_cast<int64_t>(t->ints.size()) == n, md.source(),
                      ": tokenizer.ggml.token_type has ", t->ints.size(), " entries for ", n, " tokens");
    for (int64_t v : t->ints) tok.types.push_back(static_cast<int32_t>(v));
  }
  if (const GgufValue* m = md.array("tokenizer.ggml.merges", GgufType::kString)) tok.merges = m->strings;
  tok.pre_tokenizer = md.string("tokenizer.ggml.pre", "default");
  tok.bos_id = token_id(md, "tokenizer.ggml.bos_token_id", n);
  tok.eos_id = token_id(md, "tokenizer.ggml.eos_token_id", n);
  tok.unk_id = token_id(md, "tokenizer.ggml.unknown_token_id", n);
  tok.pad_id = token_id(md, "tokenizer.ggml.padding_token_id", n);
  tok.add_bos = md.boolean("tokenizer.ggml.add_bos_token", tok.add_bos);
  tok.add_eos = md.boolean("tokenizer.ggml.add_eos_token", tok.add_eos);
  tok.add_space_prefix = md.boolean("tokenizer.ggml.add_space_prefix", tok.add_space_prefix);
  return tok;
}

// llama.cpp stores a layer's routed experts as one 3-D tensor per projection, [n_experts, rows, cols]
// (logical order); strata's model description has one slot instance per expert.
struct StackedExperts {
  std::string_view gguf_name;  // after "blk.N."
  std::string_view pattern;    // the per-expert slot's canonical name
};
constexpr StackedExperts kStackedExperts[] = {{"ffn_gate_exps.weight", "ffn_gate.#.weight"},
                                              {"ffn_up_exps.weight", "ffn_up.#.weight"},
                                              {"ffn_down_exps.weight", "ffn_down.#.weight"}};

const StackedExperts* stacked_experts(std::string_view name) {
  const int64_t layer = tensor_layer_index(name);
  if (layer < 0) return nullptr;
  const std::string_view rest = name.substr(name.find('.', 4) + 1);
  for (const StackedExperts& s : kStackedExperts)
    if (rest == s.gguf_name) return &s;
  return nullptr;
}

// One entry per expert: each expert's [rows, cols] block is contiguous in the stacked tensor (a whole
// number of rows, so of quantization blocks too), so the entries are views at an offset: zero copy.
void add_expert_entries(CheckpointBuilder& ckpt, const GgufTensorInfo& t, const StackedExperts& kind,
                        const ModelConfig& c, const std::string& path, const std::string& count_key) {
  const int64_t E = c.moe.n_experts;
  STRATA_CHECK_KIND(ErrorKind::kFormat, E > 0, path, ": tensor '", t.name,
                    "' holds stacked experts but the metadata has no ", count_key,
                    "; the file is a mixture-of-experts model with incomplete metadata");
  STRATA_CHECK_KIND(ErrorKind::kFormat, t.shape.size() == 3, path, ": tensor '", t.name, "' has shape ",
                    shape_str(t.shape), " but stacked experts are 3-D [", count_key, ", rows, cols]");
  STRATA_CHECK_KIND(ErrorKind::kFormat, t.shape[0] == E, path, ": tensor '", t.name, "' has shape ",
                    shape_str(t.shape), ", ", t.shape[0], " experts in its leading dimension, but ", count_key, " = ",
                    E, "; the tensor and the metadata disagree");
  const uint64_t per_expert = static_cast<uint64_t>(dtype_bytes(t.dtype, t.shape[1] * t.shape[2]));
  STRATA_CHECK_KIND(ErrorKind::kFormat, per_expert * static_cast<uint64_t>(E) == t.nbytes, path, ": tensor '", t.name,
                    "' has ", t.nbytes, " bytes, not ", E, " experts of ", per_expert, " (", dtype_name(t.dtype), " ",
                    shape_str({t.shape[1], t.shape[2]}), ")");
  const int64_t layer = tensor_layer_index(t.name);
  for (int64_t e = 0; e < E; ++e)
    ckpt.add_entry(TensorEntry{cat("blk.", layer, ".", expert_instance(kind.pattern, e)), path,
                               cat(t.name, " [expert ", e, "]"), t.dtype, {t.shape[1], t.shape[2]},
                               t.offset + static_cast<uint64_t>(e) * per_expert, per_expert, {}});
}

// The mixture-of-experts fields from llama.cpp's keys. Mixtral is GGUF arch "llama" with an expert
// count; Qwen2-MoE / Qwen3-MoE are "qwen2moe" / "qwen3moe". llama.cpp keeps no list of dense layers:
// a layer is sparse when it has a router (ffn_gate_inp).
void read_moe_config(const Metadata& md, const Checkpoint& ckpt, const std::string& a, ModelConfig& c) {
  MoeConfig& m = c.moe;
  m.n_experts = md.integer(a + "expert_count");
  m.n_used = md.integer(a + "expert_used_count");
  m.expert_ffn = md.integer(a + "expert_feed_forward_length", c.ffn);
  m.shared_ffn = md.integer(a + "expert_shared_feed_forward_length", 0);
  // llama.cpp's defaults where the key is absent: Mixtral and Qwen3-MoE renormalize, Qwen2-MoE does not.
  m.norm_topk = md.boolean(a + "expert_weights_norm", c.arch != "qwen2_moe");
  const int64_t gating = md.integer(a + "expert_gating_func", 1);
  STRATA_CHECK_KIND(ErrorKind::kFormat, gating == 1, md.source(), ": ", a, "expert_gating_func = ", gating,
                    " is not supported; strata routes with a softmax (1)");
  const double scale = md.number(a + "expert_weights_scale", 1.0);
  STRATA_CHECK_KIND(ErrorKind::kFormat, scale == 1.0, md.source(), ": ", a, "expert_weights_scale = ", scale,
                    " is not supported (1 only)");
  m.sparse_step = 1;
  for (int64_t l = 0; l < c.n_layers; ++l)
    if (!ckpt.has(cat("blk.", l, ".ffn_gate_inp.weight"))) m.dense_layers.push_back(l);
  STRATA_CHECK_KIND(ErrorKind::kFormat, static_cast<int64_t>(m.dense_layers.size()) < c.n_layers, md.source(),
                    ": ", a, "expert_count = ", m.n_experts, " but no layer has a router (blk.N.ffn_gate_inp.weight)");
}

}  // namespace

std::unique_ptr<Checkpoint> open_gguf_checkpoint(const std::string& path) {
  auto file = std::make_shared<MappedFile>(path);
  const GgufFile gguf = parse_gguf_buffer(file->data(), file->size(), path);
  auto ckpt = std::make_unique<CheckpointBuilder>(path, "gguf");
  ckpt->add_file(file);
  ckpt->set_config_source(path + " (GGUF metadata)");
  std::vector<std::pair<const GgufTensorInfo*, const StackedExperts*>> experts;  // split once the config is known
  for (const auto& t : gguf.tensors) {
    if (const StackedExperts* kind = stacked_experts(t.name)) {
      experts.emplace_back(&t, kind);
      continue;
    }
    TensorEntry entry{t.name, path, t.name, t.dtype, t.shape, t.offset, t.nbytes, {}};
    // The shared expert's gate is one row; some converters write it as a vector.
    if (entry.shape.size() == 1 && std::string_view(t.name).ends_with(".ffn_gate_inp_shexp.weight"))
      entry.shape = {1, entry.shape[0]};
    ckpt->add_entry(std::move(entry));
  }

  const Metadata md(gguf, path);
  ModelConfig& c = ckpt->mutable_config();
  const std::string gguf_arch = md.string("general.architecture", "");
  STRATA_CHECK_KIND(ErrorKind::kFormat,
                    gguf_arch == "llama" || gguf_arch == "mistral" || gguf_arch == "qwen2" || gguf_arch == "qwen2moe" ||
                        gguf_arch == "qwen3moe",
                    path, ": general.architecture '", gguf_arch,
                    "' is not supported; strata reads llama (with experts: Mixtral), mistral, qwen2, qwen2moe and "
                    "qwen3moe");
  const std::string a = gguf_arch + ".";
  const bool moe = gguf_arch == "qwen2moe" || gguf_arch == "qwen3moe" || md.integer(a + "expert_count", 0) > 0;
  c.arch = gguf_arch == "qwen2moe" ? "qwen2_moe" : gguf_arch == "qwen3moe" ? "qwen3_moe" : moe ? "mixtral" : gguf_arch;
  c.hidden = md.integer(a + "embedding_length");
  c.n_layers = md.integer(a + "block_count");
  // Each layer has several tensors: a count the file cannot hold is corrupt (and must fail before
  // anything is sized by it).
  STRATA_CHECK_KIND(ErrorKind::kFormat, c.n_layers > 0 && static_cast<uint64_t>(c.n_layers) <= gguf.tensors.size(), path,
                    ": ", a, "block_count = ", c.n_layers, " but the file has ", gguf.tensors.size(),
                    " tensors; the metadata is corrupt");
  c.ffn = md.integer(a + "feed_forward_length");
  c.n_heads = md.integer(a + "attention.head_count");
  c.n_kv_heads = md.integer(a + "attention.head_count_kv", c.n_heads);
  STRATA_CHECK_KIND(ErrorKind::kFormat, c.n_heads > 0, path, ": ", a, "attention.head_count must be positive");
  c.head_dim = md.integer(a + "attention.key_length", c.hidden / c.n_heads);
  const int64_t value_dim = md.integer(a + "attention.value_length", c.head_dim);
  STRATA_CHECK_KIND(ErrorKind::kFormat, value_dim == c.head_dim, path, ": ", a, "attention.value_length = ", value_dim,
                    " differs from key_length ", c.head_dim, "; strata needs equal key and value head sizes");
  const int64_t rope_dims = md.integer(a + "rope.dimension_count", c.head_dim);
  STRATA_CHECK_KIND(ErrorKind::kFormat, rope_dims == c.head_dim, path, ": ", a, "rope.dimension_count = ", rope_dims,
                    " differs from the head size ", c.head_dim, "; partial rotary embeddings are not supported");
  c.rms_eps = static_cast<float>(md.number(a + "attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_theta = static_cast<float>(md.number(a + "rope.freq_base", 10000.0));
  c.max_seq = md.integer(a + "context_length", 2048);
  // llama.cpp's converter permutes q/k rows to adjacent pairs for llama and mistral (and Mixtral) only.
  const bool qwen = c.arch == "qwen2" || c.arch == "qwen2_moe" || c.arch == "qwen3_moe";
  c.rope_style = qwen ? RopeStyle::kHalf : RopeStyle::kAdjacent;
  c.qkv_bias = c.arch == "qwen2" || (c.arch == "qwen2_moe" && ckpt->has("blk.0.attn_q.bias"));
  c.qk_norm = c.arch == "qwen3_moe";
  if (moe) read_moe_config(md, *ckpt, a, c);
  for (const auto& [t, kind] : experts) add_expert_entries(*ckpt, *t, *kind, c, path, a + "expert_count");
  if (moe) {  // name a missing expert by the stacked tensor it would be part of
    ckpt->set_native_name([](const std::string& name) {
      const int64_t layer = tensor_layer_index(name);
      if (layer < 0) return name;
      const std::string rest = name.substr(name.find('.', 4) + 1);
      for (const StackedExperts& s : kStackedExperts)
        if (const int64_t e = match_expert_pattern(s.pattern, rest); e >= 0)
          return cat("blk.", layer, ".", s.gguf_name, " [expert ", e, "]");
      return name;
    });
  }
  // strata's own keys for Llama-3 scaling (llama.cpp stores the same as a rope_freqs tensor).
  const std::string scaling = md.string(a + "rope.scaling.type", "none");
  if (scaling == "llama3") {
    c.rope_scaling.factor = static_cast<float>(md.number(a + "rope.scaling.factor", 0.0));
    c.rope_scaling.low_freq_factor = static_cast<float>(md.number(a + "rope.scaling.low_freq_factor", 1.0));
    c.rope_scaling.high_freq_factor = static_cast<float>(md.number(a + "rope.scaling.high_freq_factor", 4.0));
    c.rope_scaling.original_max_position = md.integer(a + "rope.scaling.original_context_length", 8192);
  } else if (scaling != "none") {
    STRATA_THROW(ErrorKind::kFormat, path, ": ", a, "rope.scaling.type '", scaling, "' is not supported (llama3 only)");
  } else if (ckpt->has("rope_freqs.weight")) {
    LOG_WARN(path, ": has rope_freqs.weight (Llama-3 frequency factors) but no ", a,
             "rope.scaling.* keys; strata ignores the factors, so long-range positions may be slightly off");
  }
  STRATA_CHECK_KIND(ErrorKind::kFormat, ckpt->has("token_embd.weight") && ckpt->entry("token_embd.weight").shape.size() == 2,
                    path, ": tensor 'token_embd.weight' is missing or not 2-D");
  c.vocab_size = ckpt->entry("token_embd.weight").shape[0];
  if (md.find(a + "vocab_size") != nullptr) {
    const int64_t v = md.integer(a + "vocab_size");
    STRATA_CHECK_KIND(ErrorKind::kFormat, v == c.vocab_size, path, ": ", a, "vocab_size = ", v,
                      " but tensor 'token_embd.weight' has ", c.vocab_size, " rows");
  }
  c.tied_embeddings = !ckpt->has("output.weight");
  auto tokenizer = read_tokenizer(md, c.vocab_size);
  if (tokenizer) {
    if (tokenizer->bos_id >= 0) c.bos_id = tokenizer->bos_id;
    if (tokenizer->eos_id >= 0) c.eos_ids = {tokenizer->eos_id};
  }
  ckpt->set_tokenizer(std::move(tokenizer));
  ckpt->finish();
  return ckpt;
}

}  // namespace strata
