// runtime/model_config.cpp: consistency checks of model hyper-parameters.
#include "runtime/model_config.h"

#include <cmath>

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
  // Upper bounds far above any real model: a corrupt count must fail here, before anything sizes
  // tables or tensor names by it (a layer count of 2^31-1 would otherwise exhaust memory first).
  need(vocab_size > 0 && vocab_size <= (int64_t{1} << 26), "vocab_size", vocab_size);
  need(hidden > 0 && hidden <= (int64_t{1} << 20), "hidden_size", hidden);
  need(n_layers > 0 && n_layers <= 4096, "num_hidden_layers", n_layers);
  need(n_heads > 0 && n_heads <= 65536, "num_attention_heads", n_heads);
  need(n_kv_heads > 0 && n_kv_heads <= n_heads && n_heads % n_kv_heads == 0, "num_key_value_heads", n_kv_heads);
  need(head_dim > 0 && head_dim % 2 == 0 && head_dim <= 65536, "head_dim", head_dim);
  need(ffn > 0 && ffn <= (int64_t{1} << 22), "intermediate_size", ffn);
  need(max_seq > 0 && max_seq <= (int64_t{1} << 30), "max_position_embeddings", max_seq);
  // NaN fails every comparison, so these reject it too. A non-positive epsilon divides by zero (or takes
  // the root of a negative) in every RMSNorm; theta <= 0 makes every RoPE angle NaN or zero.
  auto need_real = [&](bool ok, const char* field, double value, const char* what) {
    STRATA_CHECK_KIND(ErrorKind::kFormat, ok, source, ": model field ", field, " = ", value, " is invalid (", what,
                      "); the checkpoint's metadata is corrupt");
  };
  need_real(rms_eps > 0.f && rms_eps < 1.f, "rms_norm_eps", rms_eps, "must be in (0, 1)");
  need_real(rope_theta > 1.f && std::isfinite(rope_theta), "rope_theta", rope_theta, "must be a finite base > 1");
  if (rope_scaling.factor != 0.f) {
    need_real(rope_scaling.factor > 0.f && std::isfinite(rope_scaling.factor), "rope_scaling.factor",
              rope_scaling.factor, "must be finite and > 0");
    need_real(rope_scaling.low_freq_factor > 0.f && rope_scaling.high_freq_factor > rope_scaling.low_freq_factor &&
                  std::isfinite(rope_scaling.high_freq_factor),
              "rope_scaling.high_freq_factor", rope_scaling.high_freq_factor, "must exceed low_freq_factor > 0");
    need(rope_scaling.original_max_position > 0, "rope_scaling.original_max_position_embeddings",
         rope_scaling.original_max_position);
  }
  const bool moe_arch = arch == "mixtral" || arch == "qwen2_moe" || arch == "qwen3_moe";
  STRATA_CHECK_KIND(ErrorKind::kFormat, arch == "llama" || arch == "mistral" || arch == "qwen2" || moe_arch, source,
                    ": unknown architecture '", arch,
                    "'; strata supports llama, mistral, qwen2, mixtral, qwen2_moe and qwen3_moe");
  if (moe_arch) {
    need(moe.n_experts > 0 && moe.n_experts <= 65536, "num_experts", moe.n_experts);
    need(moe.n_used > 0 && moe.n_used <= moe.n_experts, "num_experts_per_tok", moe.n_used);
    need(moe.expert_ffn > 0 && moe.expert_ffn <= (int64_t{1} << 22), "moe_intermediate_size", moe.expert_ffn);
    need(moe.shared_ffn >= 0 && moe.shared_ffn <= (int64_t{1} << 22), "shared_expert_intermediate_size",
         moe.shared_ffn);
    need(moe.sparse_step >= 1, "decoder_sparse_step", moe.sparse_step);
  } else {
    need(!moe.enabled(), "num_experts", moe.n_experts);
  }
}

}  // namespace strata
