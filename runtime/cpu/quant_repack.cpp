// runtime/cpu/quant_repack.cpp: the interleaved q4_0/q8_0 layout and its (8 rows x up to 4 tokens) tiles.
//
// Layout: group g (rows 8g..8g+7), block b (columns 32b..32b+31) is block_bytes_ bytes at
// data_ + (g * blocks + b) * block_bytes_: the 8 rows' f16 scales, then chunks of 32 bytes where chunk c
// holds bytes 4c..4c+3 of each row's codes, row after row. q4_0 byte j holds elements j (low nibble) and
// j + 16 (high nibble), so chunk c's low nibbles are elements 4c..4c+3 of each row and its high nibbles
// elements 16+4c..16+4c+3; q8_0 chunk c is elements 4c..4c+3.
//
// Integer sums: q4_0 multiplies the unsigned nibble u (value d * (u - 8)) and subtracts 8 * sum(x) once per
// block; maddubs pairs stay within int16 (|u x| <= 15 * 127) and 8 of them still do, so a block's 8 pairs
// add in int16 before one widening madd. q8_0's signed codes move their sign onto the activation (the
// maddubs sign trick, as in quant_dot.cpp) and widen every chunk (|pair| up to 2 * 128 * 127).
#include "runtime/cpu/quant_repack.h"

#include <algorithm>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define STRATA_REPACK_AVX2 1
#endif

#include "runtime/error.h"

namespace strata::cpu {
namespace {

constexpr int64_t kRows = RepackedWeight::kGroupRows;
constexpr int kTile = 4;  // activation rows per register tile

int64_t codes_bytes(DType dt) { return dt == DType::kQ4_0 ? 16 : 32; }

int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// out[t][r]: the tile's dot products (without bias) of activation rows x[t] with the group's 8 rows.
#ifdef STRATA_REPACK_AVX2

// Each block's 8 weight vectors are unpacked once into registers, then each token's 8 products are summed
// token by token (interleaving the tokens' chains needs more than 16 registers and spills).
template <int T>
void tile_q4_0(const uint8_t* grp, int64_t nb, int64_t block_bytes, const ActBlock* const* x, float (*out)[kRows]) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i nibble = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b, grp += block_bytes) {
    __m256i lo[4], hi[4];
    for (int c = 0; c < 4; ++c) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(grp + 16 + 32 * c));
      lo[c] = _mm256_and_si256(v, nibble);
      hi[c] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(grp)));
    for (int t = 0; t < T; ++t) {
      const ActBlock& a = x[t][b];
      __m256i s16 = _mm256_maddubs_epi16(lo[0], _mm256_set1_epi32(load_i32(a.q)));
      s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi[0], _mm256_set1_epi32(load_i32(a.q + 16))));
      for (int c = 1; c < 4; ++c) {
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo[c], _mm256_set1_epi32(load_i32(a.q + 4 * c))));
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi[c], _mm256_set1_epi32(load_i32(a.q + 16 + 4 * c))));
      }
      const __m256i sum = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones),
                                           _mm256_set1_epi32(8 * (a.half_sum[0] + a.half_sum[1])));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dw, _mm256_set1_ps(a.d)), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm256_storeu_ps(out[t], acc[t]);
}

// q8_0 needs |w| and w per chunk (the sign trick): too many registers to unpack a whole block, so the
// chunks go outer and the tokens share each loaded chunk.
template <int T>
void tile_q8_0(const uint8_t* grp, int64_t nb, int64_t block_bytes, const ActBlock* const* x, float (*out)[kRows]) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b, grp += block_bytes) {
    __m256i s32[T];
    for (int t = 0; t < T; ++t) s32[t] = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(grp + 16 + 32 * c));
      const __m256i magnitude = _mm256_sign_epi8(w, w);
      for (int t = 0; t < T; ++t) {
        const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(load_i32(x[t][b].q + 4 * c)), w);
        s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, xs), ones));
      }
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(grp)));
    for (int t = 0; t < T; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[t]), _mm256_mul_ps(dw, _mm256_set1_ps(x[t][b].d)), acc[t]);
  }
  for (int t = 0; t < T; ++t) _mm256_storeu_ps(out[t], acc[t]);
}

#else

