// tests/gpu/cuda_backend_gpu_test.cpp: every op of the CUDA backend against the CPU backend (the
// reference) on random inputs. Inputs are rounded to bf16 on the host before both backends see them, so
// the measured error is the kernels' own (f32 accumulation, bf16 output rounding). Outputs are poisoned
// with NaN before each run, so an unwritten element fails. Skips when no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "runtime/backend.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/formats/block_quant.h"

namespace strata {
namespace {

// Relative error bounds (||gpu - cpu|| / ||cpu||). bf16 keeps 8 significant bits: one rounding of the
// output is ~2e-3 rms relative, and bf16 intermediates (q, k, probabilities are f32) add a little.
constexpr double kBf16Out = 1e-2;
constexpr double kF32Out = 1e-5;

std::mt19937& rng() {
  static std::mt19937 gen(1234);
  return gen;
}

float round_bf16(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// Host f32 tensor of normal(0, stddev) values, already rounded to bf16.
Tensor random_host(const Shape& shape, float stddev = 1.f, float mean = 0.f) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  std::normal_distribution<float> dist(mean, stddev);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = round_bf16(dist(rng()));
  return t;
}

Tensor host_i32(const std::vector<int32_t>& v, Shape shape = {}) {
  if (shape.empty()) shape = {static_cast<int64_t>(v.size())};
  Tensor t = Tensor::empty(shape, DType::kI32);
  std::copy(v.begin(), v.end(), t.data<int32_t>());
  return t;
}

double rel_error(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.numel(), want.numel());
  double num = 0, den = 0;
  int64_t bad = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = got.data<float>()[i], w = want.data<float>()[i];
    if (!std::isfinite(g)) ++bad;
    num += (g - w) * (g - w);
    den += w * w;
  }
  EXPECT_EQ(bad, 0) << bad << " of " << got.numel() << " outputs are not finite (unwritten or overflowed)";
  return std::sqrt(num / std::max(den, 1e-30));
}

Tensor make_weight(const Tensor& f32, DType dt) {
  if (dt == DType::kF32) return f32;
  Tensor w = Tensor::empty(f32.shape(), dt);
  const float* src = f32.data<float>();
  const int64_t n = f32.numel();
  if (dtype_is_quantized(dt))
    quantize_row(dt, src, w.raw(), n);
  else
    for (int64_t i = 0; i < n; ++i)
      w.data<uint16_t>()[i] = dt == DType::kF16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
  return w;
}

// A block-quantized weight as the f32 values its blocks hold (other dtypes as they are).
Tensor dequantized(const Tensor& w) {
  if (!dtype_is_quantized(w.dtype())) return w;
  Tensor out = Tensor::empty(w.shape(), DType::kF32);
  const int64_t rows = w.dim(0), cols = w.dim(1), row_bytes = dtype_bytes(w.dtype(), cols);
  for (int64_t r = 0; r < rows; ++r)
    dequantize_row(w.dtype(), static_cast<const uint8_t*>(w.raw()) + r * row_bytes, out.data<float>() + r * cols, cols);
  return out;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA GPU visible (cudaGetDeviceCount failed or returned 0)";
    cpu_ = make_cpu_backend();
    gpu_ = make_cuda_backend(0);
  }
  Backend& gpu() { return *gpu_; }
  Backend& cpu() { return *cpu_; }

  // Device copy of a host tensor, converted to `dtype` (default: the activation dtype).
  Tensor to_gpu(const Tensor& host, DType dtype) {
    Tensor d = gpu_->alloc(host.shape(), dtype);
    gpu_->copy(host, d);
    return d;
  }
  Tensor to_gpu(const Tensor& host) {
    return to_gpu(host, host.dtype() == DType::kI32 ? DType::kI32 : gpu_->activation_dtype());
  }
  // Device tensor filled with NaN.
  Tensor poisoned(const Shape& shape, DType dtype = DType::kBF16) {
    Tensor h = Tensor::empty(shape, DType::kF32);
    std::fill(h.data<float>(), h.data<float>() + h.numel(), std::nanf(""));
    return to_gpu(h, dtype);
  }
  Tensor to_host(const Tensor& dev) {
    Tensor h = Tensor::empty(dev.shape(), DType::kF32);
    gpu_->copy(dev, h);
    return h;
  }

  std::unique_ptr<Backend> cpu_, gpu_;
};

TEST_F(CudaBackendTest, CopyConvertsBetweenFloatTypes) {
  Tensor h = random_host({3, 257});
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    Tensor d = to_gpu(h, dt);
    Tensor d2 = gpu().alloc(h.shape(), dt);
    gpu().copy(d, d2);
    EXPECT_LT(rel_error(to_host(d2), h), dt == DType::kF16 ? 1e-3 : 1e-7) << dtype_name(dt);
  }
  EXPECT_EQ(gpu().activation_dtype(), DType::kBF16);
}

