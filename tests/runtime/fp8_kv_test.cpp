// tests/runtime/fp8_kv_test.cpp: the FP8 (e4m3) KV cache: the codec against PyTorch's float8_e4m3fn
// (fixtures from tools/reference/make_fp8_fixtures.py), the row format, the cache's bytes, and the CPU
// backend's paged attention over an fp8 cache against dense attention in double over the unquantized keys
// and values (decode, a prefill chunk over cached blocks and a fresh prefill, GQA 8:2).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/fp8_kv.h"
#include "runtime/kv_cache.h"
#include "test_util.h"

namespace strata {
namespace {

TEST(E4m3, EveryCodeDecodesAsTorch) {
  const test::NpyArray codes = test::read_npy(test::fixture("fp8/e4m3_codes.npy"));
  ASSERT_EQ(codes.data.size(), 256u);
  for (int c = 0; c < 256; ++c) {
    const float want = codes.data[static_cast<size_t>(c)], got = e4m3_to_f32(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << "code " << c;
      continue;
    }
    EXPECT_EQ(got, want) << "code " << c;
    EXPECT_EQ(std::signbit(got), std::signbit(want)) << "code " << c;
    // Every finite value encodes back to its own code (the two zeros included).
    EXPECT_EQ(f32_to_e4m3(got), c) << "value " << got;
  }
}

TEST(E4m3, RoundsToNearestEvenAsTorch) {
  const test::NpyArray cases = test::read_npy(test::fixture("fp8/e4m3_rounding.npy"));
  ASSERT_EQ(cases.shape.size(), 2u);
  ASSERT_GT(cases.shape[0], 3000);
  int ties = 0;
  for (int64_t i = 0; i < cases.shape[0]; ++i) {
    const float x = cases.data[static_cast<size_t>(2 * i)], want = cases.data[static_cast<size_t>(2 * i + 1)];
    EXPECT_EQ(e4m3_to_f32(f32_to_e4m3(x)), want) << "x = " << x;
    // A tie sits halfway between two codes: torch took the even one.
    const uint8_t c = f32_to_e4m3(x) & 0x7fu;
    const float a = std::fabs(x), d = std::fabs(e4m3_to_f32(c) - a);
    const bool tie = (c > 0 && std::fabs(e4m3_to_f32(c - 1) - a) == d) || (c < 0x7e && std::fabs(e4m3_to_f32(c + 1) - a) == d);
    if (tie && a > 0) {
      ++ties;
      EXPECT_EQ(c & 1u, 0u) << "tie " << x;
    }
  }
  EXPECT_EQ(ties, 2 * 126);  // every midpoint between the 127 non-negative finite codes, both signs
}

TEST(E4m3, SaturatesPast448AndKeepsNaN) {
  EXPECT_EQ(f32_to_e4m3(448.f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(463.f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(1e9f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(-INFINITY), 0xfe);
  EXPECT_TRUE(std::isnan(e4m3_to_f32(f32_to_e4m3(NAN))));
}

TEST(Fp8KvRow, ScaleIsAmaxOver448AndEveryElementWithinHalfAStep) {
  const int64_t hd = 64;
  const Tensor x = test::random_f32({hd}, 3, 5.f);
  std::vector<uint8_t> row(static_cast<size_t>(fp8_kv_row_bytes(hd)));
  fp8_kv_encode_row(x.data<float>(), hd, row.data());
  float amax = 0, scale = 0;
  for (int64_t i = 0; i < hd; ++i) amax = std::max(amax, std::fabs(x.data<float>()[i]));
  std::memcpy(&scale, row.data() + hd, 4);
  EXPECT_EQ(scale, amax / 448.f);  // IEEE division (fp8_kv.cpp builds without fast-math, as the GPU divides)
  std::vector<float> back(static_cast<size_t>(hd));
  fp8_kv_decode_row(row.data(), hd, back.data());
  for (int64_t i = 0; i < hd; ++i) {
    const float v = x.data<float>()[i], err = std::fabs(back[static_cast<size_t>(i)] - v);
    // 3 mantissa bits: half a step is 2^-4 of the value for normals, 2^-10 * scale under 2^-6 * scale.
    EXPECT_LE(err, std::max(std::fabs(v) / 16.f, scale / 1024.f) * 1.0001f) << i;
    if (std::fabs(v) == amax) {
      EXPECT_NEAR(std::fabs(back[static_cast<size_t>(i)]), amax, amax * 1e-6);  // 448 * scale
    }
  }
  std::vector<float> zeros(static_cast<size_t>(hd), 0.f);
  fp8_kv_encode_row(zeros.data(), hd, row.data());
  fp8_kv_decode_row(row.data(), hd, back.data());
  for (float b : back) EXPECT_EQ(b, 0.f);
}

TEST(Fp8KvCache, HoldsAboutTwiceTheBlocksOfBf16InTheSameBytes) {
  // A Llama-3-8B layer slice: 8 KV heads of 128.
  KvCacheShape shape{32, 1, 16, 8, 128};
  const int64_t budget = int64_t{8} << 30;
  const int64_t bf16 = budget / shape.block_bytes(DType::kBF16), fp8 = budget / shape.block_bytes(DType::kF8_E4M3);
  EXPECT_EQ(shape.block_bytes(DType::kBF16), 2 * 32 * 16 * 8 * 128 * 2);
  EXPECT_EQ(shape.block_bytes(DType::kF8_E4M3), 2 * 32 * 16 * 8 * (128 + 4));
  EXPECT_GT(static_cast<double>(fp8) / bf16, 1.9);
  EXPECT_EQ(kv_row_bytes(DType::kF32, 128), 512);
  EXPECT_EQ(kv_cache_tensor_shape(shape, DType::kF8_E4M3), (Shape{1, 16, 8, 132}));
}

TEST(Fp8KvCache, TensorsHoldCodesAndScalesAndRejectOddHeadDims) {
  auto backend = make_cpu_backend();
  KvCache cache(*backend, {2, 3, 4, 2, 16}, DType::kF8_E4M3);
  EXPECT_EQ(cache.dtype(), DType::kF8_E4M3);
  EXPECT_EQ(cache.k(1).nbytes(), 3 * 4 * 2 * 20);
  EXPECT_EQ(kv_cache_head_dim(cache.k(0)), 16);
  EXPECT_THROW(KvCache(*backend, {1, 1, 4, 2, 6}, DType::kF8_E4M3), Error);
  EXPECT_THROW(KvCache(*backend, {1, 1, 4, 2, 8}, DType::kQ8_0), Error);
}

TEST(KvCacheDtype, ParsesTheFlagValuesAndNamesTheBadOne) {
  EXPECT_EQ(parse_kv_cache_dtype("auto", "--kv-cache-dtype"), std::nullopt);
  EXPECT_EQ(parse_kv_cache_dtype("fp8", "--kv-cache-dtype"), DType::kF8_E4M3);
  EXPECT_EQ(parse_kv_cache_dtype("bf16", "--kv-cache-dtype"), DType::kBF16);
  EXPECT_EQ(parse_kv_cache_dtype("f16", "--kv-cache-dtype"), DType::kF16);
  EXPECT_EQ(parse_kv_cache_dtype("f32", "--kv-cache-dtype"), DType::kF32);
  try {
    parse_kv_cache_dtype("int4", "--kv-cache-dtype");
    FAIL() << "int4 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--kv-cache-dtype 'int4' is not a KV cache dtype"), std::string::npos)
        << e.what();
  }
}

// The attention test's bound on the max abs error, as a share of the largest output: e4m3 keeps each element
// within half a step (2^-4 relative); measured 0.040 (0.265 of 6.69) with keys and values of N(0, 4).
constexpr double kFp8AttentionShare = 0.0625;

// One attention step over a paged cache: seq 0 decodes position 20 over 20 cached tokens, seq 1 prefills
// positions 9..14 over 9 cached ones, seq 2 prefills 0..6 (block size 4, blocks scattered).
struct PagedStep {
  static constexpr int64_t kH = 8, kHkv = 2, kHd = 64, kBs = 4, kMaxBlocks = 6;
  std::vector<int> first = {20, 9, 0}, end = {21, 15, 7};  // step tokens [first, end) of each sequence
  std::vector<int32_t> tables = {11, 3, 7, 0, 15, 9, /**/ 2, 14, 5, 8, -1, -1, /**/ 1, 12, -1, -1, -1, -1};
  Tensor k, v;  // [seq][position] rows of every position of every sequence, f32
  int64_t rows_per_seq = 21;

  PagedStep() {
    k = test::random_f32({3 * rows_per_seq, kHkv, kHd}, 21, 2.f);
    v = test::random_f32({3 * rows_per_seq, kHkv, kHd}, 22, 2.f);
  }
  int32_t slot(int s, int p) const { return tables[static_cast<size_t>(s * kMaxBlocks + p / kBs)] * kBs + p % kBs; }

  // Writes positions [from(s), to(s)) of every sequence into the cache.
  template <typename From, typename To>
  void write(Backend& b, KvCache& cache, From from, To to) const {
    std::vector<int32_t> slots;
    std::vector<float> kk, vv;
    const int64_t row = kHkv * kHd;
    for (int s = 0; s < 3; ++s)
      for (int p = from(s); p < to(s); ++p) {
        slots.push_back(slot(s, p));
        const float* kr = k.data<float>() + (s * rows_per_seq + p) * row;
        const float* vr = v.data<float>() + (s * rows_per_seq + p) * row;
        kk.insert(kk.end(), kr, kr + row);
        vv.insert(vv.end(), vr, vr + row);
      }
    const auto n = static_cast<int64_t>(slots.size());
    if (n == 0) return;
    b.kv_write(Tensor::view(kk.data(), {n, kHkv, kHd}, DType::kF32),
               Tensor::view(vv.data(), {n, kHkv, kHd}, DType::kF32), Tensor::view(slots.data(), {n}, DType::kI32),
               cache.k(0), cache.v(0));
  }
};

TEST(Fp8KvAttention, CpuMatchesDenseAttentionOverUnquantizedKeysWithinBound) {
  auto backend = make_cpu_backend();
  PagedStep st;
  KvCache cache(*backend, {1, 16, PagedStep::kBs, PagedStep::kHkv, PagedStep::kHd}, DType::kF8_E4M3);
  st.write(*backend, cache, [&](int) { return 0; }, [&](int s) { return st.first[static_cast<size_t>(s)]; });
  st.write(*backend, cache, [&](int s) { return st.first[static_cast<size_t>(s)]; },
           [&](int s) { return st.end[static_cast<size_t>(s)]; });
  std::vector<int32_t> positions, token_seq, slots;
  for (int s = 0; s < 3; ++s)
    for (int p = st.first[static_cast<size_t>(s)]; p < st.end[static_cast<size_t>(s)]; ++p)
      positions.push_back(p), token_seq.push_back(s), slots.push_back(st.slot(s, p));
  const auto T = static_cast<int64_t>(positions.size());
  const int64_t H = PagedStep::kH, Hkv = PagedStep::kHkv, hd = PagedStep::kHd;
  const Tensor q = test::random_f32({T, H, hd}, 23);
  AttentionBatch b;
  b.positions = Tensor::view(positions.data(), {T}, DType::kI32);
  b.token_seq = Tensor::view(token_seq.data(), {T}, DType::kI32);
  b.slots = Tensor::view(slots.data(), {T}, DType::kI32);
  b.block_tables = Tensor::view(st.tables.data(), {3, PagedStep::kMaxBlocks}, DType::kI32);
  b.n_tokens = T, b.n_seqs = 3, b.max_blocks = PagedStep::kMaxBlocks, b.block_size = PagedStep::kBs;
  b.max_position = 21;
  Tensor out = Tensor::empty({T, H, hd}, DType::kF32);
  const float scale = 1.f / 8.f;
  backend->attention(q, cache.k(0), cache.v(0), b, scale, out);
  double max_err = 0, max_out = 0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t base = token_seq[static_cast<size_t>(t)] * st.rows_per_seq;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / Hkv);
      std::vector<double> w;
      double mx = -1e30;
      for (int64_t j = 0; j <= positions[static_cast<size_t>(t)]; ++j) {
        double s = 0;
        for (int64_t i = 0; i < hd; ++i)
          s += double{q.data<float>()[(t * H + h) * hd + i]} * st.k.data<float>()[((base + j) * Hkv + g) * hd + i];
        w.push_back(s * scale);
        mx = std::max(mx, s * scale);
      }
      double z = 0;
      for (double& x : w) z += (x = std::exp(x - mx));
      for (int64_t i = 0; i < hd; ++i) {
        double acc = 0;
        for (size_t j = 0; j < w.size(); ++j) acc += w[j] / z * st.v.data<float>()[((base + j) * Hkv + g) * hd + i];
        max_err = std::max(max_err, std::fabs(out.data<float>()[(t * H + h) * hd + i] - acc));
        max_out = std::max(max_out, std::fabs(acc));
      }
    }
  }
  RecordProperty("max_abs_error", std::to_string(max_err));
  EXPECT_LT(max_err, kFp8AttentionShare * max_out) << "max |out| " << max_out;
  EXPECT_GT(max_err, 0.0);  // the cache is really quantized (an f32 cache would give ~1e-6)
  std::printf("fp8 attention: max abs error %.4g, max |out| %.4g\n", max_err, max_out);
}

}  // namespace
}  // namespace strata
