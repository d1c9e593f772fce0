// runtime/cpu/quant_dot.cpp: integer dot products of 8-bit activation blocks with every GGUF weight type
// (and f8_e4m3_b128, whose codes are floats: its dot is f32 over a value table).
// Per 32-element activation block a weight type yields an integer sum of (weight code x activation code),
// weighted by its integer sub-block scales where a scale covers 16 elements; the float step per block is
// (weight scale x activation scale) x that sum, minus the weight's offset (min, or the code's zero point)
// times the activation block's sum. The AVX2 path multiplies unsigned weight codes with signed activations
// (maddubs: pairs stay inside int16 since codes are at most 63, or 128 for signed types through the sign
// trick) and widens with madd.
#include "runtime/cpu/quant_dot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define STRATA_QDOT_AVX2 1
#endif

#include "runtime/error.h"
#include "runtime/quant_blocks.h"

namespace strata::cpu {
namespace {

inline float half(uint16_t h) {
#ifdef __F16C__
  return _cvtsh_ss(h);
#else
  return f16_to_f32(h);
#endif
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#ifdef STRATA_QDOT_AVX2

inline float hsum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// 16 bytes of nibbles -> 32 codes: low nibbles are elements 0..15, high nibbles 16..31.
inline __m256i nibbles16(const uint8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0x0f));
}

// Bit i of `bits` -> 0x10 in byte i (q5's fifth bit).
inline __m256i bits_to_0x10(uint32_t bits) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i mask = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask), _mm256_set1_epi8(0x10));
}

// Unsigned codes x signed activations -> 8 int32 partial sums (elements 4i..4i+3 in lane i).
inline __m256i dot_u8(__m256i u, __m256i x) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
}
// Same with per-16 integer scales: elements 0..15 times s0, 16..31 times s1.
inline __m256i dot_u8_scaled(__m256i u, __m256i x, int s0, int s1) {
  const __m256i scales =
      _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(s1)), _mm_set1_epi16(static_cast<int16_t>(s0)));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), scales);
}
// Signed codes x signed activations (the sign moves onto the activation).
inline __m256i dot_s8(__m256i w, __m256i x) { return dot_u8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)); }

inline __m256i iq4_table() {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values));
  return _mm256_set_m128i(t, t);
}

using Acc = __m256;  // 8 partial float sums
inline Acc acc_zero() { return _mm256_setzero_ps(); }
inline float acc_total(Acc a) { return hsum(a); }
#else
using Acc = float;
inline Acc acc_zero() { return 0.f; }
inline float acc_total(Acc a) { return a; }
#endif

// Weight scale and packed nibbles of the 32-element types (q4_0 names its fields differently).
inline uint16_t scale_of(const BlockQ4_0& b) { return b.scale; }
inline const uint8_t* nibbles_of(const BlockQ4_0& b) { return b.q; }
template <typename Block>
uint16_t scale_of(const Block& b) {
  return b.d;
}
template <typename Block>
const uint8_t* nibbles_of(const Block& b) {
  return b.qs;
}

// ---- portable integer sums (the scalar path; the AVX2 path computes the same numbers) -------------------

[[maybe_unused]] inline int sum_u8(const uint8_t* u, const int8_t* x, int n) {
  int s = 0;
  for (int i = 0; i < n; ++i) s += u[i] * x[i];
  return s;
}

[[maybe_unused]] void codes_nibbles(const uint8_t* qs, uint8_t* u) {
  for (int i = 0; i < 16; ++i) u[i] = qs[i] & 0x0f, u[i + 16] = qs[i] >> 4;
}

// ---- per-type row dot products -------------------------------------------------------------------------

float dot_q8_0(const ActBlock* a, const BlockQ8_0* w, int64_t nb) {
  float sum = 0.f;
#ifdef STRATA_QDOT_AVX2
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  auto step = [&](int64_t b, int lane) {
    const __m256i p = dot_s8(load32(w[b].q), load32(a[b].q));
    acc[lane] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(half(w[b].scale) * a[b].d), acc[lane]);
  };
  int64_t b = 0;
  for (; b + 1 < nb; b += 2) step(b, 0), step(b + 1, 1);
  if (b < nb) step(b, 0);
  sum = hsum(_mm256_add_ps(acc[0], acc[1]));
