// tests/gpu/quant_mma_gpu_test.cpp: the tensor-core quantized GEMM (runtime/cuda/qgemm_mma.cu) that takes
// Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q4_K / Q5_K / Q6_K matmuls of decode batches, against the CPU backend on
// the same packed weights:
//  - the CPU's f32 product with the weight dequantized by the CPU (bit-identical to ggml's): the kernel
//    multiplies the blocks' integer codes exactly and scales f32 sums, so only summation order differs;
//  - the CPU backend's own quantized matmul on the packed weight, which rounds x to 8 bits per 32
//    elements (so a looser bound: that rounding, not the kernel, sets it).
// Shapes: K not a multiple of the 256-element chunk (and with rows that start off a 16-byte boundary), N not
// a multiple of the 128-row block and below it, M on and off the 8-token tiles; K of one chunk (one split:
// the kernel writes out itself) and K split over blocks (partials summed by the second kernel).
// Outputs are poisoned with NaN first, so an unwritten element fails. Skips when no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <utility>

#include "runtime/backend.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/formats/block_quant.h"

namespace strata {
namespace {

Tensor random_host(const Shape& shape, std::mt19937& gen, float stddev) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  std::normal_distribution<float> dist(0.f, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = bf16_to_f32(f32_to_bf16(dist(gen)));
  return t;
}

Tensor dequantized(const Tensor& w) {
  Tensor out = Tensor::empty(w.shape(), DType::kF32);
  const int64_t rows = w.dim(0), cols = w.dim(1), row_bytes = dtype_bytes(w.dtype(), cols);
  for (int64_t r = 0; r < rows; ++r)
    dequantize_row(w.dtype(), static_cast<const uint8_t*>(w.raw()) + r * row_bytes, out.data<float>() + r * cols, cols);
  return out;
}

// ||got - want|| / ||want||, and (as a failure message) the first element off by more than `bound` times the
// rms of want, with its token and output feature, so an indexing error shows where it lands.
double rel_error(const Tensor& got, const Tensor& want, double bound, std::string& first_bad) {
  const int64_t n = want.dim(1);
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) den += static_cast<double>(want.data<float>()[i]) * want.data<float>()[i];
  const double rms = std::sqrt(den / static_cast<double>(std::max<int64_t>(want.numel(), 1)));
  first_bad.clear();
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = got.data<float>()[i], w = want.data<float>()[i];
    num += (g - w) * (g - w);
    if (first_bad.empty() && !(std::fabs(g - w) <= 4 * bound * rms + 1e-6)) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "first mismatch at token %lld, feature %lld: got %g, want %g",
                    static_cast<long long>(i / n), static_cast<long long>(i % n), g, w);
      first_bad = msg;
    }
  }
  if (!std::isfinite(num)) return INFINITY;
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST(QuantMmaGpu, MatchesTheCpuOnThePackedWeights) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU visible (cudaGetDeviceCount failed or returned 0)";
  auto cpu = make_cpu_backend();
  CudaBackendOptions opt;
  opt.quant_mma_min_rows = 1;  // every M of the test through the kernel
  opt.quant_mma_max_rows = 64;
  auto gpu = make_cuda_backend(0, opt);
  std::mt19937 gen(23);
  for (DType dt : {DType::kQ4_0, DType::kQ8_0, DType::kQ4_K, DType::kQ6_K, DType::kQ5_K, DType::kQ4_1, DType::kQ5_0,
                   DType::kQ5_1}) {
    for (auto [n, k32] : {std::pair<int64_t, int64_t>{1000, 4096 + 32 * 3}, {77, 800}, {1000, 256}, {333, 11008}}) {
      const int64_t be = dtype_block_elems(dt), k = (k32 + be - 1) / be * be;  // whole super-blocks (K-quants)
      Tensor wf = random_host({n, k}, gen, 0.05f);
      Tensor w = Tensor::empty({n, k}, dt);
      quantize_row(dt, wf.data<float>(), w.raw(), n * k);
      const Tensor ref = dequantized(w);
      Tensor wd = gpu->upload_weight(w);
      Tensor bias = random_host({n}, gen, 1.f);
      Tensor bd = gpu->upload_weight(bias);
      for (int64_t m : {1, 2, 3, 8, 16, 17, 32, 33, 64}) {
        if (k == 11008 && m != 17 && m != 64) continue;  // the long K: two M suffice
        const bool with_bias = m % 2 == 1;
        Tensor x = random_host({m, k}, gen, 1.f);
        Tensor exact = Tensor::empty({m, n}, DType::kF32), packed = Tensor::empty({m, n}, DType::kF32);
        cpu->matmul(x, ref, with_bias ? &bias : nullptr, exact);
        cpu->matmul(x, w, with_bias ? &bias : nullptr, packed);
        Tensor xd = gpu->alloc({m, k}, DType::kBF16);
        gpu->copy(x, xd);
        for (DType out_dt : {DType::kF32, DType::kBF16}) {
          Tensor nan = Tensor::empty({m, n}, DType::kF32);
          std::fill(nan.data<float>(), nan.data<float>() + nan.numel(), std::nanf(""));
          Tensor out = gpu->alloc({m, n}, out_dt);
          gpu->copy(nan, out);
          gpu->matmul(xd, wd, with_bias ? &bd : nullptr, out);
          Tensor got = Tensor::empty({m, n}, DType::kF32);
          gpu->copy(out, got);
          const std::string what = std::string(dtype_name(dt)) + " M " + std::to_string(m) + " N " +
                                   std::to_string(n) + " K " + std::to_string(k) + " out " + dtype_name(out_dt);
          // f32 out: summation order only; bf16 out: one rounding of the output (~2e-3 rms).
          const double bound = out_dt == DType::kF32 ? 1e-4 : 1e-2;
          std::string bad;
          const double err = rel_error(got, exact, bound, bad);
          EXPECT_LT(err, bound) << what << " against the dequantized product; " << bad;
          // The CPU's quantized matmul rounds x to 8 bits a block: about 0.5% rms of the output.
          const double err_packed = rel_error(got, packed, 2e-2, bad);
          EXPECT_LT(err_packed, 2e-2) << what << " against the CPU's quantized matmul; " << bad;
        }
      }
    }
  }
}

