// runtime/formats/safetensors.h: the safetensors container (8-byte little-endian header length,
// JSON header, raw tensor bytes): a bounds-checked parser over bytes in memory (used by open and by
// the fuzzer) and a streaming writer. Hugging Face naming and config.json live in hf_checkpoint.h.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/formats/tensor_stream.h"
#include "runtime/tensor.h"

namespace strata {

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t offset = 0;  // absolute byte offset in the file
  uint64_t nbytes = 0;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;  // 8 + header length
  std::vector<SafetensorsTensor> tensors;  // in file order of their data
  std::vector<std::pair<std::string, std::string>> metadata;  // "__metadata__" string pairs
};

// Headers larger than this are rejected as corrupt (real ones are well under 10 MB).
constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;

// Parses and validates the header of a safetensors file whose complete contents are
// data[0, size): header length sane, JSON well-formed, dtypes F32/F16/BF16/I8/I32/I64/F8_E4M3, every tensor's
// data_offsets inside the file, consistent with shape x dtype, and not overlapping another tensor.
// Throws strata::Error (kFormat) naming `source` and the tensor. Never reads outside the buffer.
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& source);

// Writes tensors (in the given order) as a safetensors file; `metadata` goes to "__metadata__".
void write_safetensors(const std::string& path, const std::vector<TensorSpec>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata = {}, int threads = 0);
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata = {});

// "F32" <-> DType for the dtypes strata reads from safetensors.
const char* safetensors_dtype_name(DType dtype);

}  // namespace strata
