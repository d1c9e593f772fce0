// tests/gpu/fp8_gpu_test.cpp: the f8_e4m3_b128 weight type (FP8 checkpoints, issue 23) on the CUDA backend
// against the CPU: the decode GEMV (1..8 rows) and the dequantize-then-cuBLAS path (more rows) against the
// CPU backend's f32 matmul on the exactly dequantized weights, the e4m3 tensor-core path (fp8_cublaslt 1 and
// 2) against a double-precision host product and against the dequantize path, and a whole FP8 checkpoint's
// logits against the CPU backend's with each path. Skips when no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "launcher/model_session.h"
#include "runtime/backend.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/formats/block_quant.h"
#include "gpu/gpu_cpu_logits.h"
#include "test_util.h"

namespace strata {
namespace {

double rel_norm_error(const Tensor& got, const Tensor& want) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double d = double{got.data<float>()[i]} - want.data<float>()[i];
    num += d * d;
    den += double{want.data<float>()[i]} * want.data<float>()[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST(F8OnGpu, MatmulMatchesTheDequantizedWeightsOnTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const int64_t n = 96, k = 512;
  const Tensor wf = test::random_f32({n, k}, 3, 0.05f);
  Tensor w = Tensor::empty({n, k}, DType::kF8_B128);
  quantize_row(DType::kF8_B128, wf.data<float>(), w.raw(), n * k);
  Tensor deq = Tensor::empty({n, k}, DType::kF32);
  dequantize_row(DType::kF8_B128, w.raw(), deq.data<float>(), n * k);
  auto cpu = make_cpu_backend(1);
  auto gpu = make_cuda_backend(0);
  const Tensor wd = gpu->upload_weight(w);
  for (int64_t m : {1, 3, 8, 20}) {
    const Tensor x = test::random_f32({m, k}, 10 + static_cast<uint32_t>(m));
    Tensor want = Tensor::empty({m, n}, DType::kF32);
    cpu->matmul(x, deq, nullptr, want);
    Tensor xd = gpu->alloc({m, k}, DType::kF32), od = gpu->alloc({m, n}, DType::kF32);
    gpu->copy(x, xd);
    gpu->matmul(xd, wd, nullptr, od);
    Tensor got = Tensor::empty({m, n}, DType::kF32);
    gpu->copy(od, got);
    // GEMV rows (<= 8) stay f32 end to end; more rows go through bf16 operands for cuBLAS.
    EXPECT_LT(rel_norm_error(got, want), m <= 8 ? 1e-5 : 1e-2) << m << " rows";
  }
}

// The FP8 tensor-core path quantizes x to e4m3 (3 mantissa bits) per token and 128 columns. Rounding to 3
// bits leaves a relative error of at most 2^-4 per element, uniform within half an ulp: relative to the RMS
// of x that is about 2^-4 / sqrt(3) / 1.5 (the mean mantissa) ~ 0.024, and each output, a sum over k of such
// independent errors times the weights, carries the same relative RMS error. The weights are exact (the
// checkpoint's own codes and scales). So the bound is 0.04 (1.6x that estimate); a scale table read in the
// wrong layout, or the wrong row's scale, gives errors of order 1. The dequantize path (bf16 activations and
// weights, 2^-9) stays near 0.003, so an error below 0.008 means the e4m3 path did not run at all.
constexpr double kFp8Bound = 0.04, kFp8Floor = 0.008, kBf16Bound = 1e-2;

// Relative RMS error of one row of outputs against the double reference.
double row_error(const float* got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t j = 0; j < want.size(); ++j) {
    num += (got[j] - want[j]) * (got[j] - want[j]);
    den += want[j] * want[j];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

struct Fp8Case {
  int64_t m, n, k;
  DType io;  // x and out
};

TEST(F8OnGpu, TensorCoreGemmMatchesTheHostProductAndTheDequantizePath) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaBackendOptions off, per_call, kept;
  off.fp8_cublaslt = 0;
  per_call.fp8_cublaslt = 1;
  kept.fp8_cublaslt = 2;
  auto b_off = make_cuda_backend(0, off), b_call = make_cuda_backend(0, per_call), b_kept = make_cuda_backend(0, kept);
  // M = 203 and 13 leave 3 and 5 rows to the GEMV; 4224 = 4096 + 128 columns; one case with f32 x and out.
  const std::vector<Fp8Case> cases = {{64, 256, 512, DType::kBF16},    {64, 4224, 4096, DType::kBF16},
                                      {200, 256, 4096, DType::kBF16},  {200, 4224, 512, DType::kBF16},
                                      {2048, 256, 512, DType::kBF16},  {2048, 4224, 4096, DType::kBF16},
                                      {203, 4224, 4096, DType::kBF16}, {13, 256, 512, DType::kBF16},
                                      {96, 256, 512, DType::kF32}};
  for (const Fp8Case& c : cases) {
    const int64_t m = c.m, n = c.n, k = c.k;
    SCOPED_TRACE(testing::Message() << "M " << m << ", N " << n << ", K " << k << ", " << dtype_name(c.io));
    // Weights whose rows and 128-column blocks differ in magnitude (so every scale matters), quantized by the
    // checkpoint reader's own routine; activations likewise, rounded to what the GPU holds.
    Tensor wf = test::random_f32({n, k}, static_cast<uint32_t>(n + k), 0.05f);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < k; ++i)
        wf.data<float>()[j * k + i] *= std::ldexp(1.f, static_cast<int>((j + i / 128) % 5) - 2);
    Tensor w = Tensor::empty({n, k}, DType::kF8_B128);
    quantize_row(DType::kF8_B128, wf.data<float>(), w.raw(), n * k);
    std::vector<float> deq(static_cast<size_t>(n * k));
    dequantize_row(DType::kF8_B128, w.raw(), deq.data(), n * k);
    Tensor x = test::random_f32({m, k}, static_cast<uint32_t>(m * 7 + k));
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < k; ++i) {
        float& v = x.data<float>()[r * k + i];
        v *= std::ldexp(1.f, static_cast<int>((r + 3 * (i / 128)) % 7) - 3);
        if (c.io == DType::kBF16) v = bf16_to_f32(f32_to_bf16(v));
      }
    // Rows checked against the host product: all of a small M; a spread of a large one, with its first
    // and last 8 (the GEMV's tail).
    std::vector<int64_t> rows;
    for (int64_t r = 0; r < m; r += m <= 64 ? 1 : m / 40) rows.push_back(r);
    for (int64_t r = std::max<int64_t>(0, m - 8); r < m; ++r)
      if (rows.back() < r) rows.push_back(r);
    std::vector<std::vector<double>> want;
    for (int64_t r : rows) {
      std::vector<double> y(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < k; ++i) acc += double{x.data<float>()[r * k + i]} * deq[static_cast<size_t>(j * k + i)];
        y[static_cast<size_t>(j)] = acc;
      }
      want.push_back(std::move(y));
    }
    auto run = [&](Backend& b) {
      const Tensor wd = b.upload_weight(w);
      Tensor xd = b.alloc({m, k}, c.io), od = b.alloc({m, n}, c.io);
      b.copy(x, xd);
      b.matmul(xd, wd, nullptr, od);
      Tensor got = Tensor::empty({m, n}, DType::kF32);
      b.copy(od, got);
      return got;
    };
    const Tensor got_off = run(*b_off), got_call = run(*b_call), got_kept = run(*b_kept);
    double worst_off = 0, worst_call = 0, worst_kept = 0, worst_pair = 0, least_call = 1e30;
    for (size_t i = 0; i < rows.size(); ++i) {
      const int64_t r = rows[i];
      const double e_call = row_error(got_call.data<float>() + r * n, want[i]);
      worst_off = std::max(worst_off, row_error(got_off.data<float>() + r * n, want[i]));
      worst_call = std::max(worst_call, e_call);
      worst_kept = std::max(worst_kept, row_error(got_kept.data<float>() + r * n, want[i]));
      if (r < m - m % 8) least_call = std::min(least_call, e_call);  // rows the tensor cores took
    }
    // The e4m3 path against the dequantize path, every row.
    for (int64_t r = 0; r < m; ++r) {
      std::vector<double> ref(got_off.data<float>() + r * n, got_off.data<float>() + (r + 1) * n);
      worst_pair = std::max(worst_pair, row_error(got_call.data<float>() + r * n, ref));
    }
    std::printf("M %5lld N %5lld K %5lld %s: rel RMS error per row, worst: dequantize %.4f, fp8 per call %.4f "
                "(least %.4f), fp8 kept %.4f, fp8 vs dequantize %.4f\n",
                static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k), dtype_name(c.io),
                worst_off, worst_call, least_call, worst_kept, worst_pair);
    EXPECT_LT(worst_off, kBf16Bound);
    EXPECT_LT(worst_call, kFp8Bound);
    EXPECT_LT(worst_kept, kFp8Bound);
    EXPECT_LT(worst_pair, kFp8Bound);
    EXPECT_GT(least_call, kFp8Floor) << "the rows cuBLASLt should take show no e4m3 rounding: it did not run";
  }
}

