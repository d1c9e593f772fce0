// runtime/cpu/quant_repack.cpp: the interleaved layout of the 32-element GGUF types and its (8 rows x up to
// 4 tokens) tiles.
//
// Layout: group g (rows 8g..8g+7), block b (columns 32b..32b+31) is Format::block_bytes() bytes at
// data_ + g * group_bytes_ + b * block_bytes():
//   the 8 rows' f16 scales d; for q4_1/q5_1 the 8 rows' f16 minimums m;
//   chunks of 32 bytes where chunk c holds bytes 4c..4c+3 of each row's codes, row after row;
//   for q5_0/q5_1 eight 32-bit words of fifth bits: word 2c + h, bit 4r + e is element 16h + 4c + e of row r.
// A nibble byte j holds elements j (low nibble) and j + 16 (high nibble), so chunk c's low nibbles are
// elements 4c..4c+3 of each row and its high nibbles 16+4c..16+4c+3; q8_0 chunk c is elements 4c..4c+3.
//
// Integer sums: the 4/5-bit types multiply the unsigned code u and apply the offset once per block (minus
// 8 or 16 times sum(x) in integers, or + m * d_x * sum(x) in float). maddubs pairs stay within int16
// (|u x| <= 31 * 127 * 2 = 7874), so 4 pairs (5-bit) or 8 (4-bit) add in int16 before a widening madd. q8_0's
// signed codes move their sign onto the activation (the maddubs sign trick, as in quant_dot.cpp) and widen
// every chunk (|pair| up to 2 * 128 * 127).
#include "runtime/cpu/quant_repack.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define STRATA_REPACK_AVX2 1
#endif

#include "runtime/cpu/kquant_repack.h"
#include "runtime/error.h"
#include "runtime/quant_blocks.h"

namespace strata::cpu {
namespace {

constexpr int64_t kRows = RepackedWeight::kGroupRows;
constexpr int kTile = 4;  // activation rows per register tile

// Where a type's fields sit in its GGUF block and in a repacked group block.
struct Format {
  bool min = false, fifth = false;
  int code_offset = 0;  // 8 (q4_0) or 16 (q5_0) subtracted from the code; 0 with a min
  int src_bytes = 0, src_d = 0, src_m = 0, src_qh = 0, src_codes = 0, codes = 16;
  int m_at() const { return 2 * kRows; }
  int codes_at() const { return 2 * kRows * (min ? 2 : 1); }
  int bits_at() const { return codes_at() + kRows * codes; }
  int block_bytes() const { return bits_at() + (fifth ? 32 : 0); }
};

Format format_of(DType dt) {
  Format f;
  switch (dt) {
    case DType::kQ4_0: f.code_offset = 8, f.src_bytes = 18, f.src_codes = 2; break;
    case DType::kQ4_1: f.min = true, f.src_bytes = 20, f.src_m = 2, f.src_codes = 4; break;
    case DType::kQ5_0: f.fifth = true, f.code_offset = 16, f.src_bytes = 22, f.src_qh = 2, f.src_codes = 6; break;
    case DType::kQ5_1: f.min = f.fifth = true, f.src_bytes = 24, f.src_m = 2, f.src_qh = 4, f.src_codes = 8; break;
    case DType::kQ8_0: f.src_bytes = 34, f.src_codes = 2, f.codes = 32; break;
    default: STRATA_THROW(ErrorKind::kInvalidArgument, "no repacked CPU layout for ", dtype_name(dt));
  }
  return f;
}

int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// out[t][r]: the tile's dot products (without bias) of activation rows x[t] with the group's 8 rows.
#ifdef STRATA_REPACK_AVX2

// Bit i of `bits` -> 0x10 in byte i.
inline __m256i bits_to_0x10(int32_t bits) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(bits),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i mask = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask), _mm256_set1_epi8(0x10));
}

// Decode streams the copy from DRAM once per token: ask for the bytes 2 KiB ahead (groups lie back to back, so
// this runs on into the next group) while this block computes (measured on q4_K/q6_K/iq4_nl, kquant_repack.cpp).
inline void prefetch_ahead(const uint8_t* block, int64_t bytes) {
  for (int64_t line = 0; line < bytes; line += 64)
    _mm_prefetch(reinterpret_cast<const char*>(block + 2048 + line), _MM_HINT_T0);
}

