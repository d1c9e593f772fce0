// tests/runtime/cpu/quant_dot_test.cpp: the CPU matmul on every GGUF weight type against the dequantized
// weights (dequantize_row, bit-identical to the gguf package: block_quant_test) times the f32 activations
// in double precision. Weights are both the fixtures' random valid blocks (every code bit pattern, scales
// from f16-subnormal to 4) and quantized normal data.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include "runtime/backend.h"
#include "runtime/cpu/quant_dot.h"
#include "runtime/error.h"
#include "runtime/formats/block_quant.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using test::random_f32;

// The fixture's blocks as a [rows, k] weight.
Tensor fixture_weight(DType dt, int64_t rows) {
  std::ifstream in(test::fixture(std::string("gguf_quants/") + dtype_name(dt) + ".blocks"), std::ios::binary);
  const std::vector<char> bytes(std::istreambuf_iterator<char>(in), {});
  const int64_t elems = static_cast<int64_t>(bytes.size()) / dtype_block_bytes(dt) * dtype_block_elems(dt);
  EXPECT_GT(elems, 0) << dtype_name(dt);
  Tensor w = Tensor::empty({rows, elems / rows}, dt);
  std::memcpy(w.raw(), bytes.data(), static_cast<size_t>(w.nbytes()));
  return w;
}

Tensor quantized_weight(DType dt, int64_t rows, int64_t k, uint32_t seed) {
  const Tensor f = random_f32({rows, k}, seed, 0.05f);
  Tensor w = Tensor::empty({rows, k}, dt);
  quantize_row(dt, f.data<float>(), w.raw(), rows * k);
  return w;
}

// out = x w^T + bias against the dequantized weights in double. The activations are quantized to 8 bits
// in 32-element blocks (scale max|x| / 127), so each moves by at most half a step: an output may differ
// by sum_j |w_j| * step_j / 2, plus f32 rounding of the per-block scale products and sums (1e-5 of
// sum_j |w_j x_j|).
void expect_matches_dequantized(const Tensor& w, int64_t m, uint32_t seed) {
  const DType dt = w.dtype();
  const int64_t n = w.dim(0), k = w.dim(1);
  auto backend = make_cpu_backend(1);
  const Tensor x = random_f32({m, k}, seed);
  const Tensor bias = random_f32({n}, seed + 1);
  Tensor out = Tensor::empty({m, n}, DType::kF32);
  backend->matmul(x, w, &bias, out);
  std::vector<float> wf(static_cast<size_t>(n * k));
  dequantize_row(dt, w.raw(), wf.data(), n * k);
  int failures = 0;
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x.data<float>() + i * k;
    for (int64_t r = 0; r < n && failures < 5; ++r) {
      double ref = bias.data<float>()[r], bound = 0, mag = 0;
      for (int64_t j = 0; j < k; ++j) {
        const double wj = wf[static_cast<size_t>(r * k + j)];
        ref += wj * xi[j];
        mag += std::abs(wj * xi[j]);
        if (j % 32 == 0) {
          double amax = 0;
          for (int64_t b = j; b < j + 32; ++b) amax = std::max(amax, std::abs(double{xi[b]}));
          for (int64_t b = j; b < j + 32; ++b) bound += std::abs(wf[static_cast<size_t>(r * k + b)]) * amax / 127 / 2;
        }
      }
      bound += 1e-5 * mag + 1e-6;
      const double got = out.data<float>()[i * n + r];
      if (!(std::abs(got - ref) <= bound)) {
        ++failures;
        ADD_FAILURE() << dtype_name(dt) << " [" << n << ", " << k << "] row " << i << " col " << r << ": got " << got
                      << ", reference " << ref << ", allowed error " << bound;
      }
    }
  }
}

class QuantMatmul : public ::testing::TestWithParam<DType> {};

TEST_P(QuantMatmul, FixtureBlocksMatchTheDequantizedReference) {
  const DType dt = GetParam();
  const Tensor w = fixture_weight(dt, 2);
  for (int64_t m : {1, 3}) expect_matches_dequantized(w, m, 7);
}

TEST_P(QuantMatmul, QuantizedNormalWeightsMatchTheDequantizedReference) {
  const DType dt = GetParam();
  for (int64_t m : {1, 2, 5}) expect_matches_dequantized(quantized_weight(dt, 37, 512, 11), m, 13);
}

INSTANTIATE_TEST_SUITE_P(Gguf, QuantMatmul, ::testing::ValuesIn(quantized_dtypes()),
                         [](const ::testing::TestParamInfo<DType>& p) { return std::string(dtype_name(p.param)); });

// The activation blocks hold what the integer dots assume: codes within +-127, the scale, the half sums.
TEST(QuantDot, ActivationBlocksRoundToNearestAndKeepTheirSums) {
  const Tensor x = random_f32({64}, 3, 2.f);
  std::vector<cpu::ActBlock> a(2);
  cpu::quantize_activations(x.data<float>(), 64, a.data());
  for (int b = 0; b < 2; ++b) {
    const float* xb = x.data<float>() + 32 * b;
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(xb[i]));
    EXPECT_FLOAT_EQ(a[b].d, amax / 127);
    int h0 = 0, h1 = 0;
    for (int i = 0; i < 32; ++i) {
      EXPECT_LE(std::abs(xb[i] - a[b].d * a[b].q[i]), a[b].d / 2 * 1.0001f) << i;
      (i < 16 ? h0 : h1) += a[b].q[i];
    }
    EXPECT_EQ(a[b].half_sum[0], h0);
    EXPECT_EQ(a[b].half_sum[1], h1);
    EXPECT_FLOAT_EQ(a[b].s, a[b].d * static_cast<float>(h0 + h1));
    EXPECT_EQ(a[b].shared, 0);
  }
}

// quantize_activations_256: the same blocks with the scale of their 256-element run (one run here with an
// outlier, so most blocks use fewer codes than their own max would give), marked shared.
TEST(QuantDot, ActivationRunsOf256ShareOneScale) {
  Tensor x = random_f32({512}, 4, 1.f);
  x.data<float>()[300] = 9.f;
  std::vector<cpu::ActBlock> a(16);
  cpu::quantize_activations_256(x.data<float>(), 512, a.data());
  for (int r = 0; r < 2; ++r) {
    float amax = 0;
    for (int i = 0; i < 256; ++i) amax = std::max(amax, std::abs(x.data<float>()[256 * r + i]));
    for (int b = 8 * r; b < 8 * r + 8; ++b) {
      const float* xb = x.data<float>() + 32 * b;
      EXPECT_FLOAT_EQ(a[b].d, amax / 127) << b;
      EXPECT_EQ(a[b].shared, 1);
      int h0 = 0, h1 = 0;
      for (int i = 0; i < 32; ++i) {
        EXPECT_LE(std::abs(xb[i] - a[b].d * a[b].q[i]), a[b].d / 2 * 1.0001f) << b << " " << i;
        (i < 16 ? h0 : h1) += a[b].q[i];
      }
      EXPECT_EQ(a[b].half_sum[0], h0);
      EXPECT_EQ(a[b].half_sum[1], h1);
      EXPECT_FLOAT_EQ(a[b].s, a[b].d * static_cast<float>(h0 + h1));
    }
  }
  EXPECT_THROW(cpu::quantize_activations_256(x.data<float>(), 288, a.data()), Error);
}

}  // namespace
}  // namespace strata