#else
  for (int64_t b = 0; b < nb; ++b) {
    int s = 0;
    for (int i = 0; i < 32; ++i) s += w[b].q[i] * a[b].q[i];
    sum += half(w[b].scale) * a[b].d * static_cast<float>(s);
  }
#endif
  return sum;
}

// q4_0, q4_1, q5_0, q5_1: y = d * code + offset with offset = -8d, m, -16d, m.
template <typename Block, bool kFifthBit, bool kMin>
float dot_legacy(const ActBlock* a, const Block* w, int64_t nb) {
  float sum = 0.f, offsets = 0.f;
  auto offset_of = [](const Block& blk, float d) {
    if constexpr (kMin) {
      return half(blk.m);
    } else {
      return kFifthBit ? -16.f * d : -8.f * d;
    }
  };
#ifdef STRATA_QDOT_AVX2
  // Two blocks a step into separate accumulators: the FMA latency chains stay off the critical path.
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  float off[2] = {0.f, 0.f};
  auto step = [&](int64_t b, int lane) {
    const Block& blk = w[b];
    const float d = half(scale_of(blk));
    __m256i u = nibbles16(nibbles_of(blk));
    if constexpr (kFifthBit) u = _mm256_or_si256(u, bits_to_0x10(load_u32(blk.qh)));
    acc[lane] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8(u, load32(a[b].q))), _mm256_set1_ps(d * a[b].d), acc[lane]);
    off[lane] += offset_of(blk, d) * a[b].s;
  };
  int64_t b = 0;
  for (; b + 1 < nb; b += 2) step(b, 0), step(b + 1, 1);
  if (b < nb) step(b, 0);
  sum = hsum(_mm256_add_ps(acc[0], acc[1]));
  offsets = off[0] + off[1];
#else
  for (int64_t b = 0; b < nb; ++b) {
    const Block& blk = w[b];
    const float d = half(scale_of(blk));
    uint8_t u[32];
    codes_nibbles(nibbles_of(blk), u);
    if constexpr (kFifthBit) {
      const uint32_t qh = load_u32(blk.qh);
      for (int i = 0; i < 32; ++i) u[i] |= static_cast<uint8_t>(((qh >> i) & 1u) << 4);
    }
    sum += d * a[b].d * static_cast<float>(sum_u8(u, a[b].q, 32));
    offsets += offset_of(blk, d) * a[b].s;
  }
#endif
  return sum + offsets;
}

// iq4_nl (one scale per 32) and iq4_xs (a 6-bit scale per 32 under one f16 scale per 256).
[[maybe_unused]] float dot_iq4_block(const ActBlock& a, const uint8_t* qs) {
  int s = 0;
  for (int i = 0; i < 16; ++i) s += kIq4Values[qs[i] & 0x0f] * a.q[i] + kIq4Values[qs[i] >> 4] * a.q[i + 16];
  return static_cast<float>(s);
}

float dot_iq4_nl(const ActBlock* a, const BlockIQ4_NL* w, int64_t nb) {
#ifdef STRATA_QDOT_AVX2
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i table = iq4_table();
  auto step = [&](int64_t b, int lane) {
    const __m256i p = dot_s8(_mm256_shuffle_epi8(table, nibbles16(w[b].qs)), load32(a[b].q));
    acc[lane] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(half(w[b].d) * a[b].d), acc[lane]);
  };
  int64_t b = 0;
  for (; b + 1 < nb; b += 2) step(b, 0), step(b + 1, 1);
  if (b < nb) step(b, 0);
  return hsum(_mm256_add_ps(acc[0], acc[1]));
#else
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b) sum += half(w[b].d) * a[b].d * dot_iq4_block(a[b], w[b].qs);
  return sum;
#endif
}