// The 4/5-bit types. Each block's 8 code vectors are unpacked once into registers, then each token's 8
// products are summed token by token (interleaving the tokens' chains needs more than 16 registers).
template <int T, bool kFifth, bool kMin>
void tile_nibbles(const Format& f, const uint8_t* grp, int64_t nb, const ActBlock* const* x, float (*out)[kRows]) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i nibble = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  const int64_t block_bytes = f.block_bytes();
  for (int64_t b = 0; b < nb; ++b, grp += block_bytes) {
    prefetch_ahead(grp, block_bytes);
    __m256i lo[4], hi[4];
    for (int c = 0; c < 4; ++c) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(grp + f.codes_at() + 32 * c));
      lo[c] = _mm256_and_si256(v, nibble);
      hi[c] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
      if constexpr (kFifth) {
        lo[c] = _mm256_or_si256(lo[c], bits_to_0x10(load_i32(grp + f.bits_at() + 8 * c)));
        hi[c] = _mm256_or_si256(hi[c], bits_to_0x10(load_i32(grp + f.bits_at() + 8 * c + 4)));
      }
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(grp)));
    __m256 mw;
    if constexpr (kMin) mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(grp + f.m_at())));
    for (int t = 0; t < T; ++t) {
      const ActBlock& a = x[t][b];
      auto product = [&](__m256i codes, int at) {
        return _mm256_maddubs_epi16(codes, _mm256_set1_epi32(load_i32(a.q + at)));
      };
      __m256i sum;
      if constexpr (kFifth) {  // two int16 chains of 4 pairs each
        __m256i s_lo = product(lo[0], 0), s_hi = product(hi[0], 16);
        for (int c = 1; c < 4; ++c) {
          s_lo = _mm256_add_epi16(s_lo, product(lo[c], 4 * c));
          s_hi = _mm256_add_epi16(s_hi, product(hi[c], 16 + 4 * c));
        }
        sum = _mm256_madd_epi16(s_lo, ones);
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(s_hi, ones));
      } else {
        __m256i s16 = _mm256_add_epi16(product(lo[0], 0), product(hi[0], 16));
        for (int c = 1; c < 4; ++c) {
          s16 = _mm256_add_epi16(s16, product(lo[c], 4 * c));
          s16 = _mm256_add_epi16(s16, product(hi[c], 16 + 4 * c));
        }
        sum = _mm256_madd_epi16(s16, ones);
      }
      if constexpr (kMin) {
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dw, _mm256_set1_ps(a.d)), acc[t]);
        acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(a.s), acc[t]);
      } else {
        sum = _mm256_sub_epi32(sum, _mm256_set1_epi32(f.code_offset * (a.half_sum[0] + a.half_sum[1])));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dw, _mm256_set1_ps(a.d)), acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) _mm256_storeu_ps(out[t], acc[t]);
}

// q8_0 needs |w| and w per chunk (the sign trick): too many registers to unpack a whole block, so the
// chunks go outer and the tokens share each loaded chunk.
template <int T>
void tile_q8_0(const Format& f, const uint8_t* grp, int64_t nb, const ActBlock* const* x, float (*out)[kRows]) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t block_bytes = f.block_bytes();
  for (int64_t b = 0; b < nb; ++b, grp += block_bytes) {
    prefetch_ahead(grp, block_bytes);
    __m256i s32[T];
    for (int t = 0; t < T; ++t) s32[t] = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(grp + f.codes_at() + 32 * c));
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

template <int T>
void tile(DType dt, const Format& f, const uint8_t* grp, int64_t nb, const ActBlock* const* x, float (*out)[kRows]) {
  switch (dt) {
    case DType::kQ4_0: tile_nibbles<T, false, false>(f, grp, nb, x, out); break;
    case DType::kQ4_1: tile_nibbles<T, false, true>(f, grp, nb, x, out); break;
    case DType::kQ5_0: tile_nibbles<T, true, false>(f, grp, nb, x, out); break;
    case DType::kQ5_1: tile_nibbles<T, true, true>(f, grp, nb, x, out); break;
    default: tile_q8_0<T>(f, grp, nb, x, out); break;
  }
}

#else

