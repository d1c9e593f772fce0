// runtime/cpu/kquant_repack.cpp: the 8-row interleaved layout of the K-quants and iq4_xs / iq4_nl, and its
// (8 rows x up to 4 tokens) tiles, and the chunked prefill path (8+ tokens a call) further down.
//
// Layout of one group (8 rows), super-block s (S = 256 elements, or 32 for iq4_nl) at group + s * sb_bytes:
//   d: the 8 rows' f16 scales; dmin: their f16 minimum scales (q2_K, q4_K, q5_K);
//   scales: per 32-element block b the rows' sub-block scales, a byte per row (q4_K, q5_K: 0..63; iq4_xs:
//     -32..31) or, for 16-element sub-blocks, a (first half, second half) byte pair per row (q3_K: -32..31;
//     q6_K: int8; q2_K: the source byte, scale in the low nibble and min in the high one);
//   mins: q4_K / q5_K, per block the rows' 6-bit minimums;
//   codes, block after block. Register q (0..7) of a block holds elements 4q..4q+3 of every row (4 bytes a
//   row, row after row), assembled from planes of 32-byte chunks (byte i of row r at 4r + i):
//     nibbles (128 bytes): chunk c, low nibble = element 4c + i, high nibble = element 16 + 4c + i;
//     pairs (64 bytes): chunk c, bits 2s..2s+1 = element 4(2s + c) + i;
//     then the top bits: q3_K / q5_K one bit plane (bit q = element 4q + i), q6_K a second pairs plane.
// The copy is at most 4% larger than the GGUF blocks (q3_K; 6-bit packed scales become a byte each).
//
// Integer sums per block and row: unsigned codes times activation codes (maddubs), added in int16 while no
// sum can pass 32767 (the chain length below), then times the integer sub-block scales (madd). A code offset
// (q3_K 4, q6_K 32) comes off as offset x (scale . activation half sums); iq4 codes index the signed table
// and the sign moves onto the activations (as in quant_dot.cpp). Float steps per block and row: d x d_x
// times that sum, then the minimum: -dmin x m x s_x (q4_K, q5_K) or -dmin x d_x x (m . half sums) (q2_K).
// The integer sums are the ones quant_dot.cpp forms per row, so results differ from it only by f32 order.
#include "runtime/cpu/kquant_repack.h"

#include <array>
#include <cstring>
#include <utility>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define STRATA_KQUANT_AVX2 1
#endif

#include "runtime/error.h"
#include "runtime/quant_blocks.h"

namespace strata::cpu::kquant {
namespace {

constexpr int kRows = 8;
constexpr int kChunkedFrom = 8;  // token counts from here take the chunked prefill path

struct Layout {
  int sb = 256;               // elements per super-block
  bool dmin = false;          // an f16 minimum scale per row and super-block
  bool sub16 = false;         // 16-element sub-blocks: a scale pair per row and block
  bool scales = true;         // iq4_nl has only d
  bool mins = false;          // q4_K / q5_K: a 6-bit minimum per row and block
  bool packed_min = false;    // q2_K: the minimum is the scale byte's high nibble
  bool signed_scales = false;
  bool table = false;         // codes index kIq4Values
  int zero = 0;               // subtracted from every code: 4 or 32 (a power of two)
  int low_bits = 4;           // the nibbles (4) or pairs (2) plane
  int high_bits = 0;          // bits above: 0, 1 (a bit plane) or 2 (q6_K: a pairs plane at bits 4..5)

