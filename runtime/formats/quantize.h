// runtime/formats/quantize.h: `strata quantize`: a checkpoint (Hugging Face safetensors, GGUF, llama2.c) to
// a GGUF file of a block-quantized type, tensor by tensor from the memory-mapped source (the model is never
// held whole), with the tokenizer and metadata carried over so the file loads in strata and in llama.cpp.
// Which type each tensor gets follows llama-quantize's rule without an imatrix (see choose_tensor_type).
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/model_config.h"
#include "runtime/tensor.h"

namespace strata {

// A --type: the base type of the matrices and the llama.cpp mix it follows.
struct QuantRecipe {
  std::string name;          // as given: "q4_k_m", "q8_0", "f16", ...
  DType base = DType::kF16;  // the type most matrices get
  // llama.cpp's _S / _M / _L variants of a K-quant (q2_k and iq4_nl/iq4_xs have one mix each: kNone).
  enum class Mix { kNone, kSmall, kMedium, kLarge } mix = Mix::kNone;
  uint32_t file_type = 1;    // llama.cpp's LLAMA_FTYPE_* id, written as general.file_type
};

// The recipe for a --type name (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s, q3_k_m, q3_k_l,
// q3_k, q4_k and q5_k (= the _m mixes, as llama-quantize names them), q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k,
// iq4_nl, iq4_xs);
// throws kInvalidArgument listing the valid names.
QuantRecipe quant_recipe(const std::string& type);
std::string quant_type_names();

// What of the model the mix rules look at (llama-quantize reads the same from the model's hyperparameters).
struct QuantMixModel {
  int64_t n_layers = 0;
  int64_t n_gqa = 1;        // query heads per key/value head: q2_k and iq4_* give attn_v more bits at >= 4
  bool has_output = true;   // false: the token embedding is tied to the head and takes the head's rule
  bool is_70b = false;      // llama.cpp's 70B class (80 layers, GQA): q3_k / q4_k attn_v become q5_k
};
QuantMixModel quant_mix_model(const ModelConfig& config, bool has_output);

// What a tensor is written as: llama-quantize's rule without an imatrix (quantize.cpp has the table per
// mix). 1-D tensors and norms stay f32; the output head (or the tied token embedding) is q6_k (q8_0 stays
// q8_0; q8_0 when its rows do not divide the base type's block); the mixes raise attn_v, attn_output and
// ffn_down by layer; a tensor whose rows do not divide its type's block falls back as llama-quantize does:
// q2_k and q3_k to q4_0, q4_k to q5_0, q5_k to q5_1, q6_k to q8_0, iq4_xs to iq4_nl (a 32-element type that
// still does not divide is left to quantize_model: an error, or f16 with --f16-fallback). `pure` keeps
// every matrix at the base type (no mix, no head rule).
struct TensorTypeChoice {
  DType dtype = DType::kF32;
  bool fallback = false;  // replaced because the rows do not divide the block (a K-quant's 256, or to f16)
};
TensorTypeChoice choose_tensor_type(const QuantRecipe& recipe, const std::string& name, const Shape& shape,
                                    const QuantMixModel& model, bool pure);

// Progress counters, read from another thread while quantize_model runs.
struct QuantizeProgress {
  std::atomic<int64_t> elements_total{0};
  std::atomic<int64_t> elements_done{0};
  std::atomic<int> tensors_total{0};
};

struct QuantizeOptions {
  std::string model;  // source checkpoint: HF directory, .gguf, llama2.c .bin
  std::string type;   // a quant_recipe name
  std::string out;    // the .gguf to write
  bool force = false; // overwrite an existing output
  bool pure = false;  // every matrix at the base type
  bool f16_fallback = false;  // a tensor whose rows do not divide its type's block is written f16, not an error
  int threads = 0;    // 0 = all cores; the bytes do not depend on it
  // Calibrated types (w8a8-int8, fp8, w4a16: runtime/formats/calibrated_quantize.h), which write a Hugging
  // Face directory in llm-compressor's compressed-tensors format instead of a GGUF file.
  std::string calibration;              // text file the unquantized model runs on (activation statistics)
  float alpha = 0.5f;                   // SmoothQuant's migration strength
  int64_t group_size = 128;             // w4a16: columns per scale; 0 = one scale per row
  bool static_activations = false;      // fp8: static per-tensor input scales from the calibration maximum
  int64_t calibration_context = 512;    // tokens per calibration window
  int64_t calibration_tokens = 0;       // use at most this many tokens of the text (0: all)
  int64_t awq_rows = 512;               // w4a16: activation rows kept per input for the scale search
  bool smooth_only = false;             // apply the smoothing / AWQ scales, write unquantized (checks the folding)
  bool smoothing = true;                // false: no SmoothQuant / AWQ factors (plain round-to-nearest, for comparison)
  bool clip_search = false;             // w4a16: search each group's clipped scale (default: from its extreme)
};

struct QuantizedTensor {
  std::string name;
  DType source = DType::kF32;
  DType dtype = DType::kF32;
  Shape shape;
  bool fallback = false;
};

struct QuantizeResult {
  std::vector<QuantizedTensor> tensors;  // in file order
  uint64_t source_bytes = 0;             // tensor bytes read
  uint64_t output_bytes = 0;             // the written file's size
  int64_t parameters = 0;
  std::vector<std::string> notes;        // calibrated types: what the smoothing did, per kind of layer
};

// Writes options.out. Errors (strata::Error) name the file, the tensor and what to do: an unknown type, an
// output that exists without force (or is the source), a tensor whose rows do not divide the block of the
// type it must take, an architecture llama.cpp's GGUF cannot hold here (mixture-of-experts).
QuantizeResult quantize_model(const QuantizeOptions& options, QuantizeProgress* progress = nullptr);

}  // namespace strata
