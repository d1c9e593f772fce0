// runtime/formats/kquants.cpp: GGUF's 256-element super-block types (q2_K, q3_K, q4_K, q5_K, q6_K,
// iq4_xs): dequantization bit-identical to the gguf package (same operations in the same order; built with
// -ffp-contract=off, see CMakeLists.txt), and strata's own quantizers. A quantizer fits each sub-block's
// scale (and min) by trying a few scales around the range-based one, refitting by least squares to the
// codes each gives and keeping the lowest squared error; then rounds the sub-block scales to the format's
// 4/6/8-bit codes under one f16 super-block scale.
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

float f16_round(float v) { return f16_to_f32(f32_to_f16(v)); }

int clamp_round(float v, int lo, int hi) {
  return std::clamp(static_cast<int>(std::lround(v)), lo, hi);
}

// y = scale * q - min with q in [0, top] and min >= 0 (q2/q4/q5_K sub-blocks).
struct Affine {
  float scale = 0, min = 0;
};

double affine_error(const float* x, int n, int top, float scale, float min, uint8_t* q) {
  double err = 0;
  const float inv = scale > 0 ? 1.f / scale : 0.f;
  for (int i = 0; i < n; ++i) {
    q[i] = static_cast<uint8_t>(clamp_round((x[i] + min) * inv, 0, top));
    const double e = x[i] - (static_cast<double>(scale) * q[i] - min);
    err += e * e;
  }
  return err;
}

Affine fit_affine(const float* x, int n, int top) {
  float lo = 0.f, hi = x[0];
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  Affine best{(hi - lo) / static_cast<float>(top), -lo};
  if (best.scale <= 0) return Affine{0.f, -lo};
  uint8_t q[32];
  double best_err = affine_error(x, n, top, best.scale, best.min, q);
  for (int step = -4; step <= 4; ++step) {
    const float scale = (hi - lo) / (static_cast<float>(top) + 0.25f * static_cast<float>(step));
    affine_error(x, n, top, scale, -lo, q);
    // Least-squares scale and offset for these codes: x ~ s * q + o, with o <= 0 (a non-negative min).
    double sq = 0, sqq = 0, sx = 0, sqx = 0;
    for (int i = 0; i < n; ++i) {
      sq += q[i], sqq += static_cast<double>(q[i]) * q[i], sx += x[i], sqx += static_cast<double>(q[i]) * x[i];
    }
    const double det = n * sqq - sq * sq;
    if (det <= 0) continue;
    double s = (n * sqx - sq * sx) / det, o = (sx - s * sq) / n;
    if (o > 0) o = 0, s = sqq > 0 ? sqx / sqq : 0;
    if (s <= 0) continue;
    const float cand_scale = static_cast<float>(s), cand_min = static_cast<float>(-o);
    const double err = affine_error(x, n, top, cand_scale, cand_min, q);
    if (err < best_err) best_err = err, best = Affine{cand_scale, cand_min};
  }
  return best;
}

double symmetric_error(const float* x, int n, int lo, int hi, float scale, int8_t* q) {
  double err = 0;
  const float inv = scale != 0 ? 1.f / scale : 0.f;
  for (int i = 0; i < n; ++i) {
    q[i] = static_cast<int8_t>(clamp_round(x[i] * inv, lo, hi));
    const double e = x[i] - static_cast<double>(scale) * q[i];
    err += e * e;
  }
  return err;
}

// y = scale * q with q in [lo, hi], lo = -hi - 1 (q3/q6_K sub-blocks): the extreme element maps to lo.
float fit_symmetric(const float* x, int n, int lo, int hi) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  if (amax == 0) return 0.f;
  int8_t q[32];
  float best = max / static_cast<float>(lo);
  double best_err = symmetric_error(x, n, lo, hi, best, q);
  for (int step = -4; step <= 4; ++step) {
    symmetric_error(x, n, lo, hi, max / (static_cast<float>(lo) - 0.25f * static_cast<float>(step)), q);
    double sqq = 0, sqx = 0;
    for (int i = 0; i < n; ++i) sqq += static_cast<double>(q[i]) * q[i], sqx += static_cast<double>(q[i]) * x[i];
    if (sqq <= 0) continue;
    const float s = static_cast<float>(sqx / sqq);
    const double err = symmetric_error(x, n, lo, hi, s, q);
    if (err < best_err) best_err = err, best = s;
  }
  return best;
}