  constexpr int blocks() const { return sb / 32; }
  constexpr int scale_bytes() const { return sub16 ? 16 : 8; }
  constexpr int scales_at() const { return dmin ? 32 : 16; }
  constexpr int mins_at() const { return scales_at() + (scales ? blocks() * scale_bytes() : 0); }
  constexpr int codes_at() const { return mins_at() + (mins ? blocks() * kRows : 0); }
  constexpr int low_bytes() const { return low_bits == 4 ? 128 : 64; }
  constexpr int high_bytes() const { return high_bits == 0 ? 0 : high_bits == 1 ? 32 : 64; }
  constexpr int block_code_bytes() const { return low_bytes() + high_bytes(); }
  constexpr int sb_bytes() const { return codes_at() + blocks() * block_code_bytes(); }
  constexpr int max_code() const { return table ? 127 : (1 << (low_bits + high_bits)) - 1; }
  // maddubs products (each at most 2 x 127 x max_code) that add in int16 without overflow.
  constexpr int chain() const {
    const int n = 32767 / (2 * 127 * max_code());
    return n >= 8 ? 8 : n >= 4 ? 4 : n >= 2 ? 2 : 1;
  }
  constexpr int zero_shift() const { return zero == 32 ? 5 : zero == 4 ? 2 : 0; }
};

constexpr Layout layout_of(DType dt) {
  Layout l;
  switch (dt) {
    case DType::kQ2_K: l.dmin = l.sub16 = l.packed_min = true, l.low_bits = 2; break;
    case DType::kQ3_K: l.sub16 = l.signed_scales = true, l.zero = 4, l.low_bits = 2, l.high_bits = 1; break;
    case DType::kQ4_K: l.dmin = l.mins = true; break;
    case DType::kQ5_K: l.dmin = l.mins = true, l.high_bits = 1; break;
    case DType::kQ6_K: l.sub16 = l.signed_scales = true, l.zero = 32, l.high_bits = 2; break;
    case DType::kIQ4_XS: l.signed_scales = l.table = true; break;
    case DType::kIQ4_NL: l.sb = 32, l.scales = false, l.table = true; break;
    default: break;
  }
  return l;
}

// One source super-block as integers: codes 0..max_code (iq4: table indices), scale bytes per sub-block.
struct Decoded {
  uint16_t d = 0, dmin = 0;
  uint8_t scale[16] = {};
  uint8_t min[8] = {};
  uint8_t code[256] = {};
};

template <typename Block>
Block read_block(const uint8_t* p) {
  Block b;
  std::memcpy(&b, p, sizeof b);
  return b;
}

void decode(DType dt, const uint8_t* p, Decoded& o) {
  switch (dt) {
    case DType::kQ2_K: {
      const auto b = read_block<BlockQ2_K>(p);
      o.d = b.d, o.dmin = b.dmin;
      std::memcpy(o.scale, b.scales, 16);
      for (int j = 0; j < 8; ++j)
        for (int l = 0; l < 32; ++l) o.code[32 * j + l] = (b.qs[32 * (j / 4) + l] >> (2 * (j % 4))) & 3;
      break;
    }
    case DType::kQ3_K: {
      const auto b = read_block<BlockQ3_K>(p);
      o.d = b.d;
      int8_t sc[16];
      q3k_scales(b.scales, sc);
      std::memcpy(o.scale, sc, 16);
      for (int j = 0; j < 8; ++j)
        for (int l = 0; l < 32; ++l)
          o.code[32 * j + l] = static_cast<uint8_t>(((b.qs[32 * (j / 4) + l] >> (2 * (j % 4))) & 3) |
                                                    ((b.hmask[l] >> (4 * (j / 4) + j % 4)) & 1) << 2);
      break;
    }
    case DType::kQ4_K:
    case DType::kQ5_K: {
      const bool five = dt == DType::kQ5_K;
      const auto b4 = five ? BlockQ4_K{} : read_block<BlockQ4_K>(p);
      const auto b5 = five ? read_block<BlockQ5_K>(p) : BlockQ5_K{};
      const uint8_t* packed = five ? b5.scales : b4.scales;
      const uint8_t* qs = five ? b5.qs : b4.qs;
      o.d = five ? b5.d : b4.d, o.dmin = five ? b5.dmin : b4.dmin;
      for (int j = 0; j < 8; ++j) {
        k_scale_min(packed, j, &o.scale[j], &o.min[j]);
        for (int l = 0; l < 32; ++l) {
          o.code[32 * j + l] = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f;
          if (five) o.code[32 * j + l] |= static_cast<uint8_t>(((b5.qh[l] >> j) & 1) << 4);
        }
      }
      break;
    }
    case DType::kQ6_K: {
      const auto b = read_block<BlockQ6_K>(p);
      o.d = b.d;
      std::memcpy(o.scale, b.scales, 16);
      for (int j = 0; j < 8; ++j) {
        const int h = j / 4, k = j % 4;
        const uint8_t* ql = b.ql + 64 * h + 32 * (k % 2);
        const uint8_t* qh = b.qh + 32 * h;
        for (int l = 0; l < 32; ++l)
          o.code[32 * j + l] = static_cast<uint8_t>(((ql[l] >> (4 * (k / 2))) & 0x0f) | ((qh[l] >> (2 * k)) & 3) << 4);
      }
      break;
    }
    case DType::kIQ4_XS:
    case DType::kIQ4_NL: {
      const bool xs = dt == DType::kIQ4_XS;
      const auto bx = xs ? read_block<BlockIQ4_XS>(p) : BlockIQ4_XS{};
      const auto bn = xs ? BlockIQ4_NL{} : read_block<BlockIQ4_NL>(p);
      o.d = xs ? bx.d : bn.d;
      for (int j = 0; j < (xs ? 8 : 1); ++j) {
        const uint8_t* qs = xs ? bx.qs + 16 * j : bn.qs;
        if (xs) {
          const int ls = (((bx.scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | ((bx.scales_h >> (2 * j)) & 3) << 4) - 32;
          o.scale[j] = static_cast<uint8_t>(static_cast<int8_t>(ls));
        }
        for (int l = 0; l < 16; ++l) o.code[32 * j + l] = qs[l] & 0x0f, o.code[32 * j + 16 + l] = qs[l] >> 4;
      }
      break;
    }
    default: STRATA_THROW(ErrorKind::kInternal, "no K-quant layout for ", dtype_name(dt));
  }
}

int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#define STRATA_INLINE inline __attribute__((always_inline))  // kernels' helpers: registers, not memory

template <int N, typename F>
STRATA_INLINE void unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) { (f(std::integral_constant<int, I>{}), ...); }(
      std::make_integer_sequence<int, N>{});
}

#ifdef STRATA_KQUANT_AVX2

inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

// The block's 8 code registers (iq4: the table values, signed).
template <DType kType>
STRATA_INLINE void unpack(const uint8_t* codes, __m256i* u) {
  constexpr Layout l = layout_of(kType);
  if constexpr (l.low_bits == 4) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    unroll<4>([&](auto c) {
      const __m256i v = load32(codes + 32 * c);
      u[c] = _mm256_and_si256(v, m4);
      u[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    });
  } else {
    const __m256i m2 = _mm256_set1_epi8(3);
    unroll<2>([&](auto c) {
      const __m256i v = load32(codes + 32 * c);
      unroll<4>([&](auto s) { u[2 * s + c] = _mm256_and_si256(_mm256_srli_epi16(v, 2 * s), m2); });
    });
  }
  const uint8_t* high = codes + l.low_bytes();
  if constexpr (l.high_bits == 1) {
    const __m256i v = load32(high), bit = _mm256_set1_epi8(static_cast<char>(1 << l.low_bits));
    unroll<8>([&](auto q) {  // bit q of each byte to bit low_bits (the mask drops what crosses bytes)
      __m256i moved;
      if constexpr (q <= l.low_bits) {
        moved = _mm256_slli_epi16(v, l.low_bits - q);
      } else {
        moved = _mm256_srli_epi16(v, q - l.low_bits);
      }
      u[q] = _mm256_or_si256(u[q], _mm256_and_si256(moved, bit));
    });
  } else if constexpr (l.high_bits == 2) {
    const __m256i top = _mm256_set1_epi8(0x30);
    unroll<2>([&](auto c) {
      const __m256i v = load32(high + 32 * c);
      unroll<4>([&](auto s) {  // bits 2s..2s+1 to 4..5
        __m256i moved;
        if constexpr (2 * s <= 4) {
          moved = _mm256_slli_epi16(v, 4 - 2 * s);
        } else {
          moved = _mm256_srli_epi16(v, 2 * s - 4);
        }
        u[2 * s + c] = _mm256_or_si256(u[2 * s + c], _mm256_and_si256(moved, top));
      });
    });
  }
  if constexpr (l.table) {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values));
    const __m256i table = _mm256_set_m128i(t, t);
    unroll<8>([&](auto q) { u[q] = _mm256_shuffle_epi8(table, u[q]); });
  }
}

