// runtime/formats/kquants.cpp: GGUF's 256-element super-block types (q2_K, q3_K, q4_K, q5_K, q6_K,
// iq4_xs): dequantization bit-identical to the gguf package (same operations in the same order; built with
// -ffp-contract=off, see CMakeLists.txt), and the quantizers, iq4_nl's too: ggml's importance-free methods (as
// llama-quantize without an imatrix), learned from its description and reimplemented: each sub-block's scale
// (and min) comes from a search over candidate scales with a weighted least-squares refit per candidate
// (weights RMS + |x| for q4_K/q5_K, |x| with absolute error for q2_K, x^2 for q3_K/q6_K/iq4), nearest
// rounding, and the sub-block scales quantized to 4/6/8-bit codes under the largest one.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/error.h"
#include "runtime/formats/block_quant.h"
#include "runtime/quant_blocks.h"

namespace strata {
namespace {

constexpr int64_t kK = kQKBlock;

// ---- dequantization -------------------------------------------------------------------------------

void dequant_q2_k(const BlockQ2_K& b, float* y) {
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  for (int e = 0; e < kK; ++e) {
    const int sub = e / 16;
    const float dl = d * static_cast<float>(b.scales[sub] & 0x0f);
    const float ml = dmin * static_cast<float>(b.scales[sub] >> 4);
    const int q = (b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    y[e] = dl * static_cast<float>(q) - ml;
  }
}

void dequant_q3_k(const BlockQ3_K& b, float* y) {
  const float d = f16_to_f32(b.d);
  int8_t scales[16];
  q3k_scales(b.scales, scales);
  for (int e = 0; e < kK; ++e) {
    const int g = e / 128, k = (e % 128) / 32, l = e % 32;
    const int low = (b.qs[32 * g + l] >> (2 * k)) & 3;
    const int high = (b.hmask[l] >> (4 * g + k)) & 1;
    const float dl = d * static_cast<float>(scales[e / 16]);
    y[e] = dl * static_cast<float>(low - (high ? 0 : 4));
  }
}

// q4_K and q5_K: qh is null for q4_K.
void dequant_q45_k(uint16_t d16, uint16_t dmin16, const uint8_t* packed, const uint8_t* qh, const uint8_t* qs,
                   float* y) {
  const float d = f16_to_f32(d16), dmin = f16_to_f32(dmin16);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    k_scale_min(packed, j, &sc, &m);
    const float dl = d * static_cast<float>(sc);
    const float ml = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f;
      if (qh != nullptr) q |= ((qh[l] >> j) & 1) << 4;
      y[32 * j + l] = dl * static_cast<float>(q) - ml;
    }
  }
}

void dequant_q6_k(const BlockQ6_K& b, float* y) {
  const float d = f16_to_f32(b.d);
  for (int e = 0; e < kK; ++e) {
    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const int low = (b.ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0f;
    const int high = (b.qh[32 * h + l] >> (2 * k)) & 3;
    const float dl = d * static_cast<float>(b.scales[e / 16]);
    y[e] = dl * static_cast<float>((low | high << 4) - 32);
  }
}

void dequant_iq4_xs(const BlockIQ4_XS& b, float* y) {
  const float d = f16_to_f32(b.d);
  for (int j = 0; j < 8; ++j) {
    const int ls = ((b.scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | ((b.scales_h >> (2 * j)) & 3) << 4;
    const float dl = d * static_cast<float>(ls - 32);
    for (int l = 0; l < 32; ++l)
      y[32 * j + l] = dl * static_cast<float>(kIq4Values[(b.qs[16 * j + l % 16] >> (4 * (l / 16))) & 0x0f]);
  }
}

// ---- quantization ---------------------------------------------------------------------------------

// ---- ggml's importance-free scale searches ------------------------------------------------------------

// Round to nearest, ties to even (the default rounding mode), as ggml's nearest_int does.
int nearest(float v) { return static_cast<int>(std::nearbyint(v)); }

// Affine codes x ~ scale * L - min, L in [0, nmax], weighted by w. Starts from the range-based scale, then
// tries nsteps + 1 scales nmax + rmin + rdelta * k over the range; for each, the codes it rounds to get a
// weighted least-squares scale and offset (offset clamped so the min stays >= 0), kept when its weighted
// squared error (absolute error with `mad`, as ggml's q2_K) is lower. Returns the scale; writes the min (>= 0)
// and the codes.
float search_affine(const float* x, const float* w, int n, int nmax, float rmin, float rdelta, int nsteps,
                    uint8_t* codes, float* min_out, bool mad = false) {
  auto cost = [mad](float diff) { return mad ? std::fabs(diff) : diff * diff; };
  float lo = x[0], hi = x[0], sum_w = w[0], sum_x = w[0] * x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (lo > 0) lo = 0;
  if (hi == lo) {
    std::memset(codes, 0, static_cast<size_t>(n));
    *min_out = -lo;
    return 0.f;
  }
  float inv = static_cast<float>(nmax) / (hi - lo);
  float scale = 1.f / inv;
  float best_err = 0;
  for (int i = 0; i < n; ++i) {
    codes[i] = static_cast<uint8_t>(std::clamp(nearest(inv * (x[i] - lo)), 0, nmax));
    best_err += w[i] * cost(scale * codes[i] + lo - x[i]);
  }
  uint8_t trial[32];
  for (int k = 0; k <= nsteps; ++k) {
    inv = (rmin + rdelta * static_cast<float>(k) + static_cast<float>(nmax)) / (hi - lo);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest(inv * (x[i] - lo)), 0, nmax);
      trial[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * static_cast<float>(l);
      sum_l2 += w[i] * static_cast<float>(l * l);
      sum_xl += w[i] * static_cast<float>(l) * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det <= 0) continue;
    float s = (sum_w * sum_xl - sum_x * sum_l) / det;
    float m = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (m > 0) m = 0, s = sum_xl / sum_l2;
    float err = 0;
    for (int i = 0; i < n; ++i) err += w[i] * cost(s * trial[i] + m - x[i]);
    if (err < best_err) {
      std::memcpy(codes, trial, static_cast<size_t>(n));
      best_err = err, scale = s, lo = m;
    }
  }
  *min_out = -lo;
  return scale;
}

// Symmetric codes x ~ scale * l, l in [-nmax, nmax - 1], weighted by x^2: the scale that maps the extreme
// element to -nmax, then 18 neighbours -(nmax + 0.1 k) / max, each refit by weighted least squares to its
// codes and kept when it explains more of x (larger sum_lx^2 / sum_l2).
float search_symmetric(const float* x, int n, int nmax) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  if (amax < 1e-15f) return 0.f;
  auto fit = [&](float inv, float* sum_lx, float* sum_l2) {
    *sum_lx = 0, *sum_l2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest(inv * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      *sum_lx += w * x[i] * static_cast<float>(l);
      *sum_l2 += w * static_cast<float>(l * l);
    }
  };
  float sum_lx, sum_l2;
  fit(-static_cast<float>(nmax) / max, &sum_lx, &sum_l2);
  float scale = sum_l2 != 0 ? sum_lx / sum_l2 : 0.f;
  float best = scale * sum_lx;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    fit(-(static_cast<float>(nmax) + 0.1f * static_cast<float>(k)) / max, &sum_lx, &sum_l2);
    if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) scale = sum_lx / sum_l2, best = scale * sum_lx;
  }
  return scale;
}