// The portable path: the same integer sums from the same layout, one row and one token at a time.
template <int T>
void tile(DType dt, const Format& f, const uint8_t* grp, int64_t nb, const ActBlock* const* x, float (*out)[kRows]) {
  for (int t = 0; t < T; ++t)
    for (int64_t r = 0; r < kRows; ++r) out[t][r] = 0.f;
  for (int64_t b = 0; b < nb; ++b, grp += f.block_bytes()) {
    for (int64_t r = 0; r < kRows; ++r) {
      uint16_t d16, m16 = 0;
      std::memcpy(&d16, grp + 2 * r, 2);
      if (f.min) std::memcpy(&m16, grp + f.m_at() + 2 * r, 2);
      for (int t = 0; t < T; ++t) {
        const ActBlock& a = x[t][b];
        int sum = 0;
        for (int e = 0; e < 32; ++e) {
          int code;
          if (dt == DType::kQ8_0) {
            code = static_cast<int8_t>(grp[f.codes_at() + 32 * (e / 4) + 4 * r + e % 4]);
          } else {
            const int c = (e % 16) / 4, h = e / 16;
            code = (grp[f.codes_at() + 32 * c + 4 * r + e % 4] >> (4 * h)) & 0x0f;
            if (f.fifth) {
              const auto word = static_cast<uint32_t>(load_i32(grp + f.bits_at() + 4 * (2 * c + h)));
              code |= static_cast<int>((word >> (4 * r + e % 4)) & 1u) << 4;
            }
            code -= f.code_offset;
          }
          sum += code * a.q[e];
        }
        out[t][r] += f16_to_f32(d16) * a.d * static_cast<float>(sum) + (f.min ? f16_to_f32(m16) * a.s : 0.f);
      }
    }
  }
}

#endif

}  // namespace

void RepackArena::Free::operator()(uint8_t* p) const { std::free(p); }

uint8_t* RepackArena::allocate(size_t bytes) {
  constexpr size_t kHuge = size_t{2} << 20, kChunk = size_t{32} << 20;
  bytes = (bytes + 63) / 64 * 64;
  const std::lock_guard<std::mutex> lock(mutex_);
  if (chunks_.empty() || used_ + bytes > capacity_) {
    capacity_ = std::max(kChunk, (bytes + kHuge - 1) / kHuge * kHuge);
    auto* chunk = static_cast<uint8_t*>(std::aligned_alloc(kHuge, capacity_));
    STRATA_CHECK_KIND(ErrorKind::kOutOfMemory, chunk != nullptr, "out of host memory for ", capacity_ >> 20,
                      " MiB more of the CPU's repacked copy of the block-quantized weights");
    madvise(chunk, capacity_, MADV_HUGEPAGE);  // a hint: without THP the chunk is ordinary pages
    chunks_.emplace_back(chunk);
    used_ = 0;
  }
  uint8_t* piece = chunks_.back().get() + used_;
  used_ += bytes;
  return piece;
}

bool RepackedWeight::supports(DType dtype) {
  return dtype == DType::kQ4_0 || dtype == DType::kQ4_1 || dtype == DType::kQ5_0 || dtype == DType::kQ5_1 ||
         dtype == DType::kQ8_0 || kquant::supports(dtype);
}

int64_t RepackedWeight::block_elems(DType dtype) { return kquant::supports(dtype) ? kquant::block_elems(dtype) : 32; }