// Products [from, from + 4 or 8) summed in int16 chains, each chain times `scale` (int16 per lane) into int32.
template <int kChain, int kFrom, int kCount>
STRATA_INLINE __m256i scaled_sum(const __m256i* p, __m256i scale) {
  __m256i total = _mm256_setzero_si256();
  unroll<kCount / kChain>([&](auto c) {
    __m256i s16 = p[kFrom + kChain * c];
    unroll<kChain - 1>([&](auto i) { s16 = _mm256_add_epi16(s16, p[kFrom + kChain * c + i + 1]); });
    total = _mm256_add_epi32(total, _mm256_madd_epi16(s16, scale));
  });
  return total;
}

// Each row's byte (or byte pair) duplicated into both int16 halves of its 32-bit lane.
STRATA_INLINE __m256i widen(__m128i bytes, bool is_signed) {
  return is_signed ? _mm256_cvtepi8_epi16(bytes) : _mm256_cvtepu8_epi16(bytes);
}

constexpr int kPrefetchAhead = 2048;

template <DType kType, int T>
void tile(const uint8_t* grp, int64_t k, const ActBlock* const* x, float (*out)[kRows]) {
  constexpr Layout l = layout_of(kType);
  constexpr int kChain = l.sub16 ? (l.chain() > 4 ? 4 : l.chain()) : l.chain();
  const int64_t nsb = k / l.sb;
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t s = 0; s < nsb; ++s, grp += l.sb_bytes()) {
    const __m256 d = _mm256_cvtph_ps(load16(grp));
    __m256 neg_dmin = _mm256_setzero_ps();
    if constexpr (l.dmin) neg_dmin = _mm256_sub_ps(neg_dmin, _mm256_cvtph_ps(load16(grp + 16)));
    for (int b = 0; b < l.blocks(); ++b) {
      const uint8_t* codes = grp + l.codes_at() + b * l.block_code_bytes();
      // Decode streams the copy from DRAM once per token: ask for the bytes 2 KiB ahead (the groups lie back to
      // back, so this runs on into the next group) while this block computes.
      for (int line = 0; line < l.block_code_bytes(); line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(codes + kPrefetchAhead + line), _MM_HINT_T0);
      __m256i u[8];
      unpack<kType>(codes, u);
      __m256i sc_a = _mm256_set1_epi16(1), sc_b = sc_a, sc_pair = sc_a, min_pair = sc_a;
      __m256 min_term = _mm256_setzero_ps();
      if constexpr (l.scales && !l.sub16) {
        const __m128i s8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(grp + l.scales_at() + 8 * b));
        sc_a = widen(_mm_shuffle_epi8(s8, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)),
                     l.signed_scales);
      } else if constexpr (l.sub16) {
        __m128i p = load16(grp + l.scales_at() + 16 * b);
        if constexpr (l.packed_min) {
          const __m128i m4 = _mm_set1_epi8(0x0f);
          min_pair = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(p, 4), m4));
          p = _mm_and_si128(p, m4);
        }
        sc_pair = widen(p, l.signed_scales);
        sc_a = widen(_mm_shuffle_epi8(p, _mm_setr_epi8(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14)),
                     l.signed_scales);
        sc_b = widen(_mm_shuffle_epi8(p, _mm_setr_epi8(1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15)),
                     l.signed_scales);
      }
      if constexpr (l.mins) {
        const __m128i m8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(grp + l.mins_at() + 8 * b));
        min_term = _mm256_mul_ps(neg_dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(m8)));
      }
      for (int t = 0; t < T; ++t) {
        const ActBlock& a = x[t][s * l.blocks() + b];
        __m256i p[8];
        unroll<8>([&](auto q) {
          const __m256i xq = _mm256_set1_epi32(load_i32(a.q + 4 * q));
          if constexpr (l.table) {
            p[q] = _mm256_maddubs_epi16(_mm256_sign_epi8(u[q], u[q]), _mm256_sign_epi8(xq, u[q]));
          } else {
            p[q] = _mm256_maddubs_epi16(u[q], xq);
          }
        });
        __m256i sum;
        if constexpr (l.sub16) {
          sum = _mm256_add_epi32(scaled_sum<kChain, 0, 4>(p, sc_a), scaled_sum<kChain, 4, 4>(p, sc_b));
        } else {
          sum = scaled_sum<kChain, 0, 8>(p, sc_a);
        }
        // (half 0, half 1) activation sums as the int16 pair of every lane, against sc_pair / min_pair.
        int32_t pair;
        std::memcpy(&pair, a.half_sum, 4);
        const __m256i halves = _mm256_set1_epi32(pair);
        if constexpr (l.zero != 0)
          sum = _mm256_sub_epi32(sum, _mm256_slli_epi32(_mm256_madd_epi16(sc_pair, halves), l.zero_shift()));
        const __m256 dx = _mm256_set1_ps(a.d);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(d, dx), acc[t]);
        if constexpr (l.mins) acc[t] = _mm256_fmadd_ps(min_term, _mm256_set1_ps(a.s), acc[t]);
        if constexpr (l.packed_min)
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(min_pair, halves)), _mm256_mul_ps(neg_dmin, dx),
                                   acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) _mm256_storeu_ps(out[t], acc[t]);
}