float dot_iq4_xs(const ActBlock* a, const BlockIQ4_XS* w, int64_t nsb) {
#ifdef STRATA_QDOT_AVX2
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i table = iq4_table();
  for (int64_t s = 0; s < nsb; ++s, a += 8) {
    const BlockIQ4_XS& blk = w[s];
    const float d = half(blk.d);
    for (int j = 0; j < 8; ++j) {
      const int ls = (((blk.scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | ((blk.scales_h >> (2 * j)) & 3) << 4) - 32;
      const __m256i p = dot_s8(_mm256_shuffle_epi8(table, nibbles16(blk.qs + 16 * j)), load32(a[j].q));
      const __m256 scale = _mm256_set1_ps(d * static_cast<float>(ls) * a[j].d);
      acc[j % 2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[j % 2]);
    }
  }
  return hsum(_mm256_add_ps(acc[0], acc[1]));
#else
  float sum = 0.f;
  for (int64_t s = 0; s < nsb; ++s, a += 8) {
    const BlockIQ4_XS& blk = w[s];
    const float d = half(blk.d);
    for (int j = 0; j < 8; ++j) {
      const int ls = (((blk.scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | ((blk.scales_h >> (2 * j)) & 3) << 4) - 32;
      sum += d * static_cast<float>(ls) * a[j].d * dot_iq4_block(a[j], blk.qs + 16 * j);
    }
  }
  return sum;
#endif
}

// q4_K / q5_K: 8 sub-blocks of 32, y = d * sc * code - dmin * m.
template <bool kFifthBit>
float dot_q45_k(const ActBlock* a, const void* row, int64_t nsb) {
  float sum = 0.f, mins = 0.f;
#ifdef STRATA_QDOT_AVX2
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  float min_acc[2] = {0.f, 0.f};
#endif
  for (int64_t s = 0; s < nsb; ++s, a += 8) {
    const uint8_t *packed, *qs, *qh = nullptr;
    uint16_t d16, dmin16;
    if constexpr (kFifthBit) {
      const auto& blk = static_cast<const BlockQ5_K*>(row)[s];
      packed = blk.scales, qs = blk.qs, qh = blk.qh, d16 = blk.d, dmin16 = blk.dmin;
    } else {
      const auto& blk = static_cast<const BlockQ4_K*>(row)[s];
      packed = blk.scales, qs = blk.qs, d16 = blk.d, dmin16 = blk.dmin;
    }
    const float d = half(d16), dmin = half(dmin16);
#ifdef STRATA_QDOT_AVX2
    const __m256i high_bits = kFifthBit ? load32(qh) : _mm256_setzero_si256();
    for (int j = 0; j < 8; j += 2) {
      const __m256i bytes = load32(qs + 16 * j);
      for (int h = 0; h < 2; ++h) {
        uint8_t sc, m;
        k_scale_min(packed, j + h, &sc, &m);
        __m256i u = _mm256_and_si256(h == 0 ? bytes : _mm256_srli_epi16(bytes, 4), _mm256_set1_epi8(0x0f));
        if constexpr (kFifthBit)
          u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high_bits, j + h),
                                                                     _mm256_set1_epi8(1)), 4));
        const ActBlock& ab = a[j + h];
        acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8(u, load32(ab.q))),
                                 _mm256_set1_ps(d * static_cast<float>(sc) * ab.d), acc[h]);
        min_acc[h] += dmin * static_cast<float>(m) * ab.s;
      }
    }
#else
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m, u[32];
      k_scale_min(packed, j, &sc, &m);
      for (int l = 0; l < 32; ++l) {
        u[l] = static_cast<uint8_t>((qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f);
        if (qh != nullptr) u[l] |= static_cast<uint8_t>(((qh[l] >> j) & 1) << 4);
      }
      sum += d * static_cast<float>(sc) * a[j].d * static_cast<float>(sum_u8(u, a[j].q, 32));
      mins += dmin * static_cast<float>(m) * a[j].s;
    }
#endif
  }
#ifdef STRATA_QDOT_AVX2
  sum = hsum(_mm256_add_ps(acc[0], acc[1]));
  mins = min_acc[0] + min_acc[1];
#endif
  return sum - mins;
}

// q2_K, q3_K, q6_K: 16 sub-blocks of 16 with integer scales. For activation block j (elements 32j..32j+31)
// `codes` gives its 32 unsigned codes; the value is scale * (code - zero) (q2_K: d * sc * code - dmin * m).
template <typename Codes>
inline void dot_16s(const ActBlock& ab, const Codes& codes, int s0, int s1, int zero, float d, Acc& acc,
                    float& offsets) {
#ifdef STRATA_QDOT_AVX2
  const __m256i p = dot_u8_scaled(codes(), load32(ab.q), s0, s1);
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * ab.d), acc);
#else
  uint8_t u[32];
  codes(u);
  acc += d * ab.d * static_cast<float>(s0 * sum_u8(u, ab.q, 16) + s1 * sum_u8(u + 16, ab.q + 16, 16));
