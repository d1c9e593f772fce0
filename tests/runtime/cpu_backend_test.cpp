// tests/runtime/cpu_backend_test.cpp: CPU ops against closed-form results and naive loops in double
// precision, for every weight dtype the matmul accepts.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "runtime/backend.h"
#include "runtime/kv_cache.h"
#include "runtime/error.h"
#include "runtime/rope.h"
#include "test_util.h"

namespace strata {
namespace {

using test::random_f32;

// Quantizes / converts an f32 [n, k] matrix to `dtype` the way GGUF stores it.
Tensor convert(const Tensor& w, DType dtype) {
  const int64_t n = w.dim(0), k = w.dim(1);
  Tensor out = Tensor::empty({n, k}, dtype);
  const float* src = w.data<float>();
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t b = 0; b < k / (dtype_is_quantized(dtype) ? kQBlock : k); ++b) {
      const float* x = src + r * k + b * kQBlock;
      float amax = 0;
      for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::abs(x[j]));
      if (dtype == DType::kQ8_0) {
        auto& blk = out.data<BlockQ8_0>()[r * (k / kQBlock) + b];
        const float d = amax / 127.f;
        blk.scale = f32_to_f16(d);
        for (int j = 0; j < kQBlock; ++j) blk.q[j] = static_cast<int8_t>(std::lround(d > 0 ? x[j] / d : 0));
      } else if (dtype == DType::kQ4_0) {
        auto& blk = out.data<BlockQ4_0>()[r * (k / kQBlock) + b];
        const float d = amax / 7.f;
        blk.scale = f32_to_f16(d);
        for (int j = 0; j < kQBlock / 2; ++j) {
          const int lo = std::clamp(static_cast<int>(std::lround(d > 0 ? x[j] / d : 0)) + 8, 0, 15);
          const int hi = std::clamp(static_cast<int>(std::lround(d > 0 ? x[j + 16] / d : 0)) + 8, 0, 15);
          blk.q[j] = static_cast<uint8_t>(lo | hi << 4);
        }
      }
    }
    if (dtype == DType::kF16)
      for (int64_t j = 0; j < k; ++j) out.data<uint16_t>()[r * k + j] = f32_to_f16(src[r * k + j]);
    if (dtype == DType::kBF16)
      for (int64_t j = 0; j < k; ++j) out.data<uint16_t>()[r * k + j] = f32_to_bf16(src[r * k + j]);
    if (dtype == DType::kF32)
      for (int64_t j = 0; j < k; ++j) out.data<float>()[r * k + j] = src[r * k + j];
  }
  return out;
}

class Matmul : public ::testing::TestWithParam<std::tuple<DType, int64_t>> {};

TEST_P(Matmul, MatchesDoubleReferenceWithinTheDtypeError) {
  const auto [dtype, m] = GetParam();
  const int64_t k = 96, n = 37;
  auto backend = make_cpu_backend();
  const Tensor x = random_f32({m, k}, 1);
  const Tensor w32 = random_f32({n, k}, 2, 0.1f);
  const Tensor w = convert(w32, dtype);
  const Tensor bias = random_f32({n}, 3);
  Tensor out = Tensor::empty({m, n}, DType::kF32);
  backend->matmul(x, w, &bias, out);
  // Reference: the dequantized weights (read back exactly by a matmul of the identity through the
  // same storage), multiplied in double precision.
  Tensor eye = Tensor::zeros({k, k}, DType::kF32);
  for (int64_t i = 0; i < k; ++i) eye.data<float>()[i * k + i] = 1.f;
  Tensor wt = Tensor::empty({k, n}, DType::kF32);
  backend->matmul(eye, w, nullptr, wt);  // wt[i, r] = w[r, i]
  // Quantized weights multiply 8-bit activations (32-element blocks, scale max|x| / 127): each activation
  // moves by at most half a step, so an output may move by sum_j |w_j| * step_j / 2 beyond f32 rounding.
  const bool quantized = dtype_is_quantized(dtype);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r) {
      double acc = bias.data<float>()[r], bound = 1e-4;
      for (int64_t j = 0; j < k; ++j) {
        acc += static_cast<double>(x.data<float>()[i * k + j]) * wt.data<float>()[j * n + r];
        if (quantized) {
          double amax = 0;
          for (int64_t b = j / 32 * 32; b < j / 32 * 32 + 32; ++b)
            amax = std::max(amax, std::abs(double{x.data<float>()[i * k + b]}));
          bound += std::abs(double{wt.data<float>()[j * n + r]}) * amax / 127 / 2;
        }
      }
      EXPECT_LT(std::abs(acc - out.data<float>()[i * n + r]), bound) << "row " << i << " col " << r;
    }
  // And the stored weights are close to the f32 originals, within the dtype's resolution.
  const double tol = dtype == DType::kF32 ? 0 : dtype == DType::kQ4_0 ? 0.05 : dtype == DType::kQ8_0 ? 0.005 : 0.002;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k; ++j)
      EXPECT_NEAR(wt.data<float>()[j * n + r], w32.data<float>()[r * k + j], tol + 1e-7);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, Matmul,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0,
                                                              DType::kQ4_0),
                                            ::testing::Values(int64_t{1}, int64_t{2}, int64_t{5})));