// Prefill: a chunk of up to 8 blocks (one super-block; iq4_nl 8 of its 32-element blocks) of the group is
// unpacked once into this L1-resident form, then every token of the call (up to kMaxTokens) multiplies it,
// 4 at a time, with the weights as memory operands. The unpack (bit planes, table lookups, scale widening)
// then costs once per chunk and call instead of once per 4 tokens, and the 4-token inner loop holds no
// weight registers across tokens. iq4: the table's magnitudes and values come from two pshufb lookups at
// fill time (the tile above takes |v| with a vpsignb per token); the values' signs move onto the
// activations (vpsignb measured 3% faster than xor/sub with a sign mask). Time per block and token against
// main's register tiles, 1 thread, 2816 x 1024 weights, 64 tokens (bench/results/quant-cpu-pp-20261208):
// iq4_xs -25%, q3_K -29%, q5_K -24%, q6_K -28%, q2_K -17%, iq4_nl -11% (q4_K: see chunked()).
constexpr int kChunkBlocks = 8;
constexpr auto kIq4Magnitude = [] {
  std::array<int8_t, 16> a{};
  for (int j = 0; j < 16; ++j) a[j] = static_cast<int8_t>(kIq4Values[j] < 0 ? -kIq4Values[j] : kIq4Values[j]);
  return a;
}();
struct alignas(32) Chunk {
  __m256i u[kChunkBlocks][8];     // codes, or iq4 table magnitudes
  __m256i value[kChunkBlocks][8]; // iq4: the table values (signed)
  __m256i sc_a[kChunkBlocks], sc_b[kChunkBlocks], sc_pair[kChunkBlocks], min_pair[kChunkBlocks];
  __m256 d[kChunkBlocks], neg_dmin[kChunkBlocks], min_term[kChunkBlocks];
};