// One f16 scale for codes in [0, top] (or [-top, top]) that cover the largest |value|.
float super_scale(const float* v, int n, int top) {
  float amax = 0;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
  return f16_round(amax / static_cast<float>(top));
}

void quant_q2_k(const float* x, BlockQ2_K& b) {
  Affine sub[16];
  float scales[16], mins[16];
  for (int s = 0; s < 16; ++s) sub[s] = fit_affine(x + 16 * s, 16, 3), scales[s] = sub[s].scale, mins[s] = sub[s].min;
  const float d = super_scale(scales, 16, 15), dmin = super_scale(mins, 16, 15);
  b.d = f32_to_f16(d), b.dmin = f32_to_f16(dmin);
  std::memset(b.qs, 0, sizeof(b.qs));
  for (int s = 0; s < 16; ++s) {
    const int sc = d > 0 ? clamp_round(scales[s] / d, 0, 15) : 0;
    const int m = dmin > 0 ? clamp_round(mins[s] / dmin, 0, 15) : 0;
    b.scales[s] = static_cast<uint8_t>(sc | m << 4);
    const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
    for (int i = 0; i < 16; ++i) {
      const int e = 16 * s + i;
      const int q = dl > 0 ? clamp_round((x[e] + ml) / dl, 0, 3) : 0;
      b.qs[32 * (e / 128) + e % 32] |= static_cast<uint8_t>(q << (2 * ((e % 128) / 32)));
    }
  }
}

void quant_q3_k(const float* x, BlockQ3_K& b) {
  float scales[16];
  for (int s = 0; s < 16; ++s) scales[s] = fit_symmetric(x + 16 * s, 16, -4, 3);
  const float d = super_scale(scales, 16, 31);
  b.d = f32_to_f16(d);
  std::memset(b.hmask, 0, sizeof(b.hmask));
  std::memset(b.qs, 0, sizeof(b.qs));
  std::memset(b.scales, 0, sizeof(b.scales));
  for (int s = 0; s < 16; ++s) {
    const int sc = d > 0 ? clamp_round(scales[s] / d, -32, 31) : 0;
    const int v = sc + 32;
    b.scales[s % 8] |= static_cast<uint8_t>((v & 0x0f) << (4 * (s / 8)));
    b.scales[8 + s % 4] |= static_cast<uint8_t>((v >> 4) << (2 * (s / 4)));
    const float dl = d * static_cast<float>(sc);
    for (int i = 0; i < 16; ++i) {
      const int e = 16 * s + i, g = e / 128, k = (e % 128) / 32, l = e % 32;
      const int u = (dl != 0 ? clamp_round(x[e] / dl, -4, 3) : 0) + 4;
      b.qs[32 * g + l] |= static_cast<uint8_t>((u & 3) << (2 * k));
      b.hmask[l] |= static_cast<uint8_t>((u >> 2) << (4 * g + k));
    }
  }
}

