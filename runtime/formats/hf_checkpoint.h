// runtime/formats/hf_checkpoint.h: Hugging Face model directories (config.json, model.safetensors or
// an index of shards, tokenizer.json / tokenizer.model): name mapping to canonical GGUF names and
// config.json <-> ModelConfig. The safetensors container itself is in safetensors.h.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "runtime/formats/checkpoint.h"

namespace strata {

// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight" by the architecture's model
// description; nullopt for names strata does not use (e.g. "model.layers.0.self_attn.rotary_emb.inv_freq").
std::optional<std::string> hf_to_canonical_name(const std::string& hf_name, std::string_view arch = "llama");
// The inverse, for writing and for messages ("blk.3.attn_q.weight" -> "model.layers.3...").
std::string canonical_to_hf_name(const std::string& canonical, std::string_view arch = "llama");

// The language-model tensor of a LLaVA checkpoint under its plain Hugging Face name
// ("language_model.model.layers.0..." or "model.language_model.layers.0..." -> "model.layers.0...",
// "language_model.lm_head.weight" -> "lm_head.weight"); "" for the vision tower and projector.
std::string llava_language_model_name(const std::string& name);

// Parses config.json text (llama, mistral, qwen2); `source` names the file in errors (kFormat).
// rope_style is kHalf (Hugging Face rotate_half); tied_embeddings follows tie_word_embeddings.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& source);
// The config.json text for `config` (LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM);
// `torch_dtype` is "float32" | "float16" | "bfloat16".
std::string hf_config_json(const ModelConfig& config, const std::string& torch_dtype);

// Opens a Hugging Face model directory (see checkpoint.h).
std::unique_ptr<Checkpoint> open_hf_checkpoint(const std::string& dir, const CheckpointOptions& options = {});

}  // namespace strata