template <DType kType>
STRATA_INLINE void scales_of(const uint8_t* sb, int b, __m256i* sc_a, __m256i* sc_b, __m256i* sc_pair,
                             __m256i* min_pair) {
  constexpr Layout l = layout_of(kType);
  *sc_a = *sc_b = *sc_pair = *min_pair = _mm256_set1_epi16(1);
  if constexpr (l.scales && !l.sub16) {
    const __m128i s8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sb + l.scales_at() + 8 * b));
    *sc_a = widen(_mm_shuffle_epi8(s8, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)),
                  l.signed_scales);
  } else if constexpr (l.sub16) {
    __m128i p = load16(sb + l.scales_at() + 16 * b);
    if constexpr (l.packed_min) {
      const __m128i m4 = _mm_set1_epi8(0x0f);
      *min_pair = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(p, 4), m4));
      p = _mm_and_si128(p, m4);
    }
    *sc_pair = widen(p, l.signed_scales);
    *sc_a = widen(_mm_shuffle_epi8(p, _mm_setr_epi8(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14)),
                  l.signed_scales);
    *sc_b = widen(_mm_shuffle_epi8(p, _mm_setr_epi8(1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15)),
                  l.signed_scales);
  }
}

// Blocks [blk0, blk0 + n) of the group (n <= kChunkBlocks, within one super-block unless sb is 32).
template <DType kType>
void fill_chunk(const uint8_t* grp, int64_t blk0, int n, Chunk& c) {
  constexpr Layout l = layout_of(kType);
  for (int i = 0; i < n; ++i) {
    const int64_t blk = blk0 + i;
    const uint8_t* sb = grp + blk / l.blocks() * l.sb_bytes();
    const int b = static_cast<int>(blk % l.blocks());
    c.d[i] = _mm256_cvtph_ps(load16(sb));
    c.neg_dmin[i] = _mm256_setzero_ps();
    if constexpr (l.dmin) c.neg_dmin[i] = _mm256_sub_ps(c.neg_dmin[i], _mm256_cvtph_ps(load16(sb + 16)));
    scales_of<kType>(sb, b, &c.sc_a[i], &c.sc_b[i], &c.sc_pair[i], &c.min_pair[i]);
    if constexpr (l.mins) {
      const __m128i m8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sb + l.mins_at() + 8 * b));
      c.min_term[i] = _mm256_mul_ps(c.neg_dmin[i], _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(m8)));
      // The same minimum for both halves: against the activation half sums it is m x (block sum).
      c.min_pair[i] =
          widen(_mm_shuffle_epi8(m8, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)), false);
    }
    const uint8_t* codes = sb + l.codes_at() + b * l.block_code_bytes();
    if constexpr (l.table) {
      const __m128i m128 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Magnitude.data()));
      const __m128i v128 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values));
      const __m256i mag_t = _mm256_set_m128i(m128, m128), val_t = _mm256_set_m128i(v128, v128);
      const __m256i m4 = _mm256_set1_epi8(0x0f);
      unroll<4>([&](auto q) {
        const __m256i v = load32(codes + 32 * q);
        const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        c.u[i][q] = _mm256_shuffle_epi8(mag_t, lo), c.value[i][q] = _mm256_shuffle_epi8(val_t, lo);
        c.u[i][q + 4] = _mm256_shuffle_epi8(mag_t, hi), c.value[i][q + 4] = _mm256_shuffle_epi8(val_t, hi);
      });
    } else {
      unpack<kType>(codes, c.u[i]);
    }
  }
}

