// tests/offload/offload_models.h: small random-weight models with enough layers for the prefetch
// ring to wrap (the HF fixtures have two), and budgets that force some layers to stream.
#pragma once
#include <string>

#include "offload/residency.h"
#include "offload/tiered_weights.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/formats/model_writer.h"
#include "test_util.h"

namespace strata::test {

// "gqa8": llama, 8 layers, GQA 8/2 heads, untied; "qwen6": qwen2 biases, tied embeddings, 6 layers.
inline std::string offload_model(const std::string& kind, const std::string& dir_suffix = "") {
  MakeModelOptions o;
  o.format = "safetensors";
  o.dtype = kind == "gqa8_f16" ? "f16" : "f32";
  o.seed = 11;
  ModelConfig c;
  c.vocab_size = 512, c.hidden = 64, c.n_heads = 8, c.n_kv_heads = 2, c.head_dim = 8, c.ffn = 192, c.max_seq = 512;
  c.n_layers = 8;
  if (kind == "qwen6") {
    c.arch = "qwen2", c.n_layers = 6, c.n_heads = 4, c.head_dim = 16, c.qkv_bias = true, c.tied_embeddings = true;
    c.rope_theta = 1000000.f, c.rms_eps = 1e-6f;
  }
  o.config = c;
  o.out = temp_dir("offload_" + kind + dir_suffix);
  make_model(o);
  return make_model_output_path(o);
}

// A device budget between the minimum and "everything fits", so `resident_layers` whole layers
// stay and the rest stream (whole-layer strategy; the attention-resident layout needs its own room).
inline int64_t budget_streaming(const Checkpoint& ck, const ShardSpec& spec, const offload::ResidencyConfig& base,
                                int resident_layers) {
  offload::ResidencyConfig r = base;
  r.device_budget = -1;
  const offload::Placement all = offload::place(offload::shard_items(ck, spec), r);
  int64_t layer = 0;
  for (const auto& it : offload::shard_items(ck, spec))
    if (it.layer == spec.layer_begin && it.group != offload::TensorGroup::kNorm) layer += it.bytes;
  return all.min_device_bytes + layer * resident_layers + layer / 2;
}

}  // namespace strata::test