// q2_K: 16 sub-blocks of 16, each an affine fit weighted by |x| that minimizes the weighted absolute error
// (ggml's choice for 2 bits); 4-bit scales and mins under the largest of each, then the codes again from the
// stored values.
void quant_q2_k(const float* x, BlockQ2_K& b) {
  float scales[16], mins[16], weights[16];
  uint8_t codes[16];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = search_affine(x + 16 * j, weights, 16, 3, -0.5f, 0.1f, 15, codes, &mins[j], /*mad=*/true);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  std::memset(b.scales, 0, sizeof(b.scales));
  b.d = f32_to_f16(0.f), b.dmin = f32_to_f16(0.f);
  if (max_scale > 0) {
    const float inv = 15.f / max_scale;
    for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<uint8_t>(nearest(inv * scales[j]));
    b.d = f32_to_f16(max_scale / 15.f);
  }
  if (max_min > 0) {
    const float inv = 15.f / max_min;
    for (int j = 0; j < 16; ++j) b.scales[j] |= static_cast<uint8_t>(nearest(inv * mins[j]) << 4);
    b.dmin = f32_to_f16(max_min / 15.f);
  }
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  std::memset(b.qs, 0, sizeof(b.qs));
  for (int j = 0; j < 16; ++j) {
    const float dl = d * static_cast<float>(b.scales[j] & 0x0f);
    if (dl == 0) continue;  // codes 0
    const float ml = dmin * static_cast<float>(b.scales[j] >> 4);
    for (int i = 0; i < 16; ++i) {
      const int e = 16 * j + i;
      const int q = std::clamp(nearest((x[e] + ml) / dl), 0, 3);
      b.qs[32 * (e / 128) + e % 32] |= static_cast<uint8_t>(q << (2 * ((e % 128) / 32)));
    }
  }
}

