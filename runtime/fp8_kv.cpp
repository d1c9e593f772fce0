// runtime/fp8_kv.cpp: encoding and decoding of fp8 KV rows (layout in fp8_kv.h).
#include "runtime/fp8_kv.h"

#include <array>
#include <cmath>

namespace strata {
namespace {

// Every code's value, built once: decoding a row is a table lookup per element.
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[static_cast<size_t>(c)] = e4m3_to_f32(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

}  // namespace

void fp8_kv_encode_row(const float* x, int64_t head_dim, uint8_t* row) {
  float amax = 0.f;
  for (int64_t i = 0; i < head_dim; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  const float scale = amax / kE4m3Max;
  for (int64_t i = 0; i < head_dim; ++i) row[i] = scale > 0.f ? f32_to_e4m3(x[i] / scale) : uint8_t{0};
  std::memcpy(row + head_dim, &scale, sizeof scale);
}

void fp8_kv_decode_row(const uint8_t* row, int64_t head_dim, float* out) {
  const std::array<float, 256>& table = e4m3_table();
  float scale;
  std::memcpy(&scale, row + head_dim, sizeof scale);
  for (int64_t i = 0; i < head_dim; ++i) out[i] = table[row[i]] * scale;
}

}  // namespace strata
