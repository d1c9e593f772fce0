// runtime/formats/hf_quant.h: Hugging Face checkpoints whose config.json has a quantization_config
// (GPTQ, AWQ, FP8, compressed-tensors). Each quantized linear layer is transcoded into one of strata's block
// types where its arithmetic is exactly representable, so every existing kernel, TP split and offload tier
// serves it; the mapping (README "Quantized Hugging Face checkpoints"):
//   GPTQ / compressed-tensors pack-quantized, 4-bit symmetric (y = s (q - 8)), group % 32 == 0  -> q4_0
//   GPTQ / AWQ / pack-quantized 4-bit with zero points (y = s (q - z))  -> q5_0, code q - z + 16
//   8-bit GPTQ / pack-quantized, int8 W8A8 (y = s (q - z), q - z within int8)  -> q8_0
//   FP8 e4m3 (per-tensor, per-channel, 128-wide groups, 128x128 blocks)  -> f8_e4m3_b128
// Scales must convert to f16 exactly for the q types. What does not map exactly (GPTQ act-order with a
// permuted g_idx, scales that are not f16 values, 8-bit codes whose q - z can leave int8) is dequantized to
// f32 with the same arithmetic, and one log line per checkpoint says how many layers and why.
// Loading is two steps, so opening a checkpoint costs no transcoding: plan_hf_quantized (at open) picks each
// layer's type from the headers and the small tensors beside the codes (zero points, g_idx, scales that are
// not f16), never the codes: the range of q - z is taken over every code the bit width allows. Then
// transcode_hf_layer builds one layer's bytes when it is first read.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace strata {

enum class HfQuantMethod { kGptq, kAwq, kFp8, kCompressedTensors };

struct HfQuantization {
  HfQuantMethod method = HfQuantMethod::kGptq;
  std::string method_name;  // quant_method as written
  int bits = 0;             // GPTQ / AWQ bits; compressed-tensors' weights.num_bits
  int64_t group_size = 0;   // GPTQ / AWQ; -1 = one group per row (per channel)
  bool desc_act = false;    // GPTQ activation order
  bool gptq_v1 = true;      // checkpoint_format "gptq": zero points are stored minus one
  bool float_weights = false;  // compressed-tensors "type": "float" (FP8)
  bool static_input_scales = false;  // FP8 / W8A8 with activation_scheme static / dynamic = false
  std::string source;       // "config.json (quantization_config)" for messages
};

// Reads the quantization_config object (its JSON text). Throws kFormat for a method, bit width, group
// size, GPTQ/AWQ variant or FP8 flavour strata cannot load, naming the field and what is supported.
HfQuantization parse_hf_quantization(const std::string& json_text, const std::string& source);

// One tensor of a safetensors file, by its name in the file, pointing into the mapping.
struct HfRawTensor {
  std::string file;
  DType dtype = DType::kF32;
  Shape shape;
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
};

// A quantized linear layer as planned at open: its Hugging Face weight name
// ("model.layers.0.self_attn.q_proj.weight"), the [out, in] shape and dtype it transcodes to, and its source
// tensors (pointing into the mappings, which must outlive it).
struct HfQuantLayer {
  std::string weight_name;
  std::string described;  // "model.layers.0.self_attn.q_proj.qweight in model.safetensors (GPTQ 4-bit) -> q4_0"
  DType dtype = DType::kF32;
  Shape shape;
  std::optional<float> input_scale;  // a static activation scale (recorded; activations stay float)
  std::string unquantized_why;       // why an f32 layer could not stay quantized ("" when it did)
  std::string prefix;                // "model.layers.0.self_attn.q_proj"
  char kind = 0;                     // 'q' GPTQ/AWQ qweight, 'p' packed int, 'f' fp8 weight, 'i' int8 weight
  std::map<std::string, HfRawTensor> parts;  // qweight, scales, qzeros, g_idx, weight_scale, ... by name

  uint64_t nbytes() const { return static_cast<uint64_t>(dtype_bytes(dtype, shape[0] * shape[1])); }
};

// Plans every quantized layer found in `tensors` (all shards, by name) and moves the tensors it consumes
// (qweight, qzeros, scales, g_idx, weight_scale, ...) into the layers' parts; unquantized tensors stay for
// the caller. Reads no codes. Bad input (missing scales, wrong shapes, a group size that does not divide the
// row, g_idx out of range, zero points of another bit width) throws kFormat naming the tensor.
std::vector<HfQuantLayer> plan_hf_quantized(const HfQuantization& q, std::map<std::string, HfRawTensor>& tensors);

// Writes the layer's layer.nbytes() bytes to `out`, reading its codes, on `threads` threads (each writes its own
// rows, so the bytes are the same for any count). Content that its planned type cannot hold (a non-finite f16
// scale) throws kFormat naming the tensor.
void transcode_hf_layer(const HfQuantization& q, const HfQuantLayer& layer, uint8_t* out, int threads = 1);

// Both steps for every layer at once (tests, and tools that want all of them).
struct HfTranscoded {
  std::string weight_name;
  std::string described;
  DType dtype = DType::kF32;
  Shape shape;
  std::vector<uint8_t> bytes;
  std::optional<float> input_scale;
  std::string unquantized_why;
};
std::vector<HfTranscoded> transcode_hf_quantized(const HfQuantization& q, std::map<std::string, HfRawTensor>& tensors);

}  // namespace strata
