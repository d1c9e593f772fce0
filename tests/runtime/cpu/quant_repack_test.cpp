// tests/runtime/cpu/quant_repack_test.cpp: the interleaved layouts (runtime/cpu/quant_repack.h: q4_0, q4_1,
// q5_0, q5_1, q8_0; kquant_repack.h: q2_K..q6_K, iq4_xs, iq4_nl) against the plain reference: weights through dequantize_row (bit-identical to the gguf package:
// block_quant_test) dotted in double with the same 8-bit activation blocks (d * q). The integer sums are
// exact, so the only error left is f32 rounding of the per-block scale steps. Row counts that are not a
// multiple of the 8-row group, token counts that are not a multiple of the 4-token tile, and k a multiple
// of the type's block only (32, or 256 for the K-quants and iq4_xs).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "runtime/backend.h"
#include "runtime/cpu/quant_dot.h"
#include "runtime/cpu/quant_repack.h"
#include "runtime/error.h"
#include "runtime/formats/block_quant.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using test::random_f32;

Tensor quantized_weight(DType dt, int64_t rows, int64_t k, uint32_t seed) {
  const Tensor f = random_f32({rows, k}, seed, 0.05f);
  Tensor w = Tensor::empty({rows, k}, dt);
  quantize_row(dt, f.data<float>(), w.raw(), rows * k);
  return w;
}

// The fixture's random valid blocks (every code bit pattern, scales from f16-subnormal to 4) as [rows, k].
Tensor fixture_weight(DType dt, int64_t rows) {
  std::ifstream in(test::fixture(std::string("gguf_quants/") + dtype_name(dt) + ".blocks"), std::ios::binary);
  const std::vector<char> bytes(std::istreambuf_iterator<char>(in), {});
  const int64_t elems = static_cast<int64_t>(bytes.size()) / dtype_block_bytes(dt) * dtype_block_elems(dt);
  EXPECT_GT(elems, 0) << dtype_name(dt);
  Tensor w = Tensor::empty({rows, elems / rows}, dt);
  std::memcpy(w.raw(), bytes.data(), static_cast<size_t>(w.nbytes()));
  return w;
}

// out[i, r] against sum_j dequantized(w[r, j]) * d_b * q[i, j] + bias[r] in double. act256: the activations
// from quantize_activations_256 (one scale per 256 elements; the K-quant / iq4_xs prefill sums their
// integers over whole super-blocks).
void expect_matches_reference(const Tensor& w, int64_t m, uint32_t seed, bool act256 = false) {
  const DType dt = w.dtype();
  const int64_t n = w.dim(0), k = w.dim(1), nb = k / 32;
  const Tensor x = random_f32({m, k}, seed);
  const Tensor bias = random_f32({n}, seed + 1);
  std::vector<cpu::ActBlock> acts(static_cast<size_t>(m * nb));
  const auto quantize = act256 ? cpu::quantize_activations_256 : cpu::quantize_activations;
  for (int64_t i = 0; i < m; ++i) quantize(x.data<float>() + i * k, k, acts.data() + i * nb);
  std::vector<float> wf(static_cast<size_t>(n * k));
  dequantize_row(dt, w.raw(), wf.data(), n * k);

  const cpu::RepackedWeight packed(w.raw(), dt, n, k);
  ASSERT_EQ(packed.groups(), (n + 7) / 8);
  const int64_t ldo = n + 3;  // a wider output row: the tile must write only its own columns
  std::vector<float> out(static_cast<size_t>(m * ldo), -7.f);
  // Two calls over split group ranges, as two threads would make them.
  const int64_t half = packed.groups() / 2;
  packed.multiply(acts.data(), m, 0, half, bias.data<float>(), out.data(), ldo);
  packed.multiply(acts.data(), m, half, packed.groups(), bias.data<float>(), out.data(), ldo);

  int failures = 0;
  for (int64_t i = 0; i < m && failures < 5; ++i) {
    for (int64_t r = 0; r < n && failures < 5; ++r) {
      double ref = bias.data<float>()[r], mag = std::abs(ref);
      for (int64_t j = 0; j < k; ++j) {
        const cpu::ActBlock& a = acts[static_cast<size_t>(i * nb + j / 32)];
        const double term = double{wf[static_cast<size_t>(r * k + j)]} * a.d * a.q[j % 32];
        ref += term;
        mag += std::abs(term);
      }
      const double got = out[static_cast<size_t>(i * ldo + r)], bound = 2e-6 * mag + 1e-6;
      if (!(std::abs(got - ref) <= bound)) {
        ++failures;
        ADD_FAILURE() << dtype_name(dt) << " [" << n << ", " << k << "] x " << m << (act256 ? " (act256)" : "")
                      << ": token " << i << " row " << r
                      << ": got " << got << ", reference " << ref << ", allowed " << bound;
      }
    }
    for (int64_t r = n; r < ldo; ++r) EXPECT_EQ(out[static_cast<size_t>(i * ldo + r)], -7.f) << "column " << r;
  }
}

