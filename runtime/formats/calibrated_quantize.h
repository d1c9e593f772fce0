// runtime/formats/calibrated_quantize.h: `strata quantize`'s calibrated types, written as a Hugging Face
// directory in compressed-tensors format (llm-compressor's: config.json's quantization_config, the
// safetensors tensor names and packing), so strata, transformers and vLLM load the result:
//   w8a8-int8  SmoothQuant: per-channel factors s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) from the
//              calibration activations, 1/s folded into the RMSNorm before q/k/v and gate/up (and into up's
//              rows before down), then int8 weights with one scale per output channel; activations are
//              quantized per token at run time (the config says dynamic, token).
//   fp8        e4m3 weights with one f32 scale per output channel; activation scales dynamic per token, or
//              static per tensor (the calibration maximum / 448).
//   w4a16      AWQ: per input, the scale s = mean|X_j|^a (a on a grid over [0, 1)) that minimises the output
//              error of the group-wise int4 layer on sampled calibration rows, folded like SmoothQuant's;
//              int4 symmetric codes packed 8 per int32 (pack-quantized), scales per group of columns.
// o_proj is quantized without smoothing (a note says so): its factor would have to go into v_proj's rows,
// equal across the query heads that share a KV head, which is not done here.
#pragma once
#include <optional>
#include <string>

#include "runtime/formats/quantize.h"

namespace strata {

enum class CalibratedType { kW8A8Int8, kFp8, kW4A16 };

std::optional<CalibratedType> calibrated_type(const std::string& type);
std::string calibrated_type_names();

// Writes options.out (a directory: config.json, model.safetensors, the source's tokenizer files). The
// source must be a Hugging Face directory of f32/f16/bf16 safetensors. Errors name the file or tensor: no
// or an unreadable calibration file, a text with fewer than two tokens, a quantized source, a group size
// that does not divide a layer's columns, an existing output without force.
QuantizeResult quantize_calibrated(const QuantizeOptions& options, QuantizeProgress* progress = nullptr);

}  // namespace strata