TEST(CpuBackend, RmsNormMatchesDefinition) {
  auto backend = make_cpu_backend();
  const Tensor x = random_f32({3, 10}, 4);
  const Tensor w = random_f32({10}, 5);
  Tensor out = Tensor::empty({3, 10}, DType::kF32);
  backend->rmsnorm(x, w, 1e-5f, out);
  for (int r = 0; r < 3; ++r) {
    double ss = 0;
    for (int i = 0; i < 10; ++i) ss += std::pow(x.data<float>()[r * 10 + i], 2);
    const double inv = 1 / std::sqrt(ss / 10 + 1e-5);
    for (int i = 0; i < 10; ++i)
      EXPECT_NEAR(out.data<float>()[r * 10 + i], x.data<float>()[r * 10 + i] * inv * w.data<float>()[i], 1e-5);
  }
}

// The fused-gate/up SwiGLU against its definition, silu(g) * u with g and u taken from each row's halves.
TEST(CpuBackend, SwigluOfFusedRowsMatchesDefinition) {
  auto backend = make_cpu_backend();
  const int64_t T = 3, F = 7;
  const Tensor gu = random_f32({T, 2 * F}, 9);
  Tensor out = Tensor::empty({T, F}, DType::kF32);
  backend->swiglu(gu, out);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < F; ++i) {
      const double g = gu.data<float>()[t * 2 * F + i], u = gu.data<float>()[t * 2 * F + F + i];
      EXPECT_NEAR(out.data<float>()[t * F + i], g / (1 + std::exp(-g)) * u, 1e-5) << t << "," << i;
    }
}

// split_columns against its definition: each row's columns dealt out to the parts in order; bad operands
// are refused with the op named.
TEST(CpuBackend, SplitColumnsDealsEachRowsColumnsInOrder) {
  auto backend = make_cpu_backend();
  const int64_t T = 3;
  const Tensor x = random_f32({T, 4 + 2 + 3}, 12);
  Tensor a = Tensor::empty({T, 4}, DType::kF32), b = Tensor::empty({T, 2}, DType::kF32),
         c = Tensor::empty({T, 1, 3}, DType::kF32);
  backend->split_columns(x, {&a, &b, &c});
  for (int64_t t = 0; t < T; ++t) {
    const float* row = x.data<float>() + t * 9;
    for (int i = 0; i < 4; ++i) EXPECT_EQ(a.data<float>()[t * 4 + i], row[i]);
    for (int i = 0; i < 2; ++i) EXPECT_EQ(b.data<float>()[t * 2 + i], row[4 + i]);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(c.data<float>()[t * 3 + i], row[6 + i]);
  }
  Tensor wrong = Tensor::empty({T, 2}, DType::kF32);
  EXPECT_THROW(backend->split_columns(x, {&a, &wrong}), Error);  // 6 of 9 columns
  Tensor half = Tensor::empty({T, 5}, DType::kF16);
  EXPECT_THROW(backend->split_columns(x, {&a, &half}), Error);  // dtype differs
}

TEST(CpuBackend, RopeStylesRotateTheDocumentedPairsAndKeepNorms) {
  auto backend = make_cpu_backend();
  RopeParams params;
  params.rot_dim = 8;
  const std::vector<float> inv = rope_inv_freq(params, 8);
  for (RopeStyle style : {RopeStyle::kHalf, RopeStyle::kAdjacent}) {
    params.style = style;
    Tensor x = random_f32({2, 1, 8}, 6);
    const Tensor before = random_f32({2, 1, 8}, 6);
    std::vector<int32_t> pos = {0, 5};
    const Tensor positions = Tensor::view(pos.data(), {2}, DType::kI32);
    backend->rope(x, positions, params);
    for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(x.data<float>()[i], before.data<float>()[i]);  // position 0
    for (int i = 0; i < 4; ++i) {
      const int a = style == RopeStyle::kHalf ? i : 2 * i, b = style == RopeStyle::kHalf ? i + 4 : 2 * i + 1;
      const float c = std::cos(5.f * inv[i]), s = std::sin(5.f * inv[i]);
      const float x0 = before.data<float>()[8 + a], x1 = before.data<float>()[8 + b];
      EXPECT_NEAR(x.data<float>()[8 + a], x0 * c - x1 * s, 1e-5);
      EXPECT_NEAR(x.data<float>()[8 + b], x1 * c + x0 * s, 1e-5);
    }
  }
}

