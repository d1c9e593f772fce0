// runtime/dtype.cpp: sizes and names of dtypes.
#include "runtime/dtype.h"

#include <iterator>

#include "runtime/error.h"
#include "runtime/quant_blocks.h"

namespace strata {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  int64_t block_elems;
  int64_t block_bytes;
};

constexpr DTypeInfo kInfo[] = {
    {DType::kF32, "f32", 1, 4},
    {DType::kF16, "f16", 1, 2},
    {DType::kBF16, "bf16", 1, 2},
    {DType::kI8, "i8", 1, 1},
    {DType::kI32, "i32", 1, 4},
    {DType::kQ8_0, "q8_0", kQBlock, sizeof(BlockQ8_0)},
    {DType::kQ4_0, "q4_0", kQBlock, sizeof(BlockQ4_0)},
    {DType::kQ4_1, "q4_1", kQBlock, sizeof(BlockQ4_1)},
    {DType::kQ5_0, "q5_0", kQBlock, sizeof(BlockQ5_0)},
    {DType::kQ5_1, "q5_1", kQBlock, sizeof(BlockQ5_1)},
    {DType::kQ2_K, "q2_k", kQKBlock, sizeof(BlockQ2_K)},
    {DType::kQ3_K, "q3_k", kQKBlock, sizeof(BlockQ3_K)},
    {DType::kQ4_K, "q4_k", kQKBlock, sizeof(BlockQ4_K)},
    {DType::kQ5_K, "q5_k", kQKBlock, sizeof(BlockQ5_K)},
    {DType::kQ6_K, "q6_k", kQKBlock, sizeof(BlockQ6_K)},
    {DType::kIQ4_NL, "iq4_nl", kQBlock, sizeof(BlockIQ4_NL)},
    {DType::kIQ4_XS, "iq4_xs", kQKBlock, sizeof(BlockIQ4_XS)},
    {DType::kF8E4M3, "f8_e4m3", 1, 1},
};

const DTypeInfo& info(DType dtype) {
  const auto i = static_cast<size_t>(dtype);
  STRATA_CHECK_KIND(ErrorKind::kInternal, i < std::size(kInfo) && kInfo[i].dtype == dtype, "unknown dtype ", i);
  return kInfo[i];
}

}  // namespace

int64_t dtype_block_elems(DType dtype) { return info(dtype).block_elems; }

int64_t dtype_block_bytes(DType dtype) { return info(dtype).block_bytes; }

int64_t dtype_bytes(DType dtype, int64_t elems) {
  const int64_t block = dtype_block_elems(dtype);
  STRATA_CHECK(elems % block == 0, elems, " elements of ", dtype_name(dtype), " are not a whole number of ",
               block, "-element blocks");
  return elems / block * dtype_block_bytes(dtype);
}

bool dtype_is_quantized(DType dtype) { return info(dtype).block_elems > 1; }

const char* dtype_name(DType dtype) {
  const auto i = static_cast<size_t>(dtype);
  return i < std::size(kInfo) ? kInfo[i].name : "?";
}

std::vector<DType> quantized_dtypes() {
  std::vector<DType> out;
  for (const DTypeInfo& d : kInfo)
    if (d.block_elems > 1) out.push_back(d.dtype);
  return out;
}

std::string quantized_dtype_names() {
  std::string out;
  for (DType d : quantized_dtypes()) out += std::string(out.empty() ? "" : ", ") + dtype_name(d);
  return out;
}

DType dtype_from_name(const std::string& name) {
  if (name == "float32") return DType::kF32;
  if (name == "float16") return DType::kF16;
  if (name == "bfloat16") return DType::kBF16;
  if (name == "int8") return DType::kI8;
  if (name == "int32") return DType::kI32;
  std::string lower = name;
  for (char& ch : lower) ch = static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
  for (const DTypeInfo& d : kInfo)
    if (lower == d.name) return d.dtype;
  STRATA_THROW(ErrorKind::kInvalidArgument, "unknown dtype '", name, "'; use one of f32, f16, bf16, i8, i32, ",
               quantized_dtype_names());
}

}  // namespace strata