#endif
  if (zero != 0) offsets += d * ab.d * static_cast<float>(zero * (s0 * ab.half_sum[0] + s1 * ab.half_sum[1]));
}

float dot_q6_k(const ActBlock* a, const BlockQ6_K* w, int64_t nsb) {
  float offsets = 0.f;
  Acc acc = acc_zero();
  for (int64_t s = 0; s < nsb; ++s, a += 8) {
    const BlockQ6_K& blk = w[s];
    const float d = half(blk.d);
    for (int j = 0; j < 8; ++j) {
      const int h = j / 4, k = j % 4;
      const uint8_t* ql = blk.ql + 64 * h + 32 * (k % 2);
      const uint8_t* qh = blk.qh + 32 * h;
#ifdef STRATA_QDOT_AVX2
      auto codes = [&] {
        const __m256i low = _mm256_and_si256(_mm256_srli_epi16(load32(ql), 4 * (k / 2)), _mm256_set1_epi8(0x0f));
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(load32(qh), 2 * k), _mm256_set1_epi8(3));
        return _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
      };
#else
      auto codes = [&](uint8_t* u) {
        for (int l = 0; l < 32; ++l)
          u[l] = static_cast<uint8_t>(((ql[l] >> (4 * (k / 2))) & 0x0f) | ((qh[l] >> (2 * k)) & 3) << 4);
      };
#endif
      dot_16s(a[j], codes, blk.scales[2 * j], blk.scales[2 * j + 1], -32, d, acc, offsets);
    }
  }
  return acc_total(acc) + offsets;
}

float dot_q3_k(const ActBlock* a, const BlockQ3_K* w, int64_t nsb) {
  float offsets = 0.f;
  Acc acc = acc_zero();
  for (int64_t s = 0; s < nsb; ++s, a += 8) {
    const BlockQ3_K& blk = w[s];
    const float d = half(blk.d);
    int8_t scales[16];
    q3k_scales(blk.scales, scales);
    for (int j = 0; j < 8; ++j) {
      const int g = j / 4, k = j % 4;
      const uint8_t* qs = blk.qs + 32 * g;
#ifdef STRATA_QDOT_AVX2
      auto codes = [&] {
        const __m256i low = _mm256_and_si256(_mm256_srli_epi16(load32(qs), 2 * k), _mm256_set1_epi8(3));
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(load32(blk.hmask), 4 * g + k), _mm256_set1_epi8(1));
        return _mm256_or_si256(low, _mm256_slli_epi16(high, 2));
      };
#else
      auto codes = [&](uint8_t* u) {
        for (int l = 0; l < 32; ++l)
          u[l] = static_cast<uint8_t>(((qs[l] >> (2 * k)) & 3) | ((blk.hmask[l] >> (4 * g + k)) & 1) << 2);
      };
#endif
      dot_16s(a[j], codes, scales[2 * j], scales[2 * j + 1], -4, d, acc, offsets);
    }
  }
  return acc_total(acc) + offsets;
}

float dot_q2_k(const ActBlock* a, const BlockQ2_K* w, int64_t nsb) {
  float mins = 0.f;
  Acc acc = acc_zero();
  for (int64_t s = 0; s < nsb; ++s, a += 8) {
    const BlockQ2_K& blk = w[s];
    const float d = half(blk.d), dmin = half(blk.dmin);
    for (int j = 0; j < 8; ++j) {
      const int g = j / 4, k = j % 4;
      const uint8_t* qs = blk.qs + 32 * g;
#ifdef STRATA_QDOT_AVX2
      auto codes = [&] { return _mm256_and_si256(_mm256_srli_epi16(load32(qs), 2 * k), _mm256_set1_epi8(3)); };
#else
      auto codes = [&](uint8_t* u) {
        for (int l = 0; l < 32; ++l) u[l] = static_cast<uint8_t>((qs[l] >> (2 * k)) & 3);
      };
#endif
      const uint8_t s0 = blk.scales[2 * j], s1 = blk.scales[2 * j + 1];
      float unused = 0.f;
      dot_16s(a[j], codes, s0 & 0x0f, s1 & 0x0f, 0, d, acc, unused);
      const ActBlock& ab = a[j];
      mins += dmin * ab.d * static_cast<float>((s0 >> 4) * ab.half_sum[0] + (s1 >> 4) * ab.half_sum[1]);
    }
  }
  return acc_total(acc) - mins;
}