// Symmetric codes x ~ scale * l, l in [-nmax, nmax - 1], weighted by x^2: from the scale that maps the extreme
// element to -nmax, codes are moved one at a time to the value the others' fit asks for while that raises
// sum_lx^2 / sum_l2 (up to 5 passes). Returns the scale (q3_K's sub-blocks).
float refine_symmetric(const float* x, int n, int nmax) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  if (amax < 1e-15f) return 0.f;
  const float inv = -static_cast<float>(nmax) / max;
  int l[32];
  float sum_lx = 0, sum_l2 = 0;
  for (int i = 0; i < n; ++i) {
    l[i] = std::clamp(nearest(inv * x[i]), -nmax, nmax - 1);
    const float w = x[i] * x[i];
    sum_lx += w * x[i] * static_cast<float>(l[i]);
    sum_l2 += w * static_cast<float>(l[i] * l[i]);
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sum_lx - w * x[i] * static_cast<float>(l[i]);
      if (slx <= 0) continue;
      float sl2 = sum_l2 - w * static_cast<float>(l[i] * l[i]);
      const int nl = std::clamp(nearest(x[i] * sl2 / slx), -nmax, nmax - 1);
      if (nl == l[i]) continue;
      slx += w * x[i] * static_cast<float>(nl);
      sl2 += w * static_cast<float>(nl * nl);
      if (sl2 > 0 && slx * slx * sum_l2 > sum_lx * sum_lx * sl2) {
        l[i] = nl, sum_lx = slx, sum_l2 = sl2;
        ++changed;
      }
    }
    if (changed == 0) break;
  }
  return sum_l2 > 0 ? sum_lx / sum_l2 : 0.f;
}

