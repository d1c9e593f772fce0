// runtime/model_presets.cpp: the shapes behind model_preset(); real ones follow the published configs.
#include "runtime/model_presets.h"

#include "runtime/error.h"

namespace strata {
namespace {
ModelConfig shape(const char* arch, int64_t vocab, int64_t hidden, int64_t layers, int64_t heads, int64_t kv_heads,
                  int64_t ffn, int64_t max_seq) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = vocab;
  c.hidden = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.ffn = ffn;
  c.max_seq = max_seq;
  return c;
}
}  // namespace

std::vector<std::string> model_preset_names() {
  return {"tiny",       "small",          "7b-shape",          "13b-shape",          "70b-shape",
          "llama3-8b-shape", "llama3-70b-shape", "qwen2-tiny", "mixtral-tiny", "qwen2-moe-tiny",
          "mixtral-8x7b-shape", "qwen3-30b-a3b-shape"};
}

ModelConfig model_preset(const std::string& name) {
  if (name == "tiny") return shape("llama", 512, 64, 4, 8, 4, 192, 1024);
  if (name == "small") {  // ~100M parameters: 32000 x 768 embeddings untied + 12 layers
    ModelConfig c = shape("llama", 32000, 768, 12, 12, 4, 2048, 2048);
    return c;
  }
  if (name == "7b-shape") return shape("llama", 32000, 4096, 32, 32, 32, 11008, 4096);
  if (name == "13b-shape") return shape("llama", 32000, 5120, 40, 40, 40, 13824, 4096);
  if (name == "70b-shape") return shape("llama", 32000, 8192, 80, 64, 8, 28672, 4096);
  if (name == "llama3-8b-shape" || name == "llama3-70b-shape") {
    const bool big = name == "llama3-70b-shape";
    ModelConfig c = big ? shape("llama", 128256, 8192, 80, 64, 8, 28672, 8192)
                        : shape("llama", 128256, 4096, 32, 32, 8, 14336, 8192);
    c.rope_theta = 500000.f;
    c.rope_scaling.factor = 8.f;
    c.rope_scaling.low_freq_factor = 1.f;
    c.rope_scaling.high_freq_factor = 4.f;
    c.rope_scaling.original_max_position = 8192;
    c.bos_id = 128000;
    c.eos_ids = {128001, 128009};
    return c;
  }
  if (name == "qwen2-tiny") {
    ModelConfig c = shape("qwen2", 512, 64, 3, 4, 2, 160, 1024);
    c.qkv_bias = true;
    c.rope_theta = 1000000.f;
    c.rms_eps = 1e-6f;
    c.tied_embeddings = true;
    return c;
  }
  // Mixture-of-experts shapes: Mixtral-8x7B (8 experts, top-2, expert FFN 14336) and Qwen3-30B-A3B (128
  // experts, top-8, expert FFN 768, q/k norms), after their published configs; tiny ones for tests.
  if (name == "mixtral-tiny" || name == "mixtral-8x7b-shape") {
    const bool big = name == "mixtral-8x7b-shape";
    ModelConfig c = big ? shape("mixtral", 32000, 4096, 32, 32, 8, 14336, 4096) : shape("mixtral", 512, 64, 2, 8, 4, 96, 1024);
    c.rope_theta = 1000000.f;
    c.moe.n_experts = 8;
    c.moe.n_used = 2;
    c.moe.expert_ffn = c.ffn;
    return c;
  }
  if (name == "qwen2-moe-tiny") {
    ModelConfig c = shape("qwen2_moe", 512, 64, 3, 4, 2, 128, 1024);
    c.qkv_bias = true;
    c.rope_theta = 1000000.f;
    c.rms_eps = 1e-6f;
    c.moe.n_experts = 8;
    c.moe.n_used = 2;
    c.moe.expert_ffn = 32;
    c.moe.shared_ffn = 64;
    c.moe.norm_topk = false;
    c.moe.dense_layers = {1};
    return c;
  }
  if (name == "qwen3-30b-a3b-shape") {
    ModelConfig c = shape("qwen3_moe", 151936, 2048, 48, 32, 4, 6144, 4096);
    c.head_dim = 128;
    c.qk_norm = true;
    c.rope_theta = 1000000.f;
    c.rms_eps = 1e-6f;
    c.moe.n_experts = 128;
    c.moe.n_used = 8;
    c.moe.expert_ffn = 768;
    return c;
  }
  std::string names;
  for (const auto& n : model_preset_names()) names += (names.empty() ? "" : ", ") + n;
  STRATA_THROW(ErrorKind::kInvalidArgument, "unknown model preset '", name, "'; choose one of: ", names);
}

}  // namespace strata
