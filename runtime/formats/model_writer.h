// runtime/formats/model_writer.h: make-model: random-weight Llama-family checkpoints of any preset
// shape, as a Hugging Face directory (safetensors) or one GGUF file, streamed tensor by tensor.
// The same seed gives the same model in both formats (GGUF q/k rows permuted; see rope_layout.h).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "runtime/formats/gguf.h"
#include "runtime/model_config.h"
#include "runtime/tensor.h"
#include "runtime/tokenizer/tokenizer_data.h"

namespace strata {

struct MakeModelOptions {
  std::string preset = "tiny";         // runtime/model_presets.h
  std::optional<ModelConfig> config;   // when set, used instead of the preset (tests)
  std::string format = "safetensors";  // "safetensors" | "gguf"
  std::string dtype = "f32";           // f32 | f16 | bf16; gguf also any block type (q4_k, ...) or the q4_k_m mix
  std::string out;                     // safetensors: a directory; gguf: a .gguf file (else <out>/model.gguf)
  uint64_t seed = 0;
  int threads = 0;                     // 0 = all cores; the bytes do not depend on it
};

// Writes the model. safetensors: <out>/config.json, model.safetensors, tokenizer.json and
// tokenizer_config.json. gguf: one file with full metadata and the tokenizer (SentencePiece kind)
// embedded. The vocabulary is make_synthetic_tokenizer(vocab); bos/eos ids follow it.
// Weights: normal(0, 0.02) for matrices and biases, 1 + normal(0, 0.02) for norms.
void make_model(const MakeModelOptions& options);
// The path open_checkpoint() takes for what make_model(options) writes.
std::string make_model_output_path(const MakeModelOptions& options);

// The f32 values make_model writes for canonical tensor `name` (Hugging Face layout: rotate-half
// q/k rows), before rounding to the output dtype; for tests and in-memory models.
Tensor random_model_tensor(const ModelConfig& config, const std::string& name, uint64_t seed);

// The GGUF metadata llama.cpp reads for a Llama-family model: "{arch}.*" hyperparameters, the tokenizer
// ("llama" SentencePiece or "gpt2" byte-level BPE with merges) and general.file_type (a LLAMA_FTYPE_* id).
std::vector<std::pair<std::string, GgufValue>> gguf_model_metadata(const ModelConfig& config, const TokenizerData& tok,
                                                                   const std::string& model_name, uint32_t file_type);
// llama.cpp's per-frequency Llama-3 RoPE factors (its rope_freqs.weight), so llama.cpp reads the GGUF right.
std::vector<float> llama3_rope_factors(const ModelConfig& config);

}  // namespace strata