// One weight d (and dmin) per chunk: the 256-element super-block types.
constexpr bool one_d_per_chunk(DType dt) { return layout_of(dt).sb == 256; }
// q4_K stays on the register tile: the chunked path measured 2% faster per kernel call but 6% slower
// end to end (pure-0242), the tile is as fast as llama.cpp's repacked q4_K there already.
constexpr bool chunked(DType dt) { return dt != DType::kQ4_K; }
// The types whose prefill takes activations with one scale per 256 (wants_activations_256). Not q2_K:
// SmolLM2 with q2_K ffn_down scored 2.1% higher perplexity with them (the others 0.1-0.4%; its minimum
// term nearly cancels the scaled sum, so the coarser activation rounding shows).
constexpr bool shares_activation_scale(DType dt) {
  return one_d_per_chunk(dt) && chunked(dt) && dt != DType::kQ2_K;
}

// out[t] += the chunk's n blocks against x[t][blk0 ..], for T tokens. kShared (one_d_per_chunk types, all T
// tokens' activations from quantize_activations_256): the integer sums (and the minimums times the
// activation sums) add up over the chunk in int32 and the float step is once per chunk; otherwise once per
// block, with d multiplied in at the end where it is the chunk's and there are no minimums.
template <DType kType, int T, bool kShared>
STRATA_INLINE void chunk_tile(const Chunk& c, int n, const ActBlock* const* x, int64_t blk0, float (*out)[kRows]) {
  constexpr Layout l = layout_of(kType);
  constexpr int kChain = l.sub16 ? (l.chain() > 4 ? 4 : l.chain()) : l.chain();
  constexpr bool kDeferD = one_d_per_chunk(kType) && !l.dmin;
  static_assert(!kShared || one_d_per_chunk(kType), "shared activation scales need one weight d per chunk");
  __m256 acc[T];
  __m256i sum[T], min_sum[T];
  unroll<T>([&](auto t) { acc[t] = _mm256_setzero_ps(); });
  for (int i = 0; i < n; ++i) {
    const ActBlock* a[T];
    unroll<T>([&](auto t) { a[t] = &x[t][blk0 + i]; });
    unroll<8 / kChain>([&](auto ci) {
      __m256i s16[T];
      unroll<kChain>([&](auto j) {
        constexpr int q = ci * kChain + j;
        const __m256i uq = c.u[i][q];
        unroll<T>([&](auto t) {
          __m256i xq = _mm256_set1_epi32(load_i32(a[t]->q + 4 * q));
          if constexpr (l.table) xq = _mm256_sign_epi8(xq, c.value[i][q]);
          const __m256i p = _mm256_maddubs_epi16(uq, xq);
          s16[t] = j == 0 ? p : _mm256_add_epi16(s16[t], p);
        });
      });
      const __m256i scale = (l.sub16 && ci * kChain >= 4) ? c.sc_b[i] : c.sc_a[i];
      unroll<T>([&](auto t) {
        const __m256i m = _mm256_madd_epi16(s16[t], scale);
        sum[t] = ci == 0 && (!kShared || i == 0) ? m : _mm256_add_epi32(sum[t], m);
      });
    });
    unroll<T>([&](auto t) {
      int32_t pair;
      std::memcpy(&pair, a[t]->half_sum, 4);
      const __m256i halves = _mm256_set1_epi32(pair);
      if constexpr (l.zero != 0)
        sum[t] =
            _mm256_sub_epi32(sum[t], _mm256_slli_epi32(_mm256_madd_epi16(c.sc_pair[i], halves), l.zero_shift()));
      if constexpr (kShared && l.dmin) {
        const __m256i m = _mm256_madd_epi16(c.min_pair[i], halves);
        min_sum[t] = i == 0 ? m : _mm256_add_epi32(min_sum[t], m);
      }
      if constexpr (kShared) return;
      const __m256 dx = _mm256_set1_ps(a[t]->d);
      if constexpr (kDeferD) {
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), dx, acc[t]);
      } else {
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), _mm256_mul_ps(c.d[i], dx), acc[t]);
      }
      if constexpr (l.mins) acc[t] = _mm256_fmadd_ps(c.min_term[i], _mm256_set1_ps(a[t]->s), acc[t]);
      if constexpr (l.packed_min)
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(c.min_pair[i], halves)),
                                 _mm256_mul_ps(c.neg_dmin[i], dx), acc[t]);
    });
  }
  for (int t = 0; t < T; ++t) {
    if constexpr (kShared) {
      const __m256 dx = _mm256_set1_ps(x[t][blk0].d);
      acc[t] = _mm256_mul_ps(_mm256_cvtepi32_ps(sum[t]), _mm256_mul_ps(c.d[0], dx));
      if constexpr (l.dmin)
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(min_sum[t]), _mm256_mul_ps(c.neg_dmin[0], dx), acc[t]);
    } else if constexpr (kDeferD) {
      acc[t] = _mm256_mul_ps(acc[t], c.d[0]);
    }
    _mm256_storeu_ps(out[t], _mm256_add_ps(_mm256_loadu_ps(out[t]), acc[t]));
  }
}

