// tests/gpu/fp8_gpu_test.cpp: the f8_e4m3_b128 weight type (FP8 checkpoints, issue 23) on the CUDA backend
// against the CPU: the decode GEMV (1..8 rows) and the dequantize-then-cuBLAS path (more rows) against the
// CPU backend's f32 matmul on the exactly dequantized weights, and a whole FP8 checkpoint's logits against
// the CPU backend's. Skips when no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

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