TEST(CpuBackend, PagedAttentionEqualsDenseCausalAttention) {
  // Two sequences (lengths 5 and 3) scattered over non-contiguous blocks of size 2; GQA 4:2.
  auto backend = make_cpu_backend();
  const int64_t H = 4, Hkv = 2, hd = 8, bs = 2;
  const std::vector<int> lens = {5, 3};
  KvCacheShape shape{1, 8, bs, Hkv, hd};
  KvCache cache(*backend, shape);
  std::vector<int32_t> tables = {6, 1, 4, -1, 3, 0, -1, -1};  // [2 seqs, 4 blocks]
  std::vector<int32_t> positions, token_seq, slots;
  for (int s = 0; s < 2; ++s)
    for (int p = 0; p < lens[s]; ++p) {
      positions.push_back(p);
      token_seq.push_back(s);
      slots.push_back(tables[static_cast<size_t>(s * 4 + p / bs)] * bs + p % bs);
    }
  const int64_t T = static_cast<int64_t>(positions.size());
  const Tensor q = random_f32({T, H, hd}, 7), k = random_f32({T, Hkv, hd}, 8), v = random_f32({T, Hkv, hd}, 9);
  AttentionBatch b;
  b.positions = Tensor::view(positions.data(), {T}, DType::kI32);
  b.token_seq = Tensor::view(token_seq.data(), {T}, DType::kI32);
  b.slots = Tensor::view(slots.data(), {T}, DType::kI32);
  b.block_tables = Tensor::view(tables.data(), {2, 4}, DType::kI32);
  b.n_tokens = T, b.n_seqs = 2, b.max_blocks = 4, b.block_size = bs, b.max_position = 5;
  backend->kv_write(k, v, b.slots, cache.k(0), cache.v(0));
  Tensor out = Tensor::empty({T, H, hd}, DType::kF32);
  const float scale = 0.35f;
  backend->attention(q, cache.k(0), cache.v(0), b, scale, out);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t first = token_seq[t] == 0 ? 0 : lens[0];
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / Hkv);
      std::vector<double> w;
      double mx = -1e30;
      for (int64_t j = first; j <= first + positions[t]; ++j) {
        double s = 0;
        for (int64_t i = 0; i < hd; ++i) s += q.data<float>()[(t * H + h) * hd + i] * k.data<float>()[(j * Hkv + g) * hd + i];
        w.push_back(s * scale);
        mx = std::max(mx, s * scale);
      }
      double z = 0;
      for (double& x : w) z += (x = std::exp(x - mx));
      for (int64_t i = 0; i < hd; ++i) {
        double acc = 0;
        for (size_t j = 0; j < w.size(); ++j) acc += w[j] / z * v.data<float>()[((first + j) * Hkv + g) * hd + i];
        EXPECT_NEAR(out.data<float>()[(t * H + h) * hd + i], acc, 1e-5);
      }
    }
  }
}

TEST(CpuBackend, VocabShardEmbeddingZeroesForeignIds) {
  auto backend = make_cpu_backend();
  const Tensor table = random_f32({4, 3}, 10);  // rows for ids 8..11
  std::vector<int32_t> ids = {9, 2, 11};
  Tensor out = Tensor::empty({3, 3}, DType::kF32);
  backend->embed(table, Tensor::view(ids.data(), {3}, DType::kI32), 8, out);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(out.data<float>()[i], table.data<float>()[3 + i]);
    EXPECT_EQ(out.data<float>()[3 + i], 0.f);
    EXPECT_EQ(out.data<float>()[6 + i], table.data<float>()[9 + i]);
  }
}

TEST(BlockAllocator, HandsOutEveryBlockOnceAndRejectsDoubleFree) {
  BlockAllocator a(3);
  const int32_t x = a.allocate(), y = a.allocate(), z = a.allocate();
  EXPECT_EQ(a.allocate(), -1);
  EXPECT_NE(x, y);
  EXPECT_NE(y, z);
  a.free(y);
  EXPECT_EQ(a.allocate(), y);
  a.free(x);
  EXPECT_THROW(a.free(x), Error);
}

}  // namespace
}  // namespace strata