// q3_K: 16 sub-blocks of 16 (refine_symmetric, codes -4..3); 6-bit signed scales under the largest, whose
// code is -32; then the codes again from the stored scales.
void quant_q3_k(const float* x, BlockQ3_K& b) {
  float scales[16];
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = refine_symmetric(x + 16 * j, 16, 4);
    if (std::fabs(scales[j]) > amax) amax = std::fabs(scales[j]), max_scale = scales[j];
  }
  std::memset(b.scales, 0, sizeof(b.scales));
  std::memset(b.hmask, 0, sizeof(b.hmask));
  std::memset(b.qs, 0, sizeof(b.qs));
  b.d = f32_to_f16(0.f);
  if (max_scale != 0) {
    const float inv = -32.f / max_scale;
    for (int j = 0; j < 16; ++j) {
      const int v = std::clamp(nearest(inv * scales[j]), -32, 31) + 32;
      b.scales[j % 8] |= static_cast<uint8_t>((v & 0x0f) << (4 * (j / 8)));
      b.scales[8 + j % 4] |= static_cast<uint8_t>((v >> 4) << (2 * (j / 4)));
    }
    b.d = f32_to_f16(1.f / inv);
  }
  const float d = f16_to_f32(b.d);
  int8_t sc[16];
  q3k_scales(b.scales, sc);
  for (int j = 0; j < 16; ++j) {
    const float dl = d * static_cast<float>(sc[j]);
    for (int i = 0; i < 16; ++i) {
      const int e = 16 * j + i, g = e / 128, k = (e % 128) / 32, l = e % 32;
      // A zero scale leaves code 0 (value -4 * 0): ggml's writes the same.
      const int u = (dl != 0 ? std::clamp(nearest(x[e] / dl), -4, 3) : -4) + 4;
      b.qs[32 * g + l] |= static_cast<uint8_t>((u & 3) << (2 * k));
      b.hmask[l] |= static_cast<uint8_t>((u >> 2) << (4 * g + k));
    }
  }
}

