// runtime/dtype.cpp: sizes and names of dtypes.
#include "runtime/dtype.h"

#include "runtime/error.h"

namespace strata {

int64_t dtype_block_elems(DType dtype) { return dtype_is_quantized(dtype) ? kQBlock : 1; }

int64_t dtype_block_bytes(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI8: return 1;
    case DType::kI32: return 4;
    case DType::kQ8_0: return sizeof(BlockQ8_0);
    case DType::kQ4_0: return sizeof(BlockQ4_0);
  }
  STRATA_THROW(ErrorKind::kInternal, "unknown dtype ", static_cast<int>(dtype));
}

int64_t dtype_bytes(DType dtype, int64_t elems) {
  const int64_t block = dtype_block_elems(dtype);
  STRATA_CHECK(elems % block == 0, elems, " elements of ", dtype_name(dtype), " are not a whole number of ",
               block, "-element blocks");
  return elems / block * dtype_block_bytes(dtype);
}

bool dtype_is_quantized(DType dtype) { return dtype == DType::kQ8_0 || dtype == DType::kQ4_0; }

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI8: return "i8";
    case DType::kI32: return "i32";
    case DType::kQ8_0: return "q8_0";
    case DType::kQ4_0: return "q4_0";
  }
  return "?";
}

DType dtype_from_name(const std::string& name) {
  if (name == "f32" || name == "float32" || name == "F32") return DType::kF32;
  if (name == "f16" || name == "float16" || name == "F16") return DType::kF16;
  if (name == "bf16" || name == "bfloat16" || name == "BF16") return DType::kBF16;
  if (name == "i8" || name == "int8" || name == "I8") return DType::kI8;
  if (name == "i32" || name == "int32" || name == "I32") return DType::kI32;
  if (name == "q8_0" || name == "Q8_0") return DType::kQ8_0;
  if (name == "q4_0" || name == "Q4_0") return DType::kQ4_0;
  STRATA_THROW(ErrorKind::kInvalidArgument, "unknown dtype '", name,
               "'; use one of f32, f16, bf16, i8, i32, q8_0, q4_0");
}

}  // namespace strata
