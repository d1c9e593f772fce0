// runtime/model_config.cpp: consistency checks of model hyper-parameters.
#include "runtime/model_config.h"

#include "runtime/error.h"

namespace strata {

bool MoeConfig::sparse_layer(int64_t layer) const {
  if (!enabled() || sparse_step < 1 || (layer + 1) % sparse_step != 0) return false;
  for (int64_t d : dense_layers)
    if (d == layer) return false;
  return true;
}

int64_t ModelConfig::parameter_count() const {
  const int64_t attn = hidden * n_heads * head_dim * 2 + hidden * n_kv_heads * head_dim * 2;
  const int64_t base = attn + 2 * hidden + (qkv_bias ? (n_heads + 2 * n_kv_heads) * head_dim : 0) +
                       (qk_norm ? 2 * head_dim : 0);
  int64_t layers = 0;
  for (int64_t l = 0; l < n_layers; ++l) {
    if (!moe.sparse_layer(l)) {
      layers += base + 3 * hidden * ffn;
      continue;
    }
    layers += base + moe.n_experts * hidden + moe.n_experts * 3 * hidden * moe.expert_ffn;
    if (moe.shared_ffn > 0) layers += 3 * hidden * moe.shared_ffn + hidden;
  }
  return vocab_size * hidden * (tied_embeddings ? 1 : 2) + layers + hidden;
}

void ModelConfig::validate(const std::string& source) const {
  auto need = [&](bool ok, const char* field, int64_t value) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, ok, source, ": model field ", field, " = ", value,
                      " is invalid; the checkpoint's metadata is incomplete or corrupt");
  };
  need(vocab_size > 0, "vocab_size", vocab_size);
  need(hidden > 0, "hidden_size", hidden);
  need(n_layers > 0, "num_hidden_layers", n_layers);
  need(n_heads > 0, "num_attention_heads", n_heads);
  need(n_kv_heads > 0 && n_heads % n_kv_heads == 0, "num_key_value_heads", n_kv_heads);
  need(head_dim > 0 && head_dim % 2 == 0, "head_dim", head_dim);
  need(ffn > 0, "intermediate_size", ffn);
  need(max_seq > 0, "max_position_embeddings", max_seq);
  const bool moe_arch = arch == "mixtral" || arch == "qwen2_moe" || arch == "qwen3_moe";
  STRATA_CHECK_KIND(ErrorKind::kFormat, arch == "llama" || arch == "mistral" || arch == "qwen2" || moe_arch, source,
                    ": unknown architecture '", arch,
                    "'; strata supports llama, mistral, qwen2, mixtral, qwen2_moe and qwen3_moe");
  if (moe_arch) {
    need(moe.n_experts > 0, "num_experts", moe.n_experts);
    need(moe.n_used > 0 && moe.n_used <= moe.n_experts, "num_experts_per_tok", moe.n_used);
    need(moe.expert_ffn > 0, "moe_intermediate_size", moe.expert_ffn);
    need(moe.shared_ffn >= 0, "shared_expert_intermediate_size", moe.shared_ffn);
    need(moe.sparse_step >= 1, "decoder_sparse_step", moe.sparse_step);
  } else {
    need(!moe.enabled(), "num_experts", moe.n_experts);
  }
}

}  // namespace strata