// q4_K (qh null, codes 0..15) and q5_K (codes 0..31): 8 sub-blocks of 32 with 6-bit scales and mins. Each
// element is weighted by the sub-block's RMS plus its own magnitude, as ggml's reference does.
void quant_q45_k(const float* x, int top, uint16_t* d16, uint16_t* dmin16, uint8_t* packed, uint8_t* qh,
                 uint8_t* qs) {
  float scales[8], mins[8], weights[32];
  uint8_t codes[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float rms = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = rms + std::fabs(xs[l]);
    scales[j] = top == 15 ? search_affine(xs, weights, 32, 15, -1.f, 0.1f, 20, codes, &mins[j])
                          : search_affine(xs, weights, 32, 31, -0.5f, 0.1f, 15, codes, &mins[j]);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(packed, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const int sc = std::min(63, nearest(inv_scale * scales[j]));
    const int m = std::min(63, nearest(inv_min * mins[j]));
    if (j < 4) {
      packed[j] |= static_cast<uint8_t>(sc), packed[j + 4] |= static_cast<uint8_t>(m);
    } else {
      packed[j + 4] = static_cast<uint8_t>((sc & 0x0f) | (m & 0x0f) << 4);
      packed[j - 4] |= static_cast<uint8_t>((sc >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((m >> 4) << 6);
    }
  }
  *d16 = f32_to_f16(max_scale / 63.f);
  *dmin16 = f32_to_f16(max_min / 63.f);
  const float d = f16_to_f32(*d16), dmin = f16_to_f32(*dmin16);
  std::memset(qs, 0, kK / 2);
  if (qh != nullptr) std::memset(qh, 0, kK / 8);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    k_scale_min(packed, j, &sc, &m);
    const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      const int q = dl != 0 ? std::clamp(nearest((x[32 * j + l] + ml) / dl), 0, top) : 0;
      qs[32 * (j / 2) + l] |= static_cast<uint8_t>((q & 0x0f) << (4 * (j % 2)));
      if (qh != nullptr) qh[l] |= static_cast<uint8_t>((q >> 4) << j);
    }
  }
}

// q6_K: 16 sub-blocks of 16, codes -32..31, 8-bit signed sub-block scales under the largest one (whose code
// is -128 when it maps the super-block's extreme element).
void quant_q6_k(const float* x, BlockQ6_K& b) {
  float scales[16];
  float max_scale = 0, max_abs = 0;
  for (int s = 0; s < 16; ++s) {
    scales[s] = search_symmetric(x + 16 * s, 16, 32);
    if (std::fabs(scales[s]) > max_abs) max_abs = std::fabs(scales[s]), max_scale = scales[s];
  }
  std::memset(b.ql, 0, sizeof(b.ql));
  std::memset(b.qh, 0, sizeof(b.qh));
  if (max_abs < 1e-15f) {  // an all-zero block: zero scales
    std::memset(b.scales, 0, sizeof(b.scales));
    b.d = f32_to_f16(0.f);
    return;
  }
  const float inv = -128.f / max_scale;
  b.d = f32_to_f16(1.f / inv);
  const float d = f16_to_f32(b.d);
  for (int s = 0; s < 16; ++s) {
    const int sc = std::min(127, nearest(inv * scales[s]));
    b.scales[s] = static_cast<int8_t>(sc);
    const float dl = d * static_cast<float>(sc);
    for (int i = 0; i < 16; ++i) {
      const int e = 16 * s + i, h = e / 128, k = (e % 128) / 32, l = e % 32;
      const int u = (dl != 0 ? std::clamp(nearest(x[e] / dl), -32, 31) : 0) + 32;
      b.ql[64 * h + 32 * (k % 2) + l] |= static_cast<uint8_t>((u & 0x0f) << (4 * (k / 2)));
      b.qh[32 * h + l] |= static_cast<uint8_t>((u >> 4) << (2 * k));
    }
  }
}

// The iq4 table index nearest v (a tie takes the larger value, as ggml's search does).
int iq4_index(float v) {
  if (v <= kIq4Values[0]) return 0;
  if (v >= kIq4Values[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    (v < kIq4Values[mid] ? hi : lo) = mid;
  }
  return v - kIq4Values[hi - 1] < kIq4Values[hi] - v ? hi - 1 : hi;
}

// One 32-element iq4 block's scale, weighted by x^2: first the scale mapping the extreme element to +127
// (past the table's positive end, 113: the mirrored start ggml uses), then 15 scales (k - 127) / max, k = -7..7
// (the extreme element near the -127 end), each refit by weighted least squares to the codes it rounds to,
// kept when it explains more of x (larger sum_qx^2 / sum_q2).
float iq4_scale(const float* x) {
  float amax = 0, max = 0;
  for (int i = 0; i < 32; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  if (amax < 1e-15f) return 0.f;
  auto fit = [&](float inv, float* sum_qx, float* sum_q2) {
    *sum_qx = 0, *sum_q2 = 0;
    for (int i = 0; i < 32; ++i) {
      const float q = static_cast<float>(kIq4Values[iq4_index(inv * x[i])]);
      const float w = x[i] * x[i];
      *sum_qx += w * q * x[i];
      *sum_q2 += w * q * q;
    }
  };
  const float first = static_cast<float>(kIq4Values[0]);
  float sum_qx, sum_q2;
  fit(-first / max, &sum_qx, &sum_q2);
  float d = sum_q2 > 0 ? sum_qx / sum_q2 : 0.f, best = d * sum_qx;
  for (int k = -7; k <= 7; ++k) {
    fit((static_cast<float>(k) + first) / max, &sum_qx, &sum_q2);
    if (sum_q2 > 0 && sum_qx * sum_qx > best * sum_q2) d = sum_qx / sum_q2, best = d * sum_qx;
  }
  return d;
}

// iq4_nl: one f16 scale per 32 (iq4_scale); the codes from the unrounded scale, as ggml's.
void quant_iq4_nl(const float* x, BlockIQ4_NL& b) {
  const float d = iq4_scale(x);
  b.d = f32_to_f16(d);
  const float inv = d != 0 ? 1.f / d : 0.f;
  for (int i = 0; i < 16; ++i)
    b.qs[i] = static_cast<uint8_t>(iq4_index(inv * x[i]) | iq4_index(inv * x[i + 16]) << 4);
}

// iq4_xs: iq4_scale per sub-block of 32; 6-bit signed scales under the largest, whose code is -32; the codes
// from each stored sub-block scale.
void quant_iq4_xs(const float* x, BlockIQ4_XS& b) {
  float scales[8];
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 8; ++j) {
    scales[j] = iq4_scale(x + 32 * j);
    if (std::fabs(scales[j]) > amax) amax = std::fabs(scales[j]), max_scale = scales[j];
  }
  const float d = -max_scale / 32.f;
  b.d = f32_to_f16(d);
  b.scales_h = 0;
  std::memset(b.scales_l, 0, sizeof(b.scales_l));
  std::memset(b.qs, 0, sizeof(b.qs));
  const float inv = d != 0 ? 1.f / d : 0.f;
  for (int j = 0; j < 8; ++j) {
    const int ls = std::clamp(nearest(inv * scales[j]), -32, 31);
    const float dl = d * static_cast<float>(ls);
    const float inv_l = dl != 0 ? 1.f / dl : 0.f;
    const int v = ls + 32;
    b.scales_l[j / 2] |= static_cast<uint8_t>((v & 0x0f) << (4 * (j % 2)));
    b.scales_h |= static_cast<uint16_t>((v >> 4) << (2 * j));
    for (int l = 0; l < 32; ++l)
      b.qs[16 * j + l % 16] |= static_cast<uint8_t>(iq4_index(inv_l * x[32 * j + l]) << (4 * (l / 16)));
  }
}

}  // namespace

void dequantize_row_k(DType dtype, const void* blocks, float* y, int64_t n) {
  const int64_t nb = n / kK;
  for (int64_t i = 0; i < nb; ++i, y += kK) {
    switch (dtype) {
      case DType::kQ2_K: dequant_q2_k(static_cast<const BlockQ2_K*>(blocks)[i], y); break;
      case DType::kQ3_K: dequant_q3_k(static_cast<const BlockQ3_K*>(blocks)[i], y); break;
      case DType::kQ4_K: {
        const auto& b = static_cast<const BlockQ4_K*>(blocks)[i];
        dequant_q45_k(b.d, b.dmin, b.scales, nullptr, b.qs, y);
        break;
      }
      case DType::kQ5_K: {
        const auto& b = static_cast<const BlockQ5_K*>(blocks)[i];
        dequant_q45_k(b.d, b.dmin, b.scales, b.qh, b.qs, y);
        break;
      }
      case DType::kQ6_K: dequant_q6_k(static_cast<const BlockQ6_K*>(blocks)[i], y); break;
      case DType::kIQ4_XS: dequant_iq4_xs(static_cast<const BlockIQ4_XS*>(blocks)[i], y); break;
      default: STRATA_THROW(ErrorKind::kInvalidArgument, "cannot dequantize dtype ", dtype_name(dtype));
    }
  }
}

void quantize_row_k(DType dtype, const float* x, void* blocks, int64_t n) {
  const int64_t nb = n / kK;
  for (int64_t i = 0; i < nb; ++i, x += kK) {
    switch (dtype) {
      case DType::kQ2_K: quant_q2_k(x, static_cast<BlockQ2_K*>(blocks)[i]); break;
      case DType::kQ3_K: quant_q3_k(x, static_cast<BlockQ3_K*>(blocks)[i]); break;
      case DType::kQ4_K: {
        auto& b = static_cast<BlockQ4_K*>(blocks)[i];
        quant_q45_k(x, 15, &b.d, &b.dmin, b.scales, nullptr, b.qs);
        break;
      }
      case DType::kQ5_K: {
        auto& b = static_cast<BlockQ5_K*>(blocks)[i];
        quant_q45_k(x, 31, &b.d, &b.dmin, b.scales, b.qh, b.qs);
        break;
      }
      case DType::kQ6_K: quant_q6_k(x, static_cast<BlockQ6_K*>(blocks)[i]); break;
      case DType::kIQ4_XS: quant_iq4_xs(x, static_cast<BlockIQ4_XS*>(blocks)[i]); break;
      default: STRATA_THROW(ErrorKind::kInvalidArgument, "cannot quantize to dtype ", dtype_name(dtype));
    }
  }
}

void quantize_row_iq4_nl(const float* x, BlockIQ4_NL* out, int64_t n) {
  for (int64_t i = 0; i < n / kQBlock; ++i) quant_iq4_nl(x + i * kQBlock, out[i]);
}

}  // namespace strata
