// runtime/model_config.cpp: consistency checks of model hyper-parameters.
#include "runtime/model_config.h"

#include "runtime/error.h"

namespace strata {

int64_t ModelConfig::parameter_count() const {
  const int64_t attn = hidden * n_heads * head_dim * 2 + hidden * n_kv_heads * head_dim * 2;
  const int64_t mlp = 3 * hidden * ffn;
  const int64_t per_layer = attn + mlp + 2 * hidden + (qkv_bias ? (n_heads + 2 * n_kv_heads) * head_dim : 0);
  return vocab_size * hidden * (tied_embeddings ? 1 : 2) + n_layers * per_layer + hidden;
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
  STRATA_CHECK_KIND(ErrorKind::kFormat, arch == "llama" || arch == "mistral" || arch == "qwen2", source,
                    ": unknown architecture '", arch, "'; strata supports llama, mistral and qwen2");
}

}  // namespace strata