TEST_F(CudaBackendTest, EmbedHonoursTheVocabShardForEveryTableDtype) {
  const int64_t vocab = 96, dim = 64, offset = 32;
  Tensor table = random_host({vocab, dim});
  std::vector<int32_t> ids = {32, 33, 0, 127, 128, 31, 100, 64};  // some outside [32, 128)
  Tensor ids_h = host_i32(ids);
  Tensor ids_d = to_gpu(ids_h);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kQ8_0, DType::kQ4_0}) {
    Tensor w = make_weight(table, dt);
    Tensor want = Tensor::empty({static_cast<int64_t>(ids.size()), dim}, DType::kF32);
    cpu().embed(w, ids_h, offset, want);
    Tensor out = poisoned(want.shape());
    gpu().embed(gpu().upload_weight(w), ids_d, offset, out);
    EXPECT_LT(rel_error(to_host(out), want), kBf16Out) << dtype_name(dt);
  }
}

TEST_F(CudaBackendTest, RmsNormAndFusedAddRmsNorm) {
  for (int64_t dim : {36, 64, 1000, 4096}) {  // 36: not a multiple of 8, the scalar kernel; the rest 8-wide
    const int64_t rows = 5;
    Tensor x = random_host({rows, dim}), r = random_host({rows, dim}, 3.f), w = random_host({dim}, 0.2f, 1.f);
    Tensor wd = gpu().upload_weight(w);  // rank 1: stays f32
    Tensor want = Tensor::empty(x.shape(), DType::kF32);
    cpu().rmsnorm(x, w, 1e-5f, want);
    Tensor out = poisoned(x.shape());
    gpu().rmsnorm(to_gpu(x), wd, 1e-5f, out);
    EXPECT_LT(rel_error(to_host(out), want), kBf16Out) << "rmsnorm dim " << dim;

    Tensor rd = to_gpu(r);
    Tensor res_want = r;  // the CPU residual is f32; round the sum as the bf16 GPU residual stores it
    cpu().add_rmsnorm(res_want, x, w, 1e-5f, want);
    Tensor out2 = poisoned(x.shape());
    gpu().add_rmsnorm(rd, to_gpu(x), wd, 1e-5f, out2);
    EXPECT_LT(rel_error(to_host(rd), res_want), kBf16Out) << "residual dim " << dim;
    EXPECT_LT(rel_error(to_host(out2), want), kBf16Out) << "add_rmsnorm dim " << dim;
  }
}

TEST_F(CudaBackendTest, RopeBothStylesWithAndWithoutLlama3Scaling) {
  const int64_t T = 9, H = 4;
  std::vector<int32_t> pos = {0, 1, 2, 17, 100, 511, 2048, 8191, 30000};
  for (int64_t hd : {64, 128}) {
    for (RopeStyle style : {RopeStyle::kHalf, RopeStyle::kAdjacent}) {
      for (bool scaled : {false, true}) {
        RopeParams p;
        p.theta = scaled ? 500000.f : 10000.f;
        p.style = style;
        p.rot_dim = hd;
        if (scaled) p.scaling = RopeScaling{8.f, 1.f, 4.f, 8192};
        Tensor x = random_host({T, H, hd});
        Tensor want = Tensor::empty(x.shape(), DType::kF32);
        cpu().copy(x, want);
        cpu().rope(want, host_i32(pos), p);
        Tensor xd = to_gpu(x);
        gpu().rope(xd, to_gpu(host_i32(pos)), p);
        EXPECT_LT(rel_error(to_host(xd), want), kBf16Out)
            << "hd " << hd << " style " << static_cast<int>(style) << " scaled " << scaled;
      }
    }
  }
}

TEST_F(CudaBackendTest, SiluMulAndAdd) {
  Tensor g = random_host({7, 1000}, 2.f), u = random_host({7, 1000});
  Tensor want = Tensor::empty(g.shape(), DType::kF32);
  cpu().silu_mul(g, u, want);
  Tensor out = poisoned(g.shape());
  gpu().silu_mul(to_gpu(g), to_gpu(u), out);
  EXPECT_LT(rel_error(to_host(out), want), kBf16Out);

  for (int64_t f : {700, 512}) {  // 512: the 8-wide kernel
    Tensor gu = random_host({5, 2 * f}, 2.f);
    Tensor want_gu = Tensor::empty({5, f}, DType::kF32);
    cpu().swiglu(gu, want_gu);
    Tensor out_gu = poisoned({5, f});
    gpu().swiglu(to_gpu(gu), out_gu);
    EXPECT_LT(rel_error(to_host(out_gu), want_gu), kBf16Out) << "swiglu f " << f;
  }

  Tensor a = random_host({3, 333}), b = random_host({3, 333});
  Tensor ad = to_gpu(a);
  gpu().add(ad, to_gpu(b));
  cpu().add(a, b);
  EXPECT_LT(rel_error(to_host(ad), a), kBf16Out);
}

// The fused QKV product's split: bf16 rows whose parts are 16-byte multiples (vector copies) and rows that
// are not (2-byte copies), against the CPU backend on the same values.
TEST_F(CudaBackendTest, SplitColumns) {
  for (const std::vector<int64_t>& widths : std::vector<std::vector<int64_t>>{{64, 16, 16}, {10, 3, 7}}) {
    const int64_t T = 5, C = widths[0] + widths[1] + widths[2];
    const Tensor x = random_host({T, C});
    std::vector<Tensor> want, got;
    for (int64_t w : widths) {
      want.push_back(Tensor::empty({T, w}, DType::kF32));
      got.push_back(poisoned({T, w}));
    }
    cpu().split_columns(x, {&want[0], &want[1], &want[2]});
    gpu().split_columns(to_gpu(x), {&got[0], &got[1], &got[2]});
    for (size_t i = 0; i < widths.size(); ++i)
      EXPECT_LT(rel_error(to_host(got[i]), want[i]), kBf16Out) << "part " << i << " of width " << widths[i];
  }
}