RepackedWeight::RepackedWeight(const void* rows, DType dtype, int64_t n, int64_t k, RepackArena* arena)
    : dtype_(dtype), n_(n), k_(k) {
  STRATA_CHECK(supports(dtype), "repacked CPU weights are q4_0, q4_1, q5_0, q5_1, q8_0, the K-quants or iq4, not ",
               dtype_name(dtype));
  const int64_t block = block_elems(dtype);
  STRATA_CHECK(n > 0 && k > 0 && k % block == 0, "repacked CPU weights: [", n, ", ", k, "] needs whole ", block,
               "-element blocks of ", dtype_name(dtype), " per row");
  kquant_ = kquant::supports(dtype);
  const int64_t nb = k / 32;
  const Format f = kquant_ ? Format{} : format_of(dtype);
  group_bytes_ = kquant_ ? kquant::group_bytes(dtype, k) : nb * f.block_bytes();
  const auto total = static_cast<size_t>(groups() * group_bytes_);
  if (arena != nullptr) {
    data_ = arena->allocate(total);
  } else {
    storage_.reset(new uint8_t[total + 64]);
    data_ = storage_.get() + (64 - reinterpret_cast<uintptr_t>(storage_.get()) % 64) % 64;
  }
  std::memset(data_, 0, total);  // the last group's missing rows: zero scales and codes contribute nothing
  const auto* src = static_cast<const uint8_t*>(rows);
  if (kquant_) {
    const int64_t row_bytes = k / block * dtype_block_bytes(dtype);
    // Unpacking codes and scales costs a few ns an element (seconds for a 7B model on one core): groups in parallel.
#pragma omp parallel for schedule(static) if (n * k >= (int64_t{1} << 20))
    for (int64_t g = 0; g < groups(); ++g)
      kquant::pack_group(dtype, src + g * kRows * row_bytes, std::min(kRows, n - g * kRows), k,
                         data_ + g * group_bytes_);
    return;
  }
  for (int64_t r = 0; r < n; ++r) {
    const int64_t g = r / kRows, lane = r % kRows;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* in = src + (r * nb + b) * f.src_bytes;
      uint8_t* out = data_ + g * group_bytes_ + b * f.block_bytes();
      std::memcpy(out + 2 * lane, in, 2);
      if (f.min) std::memcpy(out + f.m_at() + 2 * lane, in + f.src_m, 2);
      for (int c = 0; c < f.codes / 4; ++c)
        std::memcpy(out + f.codes_at() + 32 * c + 4 * lane, in + f.src_codes + 4 * c, 4);
      if (f.fifth) {
        const auto qh = static_cast<uint32_t>(load_i32(in + f.src_qh));
        for (int w = 0; w < 8; ++w) {  // word 2c + h takes elements 16h + 4c .. +3 into bits 4 lane .. +3
          uint32_t word = static_cast<uint32_t>(load_i32(out + f.bits_at() + 4 * w));
          word |= ((qh >> (16 * (w % 2) + 4 * (w / 2))) & 0x0fu) << (4 * lane);
          std::memcpy(out + f.bits_at() + 4 * w, &word, 4);
        }
      }
    }
  }
}

bool RepackedWeight::wants_activations_256(int64_t m) const {
  return kquant_ && kquant::wants_activations_256(dtype_, m);
}

void RepackedWeight::multiply(const ActBlock* x, int64_t m, int64_t g_begin, int64_t g_end, const float* bias,
                              float* out, int64_t ldo) const {
  const int64_t nb = k_ / 32;
  const Format f = kquant_ ? Format{} : format_of(dtype_);
  const int64_t tokens = kquant_ ? kquant::kMaxTokens : kTile;  // per call of the tile
  float tile_out[kquant::kMaxTokens][kRows];
  for (int64_t g = g_begin; g < g_end; ++g) {
    const uint8_t* grp = data_ + g * group_bytes_;
    const int64_t r0 = g * kRows, valid = std::min(kRows, n_ - r0);
    for (int64_t i = 0; i < m; i += tokens) {
      const int t_count = static_cast<int>(std::min<int64_t>(tokens, m - i));
      const ActBlock* xt[kquant::kMaxTokens];
      for (int t = 0; t < t_count; ++t) xt[t] = x + (i + t) * nb;
      if (kquant_) {
        kquant::multiply_group(dtype_, grp, k_, xt, t_count, tile_out);
      } else {
        switch (t_count) {
          case 1: tile<1>(dtype_, f, grp, nb, xt, tile_out); break;
          case 2: tile<2>(dtype_, f, grp, nb, xt, tile_out); break;
          case 3: tile<3>(dtype_, f, grp, nb, xt, tile_out); break;
          default: tile<kTile>(dtype_, f, grp, nb, xt, tile_out); break;
        }
      }
      for (int t = 0; t < t_count; ++t) {
        float* o = out + (i + t) * ldo + r0;
        for (int64_t r = 0; r < valid; ++r) o[r] = tile_out[t][r] + (bias != nullptr ? bias[r0 + r] : 0.f);
      }
    }
  }
}

}  // namespace strata::cpu
