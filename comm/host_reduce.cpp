// comm/host_reduce.cpp: widening, narrowing and element-wise reduction of host buffers.
#include "comm/host_reduce.h"

#include <algorithm>
#include <cstring>

#include "runtime/error.h"

namespace strata::comm {

DType accum_dtype(DType dtype) { return dtype == DType::kI32 ? DType::kI32 : DType::kF32; }

std::vector<uint8_t> widen(const void* src, int64_t n, DType dtype) {
  std::vector<uint8_t> acc(static_cast<size_t>(n) * 4);
  auto* out = reinterpret_cast<float*>(acc.data());
  const auto* half = static_cast<const uint16_t*>(src);
  switch (dtype) {
    case DType::kF32:
    case DType::kI32: std::memcpy(acc.data(), src, acc.size()); break;
    case DType::kF16: for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(half[i]); break;
    case DType::kBF16: for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(half[i]); break;
    default: STRATA_THROW(ErrorKind::kInternal, "widen: unsupported dtype ", dtype_name(dtype));
  }
  return acc;
}

void narrow(const void* acc, int64_t n, DType dtype, void* dst) {
  const auto* in = static_cast<const float*>(acc);
  auto* half = static_cast<uint16_t*>(dst);
  switch (dtype) {
    case DType::kF32:
    case DType::kI32: std::memcpy(dst, acc, static_cast<size_t>(n) * 4); break;
    case DType::kF16: for (int64_t i = 0; i < n; ++i) half[i] = f32_to_f16(in[i]); break;
    case DType::kBF16: for (int64_t i = 0; i < n; ++i) half[i] = f32_to_bf16(in[i]); break;
    default: STRATA_THROW(ErrorKind::kInternal, "narrow: unsupported dtype ", dtype_name(dtype));
  }
}

template <typename T>
static void reduce_typed(T* acc, const T* in, int64_t n, ReduceOp op) {
  if (op == ReduceOp::kSum) {
    for (int64_t i = 0; i < n; ++i) acc[i] += in[i];
  } else {
    for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], in[i]);
  }
}

void reduce_into(void* acc, const void* in, int64_t n, DType acc_dtype, ReduceOp op) {
  if (acc_dtype == DType::kI32) {
    reduce_typed(static_cast<int32_t*>(acc), static_cast<const int32_t*>(in), n, op);
  } else {
    STRATA_CHECK_KIND(ErrorKind::kInternal, acc_dtype == DType::kF32, "reduce_into: accumulator must be f32 or i32");
    reduce_typed(static_cast<float*>(acc), static_cast<const float*>(in), n, op);
  }
}

}  // namespace strata::comm