// ---- matmul ----

struct MatmulCase {
  DType w_dt;
  bool keep_f32;  // upload f32 weights as f32 (backend option off)
};

// Each dtype and M runs through both kernels: the GEMV (up to gemv_max_rows = 8 rows; 2, the default) and
// cuBLAS (0: every M).
class CudaMatmulTest : public CudaBackendTest, public ::testing::WithParamInterface<int> {};

TEST_P(CudaMatmulTest, EveryWeightDtypeAndRowCount) {
  CudaBackendOptions opt;
  opt.gemv_max_rows = GetParam();
  opt.quant_mma_max_rows = 0;  // Q4_0 / Q8_0 decode batches through the GEMV here (quant_mma_gpu_test: the other)
  gpu_ = make_cuda_backend(0, opt);
  CudaBackendOptions keep = opt;
  keep.f32_weights_to_bf16 = false;
  auto gpu_f32 = make_cuda_backend(0, keep);
  for (auto [n, k] : {std::pair<int64_t, int64_t>{384, 512}, {1000, 4096}, {5000, 2048}}) {
    Tensor wf = random_host({n, k}, 0.05f);
    Tensor bias = random_host({n});
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0}) {
      for (bool keep_f32 : {false, true}) {
        if (keep_f32 && dt != DType::kF32) continue;
        Backend& g = keep_f32 ? *gpu_f32 : gpu();
        Tensor w = make_weight(wf, dt);
        Tensor wd = g.upload_weight(w);
        Tensor bd = g.upload_weight(bias);
        for (int64_t m : {1, 3, 8, 64, 300}) {
          const bool with_bias = m % 2 == 1;
          Tensor x = random_host({m, k});
          Tensor want = Tensor::empty({m, n}, DType::kF32);
          // The reference sees the weight as the GPU holds it (bf16 after upload of f32 unless kept; a
          // quantized one dequantized exactly) and multiplies in f32, except where the GPU takes the
          // quantized GEMV (up to 32 rows): that one rounds the activations to 8 bits per 32 as the CPU
          // backend's own quantized matmul does, so that is its reference.
          const bool quant_gemv = dtype_is_quantized(dt) && GetParam() > 0 && m <= 32;
          cpu().matmul(x,
                       quant_gemv                            ? w
                       : (dt == DType::kF32 && !keep_f32) ? make_weight(wf, DType::kBF16)
                                                             : dequantized(w),
                       with_bias ? &bias : nullptr, want);
          for (DType out_dt : {DType::kBF16, DType::kF32}) {
            Tensor xd = g.alloc(x.shape(), keep_f32 ? DType::kF32 : DType::kBF16);
            g.copy(x, xd);
            Tensor out = g.alloc({m, n}, out_dt);
            Tensor nan = Tensor::empty({m, n}, DType::kF32);
            std::fill(nan.data<float>(), nan.data<float>() + nan.numel(), std::nanf(""));
            g.copy(nan, out);
            g.matmul(xd, wd, with_bias ? &bd : nullptr, out);
            Tensor got = Tensor::empty({m, n}, DType::kF32);
            g.copy(out, got);
            const double bound = out_dt == DType::kF32 ? (keep_f32 ? 1e-5 : 2e-3) : kBf16Out;
            EXPECT_LT(rel_error(got, want), bound) << "w " << dtype_name(dt) << (keep_f32 ? " (kept f32)" : "")
                                                   << " M " << m << " N " << n << " K " << k << " out "
                                                   << dtype_name(out_dt);
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(GemvAndCublas, CudaMatmulTest, ::testing::Values(8, 2, 0),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == 0 ? std::string("cublas") : "gemv_upto_" + std::to_string(info.param);
                         });

// Every block-quantized type: the device dequantization (copy to f32 and bf16, embed) equals the CPU's
// bit for bit; the quantized GEMV (1..8 rows, and 16 / 32 rows in passes of 8) matches the CPU backend's
// quantized matmul, which rounds the activations to 8 bits per 32 the same way (so only the order of the
// float sums differs); 64 rows go through dequantized bf16 row chunks and cuBLAS, against the CPU's f32
// product with the dequantized weight. Shapes: K of 2, 16 and 43 super-blocks (rows that start off a
// 16-byte boundary for most types), N not a multiple of the 8 rows of a block.
TEST_F(CudaBackendTest, EveryQuantizedTypeDequantizesAndMultiplies) {
  CudaBackendOptions opt;
  opt.gemv_max_rows = 8;
  opt.quant_mma_max_rows = 0;  // every type through the GEMV (quant_mma_gpu_test: Q4_0 / Q8_0's tensor-core GEMM)
  gpu_ = make_cuda_backend(0, opt);
  for (DType dt : quantized_dtypes()) {
    for (auto [n, k] : {std::pair<int64_t, int64_t>{77, 11008}, {300, 512}, {1001, 4096}}) {
      Tensor wf = random_host({n, k}, 0.05f);
      Tensor w = make_weight(wf, dt);
      Tensor wd = gpu().upload_weight(w);
      const Tensor ref = dequantized(w);
      // Dequantization: to f32 on the host (exact), to bf16 on the device (the f32 value rounded once).
      Tensor f32 = Tensor::empty({n, k}, DType::kF32);
      gpu().copy(wd, f32);
      EXPECT_EQ(std::memcmp(f32.raw(), ref.raw(), static_cast<size_t>(ref.nbytes())), 0)
          << dtype_name(dt) << " dequantized on the device differs from the CPU's, N " << n << " K " << k;
      Tensor bf = gpu().alloc({n, k}, DType::kBF16);
      gpu().copy(wd, bf);
      Tensor bf_host = to_host(bf);
      int64_t off = 0;
      for (int64_t i = 0; i < ref.numel(); ++i)
        off += bf_host.data<float>()[i] != round_bf16(ref.data<float>()[i]);
      EXPECT_EQ(off, 0) << dtype_name(dt) << " bf16 dequantization, N " << n << " K " << k;
      for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64}) {
        if (n == 1001 && m > 1 && m < 8) continue;  // the large shape: 1, 8 and the passes
        const bool with_bias = m % 2 == 1;
        Tensor x = random_host({m, k});
        Tensor bias = random_host({n});
        Tensor want = Tensor::empty({m, n}, DType::kF32);
        cpu().matmul(x, m <= 32 ? w : ref, with_bias ? &bias : nullptr, want);
        for (DType out_dt : {DType::kBF16, DType::kF32}) {
          Tensor out = poisoned({m, n}, out_dt);
          Tensor bd = gpu().upload_weight(bias);
          gpu().matmul(to_gpu(x), wd, with_bias ? &bd : nullptr, out);
          // f32 out: the GEMV differs from the CPU only in summation order; cuBLAS multiplies bf16 weights.
          const double bound = out_dt == DType::kBF16 ? kBf16Out : m <= 32 ? 1e-4 : 3e-3;
          EXPECT_LT(rel_error(to_host(out), want), bound)
              << dtype_name(dt) << " M " << m << " N " << n << " K " << k << " out " << dtype_name(out_dt);
        }
      }
    }
    // Embedding rows of a quantized table, with a vocabulary shard.
    const int64_t vocab = 40, dim = 512, offset = 8;
    Tensor table = make_weight(random_host({vocab, dim}), dt);
    Tensor ids_h = host_i32({8, 9, 0, 47, 48, 7, 30, 20});
    Tensor want = Tensor::empty({8, dim}, DType::kF32);
    cpu().embed(table, ids_h, offset, want);
    Tensor out = poisoned({8, dim}, DType::kF32);
    gpu().embed(gpu().upload_weight(table), to_gpu(ids_h), offset, out);
    const Tensor got = to_host(out);
    EXPECT_EQ(std::memcmp(got.raw(), want.raw(), static_cast<size_t>(want.nbytes())), 0) << dtype_name(dt) << " embed";
  }
}

// The GEMV's row shapes (the rule gives 1 warp per row below K = 2048, 2 at one row of K >= 8192, else 4),
// each with the plain and the pipelined one-row kernel (CudaBackendOptions::gemv_rolling): every form gives
// the CPU result, on row counts that leave partial blocks and K with a partial last round of loads.
TEST_F(CudaBackendTest, GemvEveryFormOfTheRow) {
  for (int rolling : {1, 2}) {
    CudaBackendOptions opt;
    opt.gemv_rolling = rolling;
    gpu_ = make_cuda_backend(0, opt);
    for (auto [n, k] : {std::pair<int64_t, int64_t>{1001, 4096}, {77, 11008}, {4096, 2056}, {300, 1032}}) {
      Tensor wf = random_host({n, k}, 0.05f);
      for (DType dt : {DType::kBF16, DType::kF16}) {
        Tensor w = make_weight(wf, dt);
        Tensor wd = gpu().upload_weight(w);
        for (int64_t m : {1, 2}) {
          Tensor x = random_host({m, k});
          Tensor want = Tensor::empty({m, n}, DType::kF32);
          cpu().matmul(x, w, nullptr, want);
          Tensor out = poisoned({m, n});
          gpu().matmul(to_gpu(x), wd, nullptr, out);
          EXPECT_LT(rel_error(to_host(out), want), kBf16Out)
              << dtype_name(dt) << " M " << m << " N " << n << " K " << k << " rolling " << rolling;
        }
      }
    }
  }
}

// The SwiGLU GEMV (Backend::matmul_swiglu) against the CPU's matmul then swiglu, for every weight dtype it
// takes, 1..8 rows, the plain and the pipelined one-row kernel, shapes with partial blocks and a partial last
// round of loads; what it declines (quantized weights, rows past gemv_max_rows) leaves the output untouched.
TEST_F(CudaBackendTest, MatmulSwigluEqualsMatmulThenSwiglu) {
  CudaBackendOptions opt;
  opt.gemv_max_rows = 8;
  for (int rolling : {1, 0}) {  // the plain kernel, then the default forms (the last backend stays)
    opt.gemv_rolling = rolling;
    gpu_ = make_cuda_backend(0, opt);
    for (auto [f, k] : {std::pair<int64_t, int64_t>{1000, 4096}, {77, 11008}, {300, 512}, {5, 2056}}) {
      Tensor wf = random_host({2 * f, k}, 0.05f);
      for (DType dt : {DType::kBF16, DType::kF16, DType::kF32}) {
        Tensor w = make_weight(wf, dt);
        Tensor wd = gpu().upload_weight(w);
        const Tensor& w_ref = dt == DType::kF32 ? make_weight(wf, DType::kBF16) : w;  // f32 uploads as bf16
        for (int64_t m : {1, 2, 3, 8}) {
          Tensor x = random_host({m, k});
          Tensor gu = Tensor::empty({m, 2 * f}, DType::kF32), want = Tensor::empty({m, f}, DType::kF32);
          cpu().matmul(x, w_ref, nullptr, gu);
          cpu().swiglu(gu, want);
          Tensor out = poisoned({m, f});
          ASSERT_TRUE(gpu().matmul_swiglu(to_gpu(x), wd, out));
          EXPECT_LT(rel_error(to_host(out), want), kBf16Out) << dtype_name(dt) << " M " << m << " F " << f << " K "
                                                             << k << " rolling " << rolling;
        }
      }
    }
  }
  // Declined: more rows than the GEMV takes, and quantized weights (the caller then runs matmul + swiglu).
  Tensor wq = gpu().upload_weight(make_weight(random_host({64, 256}, 0.05f), DType::kQ4_K));
  Tensor wb = gpu().upload_weight(make_weight(random_host({64, 256}, 0.05f), DType::kBF16));
  Tensor out1 = poisoned({1, 32}), out9 = poisoned({9, 32});
  EXPECT_FALSE(gpu().matmul_swiglu(to_gpu(random_host({1, 256})), wq, out1));
  EXPECT_FALSE(gpu().matmul_swiglu(to_gpu(random_host({9, 256})), wb, out9));
  const Tensor h1 = to_host(out1), h9 = to_host(out9);
  EXPECT_TRUE(std::isnan(h1.data<float>()[0]) && std::isnan(h9.data<float>()[9 * 32 - 1]));
}

TEST_F(CudaBackendTest, MatmulOddKUsesTheScalarPath) {
  const int64_t n = 33, k = 100;
  Tensor wf = random_host({n, k}, 0.1f);
  Tensor w = make_weight(wf, DType::kBF16);
  for (int64_t m : {1, 5, 20}) {
    Tensor x = random_host({m, k});
    Tensor want = Tensor::empty({m, n}, DType::kF32);
    cpu().matmul(x, w, nullptr, want);
    Tensor out = poisoned({m, n});
    gpu().matmul(to_gpu(x), gpu().upload_weight(w), nullptr, out);
    EXPECT_LT(rel_error(to_host(out), want), kBf16Out) << "M " << m;
  }
}

// ---- KV cache and attention ----

TEST_F(CudaBackendTest, KvWriteFillsTheGivenSlots) {
  const int64_t blocks = 6, bs = 16, hkv = 2, hd = 64, T = 10;
  Tensor kc = random_host({blocks, bs, hkv, hd}), vc = random_host({blocks, bs, hkv, hd});
  Tensor k = random_host({T, hkv, hd}), v = random_host({T, hkv, hd});
  std::vector<int32_t> slots = {0, 5, 17, 18, 40, 41, 42, 95, 64, 3};
  Tensor kcd = to_gpu(kc), vcd = to_gpu(vc);
  gpu().kv_write(to_gpu(k), to_gpu(v), to_gpu(host_i32(slots)), kcd, vcd);
  cpu().kv_write(k, v, host_i32(slots), kc, vc);
  EXPECT_EQ(rel_error(to_host(kcd), kc), 0.0);
  EXPECT_EQ(rel_error(to_host(vcd), vc), 0.0);
}

// The fused rope + cache write against the CPU backend's three ops (rope q, rope k, kv_write): GQA, both
// pair styles, partial rotation (the unrotated tail still reaches the cache) and a padding token (slot -1:
// rotated in place, not written). Half-style whole-head rotation takes the 8-wide kernel, the rest the scalar one.
TEST_F(CudaBackendTest, RopeKvWriteEqualsRopeThenKvWrite) {
  const int64_t blocks = 4, bs = 16, hkv = 2, H = 8, hd = 64, T = 5;
  const std::vector<int32_t> pos = {0, 7, 100, 3000, 9}, slots = {3, 17, 40, -1, 63};
  for (RopeStyle style : {RopeStyle::kHalf, RopeStyle::kAdjacent})
    for (int64_t rot : {int64_t{0}, int64_t{32}}) {
      RopeParams p;
      p.style = style;
      p.rot_dim = rot;
      Tensor q = random_host({T, H, hd}), k = random_host({T, hkv, hd}), v = random_host({T, hkv, hd});
      Tensor kc = random_host({blocks, bs, hkv, hd}), vc = random_host({blocks, bs, hkv, hd});
      Tensor qd = to_gpu(q), kd = to_gpu(k), kcd = to_gpu(kc), vcd = to_gpu(vc);
      gpu().rope_kv_write(qd, kd, to_gpu(v), to_gpu(host_i32(pos)), p, to_gpu(host_i32(slots)), kcd, vcd);
      cpu().rope_kv_write(q, k, v, host_i32(pos), p, host_i32(slots), kc, vc);
      const std::string what = "style " + std::to_string(static_cast<int>(style)) + " rot " + std::to_string(rot);
      EXPECT_LT(rel_error(to_host(qd), q), kBf16Out) << what;
      EXPECT_LT(rel_error(to_host(kd), k), kBf16Out) << what;
      EXPECT_LT(rel_error(to_host(kcd), kc), kBf16Out) << what;
      EXPECT_EQ(rel_error(to_host(vcd), vc), 0.0) << what;
    }
}

struct AttnCase {
  int64_t group;  // query heads per KV head
  int64_t head_dim;
};

class CudaAttentionTest : public CudaBackendTest, public ::testing::WithParamInterface<AttnCase> {
 protected:
  // Random caches; sequences of the given context lengths, each owning a random set of blocks; the batch
  // holds the last `new_tokens[s]` positions of each sequence (1 = decode, len = whole-prompt prefill),
  // sequences back to back as the scheduler packs them. table_keys > 0 widens the block tables and max_position
  // to that many keys, as a recorded step's are (the table's width, past every context).
  void run(const std::vector<int32_t>& lens, const std::vector<int32_t>& new_tokens, const char* what,
           int64_t bs = 16, int64_t table_keys = 0) {
    const AttnCase c = GetParam();
    const int64_t hkv = 2, H = hkv * c.group, hd = c.head_dim;
    int64_t max_blocks = 0, total_blocks = 0;
    for (int32_t len : lens) {
      max_blocks = std::max<int64_t>(max_blocks, (len + bs - 1) / bs);
      total_blocks += (len + bs - 1) / bs;
    }
    total_blocks += 3;  // unused blocks
    max_blocks = std::max(max_blocks, (table_keys + bs - 1) / bs);
    std::vector<int32_t> perm(static_cast<size_t>(total_blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng());
    std::vector<int32_t> tables(lens.size() * static_cast<size_t>(max_blocks), -1);
    size_t next = 0;
    for (size_t s = 0; s < lens.size(); ++s)
      for (int64_t b = 0; b < (lens[s] + bs - 1) / bs; ++b) tables[s * max_blocks + b] = perm[next++];
    std::vector<int32_t> positions, token_seq, slots;
    int32_t max_pos = 0;
    for (size_t s = 0; s < lens.size(); ++s)
      for (int32_t p = lens[s] - new_tokens[s]; p < lens[s]; ++p) {
        positions.push_back(p);
        token_seq.push_back(static_cast<int32_t>(s));
        slots.push_back(tables[s * max_blocks + p / bs] * bs + p % bs);
        max_pos = std::max(max_pos, p + 1);
      }
    max_pos = std::max(max_pos, static_cast<int32_t>(table_keys));
    const int64_t T = static_cast<int64_t>(positions.size());
    Tensor kc = random_host({total_blocks, bs, hkv, hd}), vc = random_host({total_blocks, bs, hkv, hd});
    Tensor q = random_host({T, H, hd});
    const float scale = 1.f / std::sqrt(static_cast<float>(hd));

    AttentionBatch hb;
    hb.positions = host_i32(positions);
    hb.slots = host_i32(slots);
    hb.token_seq = host_i32(token_seq);
    hb.block_tables = host_i32(tables, {static_cast<int64_t>(lens.size()), max_blocks});
    hb.n_tokens = T;
    hb.n_seqs = static_cast<int64_t>(lens.size());
    hb.max_blocks = max_blocks;
    hb.block_size = bs;
    hb.max_position = max_pos;
    Tensor want = Tensor::empty(q.shape(), DType::kF32);
    cpu().attention(q, kc, vc, hb, scale, want);

    // kPrefill is the tensor-core kernel for head_dim 64 and 128 (bf16 everything here), the SIMT one for the
    // other head dims; kPrefillSimt keeps the SIMT kernel covered at 64 and 128 too. The decode path runs
    // twice: the shared-memory tile kernel and the per-warp one (which takes head_dim 64 / 128 / 256 and
    // groups up to 8; the tile kernel covers the rest either way).
    using Path = CudaBackendOptions::AttentionPath;
    const std::pair<Path, bool> variants[] = {{Path::kAuto, false},    {Path::kDecode, false}, {Path::kDecode, true},
                                              {Path::kPrefill, false}, {Path::kPrefillSimt, false}};
    for (const auto& [path, warps] : variants) {
      CudaBackendOptions opt = forms_;
      opt.attention_path = path;
      opt.decode_attention_warps = warps;
      auto g = make_cuda_backend(0, opt);
      auto dev = [&](const Tensor& h, DType dt) {
        Tensor d = g->alloc(h.shape(), dt);
        g->copy(h, d);
        return d;
      };
      AttentionBatch db = hb;
      db.positions = dev(hb.positions, DType::kI32);
      db.slots = dev(hb.slots, DType::kI32);
      db.token_seq = dev(hb.token_seq, DType::kI32);
      db.block_tables = dev(hb.block_tables, DType::kI32);
      Tensor out = dev(want, DType::kBF16);
      Tensor nan = Tensor::empty(q.shape(), DType::kF32);
      std::fill(nan.data<float>(), nan.data<float>() + nan.numel(), std::nanf(""));
      g->copy(nan, out);
      g->attention(dev(q, DType::kBF16), dev(kc, DType::kBF16), dev(vc, DType::kBF16), db, scale, out);
      Tensor got = Tensor::empty(q.shape(), DType::kF32);
      g->copy(out, got);
      EXPECT_LT(rel_error(got, want), kBf16Out)
          << what << ": group " << c.group << " head_dim " << c.head_dim << " block_size " << bs << " path "
          << static_cast<int>(path) << (opt.decode_attention_warps ? " (per-warp decode kernel)" : "");
    }
    if (std::all_of(new_tokens.begin(), new_tokens.end(), [](int32_t n) { return n == 1; }))
      check_fused_rope(hb, q, kc, vc, scale, what);
  }

  // Decode with rope and the cache write folded into the attention (Backend::rope_kv_attention) against the
  // CPU backend's rope_kv_write then attention: the output and both caches. It must fold wherever the
  // per-warp kernel takes the shape (head_dim 64 / 128 / 256, up to 8 query heads per KV head).
  void check_fused_rope(const AttentionBatch& hb, const Tensor& q, const Tensor& kc, const Tensor& vc, float scale,
                        const char* what) {
    const AttnCase c = GetParam();
    const int64_t T = q.dim(0), hkv = kc.dim(2), hd = c.head_dim;
    auto copy_of = [](const Tensor& t) {
      Tensor o = Tensor::empty(t.shape(), t.dtype());
      std::memcpy(o.raw(), t.raw(), static_cast<size_t>(t.nbytes()));
      return o;
    };
    RopeParams rope;
    Tensor k = random_host({T, hkv, hd}), v = random_host({T, hkv, hd});
    Tensor qr = copy_of(q), kr = copy_of(k), kc_want = copy_of(kc), vc_want = copy_of(vc);
    cpu().rope_kv_write(qr, kr, v, hb.positions, rope, hb.slots, kc_want, vc_want);
    Tensor want = Tensor::empty(q.shape(), DType::kF32);
    cpu().attention(qr, kc_want, vc_want, hb, scale, want);

    auto g = make_cuda_backend(0, forms_);
    auto dev = [&](const Tensor& h, DType dt) {
      Tensor d = g->alloc(h.shape(), dt);
      g->copy(h, d);
      return d;
    };
    AttentionBatch db = hb;
    for (Tensor* t : {&db.positions, &db.slots, &db.token_seq, &db.block_tables}) *t = dev(*t, DType::kI32);
    db.one_token_per_seq = true;  // the decode cases: one new token for each sequence
    Tensor qd = dev(q, DType::kBF16), kd = dev(k, DType::kBF16), vd = dev(v, DType::kBF16);
    Tensor kcd = dev(kc, DType::kBF16), vcd = dev(vc, DType::kBF16), out = dev(want, DType::kBF16);
    Tensor nan = Tensor::empty(q.shape(), DType::kF32);
    std::fill(nan.data<float>(), nan.data<float>() + nan.numel(), std::nanf(""));
    g->copy(nan, out);
    const bool folds = (hd == 64 || hd == 128 || hd == 256) && c.group <= 8;
    ASSERT_EQ(g->rope_kv_attention(qd, kd, vd, db, rope, kcd, vcd, scale, out), folds)
        << what << ": group " << c.group << " head_dim " << hd;
    if (!folds) return;
    auto host = [&](const Tensor& d) {
      Tensor h = Tensor::empty(d.shape(), DType::kF32);
      g->copy(d, h);
      return h;
    };
    const std::string at = std::string(what) + ", rope folded: group " + std::to_string(c.group) + " head_dim " +
                           std::to_string(hd);
    EXPECT_LT(rel_error(host(out), want), kBf16Out) << at;
    EXPECT_LT(rel_error(host(kcd), kc_want), kBf16Out) << at;
    EXPECT_LT(rel_error(host(vcd), vc_want), kBf16Out) << at;
  }

  // The decode attention's forms every backend of run() is made with (the tests below force some).
  CudaBackendOptions forms_;
};

TEST_P(CudaAttentionTest, DecodeOneTokenPerSequence) {
  run({1, 17, 100, 300, 1000}, {1, 1, 1, 1, 1}, "decode");
}

TEST_P(CudaAttentionTest, DecodeLongContextUsesSplits) {
  for (bool ring : {false, true}) {  // K and V through registers, then through the cp.async ring
    forms_.decode_kv_ring = ring;
    for (int head_split : {0, 2, 4, 8}) {  // the rule, then the query heads over that many split blocks
      forms_.decode_head_split = head_split;
      run({5000, 37, 2000}, {1, 1, 1},
          (std::string("long decode, ") + (ring ? "ring" : "registers") + ", head split " + std::to_string(head_split))
              .c_str());
    }
  }
}

// Tables 16384 keys wide (a recorded step plans for the table's width) holding much shorter contexts: with
// decode_split_by_length each token's keys spread over all of the plan's splits, else the plan's fixed pieces.
TEST_P(CudaAttentionTest, DecodeTableWiderThanContexts) {
  for (bool ring : {false, true}) {
    forms_.decode_kv_ring = ring;
    for (bool by_length : {false, true}) {
      forms_.decode_split_by_length = by_length;
      run({5000, 37, 700, 1}, {1, 1, 1, 1},
          (std::string(by_length ? "wide table, splits by length" : "wide table, fixed splits") + (ring ? ", ring" : ""))
              .c_str(),
          16, 16384);
    }
  }
}

// Short contexts, whose plans make a few splits: the per-warp kernel takes each KV head's context in one
// block of 8 or 16 warps where the heads fit (writing the output itself), or in 2, 4 or 8 blocks each taking
// that share of the KV head's query heads (the rule's choice, then each forced), and in split blocks and the
// combine with that off (the query heads over 1 to 8 of them). Tables 128, 50 and 30 keys wide: 4 or 2
// splits for one query head per KV head, 2 to 8 for more.
TEST_P(CudaAttentionTest, DecodeShortContextsWholeAndSplit) {
  for (bool whole : {true, false}) {
    for (int head_split : {0, 1, 2, 4, 8}) {
      forms_.decode_whole_blocks = whole;
      forms_.decode_head_split = head_split;
      const std::string what = std::string("short decode, ") + (whole ? "whole" : "split") + " blocks, head split " +
                               std::to_string(head_split);
      run({1, 17, 64, 100, 128}, {1, 1, 1, 1, 1}, what.c_str());
      run({20, 50}, {1, 1}, what.c_str());
      run({10, 30}, {1, 1}, what.c_str());
    }
  }
}

TEST_P(CudaAttentionTest, PrefillCausalManyTokensPerSequence) {
  run({40, 129, 7, 300}, {40, 129, 7, 300}, "prefill");
}

TEST_P(CudaAttentionTest, ChunkedPrefillAfterExistingContext) {
  run({200, 90, 33}, {64, 20, 1}, "chunked prefill");
}

// The tensor-core kernel works in tiles of 64 query rows and 64 keys. Lengths that are no multiple of either,
// packed back to back: tokens 0..63 hold the 1-token sequence and 63 of the next, and so on.
TEST_P(CudaAttentionTest, PrefillLengthsNotMultiplesOfTheTile) {
  run({1, 63, 65, 130, 200}, {1, 63, 65, 130, 200}, "ragged prefill");
}

// Chunks continuing cached prefixes (first positions 200 and 80, not tile-aligned) beside a whole prompt.
TEST_P(CudaAttentionTest, ChunkedPrefillContinuingCachedPrefixes) {
  run({300, 150, 97}, {100, 70, 97}, "chunked prefill after prefixes");
}

// Query tile 0 holds sequence 0 (40 tokens from position 60) and the start of sequence 1; tile 1 holds the rest
// of sequence 1, all of sequence 2 and the start of sequence 3.
TEST_P(CudaAttentionTest, QueryTileStraddlesSequences) {
  run({100, 90, 20, 30}, {40, 50, 20, 30}, "straddling tiles");
}

// Enough query tiles that the tensor-core kernel takes its 128-row blocks (16 heads x 25 tiles of 128 >= 1.5
// waves of 2 blocks per SM on up to 133 SMs): sequences of different lengths back to back, the first a chunk
// after a cached prefix, one shorter than a tile, one of a single token. Group 8 only (16 query heads; the CPU
// reference of 3128 tokens is slow).
TEST_P(CudaAttentionTest, PrefillManyTilesOfMixedSequences) {
  if (GetParam().group != 8) GTEST_SKIP() << "only group 8 has the heads to fill the GPU";
  run({2100, 700, 333, 129, 65, 1}, {1900, 700, 333, 129, 65, 1}, "many tiles of mixed sequences");
}

// block_size 8 (a key tile spans 8 blocks) and 48 (blocks straddle key tiles).
TEST_P(CudaAttentionTest, PrefillOtherBlockSizes) {
  for (int64_t bs : {8, 48}) run({130, 77}, {130, 40}, "prefill block size", bs);
}

INSTANTIATE_TEST_SUITE_P(GqaAndHeadDims, CudaAttentionTest,
                         ::testing::Values(AttnCase{1, 64}, AttnCase{4, 64}, AttnCase{8, 64}, AttnCase{1, 128},
                                           AttnCase{2, 128}, AttnCase{4, 128}, AttnCase{8, 128}, AttnCase{4, 256},
                                           AttnCase{2, 8}, AttnCase{7, 96}),
                         [](const ::testing::TestParamInfo<AttnCase>& info) {
                           return "g" + std::to_string(info.param.group) + "_hd" +
                                  std::to_string(info.param.head_dim);
                         });

}  // namespace
}  // namespace strata