// ---- several activation rows against one weight row (prefill) ----------------------------------------
// The K-quants spend most of a dot on unpacking codes and scales; with up to 4 activation rows the
// unpacked register is reused by each, and only the maddubs/scale steps repeat per row.
#ifdef STRATA_QDOT_AVX2

template <int T, bool kFifthBit>
void dot_q45_k_tokens(const ActBlock* const* a, const void* row, int64_t nsb, float* out) {
  __m256 acc[T];
  float mins[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps(), mins[t] = 0.f;
  for (int64_t s = 0; s < nsb; ++s) {
    const uint8_t *packed, *qs, *qh = nullptr;
    uint16_t d16, dmin16;
    if constexpr (kFifthBit) {
      const auto& blk = static_cast<const BlockQ5_K*>(row)[s];
      packed = blk.scales, qs = blk.qs, qh = blk.qh, d16 = blk.d, dmin16 = blk.dmin;
    } else {
      const auto& blk = static_cast<const BlockQ4_K*>(row)[s];
      packed = blk.scales, qs = blk.qs, d16 = blk.d, dmin16 = blk.dmin;
    }
    const float d = half(d16), dmin = half(dmin16);
    const __m256i high_bits = kFifthBit ? load32(qh) : _mm256_setzero_si256();
    for (int j = 0; j < 8; j += 2) {
      const __m256i bytes = load32(qs + 16 * j);
      for (int h = 0; h < 2; ++h) {
        uint8_t sc, m;
        k_scale_min(packed, j + h, &sc, &m);
        __m256i u = _mm256_and_si256(h == 0 ? bytes : _mm256_srli_epi16(bytes, 4), _mm256_set1_epi8(0x0f));
        if constexpr (kFifthBit)
          u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(high_bits, j + h),
                                                                     _mm256_set1_epi8(1)), 4));
        const float ds = d * static_cast<float>(sc), dm = dmin * static_cast<float>(m);
        for (int t = 0; t < T; ++t) {
          const ActBlock& ab = a[t][8 * s + j + h];
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8(u, load32(ab.q))), _mm256_set1_ps(ds * ab.d), acc[t]);
          mins[t] += dm * ab.s;
        }
      }
    }
  }
  for (int t = 0; t < T; ++t) out[t] = hsum(acc[t]) - mins[t];
}

template <int T>
void dot_q6_k_tokens(const ActBlock* const* a, const BlockQ6_K* w, int64_t nsb, float* out) {
  __m256 acc[T];
  float offsets[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps(), offsets[t] = 0.f;
  for (int64_t s = 0; s < nsb; ++s) {
    const BlockQ6_K& blk = w[s];
    const float d = half(blk.d);
    for (int j = 0; j < 8; ++j) {
      const int h = j / 4, k = j % 4;
      const uint8_t* ql = blk.ql + 64 * h + 32 * (k % 2);
      const uint8_t* qh = blk.qh + 32 * h;
      const __m256i low = _mm256_and_si256(_mm256_srli_epi16(load32(ql), 4 * (k / 2)), _mm256_set1_epi8(0x0f));
      const __m256i high = _mm256_and_si256(_mm256_srli_epi16(load32(qh), 2 * k), _mm256_set1_epi8(3));
      const __m256i codes = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
      const int s0 = blk.scales[2 * j], s1 = blk.scales[2 * j + 1];
      const __m256i scales =
          _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(s1)), _mm_set1_epi16(static_cast<int16_t>(s0)));
      for (int t = 0; t < T; ++t) {
        const ActBlock& ab = a[t][8 * s + j];
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(codes, load32(ab.q)), scales);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * ab.d), acc[t]);
        offsets[t] += d * ab.d * static_cast<float>(-32 * (s0 * ab.half_sum[0] + s1 * ab.half_sum[1]));
      }
    }
  }
  for (int t = 0; t < T; ++t) out[t] = hsum(acc[t]) + offsets[t];
}