// The portable path: the same integer sums, one row and one token at a time.
template <int T>
void tile_portable(DType dt, const uint8_t* grp, int64_t nb, int64_t block_bytes, const ActBlock* const* x,
                   float (*out)[kRows]) {
  for (int t = 0; t < T; ++t)
    for (int64_t r = 0; r < kRows; ++r) out[t][r] = 0.f;
  for (int64_t b = 0; b < nb; ++b, grp += block_bytes) {
    for (int64_t r = 0; r < kRows; ++r) {
      uint16_t scale;
      std::memcpy(&scale, grp + 2 * r, 2);
      const float dw = f16_to_f32(scale);
      for (int t = 0; t < T; ++t) {
        const ActBlock& a = x[t][b];
        int sum = 0;
        for (int c = 0; c < (dt == DType::kQ4_0 ? 4 : 8); ++c) {
          const uint8_t* bytes = grp + 16 + 32 * c + 4 * r;
          for (int e = 0; e < 4; ++e) {
            if (dt == DType::kQ4_0) {
              sum += ((bytes[e] & 0x0f) - 8) * a.q[4 * c + e] + ((bytes[e] >> 4) - 8) * a.q[16 + 4 * c + e];
            } else {
              sum += static_cast<int8_t>(bytes[e]) * a.q[4 * c + e];
            }
          }
        }
        out[t][r] += dw * a.d * static_cast<float>(sum);
      }
    }
  }
}

#endif

template <int T>
void tile(DType dt, const uint8_t* grp, int64_t nb, int64_t block_bytes, const ActBlock* const* x,
          float (*out)[kRows]) {
#ifdef STRATA_REPACK_AVX2
  if (dt == DType::kQ4_0) {
    tile_q4_0<T>(grp, nb, block_bytes, x, out);
  } else {
    tile_q8_0<T>(grp, nb, block_bytes, x, out);
  }
#else
  tile_portable<T>(dt, grp, nb, block_bytes, x, out);
#endif
}

}  // namespace

bool RepackedWeight::supports(DType dtype) { return dtype == DType::kQ4_0 || dtype == DType::kQ8_0; }

RepackedWeight::RepackedWeight(const void* rows, DType dtype, int64_t n, int64_t k) : dtype_(dtype), n_(n), k_(k) {
  STRATA_CHECK(supports(dtype), "repacked CPU weights are q4_0 or q8_0, not ", dtype_name(dtype));
  STRATA_CHECK(n > 0 && k > 0 && k % 32 == 0, "repacked CPU weights: [", n, ", ", k,
               "] needs whole 32-element blocks per row");
  const int64_t qbytes = codes_bytes(dtype), nb = k / 32, src_block = qbytes + 2;
  block_bytes_ = 2 * kRows + kRows * qbytes;
  const auto total = static_cast<size_t>(groups() * nb * block_bytes_);
  storage_.reset(new uint8_t[total + 64]);
  data_ = storage_.get() + (64 - reinterpret_cast<uintptr_t>(storage_.get()) % 64) % 64;
  std::memset(data_, 0, total);  // the last group's missing rows: zero scales and codes contribute nothing
  const auto* src = static_cast<const uint8_t*>(rows);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t g = r / kRows, lane = r % kRows;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* in = src + (r * nb + b) * src_block;  // f16 scale, then the codes (both block types)
      uint8_t* out = data_ + (g * nb + b) * block_bytes_;
      std::memcpy(out + 2 * lane, in, 2);
      for (int64_t c = 0; c < qbytes / 4; ++c) std::memcpy(out + 2 * kRows + 32 * c + 4 * lane, in + 2 + 4 * c, 4);
    }
  }
}

void RepackedWeight::multiply(const ActBlock* x, int64_t m, int64_t g_begin, int64_t g_end, const float* bias,
                              float* out, int64_t ldo) const {
  const int64_t nb = k_ / 32;
  float tile_out[kTile][kRows];
  for (int64_t g = g_begin; g < g_end; ++g) {
    const uint8_t* grp = data_ + g * nb * block_bytes_;
    const int64_t r0 = g * kRows, valid = std::min(kRows, n_ - r0);
    for (int64_t i = 0; i < m; i += kTile) {
      const int t_count = static_cast<int>(std::min<int64_t>(kTile, m - i));
      const ActBlock* xt[kTile];
      for (int t = 0; t < t_count; ++t) xt[t] = x + (i + t) * nb;
      switch (t_count) {
        case 1: tile<1>(dtype_, grp, nb, block_bytes_, xt, tile_out); break;
        case 2: tile<2>(dtype_, grp, nb, block_bytes_, xt, tile_out); break;
        case 3: tile<3>(dtype_, grp, nb, block_bytes_, xt, tile_out); break;
        default: tile<kTile>(dtype_, grp, nb, block_bytes_, xt, tile_out); break;
      }
      for (int t = 0; t < t_count; ++t) {
        float* o = out + (i + t) * ldo + r0;
        for (int64_t r = 0; r < valid; ++r) o[r] = tile_out[t][r] + (bias != nullptr ? bias[r0 + r] : 0.f);
      }
    }
  }
}

}  // namespace strata::cpu
