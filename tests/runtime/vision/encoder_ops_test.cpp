// tests/runtime/vision/encoder_ops_test.cpp: the vision encoder's Backend ops (LayerNorm with bias, GELU
// in its erf and tanh forms, QuickGELU, bidirectional attention over a few hundred tokens) on the CPU
// backend against straightforward double-precision references written from the formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "runtime/backend.h"
#include "runtime/error.h"

namespace strata {
namespace {

Tensor random_tensor(const Shape& shape, uint32_t seed, float scale = 1.f, float offset = 0.f) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = offset + scale * dist(rng);
  return t;
}

TEST(EncoderOps, LayerNormWithBiasMatchesDoubleReference) {
  auto backend = make_cpu_backend();
  // A large offset checks the variance does not cancel; 1000 rows reach the threaded path.
  const int64_t rows = 1000, d = 96;
  const Tensor x = random_tensor({rows, d}, 1, 3.f, 50.f);
  const Tensor w = random_tensor({d}, 2, 0.5f, 1.f);
  const Tensor b = random_tensor({d}, 3, 0.3f);
  Tensor out = Tensor::empty({rows, d}, DType::kF32);
  Tensor out_nobias = Tensor::empty({rows, d}, DType::kF32);
  const float eps = 1e-5f;
  backend->layernorm(x, w, &b, eps, out);
  backend->layernorm(x, w, nullptr, eps, out_nobias);
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data<float>() + r * d;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += row[i];
    mean /= d;
    for (int64_t i = 0; i < d; ++i) var += (row[i] - mean) * (row[i] - mean);
    var /= d;
    for (int64_t i = 0; i < d; ++i) {
      const double normed = (row[i] - mean) / std::sqrt(var + eps) * w.data<float>()[i];
      worst = std::max(worst, std::fabs(normed + b.data<float>()[i] - out.data<float>()[r * d + i]));
      worst = std::max(worst, std::fabs(normed - out_nobias.data<float>()[r * d + i]));
    }
  }
  EXPECT_LT(worst, 2e-5);
}

TEST(EncoderOps, LayerNormRejectsAMismatchedWeight) {
  auto backend = make_cpu_backend();
  const Tensor x = random_tensor({4, 8}, 1);
  const Tensor w = random_tensor({7}, 2);
  Tensor out = Tensor::empty({4, 8}, DType::kF32);
  EXPECT_THROW(backend->layernorm(x, w, nullptr, 1e-5f, out), Error);
}

TEST(EncoderOps, ActivationsMatchTheirFormulas) {
  auto backend = make_cpu_backend();
  const int64_t n = 70000;  // past the threading threshold
  const Tensor x = random_tensor({n}, 7, 4.f);
  const double pi = std::acos(-1.0);
  struct Case {
    Activation act;
    double (*ref)(double, double);
  };
  const Case cases[] = {
      {Activation::kGeluErf, [](double v, double) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }},
      {Activation::kGeluTanh,
       [](double v, double p) { return 0.5 * v * (1 + std::tanh(std::sqrt(2 / p) * (v + 0.044715 * v * v * v))); }},
      {Activation::kQuickGelu, [](double v, double) { return v / (1 + std::exp(-1.702 * v)); }},
  };
  for (const Case& c : cases) {
    Tensor out = Tensor::empty({n}, DType::kF32);
    backend->activation(x, c.act, out);
    double worst = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double v = x.data<float>()[i];
      worst = std::max(worst, std::fabs(c.ref(v, pi) - out.data<float>()[i]) / (1 + std::fabs(v)));
    }
    EXPECT_LT(worst, 1e-6) << "activation " << static_cast<int>(c.act);
  }
  // The forms differ from each other by more than the bound, so a swapped formula fails above.
  Tensor erf_out = Tensor::empty({n}, DType::kF32), quick_out = Tensor::empty({n}, DType::kF32);
  backend->activation(x, Activation::kGeluErf, erf_out);
  backend->activation(x, Activation::kQuickGelu, quick_out);
  double gap = 0;
  for (int64_t i = 0; i < n; ++i) gap = std::max<double>(gap, std::fabs(erf_out.data<float>()[i] - quick_out.data<float>()[i]));
  EXPECT_GT(gap, 1e-3);
  // In place.
  Tensor y = random_tensor({n}, 7, 4.f);
  backend->activation(y, Activation::kGeluErf, y);
  for (int64_t i = 0; i < n; i += 997) EXPECT_FLOAT_EQ(y.data<float>()[i], erf_out.data<float>()[i]);
}

TEST(EncoderOps, BidirectionalAttentionMatchesDoubleReference) {
  auto backend = make_cpu_backend();
  // Two images of 257 tokens (a 16x16 patch grid and a class token), 4 heads of 32.
  const int64_t seq = 257, seqs = 2, heads = 4, hd = 32, T = seq * seqs;
  const Tensor q = random_tensor({T, heads, hd}, 11);
  const Tensor k = random_tensor({T, heads, hd}, 12);
  const Tensor v = random_tensor({T, heads, hd}, 13);
  Tensor out = Tensor::empty({T, heads, hd}, DType::kF32);
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  backend->attention_bidirectional(q, k, v, seq, scale, out);
  auto at = [&](const Tensor& t, int64_t tok, int64_t h, int64_t i) { return t.data<float>()[(tok * heads + h) * hd + i]; };
  double worst = 0;
  std::vector<double> p(static_cast<size_t>(seq));
  for (int64_t t = 0; t < T; t += 3)  // every third token keeps the double loop quick
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t first = t / seq * seq;
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j < seq; ++j) {
        double s = 0;
        for (int64_t i = 0; i < hd; ++i) s += static_cast<double>(at(q, t, h, i)) * at(k, first + j, h, i);
        p[static_cast<size_t>(j)] = s * scale;
        mx = std::max(mx, p[static_cast<size_t>(j)]);
      }
      for (double& e : p) sum += (e = std::exp(e - mx));
      for (int64_t i = 0; i < hd; ++i) {
        double ref = 0;
        for (int64_t j = 0; j < seq; ++j) ref += p[static_cast<size_t>(j)] / sum * at(v, first + j, h, i);
        worst = std::max(worst, std::fabs(ref - at(out, t, h, i)));
      }
    }
  EXPECT_LT(worst, 1e-5);
}

TEST(EncoderOps, BidirectionalAttentionSeesLaterTokensButNotOtherSequences) {
  auto backend = make_cpu_backend();
  // One head of one dimension: q = 0 gives uniform weights, so each output is its sequence's mean of v.
  const int64_t seq = 3;
  Tensor q = Tensor::zeros({6, 1, 1}, DType::kF32), k = Tensor::zeros({6, 1, 1}, DType::kF32);
  Tensor v = Tensor::empty({6, 1, 1}, DType::kF32);
  const float values[] = {1, 2, 6, 10, 20, 60};
  for (int i = 0; i < 6; ++i) v.data<float>()[i] = values[i];
  Tensor out = Tensor::empty({6, 1, 1}, DType::kF32);
  backend->attention_bidirectional(q, k, v, seq, 1.f, out);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(out.data<float>()[i], 3.f, 1e-6);  // a causal mask would give 1 first
  for (int i = 3; i < 6; ++i) EXPECT_NEAR(out.data<float>()[i], 30.f, 1e-5);
  EXPECT_THROW(backend->attention_bidirectional(q, k, v, 4, 1.f, out), Error);  // 6 tokens are not whole runs of 4
}

}  // namespace
}  // namespace strata