template <int T, typename Block, bool kFifthBit, bool kMin>
void dot_legacy_tokens(const ActBlock* const* a, const Block* w, int64_t nb, float* out) {
  __m256 acc[T];
  float offsets[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps(), offsets[t] = 0.f;
  for (int64_t b = 0; b < nb; ++b) {
    const Block& blk = w[b];
    const float d = half(scale_of(blk));
    float offset;
    if constexpr (kMin) {
      offset = half(blk.m);
    } else {
      offset = kFifthBit ? -16.f * d : -8.f * d;
    }
    __m256i u = nibbles16(nibbles_of(blk));
    if constexpr (kFifthBit) u = _mm256_or_si256(u, bits_to_0x10(load_u32(blk.qh)));
    for (int t = 0; t < T; ++t) {
      const ActBlock& ab = a[t][b];
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8(u, load32(ab.q))), _mm256_set1_ps(d * ab.d), acc[t]);
      offsets[t] += offset * ab.s;
    }
  }
  for (int t = 0; t < T; ++t) out[t] = hsum(acc[t]) + offsets[t];
}

template <typename Block>
const Block* as(const void* row) {
  return static_cast<const Block*>(row);
}

template <int T>
[[maybe_unused]] bool dot_tokens(const ActBlock* const* x, const void* row, DType dtype, int64_t k, float* out) {
  const int64_t nb = k / 32, nsb = k / kQKBlock;
  switch (dtype) {
    case DType::kQ4_0: dot_legacy_tokens<T, BlockQ4_0, false, false>(x, as<BlockQ4_0>(row), nb, out); return true;
    case DType::kQ4_1: dot_legacy_tokens<T, BlockQ4_1, false, true>(x, as<BlockQ4_1>(row), nb, out); return true;
    case DType::kQ5_0: dot_legacy_tokens<T, BlockQ5_0, true, false>(x, as<BlockQ5_0>(row), nb, out); return true;
    case DType::kQ5_1: dot_legacy_tokens<T, BlockQ5_1, true, true>(x, as<BlockQ5_1>(row), nb, out); return true;
    case DType::kQ4_K: dot_q45_k_tokens<T, false>(x, row, nsb, out); return true;
    case DType::kQ5_K: dot_q45_k_tokens<T, true>(x, row, nsb, out); return true;
    case DType::kQ6_K: dot_q6_k_tokens<T>(x, static_cast<const BlockQ6_K*>(row), nsb, out); return true;
    default: return false;
  }
}

#endif

}  // namespace

namespace {

float max_abs_of(const float* x, int64_t n) {
#ifdef STRATA_QDOT_AVX2
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 amax = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  return _mm_cvtss_f32(m4);
#else
  float max_abs = 0.f;
  for (int64_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
  return max_abs;
#endif
}

// One block of 32 with the scale of max_abs (its own or its 256-element run's).
void quantize_block(const float* x, float max_abs, bool shared, ActBlock& a) {
  a.d = max_abs / 127.f;
  const float inv = max_abs > 0.f ? 127.f / max_abs : 0.f;
#ifdef STRATA_QDOT_AVX2
  __m256i q[4];
  for (int i = 0; i < 4; ++i)
    q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), _mm256_set1_ps(inv)));  // round to even
  const __m256i q16a = _mm256_packs_epi32(q[0], q[1]), q16b = _mm256_packs_epi32(q[2], q[3]);
  // packs interleaves 128-bit lanes; the permute puts the 32 bytes back in element order.
  const __m256i q8 =
      _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16a, q16b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(a.q), q8);
#else
  for (int i = 0; i < 32; ++i) a.q[i] = static_cast<int8_t>(std::nearbyint(x[i] * inv));
#endif
  int h0 = 0, h1 = 0;
  for (int i = 0; i < 16; ++i) h0 += a.q[i], h1 += a.q[i + 16];
  a.half_sum[0] = static_cast<int16_t>(h0);
  a.half_sum[1] = static_cast<int16_t>(h1);
  a.s = a.d * static_cast<float>(h0 + h1);
  a.shared = shared ? 1 : 0;
}

}  // namespace

void quantize_activations(const float* x, int64_t k, ActBlock* out) {
  for (int64_t b = 0; b < k / 32; ++b, x += 32) quantize_block(x, max_abs_of(x, 32), false, out[b]);
}

void quantize_activations_256(const float* x, int64_t k, ActBlock* out) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, k % 256 == 0, "quantize_activations_256: k = ", k,
                    " is not a multiple of 256");
  for (int64_t r = 0; r < k / 256; ++r, x += 256, out += 8) {
    const float max_abs = max_abs_of(x, 256);
    for (int b = 0; b < 8; ++b) quantize_block(x + 32 * b, max_abs, true, out[b]);
  }
}