// out[t] for the first `count` tokens, count a multiple of 4 (the 1..3 left over take tile(): the chunk's
// store and reload only pay off over 4-token tiles, measured). Not inlined: decode's calls of tile<1> should
// not set up this frame (the Chunk is 5.5 KiB).
template <DType kType>
[[gnu::noinline]] void multiply_chunked(const uint8_t* grp, int64_t k, const ActBlock* const* x, int count,
                                      float (*out)[kRows]) {
  Chunk c;
  for (int t = 0; t < count; ++t)
    for (int r = 0; r < kRows; ++r) out[t][r] = 0.f;
  const int64_t nblk = k / 32;
  for (int64_t blk0 = 0; blk0 < nblk; blk0 += kChunkBlocks) {
    const int n = static_cast<int>(nblk - blk0 < kChunkBlocks ? nblk - blk0 : kChunkBlocks);
    fill_chunk<kType>(grp, blk0, n, c);
    for (int t = 0; t < count; t += 4) {
      if constexpr (shares_activation_scale(kType)) {
        if (x[t][blk0].shared & x[t + 1][blk0].shared & x[t + 2][blk0].shared & x[t + 3][blk0].shared) {
          chunk_tile<kType, 4, true>(c, n, x + t, blk0, out + t);
          continue;
        }
      }
      chunk_tile<kType, 4, false>(c, n, x + t, blk0, out + t);
    }
  }
}

#else

// The portable path: the same integer sums from the same layout, one row and one token at a time.
template <DType kType, int T>
void tile(const uint8_t* grp, int64_t k, const ActBlock* const* x, float (*out)[kRows]) {
  constexpr Layout l = layout_of(kType);
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < kRows; ++r) out[t][r] = 0.f;
  for (int64_t s = 0; s < k / l.sb; ++s, grp += l.sb_bytes()) {
    for (int r = 0; r < kRows; ++r) {
      uint16_t d16, dmin16 = 0;
      std::memcpy(&d16, grp + 2 * r, 2);
      if (l.dmin) std::memcpy(&dmin16, grp + 16 + 2 * r, 2);
      const float d = f16_to_f32(d16), dmin = f16_to_f32(dmin16);
      for (int b = 0; b < l.blocks(); ++b) {
        const uint8_t* codes = grp + l.codes_at() + b * l.block_code_bytes();
        int code[32];
        for (int e = 0; e < 32; ++e) {
          const int q = e / 4, i = e % 4;
          int c = l.low_bits == 4 ? (codes[32 * (q % 4) + 4 * r + i] >> (4 * (q / 4))) & 15
                                  : (codes[32 * (q % 2) + 4 * r + i] >> (2 * (q / 2))) & 3;
          const uint8_t* high = codes + l.low_bytes();
          if (l.high_bits == 1) c |= ((high[4 * r + i] >> q) & 1) << l.low_bits;
          if (l.high_bits == 2) c |= ((high[32 * (q % 2) + 4 * r + i] >> (2 * (q / 2))) & 3) << 4;
          code[e] = l.table ? kIq4Values[c] : c - l.zero;
        }
        int sc[2] = {1, 1}, mn[2] = {0, 0};
        for (int h = 0; h < 2; ++h) {
          if (!l.scales) continue;
          const uint8_t byte = l.sub16 ? grp[l.scales_at() + 16 * b + 2 * r + h] : grp[l.scales_at() + 8 * b + r];
          sc[h] = l.signed_scales ? static_cast<int8_t>(byte) : l.packed_min ? byte & 15 : byte;
          if (l.packed_min) mn[h] = byte >> 4;
        }
        for (int t = 0; t < T; ++t) {
          const ActBlock& a = x[t][s * l.blocks() + b];
          int sum = 0;
          for (int e = 0; e < 32; ++e) sum += sc[e / 16] * code[e] * a.q[e];
          out[t][r] += d * a.d * static_cast<float>(sum);
          if (l.mins) out[t][r] -= dmin * static_cast<float>(grp[l.mins_at() + 8 * b + r]) * a.s;
          if (l.packed_min) out[t][r] -= dmin * a.d * static_cast<float>(mn[0] * a.half_sum[0] + mn[1] * a.half_sum[1]);
        }
      }
    }
  }
}

#endif