// q4_K (qh null) and q5_K: 8 sub-blocks of 32 with 6-bit scales and mins.
void quant_q45_k(const float* x, int top, uint16_t* d16, uint16_t* dmin16, uint8_t* packed, uint8_t* qh,
                 uint8_t* qs) {
  float scales[8], mins[8];
  for (int j = 0; j < 8; ++j) {
    const Affine a = fit_affine(x + 32 * j, 32, top);
    scales[j] = a.scale, mins[j] = a.min;
  }
  const float d = super_scale(scales, 8, 63), dmin = super_scale(mins, 8, 63);
  *d16 = f32_to_f16(d), *dmin16 = f32_to_f16(dmin);
  std::memset(packed, 0, 12);
  std::memset(qs, 0, kK / 2);
  if (qh != nullptr) std::memset(qh, 0, kK / 8);
  for (int j = 0; j < 8; ++j) {
    const int sc = d > 0 ? clamp_round(scales[j] / d, 0, 63) : 0;
    const int m = dmin > 0 ? clamp_round(mins[j] / dmin, 0, 63) : 0;
    if (j < 4) {
      packed[j] |= static_cast<uint8_t>(sc), packed[j + 4] |= static_cast<uint8_t>(m);
    } else {
      packed[j + 4] = static_cast<uint8_t>((sc & 0x0f) | (m & 0x0f) << 4);
      packed[j - 4] |= static_cast<uint8_t>((sc >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((m >> 4) << 6);
    }
    const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      const int q = dl > 0 ? clamp_round((x[32 * j + l] + ml) / dl, 0, top) : 0;
      qs[32 * (j / 2) + l] |= static_cast<uint8_t>((q & 0x0f) << (4 * (j % 2)));
      if (qh != nullptr) qh[l] |= static_cast<uint8_t>((q >> 4) << j);
    }
  }
}

void quant_q6_k(const float* x, BlockQ6_K& b) {
  float scales[16];
  for (int s = 0; s < 16; ++s) scales[s] = fit_symmetric(x + 16 * s, 16, -32, 31);
  const float d = super_scale(scales, 16, 127);
  b.d = f32_to_f16(d);
  std::memset(b.ql, 0, sizeof(b.ql));
  std::memset(b.qh, 0, sizeof(b.qh));
  for (int s = 0; s < 16; ++s) {
    const int sc = d > 0 ? clamp_round(scales[s] / d, -127, 127) : 0;
    b.scales[s] = static_cast<int8_t>(sc);
    const float dl = d * static_cast<float>(sc);
    for (int i = 0; i < 16; ++i) {
      const int e = 16 * s + i, h = e / 128, k = (e % 128) / 32, l = e % 32;
      const int u = (dl != 0 ? clamp_round(x[e] / dl, -32, 31) : 0) + 32;
      b.ql[64 * h + 32 * (k % 2) + l] |= static_cast<uint8_t>((u & 0x0f) << (4 * (k / 2)));
      b.qh[32 * h + l] |= static_cast<uint8_t>((u >> 4) << (2 * k));
    }
  }
}

// iq4_xs: each sub-block's scale maps its extreme element to the table's -127 end, refit by least squares
// to the table codes; the scales share one f16 super-block scale with 6-bit signed codes.
void quant_iq4_xs(const float* x, BlockIQ4_XS& b) {
  float scales[8];
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float amax = 0, max = 0;
    for (int i = 0; i < 32; ++i)
      if (std::fabs(xs[i]) > amax) amax = std::fabs(xs[i]), max = xs[i];
    float s = max / -127.f;
    if (s != 0) {
      double sqq = 0, sqx = 0;
      for (int i = 0; i < 32; ++i) {
        const double t = kIq4Values[nearest_iq4(xs[i] / s)];
        sqq += t * t, sqx += t * xs[i];
      }
      if (sqq > 0) s = static_cast<float>(sqx / sqq);
    }
    scales[j] = s;
  }
  const float d = super_scale(scales, 8, 31);
  b.d = f32_to_f16(d);
  b.scales_h = 0;
  std::memset(b.scales_l, 0, sizeof(b.scales_l));
  std::memset(b.qs, 0, sizeof(b.qs));
  for (int j = 0; j < 8; ++j) {
    const int ls = d > 0 ? clamp_round(scales[j] / d, -32, 31) : 0;
    const int v = ls + 32;
    b.scales_l[j / 2] |= static_cast<uint8_t>((v & 0x0f) << (4 * (j % 2)));
    b.scales_h |= static_cast<uint16_t>((v >> 4) << (2 * j));
    const float dl = d * static_cast<float>(ls);
    for (int l = 0; l < 32; ++l) {
      const int idx = dl != 0 ? nearest_iq4(x[32 * j + l] / dl) : nearest_iq4(0.f);
      b.qs[16 * j + l % 16] |= static_cast<uint8_t>(idx << (4 * (l / 16)));
    }
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

}  // namespace strata