// f8_e4m3_b128: the e4m3 bytes through a 256-entry value table (gathered 8 at a time under AVX2), times the
// activation codes in f32 (each product is exact: 4 significant bits x 8), one float step per 32 elements.
namespace {

constexpr auto kE4m3Table = [] {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = e4m3_to_f32(static_cast<uint8_t>(i));
  return t;
}();

float dot_f8(const ActBlock* a, const BlockF8B128* w, int64_t nsb) {
  float sum = 0.f;
  for (int64_t b = 0; b < nsb; ++b) {
    for (int sub = 0; sub < 4; ++sub) {
      const ActBlock& ab = a[b * 4 + sub];
      const uint8_t* q = w[b].q + sub * 32;
#ifdef STRATA_QDOT_AVX2
      __m256 acc = _mm256_setzero_ps();
      for (int i = 0; i < 32; i += 8) {
        const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i)));
        const __m256 wv = _mm256_i32gather_ps(kE4m3Table.data(), idx, 4);
        const __m256i xi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(ab.q + i)));
        acc = _mm256_fmadd_ps(wv, _mm256_cvtepi32_ps(xi), acc);
      }
      const float s = hsum(acc);
#else
      float s = 0.f;
      for (int i = 0; i < 32; ++i) s += kE4m3Table[q[i]] * static_cast<float>(ab.q[i]);
#endif
      sum += w[b].scale * ab.d * s;
    }
  }
  return sum;
}

}  // namespace

float dot_quant(const ActBlock* x, const void* row, DType dtype, int64_t k) {
  const int64_t nb = k / 32, nsb = k / kQKBlock;
  switch (dtype) {
    case DType::kQ8_0: return dot_q8_0(x, static_cast<const BlockQ8_0*>(row), nb);
    case DType::kQ4_0: return dot_legacy<BlockQ4_0, false, false>(x, static_cast<const BlockQ4_0*>(row), nb);
    case DType::kQ4_1: return dot_legacy<BlockQ4_1, false, true>(x, static_cast<const BlockQ4_1*>(row), nb);
    case DType::kQ5_0: return dot_legacy<BlockQ5_0, true, false>(x, static_cast<const BlockQ5_0*>(row), nb);
    case DType::kQ5_1: return dot_legacy<BlockQ5_1, true, true>(x, static_cast<const BlockQ5_1*>(row), nb);
    case DType::kIQ4_NL: return dot_iq4_nl(x, static_cast<const BlockIQ4_NL*>(row), nb);
    case DType::kIQ4_XS: return dot_iq4_xs(x, static_cast<const BlockIQ4_XS*>(row), nsb);
    case DType::kQ4_K: return dot_q45_k<false>(x, row, nsb);
    case DType::kQ5_K: return dot_q45_k<true>(x, row, nsb);
    case DType::kQ6_K: return dot_q6_k(x, static_cast<const BlockQ6_K*>(row), nsb);
    case DType::kQ3_K: return dot_q3_k(x, static_cast<const BlockQ3_K*>(row), nsb);
    case DType::kQ2_K: return dot_q2_k(x, static_cast<const BlockQ2_K*>(row), nsb);
    case DType::kF8_B128: return dot_f8(x, static_cast<const BlockF8B128*>(row), k / kF8Block);
    default:
      STRATA_THROW(ErrorKind::kInvalidArgument, "no quantized dot product for weights of dtype ", dtype_name(dtype));
  }
}

void dot_quant_tokens(const ActBlock* const* x, int count, const void* row, DType dtype, int64_t k, float* out) {
  STRATA_CHECK(count >= 1 && count <= kMaxDotTokens, "dot_quant_tokens takes 1 to ", kMaxDotTokens, " rows, not ",
               count);
#ifdef STRATA_QDOT_AVX2
  bool done = false;
  switch (count) {
    case 1: break;  // decode: dot_quant's two-accumulator loops
    case 2: done = dot_tokens<2>(x, row, dtype, k, out); break;
    case 3: done = dot_tokens<3>(x, row, dtype, k, out); break;
    default: done = dot_tokens<4>(x, row, dtype, k, out); break;
  }
  if (done) return;
#endif
  for (int t = 0; t < count; ++t) out[t] = dot_quant(x[t], row, dtype, k);
}

}  // namespace strata::cpu