// f32 activations are converted to bf16 first; the result is the product with x rounded to bf16.
TEST(QuantMmaGpu, F32ActivationsAndTheRowRange) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU visible (cudaGetDeviceCount failed or returned 0)";
  auto cpu = make_cpu_backend();
  auto gpu = make_cuda_backend(0);  // the default range, M 4..32
  std::mt19937 gen(7);
  const int64_t n = 520, k = 1024;
  Tensor wf = random_host({n, k}, gen, 0.05f);
  Tensor w = Tensor::empty({n, k}, DType::kQ4_0);
  quantize_row(DType::kQ4_0, wf.data<float>(), w.raw(), n * k);
  Tensor wd = gpu->upload_weight(w);
  for (int64_t m : {5, 32}) {
    Tensor x = random_host({m, k}, gen, 1.f);  // already bf16 values, so the conversion is exact
    Tensor want = Tensor::empty({m, n}, DType::kF32);
    cpu->matmul(x, dequantized(w), nullptr, want);
    Tensor xd = gpu->alloc({m, k}, DType::kF32);
    gpu->copy(x, xd);
    Tensor out = gpu->alloc({m, n}, DType::kF32);
    gpu->matmul(xd, wd, nullptr, out);
    Tensor got = Tensor::empty({m, n}, DType::kF32);
    gpu->copy(out, got);
    std::string bad;
    EXPECT_LT(rel_error(got, want, 1e-4, bad), 1e-4) << "M " << m << "; " << bad;
  }
  // Bad ranges are refused when the backend is made.
  CudaBackendOptions bad_range;
  bad_range.quant_mma_min_rows = 8;
  bad_range.quant_mma_max_rows = 4;
  EXPECT_THROW(make_cuda_backend(0, bad_range), Error);
  bad_range.quant_mma_max_rows = 65;
  EXPECT_THROW(make_cuda_backend(0, bad_range), Error);
}

}  // namespace
}  // namespace strata
