// runtime/cpu/float_gemm.cpp: the (6 x 16) register-tiled GEMM of float_gemm.h.
//
// Per panel (16 weight rows) and K block of kBlockK columns: the weights are converted to f32 and transposed
// into wp[kk][16] (8 x 8 register transposes, F16C for f16, a 16-bit shift for bf16), then every activation
// tile multiplies the whole block: per kk, two loads of wp and one broadcast per activation row feed 12
// accumulators (16 of the 16 registers with the two weight vectors and the broadcast). The first K block
// starts from the bias, later ones from the partial sums in `out`. A panel past the last weight row is
// zero-padded and computed into a scratch tile whose valid columns are then copied out. Builds without
// AVX2/FMA/F16C have no tiled kernel (float_gemm_available() is false): plain loops over this layout measured
// 4-5x slower than the backend's row loops, which those builds keep.
#include "runtime/cpu/float_gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define STRATA_GEMM_AVX2 1
#endif

#include "runtime/error.h"

namespace strata::cpu {
namespace {

constexpr int64_t kRows = kGemmTileRows, kCols = kGemmPanelCols;
constexpr int64_t kBlockK = 256;  // the panel block: 16 KiB of f32, with an activation tile's 6 KiB in L1

template <DType D>
float load1(const uint8_t* row, int64_t i) {
  if constexpr (D == DType::kF32) {
    float v;
    std::memcpy(&v, row + 4 * i, 4);
    return v;
  } else {
    uint16_t h;
    std::memcpy(&h, row + 2 * i, 2);
    return D == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

#ifdef STRATA_GEMM_AVX2

template <DType D>
__m256 load8(const uint8_t* row, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i));
    if constexpr (D == DType::kF16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// r[i][j] -> r[j][i] for an 8 x 8 block.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {
    s[h] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

// wp[kk][16] = f32 of rows[r] (r < valid, else 0) at columns k0 + kk, kk < kc.
template <DType D>
void pack_panel(const uint8_t* const* rows, int64_t valid, int64_t k0, int64_t kc, float* wp) {
  for (int64_t r0 = 0; r0 < kCols; r0 += 8) {
    int64_t kk = 0;
    if (valid >= r0 + 8) {
      for (; kk + 8 <= kc; kk += 8) {
        __m256 v[8];
        for (int r = 0; r < 8; ++r) v[r] = load8<D>(rows[r0 + r], k0 + kk);
        transpose8(v);
        for (int e = 0; e < 8; ++e) _mm256_store_ps(wp + (kk + e) * kCols + r0, v[e]);
      }
    }
    for (; kk < kc; ++kk)
      for (int64_t r = r0; r < r0 + 8; ++r) wp[kk * kCols + r] = r < valid ? load1<D>(rows[r], k0 + kk) : 0.f;
  }
}

// c[r][0..15] (r < R, row stride ldc) = init + sum over kk of xp[kk][r] * wp[kk][0..15], where init is
// row r of `init` (stride init_ld: 0 repeats one row, the bias).
template <int R>
void tile(const float* xp, const float* wp, int64_t kc, const float* init, int64_t init_ld, float* c, int64_t ldc) {
  // Named accumulators, not an array: GCC keeps an array of vectors in memory and stores it every step.
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#define STRATA_GEMM_ROWS(STEP) STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5)
#define STRATA_GEMM_INIT(r)                                    \
  if constexpr (R > r) {                                       \
    c##r##0 = _mm256_loadu_ps(init + r * init_ld);             \
    c##r##1 = _mm256_loadu_ps(init + r * init_ld + 8);         \
  }
#define STRATA_GEMM_FMA(r)                                     \
  if constexpr (R > r) {                                       \
    const __m256 x = _mm256_broadcast_ss(xp + kk * kRows + r); \
    c##r##0 = _mm256_fmadd_ps(x, w0, c##r##0);                 \
    c##r##1 = _mm256_fmadd_ps(x, w1, c##r##1);                 \
  }
#define STRATA_GEMM_STORE(r)                                   \
  if constexpr (R > r) {                                       \
    _mm256_storeu_ps(c + r * ldc, c##r##0);                    \
    _mm256_storeu_ps(c + r * ldc + 8, c##r##1);                \
  }
  STRATA_GEMM_ROWS(STRATA_GEMM_INIT)
#pragma GCC unroll 4
  for (int64_t kk = 0; kk < kc; ++kk) {
    const __m256 w0 = _mm256_load_ps(wp + kk * kCols), w1 = _mm256_load_ps(wp + kk * kCols + 8);
    STRATA_GEMM_ROWS(STRATA_GEMM_FMA)
  }
  STRATA_GEMM_ROWS(STRATA_GEMM_STORE)
#undef STRATA_GEMM_STORE
#undef STRATA_GEMM_FMA
#undef STRATA_GEMM_INIT
#undef STRATA_GEMM_ROWS
}

using TileFn = void (*)(const float*, const float*, int64_t, const float*, int64_t, float*, int64_t);
constexpr TileFn kTiles[kRows] = {tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};

template <DType D>
void panels(const float* packed, int64_t m, int64_t k, const uint8_t* w, int64_t n, int64_t p_begin, int64_t p_end,
            const float* bias, float* out) {
  const int64_t row_bytes = dtype_bytes(D, k), tiles = (m + kRows - 1) / kRows;
  alignas(32) float wp[kBlockK * kCols];
  alignas(32) float init[kCols];
  std::vector<float> scratch;  // the last panel's output when n is not a multiple of 16
  for (int64_t p = p_begin; p < p_end; ++p) {
    const int64_t j0 = p * kCols, valid = std::min(kCols, n - j0);
    const uint8_t* rows[kCols];
    for (int64_t r = 0; r < kCols; ++r) rows[r] = w + (j0 + std::min(r, valid - 1)) * row_bytes;
    for (int64_t j = 0; j < kCols; ++j) init[j] = bias != nullptr && j < valid ? bias[j0 + j] : 0.f;
    float* c = out + j0;
    int64_t ldc = n;
    if (valid < kCols) {
      scratch.assign(static_cast<size_t>(m * kCols), 0.f);
      c = scratch.data(), ldc = kCols;
    }
    // The next panel's rows (contiguous) into L2 while this one computes: each row is one short stream
    // that the hardware prefetcher barely starts on, and prefill reads the weights from DRAM.
    const uint8_t* next = w + std::min(j0 + kCols, n) * row_bytes;
    const int64_t next_lines = (std::min(j0 + 2 * kCols, n) - std::min(j0 + kCols, n)) * row_bytes / 64;
    int64_t prefetched = 0, tile_steps = 0;
    const int64_t all_steps = (k + kBlockK - 1) / kBlockK * tiles;
    for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
      const int64_t kc = std::min(kBlockK, k - k0);
      pack_panel<D>(rows, valid, k0, kc, wp);
      for (int64_t t = 0; t < tiles; ++t) {
        for (const int64_t until = next_lines * ++tile_steps / all_steps; prefetched < until; ++prefetched)
          _mm_prefetch(reinterpret_cast<const char*>(next + 64 * prefetched), _MM_HINT_T1);
        const int64_t r = std::min(kRows, m - t * kRows);
        float* ct = c + t * kRows * ldc;
        const float* xp = packed + t * kRows * k + k0 * kRows;
        kTiles[r - 1](xp, wp, kc, k0 == 0 ? init : ct, k0 == 0 ? 0 : ldc, ct, ldc);
      }
    }
    if (valid < kCols)
      for (int64_t i = 0; i < m; ++i)
        std::memcpy(out + i * n + j0, scratch.data() + i * kCols, static_cast<size_t>(valid) * 4);
  }
}

#endif

}  // namespace

int64_t packed_activation_floats(int64_t m, int64_t k) { return (m + kRows - 1) / kRows * kRows * k; }

void pack_activation_tile(const float* x, int64_t m, int64_t k, int64_t tile, float* packed) {
  float* dst = packed + tile * kRows * k;
  const int64_t i0 = tile * kRows, rows = std::min(kRows, m - i0);
  for (int64_t kk = 0; kk < k; ++kk)
    for (int64_t r = 0; r < kRows; ++r) dst[kk * kRows + r] = r < rows ? x[(i0 + r) * k + kk] : 0.f;
}

int64_t gemm_panels(int64_t n) { return (n + kCols - 1) / kCols; }

bool float_gemm_available() {
#ifdef STRATA_GEMM_AVX2
  return true;
#else
  return false;
#endif
}

void gemm_float_panels(const float* packed, int64_t m, int64_t k, const void* w, DType dtype, int64_t n,
                       int64_t p_begin, int64_t p_end, const float* bias, float* out) {
#ifdef STRATA_GEMM_AVX2
  const auto* wb = static_cast<const uint8_t*>(w);
  switch (dtype) {
    case DType::kF32: panels<DType::kF32>(packed, m, k, wb, n, p_begin, p_end, bias, out); return;
    case DType::kF16: panels<DType::kF16>(packed, m, k, wb, n, p_begin, p_end, bias, out); return;
    case DType::kBF16: panels<DType::kBF16>(packed, m, k, wb, n, p_begin, p_end, bias, out); return;
    default:
      STRATA_THROW(ErrorKind::kInvalidArgument, "the float GEMM takes f32/f16/bf16 weights, not ", dtype_name(dtype));
  }
#else
  STRATA_THROW(ErrorKind::kInternal, "the tiled float GEMM is not in this build (no AVX2/FMA/F16C); ",
               dtype_name(dtype), " weights take the backend's row loops (check float_gemm_available())");
#endif
}

}  // namespace strata::cpu
