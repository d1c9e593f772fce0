// runtime/model_config.h: the hyper-parameters of a Llama-family decoder (llama, mistral, qwen2),
// read from a checkpoint's metadata. A plain struct: formats fill it, models and the plan read it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace strata {

// How RoPE pairs the dimensions of a head. kHalf (Hugging Face "rotate_half"): dim i with i + d/2.
// kAdjacent (llama2.c, GGUF/llama.cpp): dim 2i with 2i + 1. Kernels support both, so checkpoints
// load without permuting q/k weights.
enum class RopeStyle : uint8_t { kHalf, kAdjacent };

struct RopeScaling {  // Llama-3 frequency scaling; factor == 0 means none
  float factor = 0.f;
  float low_freq_factor = 1.f;
  float high_freq_factor = 4.f;
  int64_t original_max_position = 8192;
};

// Mixture-of-experts layers (mixtral, qwen2_moe, qwen3_moe): a router picks n_used of n_experts SwiGLU
// experts per token; the layer's output is their probability-weighted sum (plus Qwen2-MoE's shared
// expert, scaled by a sigmoid gate). n_experts == 0 means a dense model.
struct MoeConfig {
  int64_t n_experts = 0;
  int64_t n_used = 0;           // experts per token (top-k)
  int64_t expert_ffn = 0;       // intermediate size of each routed expert
  int64_t shared_ffn = 0;       // intermediate size of the shared expert; 0 = none
  bool norm_topk = true;        // renormalize the chosen probabilities to sum to 1
  int64_t sparse_step = 1;      // layer l is sparse when (l + 1) % sparse_step == 0 ...
  std::vector<int64_t> dense_layers;  // ... and l is not listed here (mlp_only_layers)
  bool enabled() const { return n_experts > 0; }
  // Whether layer `layer` runs experts (else the dense MLP of ModelConfig::ffn).
  bool sparse_layer(int64_t layer) const;
};

struct ModelConfig {
  std::string arch = "llama";  // llama | mistral | qwen2 | mixtral | qwen2_moe | qwen3_moe
  int64_t vocab_size = 0;
  int64_t hidden = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn = 0;  // intermediate size of the SwiGLU MLP
  int64_t max_seq = 2048;
  float rms_eps = 1e-5f;
  float rope_theta = 10000.f;
  RopeScaling rope_scaling;
  RopeStyle rope_style = RopeStyle::kHalf;
  bool tied_embeddings = false;
  bool qkv_bias = false;  // qwen2
  bool qk_norm = false;   // qwen3: RMSNorm of each query and key head before RoPE
  MoeConfig moe;
  int32_t bos_id = 1;
  std::vector<int32_t> eos_ids = {2};

  // The vision side of a multimodal model (a LLaVA CLIP tower and projector), as sizes for the model
  // description's shapes; all zero for a text-only model. runtime/models/llava_config.h fills it.
  struct VisionSizes {
    int64_t hidden = 0;
    int64_t ffn = 0;
    int64_t n_layers = 0;
    int64_t positions = 0;  // patches + the class token
    int64_t channels = 0;
    int64_t patch = 0;
    bool projector_bias = true;
    bool image_newline = false;  // LLaVA-NeXT: the row separator beside the projector
  } vision;

  // Number of weight elements (parameters), counting a tied head once.
  int64_t parameter_count() const;
  // Throws strata::Error (kFormat) naming `source` when fields are missing or inconsistent.
  void validate(const std::string& source) const;
};

}  // namespace strata