class Repacked : public ::testing::TestWithParam<DType> {};

TEST_P(Repacked, OddShapesMatchTheDequantizedReference) {
  const DType dt = GetParam();
  uint32_t seed = 1;
  const int64_t block = cpu::RepackedWeight::block_elems(dt);
  for (int64_t n : {1, 7, 8, 13, 37})
    for (int64_t k : {block, 3 * block, 17 * block})
      for (int64_t m : {1, 2, 3, 4, 5, 8, 9, 12, 17, 35}) {  // 8+: the K-quants' chunked prefill path
        const Tensor w = quantized_weight(dt, n, k, seed);
        expect_matches_reference(w, m, ++seed);
        if (k % 256 == 0) expect_matches_reference(w, m, ++seed, true);
      }
}

TEST_P(Repacked, FixtureBlocksMatchTheDequantizedReference) {
  const DType dt = GetParam();
  const int64_t blocks = fixture_weight(dt, 1).dim(1) / dtype_block_elems(dt);  // 16, or 6 of 256 elements
  for (int64_t rows : {1, 2, 3, 4, 6, 16}) {
    if (blocks % rows != 0) continue;
    for (int64_t m : {1, 6, 13}) {
      const Tensor w = fixture_weight(dt, rows);
      expect_matches_reference(w, m, 3);
      if (w.dim(1) % 256 == 0) expect_matches_reference(w, m, 3, true);
    }
  }
}

// Through the backend: upload_weight makes the copy and matmul uses it; a row slice of the same memory
// (same address, fewer rows) must take the row-at-a-time path (the copy would write 21 columns into 11).
// Both agree with the backend that does not repack to within f32 rounding.
TEST_P(Repacked, BackendMatmulAgreesWithAndWithoutTheCopy) {
  const DType dt = GetParam();
  auto packing = make_cpu_backend(1, true);
  auto plain = make_cpu_backend(1, false);
  const int64_t k = 5 * cpu::RepackedWeight::block_elems(dt);
  const Tensor w = quantized_weight(dt, 21, k, 5);
  const Tensor uploaded = packing->upload_weight(w);
  const Tensor slice = uploaded.rows(0, 11);
  for (const Tensor* weight : {&uploaded, &slice}) {
    for (int64_t m : {1, 6}) {
      const int64_t n = weight->dim(0);
      const Tensor x = random_f32({m, k}, 9);
      Tensor a = Tensor::empty({m, n}, DType::kF32), b = Tensor::empty({m, n}, DType::kF32);
      packing->matmul(x, *weight, nullptr, a);
      plain->matmul(x, *weight, nullptr, b);
      for (int64_t i = 0; i < m * n; ++i) EXPECT_NEAR(a.data<float>()[i], b.data<float>()[i], 1e-4) << i;
    }
  }
}