// The FP8 checkpoint through a session with the given CUDA options, every position's logits.
Tensor score_on_gpu(const std::vector<int32_t>& ids, int fp8_cublaslt) {
  launcher::SessionOptions options;
  options.model_path = test::fixture("hf_quant/fp8_block128");
  options.device = "cuda";
  options.backend.cuda.fp8_cublaslt = fp8_cublaslt;
  launcher::ModelSession gpu(options);
  gpu.prepare(64);
  return gpu.generator().score(ids);
}

double rms(const Tensor& t) {
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += double{t.data<float>()[i]} * t.data<float>()[i];
  return std::sqrt(s / std::max<int64_t>(t.numel(), 1));
}

TEST(F8OnGpu, Fp8CheckpointLogitsWithTheTensorCoreGemm) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  // 29 tokens: a prefill of 24 rows on the tensor cores and 5 on the GEMV in every FP8 layer.
  std::vector<int32_t> ids;
  for (int i = 0; i < 29; ++i) ids.push_back(static_cast<int32_t>((i * 37 + 5) % 127 + 1));
  const test::CpuGpuLogits base = test::score_on_cpu_and_gpu(test::fixture("hf_quant/fp8_block128"), ids);
  for (int mode : {1, 2}) {
    const Tensor got = score_on_gpu(ids, mode);
    ASSERT_EQ(got.numel(), base.cpu.numel());
    // Two layers of e4m3 activations (~0.024 relative RMS per matmul, above) against the CPU's 8-bit integer
    // blocks and the GPU's bf16: the logits' relative RMS difference is bounded by 0.08 (a few matmuls' worth),
    // and no logit moves by more than 10% of the largest row's range (the bf16 path's bound above is 5%).
    const test::LogitAgreement vs_cpu = test::compare_logits(base.cpu, got);
    Tensor diff = Tensor::empty(got.shape(), DType::kF32), diff_gpu = Tensor::empty(got.shape(), DType::kF32);
    for (int64_t i = 0; i < got.numel(); ++i) {
      diff.data<float>()[i] = got.data<float>()[i] - base.cpu.data<float>()[i];
      diff_gpu.data<float>()[i] = got.data<float>()[i] - base.gpu.data<float>()[i];
    }
    std::printf("fp8_cublaslt=%d: logits rel RMS vs cpu %.4f, vs the dequantize path %.4f; max |diff| %.4f of "
                "range %.4f\n", mode, rms(diff) / rms(base.cpu), rms(diff_gpu) / rms(base.gpu), vs_cpu.worst,
                vs_cpu.spread);
    EXPECT_LT(rms(diff) / rms(base.cpu), 0.08) << "fp8_cublaslt=" << mode;
    EXPECT_LT(rms(diff_gpu) / rms(base.gpu), 0.08) << "fp8_cublaslt=" << mode;
    EXPECT_LT(vs_cpu.worst, 0.1 * vs_cpu.spread) << "fp8_cublaslt=" << mode;
  }
}

TEST(F8OnGpu, Fp8CheckpointLogitsMatchTheCpuBackend) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const std::vector<int32_t> ids = {1, 40, 7, 100, 12, 99, 5, 120, 17, 3, 64, 110};
  const test::CpuGpuLogits logits = test::score_on_cpu_and_gpu(test::fixture("hf_quant/fp8_block128"), ids);
  const Tensor& ref = logits.cpu;
  const Tensor& got = logits.gpu;
  ASSERT_EQ(got.numel(), ref.numel());
  double worst = 0, spread = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    worst = std::max(worst, std::abs(double{ref.data<float>()[i]} - got.data<float>()[i]));
    spread = std::max(spread, std::abs(double{ref.data<float>()[i]}));
  }
  // bf16 activations on the GPU, 8-bit activation blocks on the CPU: a few percent of the logit range.
  EXPECT_LT(worst, 0.05 * spread) << "max |gpu - cpu| " << worst;
}

}  // namespace
}  // namespace strata
