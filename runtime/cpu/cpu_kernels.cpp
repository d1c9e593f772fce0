// runtime/cpu/cpu_kernels.cpp: the weight-streaming dot products. Decode at batch 1 is bound by
// memory bandwidth, so each kernel reads the weight bytes once, converts in registers, and keeps
// several independent accumulators so the FMA latency does not limit the streaming rate.
#include "runtime/cpu/cpu_kernels.h"

#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define STRATA_CPU_AVX2 1
#endif

#include "runtime/error.h"
#include "runtime/formats/block_quant.h"

namespace strata::cpu {
namespace {

#ifdef STRATA_CPU_AVX2
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
inline __m256 load_bf16x8(const uint16_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}
#endif

float dot_f16(const float* x, const uint16_t* w, int64_t k) {
  int64_t i = 0;
  float sum = 0.f;
#if defined(STRATA_CPU_AVX2) && defined(__F16C__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 32 <= k; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(w + i))), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(w + i + 8))), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(w + i + 16))), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(w + i + 24))), a3);
  }
  sum = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
  for (; i < k; ++i) sum += x[i] * f16_to_f32(w[i]);
  return sum;
}

float dot_bf16(const float* x, const uint16_t* w, int64_t k) {
  int64_t i = 0;
  float sum = 0.f;
#ifdef STRATA_CPU_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 32 <= k; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_bf16x8(w + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load_bf16x8(w + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), load_bf16x8(w + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), load_bf16x8(w + i + 24), a3);
  }
  sum = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
  for (; i < k; ++i) sum += x[i] * bf16_to_f32(w[i]);
  return sum;
}

}  // namespace

float dot_f32(const float* a, const float* b, int64_t k) {
  int64_t i = 0;
  float sum = 0.f;
#ifdef STRATA_CPU_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 32 <= k; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), a3);
  }
  sum = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#else
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (; i + 8 <= k; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  for (float v : acc) sum += v;
#endif
  for (; i < k; ++i) sum += a[i] * b[i];
  return sum;
}

float dot_row(const float* x, const void* row, DType dtype, int64_t k) {
  switch (dtype) {
    case DType::kF32: return dot_f32(x, static_cast<const float*>(row), k);
    case DType::kF16: return dot_f16(x, static_cast<const uint16_t*>(row), k);
    case DType::kBF16: return dot_bf16(x, static_cast<const uint16_t*>(row), k);
    default:
      STRATA_THROW(ErrorKind::kInvalidArgument, "dot_row takes f32/f16/bf16 weights, not ", dtype_name(dtype),
                   " (block-quantized weights go through dot_quant)");
  }
}

void row_to_f32(const void* row, DType dtype, int64_t k, float* out) {
  switch (dtype) {
    case DType::kF32: std::memcpy(out, row, static_cast<size_t>(k) * 4); return;
    case DType::kF16: {
      const auto* w = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < k; ++i) out[i] = f16_to_f32(w[i]);
      return;
    }
    case DType::kBF16: {
      const auto* w = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < k; ++i) out[i] = bf16_to_f32(w[i]);
      return;
    }
    default:
      STRATA_CHECK(dtype_is_quantized(dtype), "cannot convert dtype ", dtype_name(dtype), " to f32");
      dequantize_row(dtype, row, out, k);
      return;
  }
}

}  // namespace strata::cpu
