// runtime/formats/gguf.h: the GGUF container (v2/v3): metadata values, a bounds-checked parser over
// bytes in memory (used by open and by the fuzzer), the reader of Llama-family GGUF checkpoints,
// and a streaming writer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/formats/checkpoint.h"
#include "runtime/formats/tensor_stream.h"

namespace strata {

enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};
const char* gguf_type_name(GgufType type);

// One metadata value. Scalars live in `i` (integers, bool), `f` (floats) or `s`; arrays keep their
// element type in `array_type` and their elements in the family's vector. Nested arrays are rejected.
struct GgufValue {
  GgufType type = GgufType::kU32;
  GgufType array_type = GgufType::kU32;
  int64_t i = 0;  // u64 values above INT64_MAX keep their bits
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;

  bool is_integer() const;  // any integer scalar type (not bool)
  bool is_float() const { return type == GgufType::kF32 || type == GgufType::kF64; }
  bool is_array_of_integers() const;
  size_t array_size() const { return ints.size() + floats.size() + strings.size(); }

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue str(std::string v);
  static GgufValue str_array(std::vector<std::string> v);
  static GgufValue f32_array(const std::vector<float>& v);
  static GgufValue i32_array(const std::vector<int32_t>& v);
};

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;
  DType dtype = DType::kF32;
  Shape shape;          // logical row-major: GGUF's ne0-first dims reversed
  uint64_t offset = 0;  // absolute byte offset in the file
  uint64_t nbytes = 0;
};

struct GgufFile {
  uint32_t version = 3;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata;  // file order
  std::vector<GgufTensorInfo> tensors;                      // file order

  const GgufValue* find(const std::string& key) const;
};

// Parses a whole GGUF file held in data[0, size): header, every metadata value, tensor infos,
// alignment; checks every tensor lies inside the data section with a size matching its shape and
// type (F32, F16, BF16, I8, I32 and every block-quantized type in dtype.h) and overlaps no other tensor.
// Throws strata::Error (kFormat) naming `source`, and the key or tensor. Never reads outside the buffer;
// allocations are bounded by `size`.
GgufFile parse_gguf_buffer(const uint8_t* data, size_t size, const std::string& source);

// ggml's type id for a dtype (F32 0, F16 1, Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8, Q2_K..Q6_K 10..14,
// IQ4_NL 20, IQ4_XS 23, I8 24, I32 26, BF16 30).
uint32_t ggml_type_of(DType dtype);

// Writes a GGUF v3 file: metadata in order (general.alignment is honoured if present), tensor
// infos, then each tensor's data aligned. Tensor shapes are logical row-major (reversed on disk).
void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<TensorSpec>& tensors, int threads = 0);
void write_gguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<std::pair<std::string, Tensor>>& tensors);

// Opens a Llama-family GGUF checkpoint (see checkpoint.h): config from "{arch}.*" keys, tokenizer
// from "tokenizer.ggml.*". llama/mistral use RopeStyle::kAdjacent (llama.cpp's converter permutes
// q/k rows); qwen2 uses kHalf and has q/k/v biases.
std::unique_ptr<Checkpoint> open_gguf_checkpoint(const std::string& path);

}  // namespace strata
