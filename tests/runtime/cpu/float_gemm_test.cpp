// tests/runtime/cpu/float_gemm_test.cpp: the CPU backend's matmul with f32, f16 and bf16 weights (the
// register-tiled GEMM of runtime/cpu/float_gemm.h from 3 rows in AVX2 builds, row loops otherwise) against a double
// reference on the stored weights (f16/bf16 read back exactly). Shapes with ragged row tiles (m 1..70, the
// tile is 6), ragged panels (n not a multiple of 16), K not a multiple of 8 or 16 and over the 256-column
// block, with and without bias. The bound is the f32 summation bound (k + 2) u sum|terms|, whatever the
// order of the sums: a term dropped or counted twice, or a stale partial sum, lands far outside it.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "runtime/backend.h"
#include "runtime/dtype.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using test::random_f32;

// w32 [n, k] stored as `dtype`, and the stored values read back exactly.
Tensor stored(const Tensor& w32, DType dtype, std::vector<double>* exact) {
  const int64_t count = w32.numel();
  Tensor w = Tensor::empty(w32.shape(), dtype);
  exact->resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const float v = w32.data<float>()[i];
    float back = v;
    if (dtype == DType::kF16) {
      w.data<uint16_t>()[i] = f32_to_f16(v);
      back = f16_to_f32(w.data<uint16_t>()[i]);
    } else if (dtype == DType::kBF16) {
      w.data<uint16_t>()[i] = f32_to_bf16(v);
      back = bf16_to_f32(w.data<uint16_t>()[i]);
    } else {
      w.data<float>()[i] = v;
    }
    (*exact)[static_cast<size_t>(i)] = back;
  }
  return w;
}

// Runs backend.matmul for [m, k] x [n, k]^T (+ bias) and checks every output; returns the failures.
int check(Backend& backend, DType dtype, int64_t m, int64_t n, int64_t k, bool with_bias, uint32_t seed) {
  const Tensor x = random_f32({m, k}, seed);
  std::vector<double> wd;
  const Tensor w = stored(random_f32({n, k}, seed + 1, 0.2f), dtype, &wd);
  const Tensor bias = random_f32({n}, seed + 2);
  // Output inside a larger buffer: NaN where the matmul must write, a sentinel after it.
  const int64_t guard = 32;
  std::vector<float> buf(static_cast<size_t>(m * n + guard), std::numeric_limits<float>::quiet_NaN());
  for (int64_t i = m * n; i < m * n + guard; ++i) buf[static_cast<size_t>(i)] = -7.f;
  Tensor out = Tensor::view(buf.data(), {m, n}, DType::kF32);
  backend.matmul(x, w, with_bias ? &bias : nullptr, out);

  int failures = 0;
  for (int64_t i = 0; i < m && failures < 3; ++i)
    for (int64_t j = 0; j < n && failures < 3; ++j) {
      double ref = with_bias ? bias.data<float>()[j] : 0.0, mag = std::abs(ref);
      for (int64_t c = 0; c < k; ++c) {
        const double term = double{x.data<float>()[i * k + c]} * wd[static_cast<size_t>(j * k + c)];
        ref += term;
        mag += std::abs(term);
      }
      const double got = buf[static_cast<size_t>(i * n + j)];
      const double bound = static_cast<double>(k + 2) * std::ldexp(1.0, -24) * mag + 1e-30;
      if (!(std::abs(got - ref) <= bound)) {
        ++failures;
        ADD_FAILURE() << dtype_name(dtype) << " m " << m << " n " << n << " k " << k << (with_bias ? " bias" : "")
                      << ": out[" << i << ", " << j << "] = " << got << ", reference " << ref << ", allowed "
                      << bound;
      }
    }
  for (int64_t i = m * n; i < m * n + guard; ++i)
    if (buf[static_cast<size_t>(i)] != -7.f) {
      ++failures;
      ADD_FAILURE() << dtype_name(dtype) << " m " << m << " n " << n << " k " << k << ": wrote past the output";
      break;
    }
  return failures;
}

class FloatMatmul : public ::testing::TestWithParam<DType> {};

TEST_P(FloatMatmul, EveryRowCountUpTo70) {
  auto backend = make_cpu_backend(1);
  for (int64_t m = 1; m <= 70; ++m) {
    ASSERT_EQ(check(*backend, GetParam(), m, 37, 300, m % 2 == 0, static_cast<uint32_t>(m)), 0);
  }
}

TEST_P(FloatMatmul, RaggedPanelsAndColumns) {
  auto backend = make_cpu_backend(1);
  uint32_t seed = 100;
  for (int64_t n : {1, 15, 16, 17, 33, 50})
    for (int64_t k : {1, 7, 8, 15, 16, 33, 256, 257, 600})
      for (int64_t m : {1, 2, 3, 6, 7, 13})
        for (bool with_bias : {false, true}) {
          ASSERT_EQ(check(*backend, GetParam(), m, n, k, with_bias, seed += 3), 0);
        }
}

// Two threads split the panels (and the activation tiles when packing): large enough for the parallel path.
TEST_P(FloatMatmul, TwoThreadsAgreeWithTheReference) {
  auto backend = make_cpu_backend(2);
  EXPECT_EQ(check(*backend, GetParam(), 64, 120, 576, true, 7), 0);
  EXPECT_EQ(check(*backend, GetParam(), 9, 200, 1000, false, 8), 0);
  make_cpu_backend(1);  // back to one thread for the tests after this one
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FloatMatmul, ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace strata