template <DType kType>
void multiply_type(const uint8_t* grp, int64_t k, const ActBlock* const* x, int count, float (*out)[kRows]) {
  if (count == 1) return tile<kType, 1>(grp, k, x, out);  // decode
  int t = 0;
#ifdef STRATA_KQUANT_AVX2
  if (chunked(kType) && count >= kChunkedFrom) {
    t = count / 4 * 4;
    multiply_chunked<kType>(grp, k, x, t, out);
  }
#endif
  for (; t < count; t += 4) {
    switch (count - t) {
      case 1: tile<kType, 1>(grp, k, x + t, out + t); break;
      case 2: tile<kType, 2>(grp, k, x + t, out + t); break;
      case 3: tile<kType, 3>(grp, k, x + t, out + t); break;
      default: tile<kType, 4>(grp, k, x + t, out + t); break;
    }
  }
}

}  // namespace

bool supports(DType dtype) {
  switch (dtype) {
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
    case DType::kIQ4_XS:
    case DType::kIQ4_NL: return true;
    default: return false;
  }
}

bool wants_activations_256(DType dtype, int64_t tokens) {
#ifdef STRATA_KQUANT_AVX2
  return supports(dtype) && shares_activation_scale(dtype) && tokens >= kChunkedFrom;
#else
  (void)dtype, (void)tokens;
  return false;
#endif
}

int64_t block_elems(DType dtype) { return layout_of(dtype).sb; }

int64_t group_bytes(DType dtype, int64_t k) {
  const Layout l = layout_of(dtype);
  return k / l.sb * l.sb_bytes();
}

void pack_group(DType dtype, const uint8_t* src, int64_t rows, int64_t k, uint8_t* out) {
  const Layout l = layout_of(dtype);
  const int64_t nsb = k / l.sb, src_bytes = dtype_block_bytes(dtype);
  Decoded dec;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t s = 0; s < nsb; ++s) {
      decode(dtype, src + (r * nsb + s) * src_bytes, dec);
      uint8_t* o = out + s * l.sb_bytes();
      std::memcpy(o + 2 * r, &dec.d, 2);
      if (l.dmin) std::memcpy(o + 16 + 2 * r, &dec.dmin, 2);
      for (int b = 0; b < l.blocks(); ++b) {
        if (l.scales && l.sub16) {
          o[l.scales_at() + 16 * b + 2 * r] = dec.scale[2 * b];
          o[l.scales_at() + 16 * b + 2 * r + 1] = dec.scale[2 * b + 1];
        } else if (l.scales) {
          o[l.scales_at() + 8 * b + r] = dec.scale[b];
        }
        if (l.mins) o[l.mins_at() + 8 * b + r] = dec.min[b];
        uint8_t* codes = o + l.codes_at() + b * l.block_code_bytes();
        uint8_t* high = codes + l.low_bytes();
        for (int e = 0; e < 32; ++e) {
          const int code = dec.code[32 * b + e], q = e / 4, i = e % 4;
          if (l.low_bits == 4) {
            codes[32 * (q % 4) + 4 * r + i] |= static_cast<uint8_t>((code & 15) << (4 * (q / 4)));
          } else {
            codes[32 * (q % 2) + 4 * r + i] |= static_cast<uint8_t>((code & 3) << (2 * (q / 2)));
          }
          if (l.high_bits == 1) high[4 * r + i] |= static_cast<uint8_t>(((code >> l.low_bits) & 1) << q);
          if (l.high_bits == 2)
            high[32 * (q % 2) + 4 * r + i] |= static_cast<uint8_t>(((code >> 4) & 3) << (2 * (q / 2)));
        }
      }
    }
  }
}

void multiply_group(DType dtype, const uint8_t* group, int64_t k, const ActBlock* const* x, int count,
                    float (*out)[8]) {
  switch (dtype) {
    case DType::kQ2_K: multiply_type<DType::kQ2_K>(group, k, x, count, out); break;
    case DType::kQ3_K: multiply_type<DType::kQ3_K>(group, k, x, count, out); break;
    case DType::kQ4_K: multiply_type<DType::kQ4_K>(group, k, x, count, out); break;
    case DType::kQ5_K: multiply_type<DType::kQ5_K>(group, k, x, count, out); break;
    case DType::kQ6_K: multiply_type<DType::kQ6_K>(group, k, x, count, out); break;
    case DType::kIQ4_XS: multiply_type<DType::kIQ4_XS>(group, k, x, count, out); break;
    case DType::kIQ4_NL: multiply_type<DType::kIQ4_NL>(group, k, x, count, out); break;
    default: STRATA_THROW(ErrorKind::kInternal, "no K-quant layout for ", dtype_name(dtype));
  }
}

}  // namespace strata::cpu::kquant