// Prefill through the backend (13 rows): the activations are rounded as the copy wants (one scale per 256
// for q3_K, q5_K, q6_K and iq4_xs, kquant_repack.h), and the result is the double-precision product with those.
TEST_P(Repacked, BackendPrefillUsesTheActivationsTheCopyWants) {
  const DType dt = GetParam();
  auto packing = make_cpu_backend(1, true);
  const int64_t n = 21, k = 5 * cpu::RepackedWeight::block_elems(dt), m = 13, nb = k / 32;
  const Tensor w = quantized_weight(dt, n, k, 6);
  const Tensor x = random_f32({m, k}, 10);
  Tensor out = Tensor::empty({m, n}, DType::kF32);
  packing->matmul(x, packing->upload_weight(w), nullptr, out);

  const bool act256 = cpu::RepackedWeight(w.raw(), dt, n, k).wants_activations_256(m);
  std::vector<cpu::ActBlock> acts(static_cast<size_t>(m * nb));
  for (int64_t i = 0; i < m; ++i)
    (act256 ? cpu::quantize_activations_256 : cpu::quantize_activations)(x.data<float>() + i * k, k,
                                                                           acts.data() + i * nb);
  std::vector<float> wf(static_cast<size_t>(n * k));
  dequantize_row(dt, w.raw(), wf.data(), n * k);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double ref = 0, mag = 0;
      for (int64_t j = 0; j < k; ++j) {
        const cpu::ActBlock& a = acts[static_cast<size_t>(i * nb + j / 32)];
        const double term = double{wf[static_cast<size_t>(r * k + j)]} * a.d * a.q[j % 32];
        ref += term, mag += std::abs(term);
      }
      EXPECT_NEAR(out.data<float>()[i * n + r], ref, 2e-6 * mag + 1e-6)
          << dtype_name(dt) << (act256 ? " (act256)" : "") << " token " << i << " row " << r;
    }
  }
}

// A weight freed after upload must not leave its copy behind for whatever is allocated at its address next
// (the allocator usually hands the same block back for the same size).
TEST_P(Repacked, AFreedWeightsCopyIsNotUsedForNewMemory) {
  const DType dt = GetParam();
  auto packing = make_cpu_backend(1, true);
  auto plain = make_cpu_backend(1, false);
  const int64_t k = 2 * cpu::RepackedWeight::block_elems(dt);
  { (void)packing->upload_weight(quantized_weight(dt, 16, k, 1)); }
  const Tensor w = quantized_weight(dt, 16, k, 2);
  const Tensor x = random_f32({2, k}, 3);
  Tensor a = Tensor::empty({2, 16}, DType::kF32), b = Tensor::empty({2, 16}, DType::kF32);
  packing->matmul(x, w, nullptr, a);
  plain->matmul(x, w, nullptr, b);
  for (int64_t i = 0; i < 32; ++i) EXPECT_NEAR(a.data<float>()[i], b.data<float>()[i], 1e-4) << i;
}

TEST(RepackedWeight, RefusesOtherTypesAndPartialBlocks) {
  const Tensor w = quantized_weight(DType::kQ4_K, 2, 512, 1);
  EXPECT_FALSE(cpu::RepackedWeight::supports(DType::kF8_B128));
  EXPECT_FALSE(cpu::RepackedWeight::supports(DType::kF16));
  EXPECT_THROW(cpu::RepackedWeight(w.raw(), DType::kF8_B128, 2, 256), Error);
  EXPECT_THROW(cpu::RepackedWeight(w.raw(), DType::kQ4_0, 2, 48), Error);
  EXPECT_THROW(cpu::RepackedWeight(w.raw(), DType::kQ4_K, 2, 288), Error);  // K-quants: whole 256-blocks
}

INSTANTIATE_TEST_SUITE_P(Gguf, Repacked,
                         ::testing::Values(DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                                           DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K,
                                           DType::kIQ4_XS, DType::kIQ4_NL),
                         [](const ::testing::TestParamInfo<DType>& p) { return std::string(dtype_name(p.param)); });

}  // namespace
}  // namespace strata
