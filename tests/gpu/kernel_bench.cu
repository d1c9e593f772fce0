// tests/gpu/kernel_bench.cu: microbenchmark of the CUDA backend's decode kernels against the device's
// own copy bandwidth: the GEMV at Llama-7B shapes (bf16, M = 1 with each split of a row over warps, also
// every quantized GGUF type and M = 8; cuBLAS for the same M = 1 call as the peer), cuBLAS at M = 16 and 64 (batched
// decode), and decode/prefill attention (prefill: the tensor-core kernel against the SIMT one it replaces, in
// TFLOP/s). Weights rotate over several copies (more bytes than L2) so HBM, not the
// cache, is measured. Not a test: tests/gpu/run.sh builds and runs it.
// --qmma: the tensor-core quantized GEMM (qgemm_mma.cu) for each type it takes at M = 1..64 on the 7b shapes, in
// GB/s of packed weight bytes against the copy rate, beside the path it replaces and cuBLAS on bf16 weights;
// --types=q6_k,q5_k,... and --rows=1,4,... narrow the table; --qmma-splits adds, per type, shape and M, the
// kernel's time at every split of K (the plan's marked *), for checking quant_mma_plan's cost model.
// --fp8: prefill matmuls (M = 2048, or --rows=..) of the 7b shapes in TFLOP/s: cuBLAS on bf16 weights, f8_e4m3_b128
// weights dequantized to bf16 for cuBLAS (fp8_cublaslt=0), and the e4m3 tensor cores through cuBLASLt with the
// weight split per call (1) and split once at upload (2); each a rotating set of weights, x quantized per call.
// Usage: kernel_bench [--quick] [--quant] [--qmma [--types=..] [--rows=..] [--qmma-splits]] [--fp8 [--rows=..]]
// (--quant: the copy ceiling, the bf16 GEMV and the quantized rows only; --qmma: the copy ceiling and the
// quantized GEMM tables; --fp8: the FP8 table only)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "runtime/backend.h"
#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/launch.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/quant_blocks.h"
#include "tests/gpu/bench_util.cuh"

namespace strata {
namespace {

void fill(Tensor& t, uint32_t seed) { gpu_bench::fill16(t.raw(), t.nbytes() / 2, seed); }

struct Timer {
  cudaStream_t stream;
  // Median milliseconds of `reps` runs of fn(i) after `warm` warm-up runs, timed with events.
  double median_ms(int warm, int reps, const std::function<void(int)>& fn) {
    for (int i = 0; i < warm; ++i) fn(i);
    std::vector<cudaEvent_t> ev(static_cast<size_t>(reps) + 1);
    for (auto& e : ev) CHECK_CUDA(cudaEventCreate(&e));
    CHECK_CUDA(cudaEventRecord(ev[0], stream));
    for (int i = 0; i < reps; ++i) {
      fn(warm + i);
      CHECK_CUDA(cudaEventRecord(ev[static_cast<size_t>(i) + 1], stream));
    }
    CHECK_CUDA(cudaEventSynchronize(ev.back()));
    std::vector<double> ms(static_cast<size_t>(reps));
    for (int i = 0; i < reps; ++i) {
      float m = 0;
      CHECK_CUDA(cudaEventElapsedTime(&m, ev[static_cast<size_t>(i)], ev[static_cast<size_t>(i) + 1]));
      ms[static_cast<size_t>(i)] = m;
    }
    for (auto& e : ev) CHECK_CUDA(cudaEventDestroy(e));
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }
};

// What --qmma measures: the weight types, the rows of x, and whether to sweep the split of K.
struct QmmaSelection {
  std::vector<DType> types = {DType::kQ4_0, DType::kQ8_0, DType::kQ4_K, DType::kQ6_K,
                              DType::kQ5_K, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1};
  std::vector<int64_t> rows = {1, 2, 4, 8, 16, 32, 64};
  bool splits = false;
};

// The --qmma-splits table: the kernel alone (launch_quant_mma on the backend's stream, PDL on as the backend
// launches it on Hopper) at every split of K that gives distinct blocks, the plan's marked with *.
void bench_quant_mma_splits(Backend& b, const cudaDeviceProp& prop, const QmmaSelection& sel, int reps) {
  std::printf("\nsplit-K sweep: us at each split s (chunks a block), * = quant_mma_plan's\n");
  const cuda::Launch launch(static_cast<cudaStream_t>(cuda_backend_stream(b)), prop.major >= 9,
                            cuda::GemvRolling::kByGrid);
  for (DType dt : sel.types)
    for (const auto& shape : {std::pair<int64_t, int64_t>{4096, 4096}, {11008, 4096}, {4096, 11008}}) {
      const int64_t n = shape.first, k = shape.second, chunks = (k + 255) / 256;
      const int64_t bytes = dtype_bytes(dt, n * k);
      const int copies = static_cast<int>(std::max<int64_t>(2, (int64_t{4} * prop.l2CacheSize) / bytes + 1));
      std::vector<Tensor> ws;
      for (int c = 0; c < copies; ++c) {
        ws.push_back(b.alloc({n, k}, dt));
        fill(ws.back(), 300 + c);
      }
      for (int64_t m : sel.rows) {
        if (!cuda::quant_mma_supports(dt, m, n, k)) continue;
        Tensor x = b.alloc({m, k}, DType::kBF16), out = b.alloc({m, n}, DType::kBF16);
        Tensor scratch = b.alloc({chunks * m * n * 2}, DType::kBF16);  // f32 partials of the largest split
        fill(x, 9);
        const cuda::QuantMmaPlan chosen = cuda::quant_mma_plan(dt, m, n, k, prop.multiProcessorCount);
        std::string line;
        for (int64_t s = 1; s <= chunks; ++s) {
          const int64_t per = (chunks + s - 1) / s;
          if ((chunks + per - 1) / per != s) continue;
          cuda::QuantMmaPlan plan;
          plan.splits = static_cast<int>(s);
          plan.chunks_per_split = static_cast<int>(per);
          CHECK_CUDA(cudaDeviceSynchronize());
          Timer own{launch.stream};
          const double ms = own.median_ms(5, reps, [&](int i) {
            if (!cuda::launch_quant_mma(x.raw(), ws[static_cast<size_t>(i) % ws.size()].raw(), dt, nullptr,
                                        DType::kF32, out.raw(), DType::kBF16, m, n, k, plan, scratch.raw(), launch))
              STRATA_THROW(ErrorKind::kInternal, "kernel_bench: launch_quant_mma refused a split plan");
          });
          char cell[48];
          std::snprintf(cell, sizeof cell, " s%lld%s %.1f", static_cast<long long>(s),
                        s == chosen.splits ? "*" : "", ms * 1e3);
          line += cell;
        }
        std::printf("%-6s %5lldx%-5lld M %2lld:%s\n", dtype_name(dt), static_cast<long long>(n),
                    static_cast<long long>(k), static_cast<long long>(m), line.c_str());
      }
    }
}

// The --qmma table: per 7b shape, weight type and M, the tensor-core quantized GEMM (every M routed to it),
// the path it replaces (quant_mma_max_rows = 0: the GEMV in passes of 8 rows up to M = 32, dequantize +
// cuBLAS above) and cuBLAS on the bf16 weight of the same shape. GB/s counts the weight bytes alone.
int bench_quant_mma(const cudaDeviceProp& prop, double copy_gbs, int reps, const QmmaSelection& sel) {
  CudaBackendOptions mma_opt;
  mma_opt.quant_mma_min_rows = 1;
  CudaBackendOptions old_opt;
  old_opt.quant_mma_max_rows = 0;
  CudaBackendOptions cublas_opt;
  cublas_opt.gemv_max_rows = 0;
  auto mma = make_cuda_backend(0, mma_opt), old = make_cuda_backend(0, old_opt),
       cublas = make_cuda_backend(0, cublas_opt);
  const std::vector<int64_t>& ms_rows = sel.rows;
  std::printf("\n%-6s %-11s %3s %9s %8s %6s %10s %9s %10s %8s %9s\n", "type", "N x K", "M", "qmma us", "GB/s",
              "%copy", "old us", "vs old", "bf16 us", "GB/s", "vs bf16");
  for (const auto& shape : {std::pair<int64_t, int64_t>{4096, 4096}, {11008, 4096}, {4096, 11008}}) {
    const int64_t n = shape.first, k = shape.second;
    // Rotating copies (more bytes than L2) of each weight, so HBM is measured.
    auto weights = [&](Backend& b, DType dt) {
      const int64_t bytes = dtype_bytes(dt, n * k);
      const int copies = static_cast<int>(std::max<int64_t>(2, (int64_t{4} * prop.l2CacheSize) / bytes + 1));
      std::vector<Tensor> ws;
      for (int c = 0; c < copies; ++c) {
        ws.push_back(b.alloc({n, k}, dt));
        fill(ws.back(), 100 + c);
      }
      return ws;
    };
    auto time_ms = [&](Backend& b, const std::vector<Tensor>& ws, int64_t m) {
      Tensor x = b.alloc({m, k}, DType::kBF16), out = b.alloc({m, n}, DType::kBF16);
      fill(x, 7);
      CHECK_CUDA(cudaDeviceSynchronize());
      Timer own{static_cast<cudaStream_t>(cuda_backend_stream(b))};
      return own.median_ms(5, reps, [&](int i) { b.matmul(x, ws[static_cast<size_t>(i) % ws.size()], nullptr, out); });
    };
    std::vector<double> bf16_ms;
    {
      const auto ws = weights(*cublas, DType::kBF16);
      for (int64_t m : ms_rows) bf16_ms.push_back(time_ms(*cublas, ws, m));
    }
    for (DType dt : sel.types) {
      const auto ws_mma = weights(*mma, dt), ws_old = weights(*old, dt);
      const double wbytes = static_cast<double>(dtype_bytes(dt, n * k));
      for (size_t i = 0; i < ms_rows.size(); ++i) {
        const int64_t m = ms_rows[i];
        const double t = time_ms(*mma, ws_mma, m), t_old = time_ms(*old, ws_old, m);
        const double gbs = wbytes / (t * 1e-3) / 1e9;
        const double bf16_gbs = 2.0 * static_cast<double>(n * k) / (bf16_ms[i] * 1e-3) / 1e9;
        std::printf("%-6s %5lldx%-5lld %3lld %9.1f %8.0f %5.0f%% %10.1f %8.2fx %10.1f %8.0f %8.2fx\n",
                    dtype_name(dt), static_cast<long long>(n), static_cast<long long>(k), static_cast<long long>(m),
                    t * 1e3, gbs, 100.0 * gbs / copy_gbs, t_old * 1e3, t_old / t, bf16_ms[i] * 1e3, bf16_gbs,
                    bf16_ms[i] / t);
      }
    }
  }
  std::printf("(vs old / vs bf16: time of that path over the quantized GEMM's; ceiling: d2d copy %.0f GB/s)\n",
              copy_gbs);
  if (sel.splits) bench_quant_mma_splits(*mma, prop, sel, reps);
  return 0;
}

// The --fp8 table (see the top of the file). FP8 weights are random finite e4m3 codes with one scale per block;
// x is normal bf16 values (the quantizer's work does not depend on them, but NaNs would be unlike a model's).
int bench_fp8(bool quick, const std::vector<int64_t>& ms_rows) {
  if (cuda_device_count() == 0) {
    std::printf("kernel_bench: no CUDA GPU visible; nothing to measure\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  const int reps = quick ? 10 : 40;
  std::vector<std::unique_ptr<Backend>> backends;
  for (int mode : {0, 0, 1, 2}) {
    CudaBackendOptions o;
    o.fp8_cublaslt = mode;
    backends.push_back(make_cuda_backend(0, o));
  }
  const char* names[] = {"bf16 cuBLAS", "fp8 dequant+cuBLAS", "fp8 cuBLASLt (split per call)",
                         "fp8 cuBLASLt (split kept)"};
  std::mt19937 rng(5);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 4096}, {12288, 4096}, {22016, 4096}, {4096, 11008}};
  std::printf("\n%-10s %-5s %-30s %10s %9s %9s\n", "N x K", "M", "path", "us", "TFLOP/s", "vs bf16");
  for (int64_t m : ms_rows) {
    double total_us[4] = {};
    for (const auto& [n, k] : shapes) {
      // One host FP8 weight (finite codes: 0x7f / 0xff are NaN) and one bf16 x, shared by the backends.
      Tensor wh = Tensor::empty({n, k}, DType::kF8_B128);
      auto* blocks = static_cast<BlockF8B128*>(wh.raw());
      for (int64_t b = 0; b < n * k / kF8Block; ++b) {
        blocks[b].scale = 1.f / 256.f;
        for (int64_t i = 0; i < kF8Block; i += 4) {
          const uint32_t r = rng();
          for (int j = 0; j < 4; ++j) {
            uint8_t q = static_cast<uint8_t>(r >> (8 * j));
            if ((q & 0x7f) == 0x7f) q ^= 1;
            blocks[b].q[i + j] = q;
          }
        }
      }
      Tensor xh = Tensor::empty({m, k}, DType::kBF16);
      std::normal_distribution<float> normal(0.f, 1.f);
      for (int64_t i = 0; i < m * k; ++i) xh.data<uint16_t>()[i] = f32_to_bf16(normal(rng));
      double bf16_ms = 0;
      for (int p = 0; p < 4; ++p) {
        Backend& b = *backends[static_cast<size_t>(p)];
        const DType wdt = p == 0 ? DType::kBF16 : DType::kF8_B128;
        const int64_t bytes = dtype_bytes(wdt, n * k);
        const int copies = static_cast<int>(std::max<int64_t>(2, (int64_t{4} * prop.l2CacheSize) / bytes + 1));
        std::vector<Tensor> ws;
        for (int c = 0; c < copies; ++c) {
          if (p == 0) {
            ws.push_back(b.alloc({n, k}, DType::kBF16));
            fill(ws.back(), 300 + c);
          } else {
            ws.push_back(b.upload_weight(wh));
          }
        }
        Tensor x = b.alloc({m, k}, DType::kBF16), out = b.alloc({m, n}, DType::kBF16);
        b.copy(xh, x);
        b.synchronize();
        Timer t{static_cast<cudaStream_t>(cuda_backend_stream(b))};
        const double ms =
            t.median_ms(3, reps, [&](int i) { b.matmul(x, ws[static_cast<size_t>(i) % ws.size()], nullptr, out); });
        total_us[p] += ms * 1e3;
        if (p == 0) bf16_ms = ms;
        const double tflops = 2.0 * static_cast<double>(m * n * k) / (ms * 1e-3) / 1e12;
        std::printf("%5lldx%-5lld %-5lld %-30s %10.1f %9.1f %8.2fx\n", static_cast<long long>(n),
                    static_cast<long long>(k), static_cast<long long>(m), names[p], ms * 1e3, tflops, bf16_ms / ms);
      }
    }
    double flops = 0;
    for (const auto& [n, k] : shapes) flops += 2.0 * static_cast<double>(m * n * k);
    std::printf("7b layer (the four shapes) at M %lld:\n", static_cast<long long>(m));
    for (int p = 0; p < 4; ++p)
      std::printf("  %-30s %10.1f us %9.1f TFLOP/s %8.2fx bf16\n", names[p], total_us[p],
                  flops / (total_us[p] * 1e-6) / 1e12, total_us[0] / total_us[p]);
  }
  return 0;
}

int run(bool quick, bool quant_only, bool qmma_only, const QmmaSelection& sel) {
  if (cuda_device_count() == 0) {
    std::printf("kernel_bench: no CUDA GPU visible; nothing to measure\n");
    return 0;
  }
  CudaBackendOptions gemv_opt;
  gemv_opt.gemv_max_rows = 8;  // the GEMV for every M <= 8, whatever the default threshold
  auto backend = make_cuda_backend(0, gemv_opt);
  CudaBackendOptions cublas_opt;
  cublas_opt.gemv_max_rows = 0;  // every M through cuBLAS: the peer for the GEMV
  auto cublas_backend = make_cuda_backend(0, cublas_opt);
  CudaBackendOptions simt_opt;
  simt_opt.attention_path = CudaBackendOptions::AttentionPath::kPrefillSimt;  // the peer of the tensor-core prefill
  auto simt_backend = make_cuda_backend(0, simt_opt);
  CudaBackendOptions mma_opt;
  mma_opt.attention_path = CudaBackendOptions::AttentionPath::kPrefill;
  auto mma_backend = make_cuda_backend(0, mma_opt);
  Backend& be = *backend;
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  const int reps = quick ? 20 : 100;

  // Ceiling: device-to-device copy of 1 GiB, bytes read + written.
  Timer timer{static_cast<cudaStream_t>(cuda_backend_stream(be))};
  double copy_gbs = 0;
  {
    const int64_t bytes = int64_t{1} << 30;
    Tensor a = be.alloc({bytes / 2}, DType::kBF16), b = be.alloc({bytes / 2}, DType::kBF16);
    fill(a, 1);
    const double ms = timer.median_ms(3, quick ? 5 : 20, [&](int) { be.copy(a, b); });
    copy_gbs = 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
    std::printf("d2d copy 1 GiB: %.3f ms, %.0f GB/s (read + write)\n", ms, copy_gbs);
  }

  if (qmma_only) return bench_quant_mma(prop, copy_gbs, reps, sel);

  struct Row {
    std::string what;
    double us;
    double gbs;
    std::string note;
  };
  std::vector<Row> rows;

  // GEMV: out[M, N] = x[M, K] w[N, K]^T.
  struct Shape2 {
    int64_t n, k;
  };
  // The 7b shapes: q/o, gate or up, down, LM head, then the fused stacks of one-token steps (qkv, gate/up).
  const std::vector<Shape2> shapes = {{4096, 4096},  {11008, 4096}, {4096, 11008},
                                      {32000, 4096}, {12288, 4096}, {22016, 4096}};
  auto bench_matmul = [&](Backend& b, Shape2 s, DType dt, int64_t m, const std::string& label,
                          DType out_dt = DType::kBF16) {
    const int64_t wbytes = dtype_bytes(dt, s.n * s.k);
    const int copies = static_cast<int>(std::max<int64_t>(2, (int64_t{4} * prop.l2CacheSize) / wbytes + 1));
    std::vector<Tensor> ws;
    for (int c = 0; c < copies; ++c) {
      ws.push_back(b.alloc({s.n, s.k}, dt));
      fill(ws.back(), 100 + c);
    }
    Tensor x = b.alloc({m, s.k}, DType::kBF16), out = b.alloc({m, s.n}, out_dt);
    fill(x, 7);
    Timer own{static_cast<cudaStream_t>(cuda_backend_stream(b))};  // each backend has its own stream
    const double ms = own.median_ms(5, reps, [&](int i) { b.matmul(x, ws[static_cast<size_t>(i % copies)], nullptr, out); });
    const double bytes = static_cast<double>(wbytes + m * s.k * 2 + dtype_bytes(out_dt, m * s.n));
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    char note[64];
    std::snprintf(note, sizeof note, "%.0f%% of copy", 100.0 * gbs / copy_gbs);
    rows.push_back({label + " " + dtype_name(dt) + (out_dt == DType::kBF16 ? "" : std::string("->") + dtype_name(out_dt)) +
                        " M=" + std::to_string(m) + " " + std::to_string(s.n) + "x" + std::to_string(s.k),
                    ms * 1e3, gbs, note});
  };
  for (const Shape2& s : shapes) bench_matmul(be, s, DType::kBF16, 1, "gemv");
  if (!quant_only) for (const Shape2& s : shapes) bench_matmul(*cublas_backend, s, DType::kBF16, 1, "cublas");
  for (int64_t m : {2, 4, 8}) {
    if (quant_only) break;
    for (int s = 0; s < 2; ++s) {
      bench_matmul(be, shapes[static_cast<size_t>(s)], DType::kBF16, m, "gemv");
      bench_matmul(*cublas_backend, shapes[static_cast<size_t>(s)], DType::kBF16, m, "cublas");
    }
  }
  // The LM head's product: f32 logits from bf16 operands, cuBLASLt (default) against cublasGemmEx, beside
  // the same bytes with a bf16 output.
  if (!quant_only) {
    CudaBackendOptions gemmex_opt = cublas_opt;
    gemmex_opt.cublaslt = false;
    auto gemmex_backend = make_cuda_backend(0, gemmex_opt);
    for (int64_t m : {16, 64}) {
      bench_matmul(*cublas_backend, shapes[3], DType::kBF16, m, "cublaslt", DType::kF32);
      bench_matmul(*gemmex_backend, shapes[3], DType::kBF16, m, "gemmex", DType::kF32);
      bench_matmul(*cublas_backend, shapes[3], DType::kBF16, m, "cublas");
    }
  }
  // Batched decode (issue #5): cuBLAS at M = 16 and 64 on the 7b shapes (q/o, gate or up, down, fused qkv, LM
  // head with f32 logits).
  if (!quant_only) {
    const std::vector<Shape2> decode = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {12288, 4096}, {32000, 4096}};
    for (int64_t m : {16, 64})
      for (const Shape2& s : decode)
        bench_matmul(*cublas_backend, s, DType::kBF16, m, "cublas", s.n == 32000 ? DType::kF32 : DType::kBF16);
  }
  // Quantized GEMV (gemv_quant.cu: x to 8 bits, then the packed blocks; both kernels timed) for every GGUF
  // type on the four 7b shapes at M = 1, and 8 rows on two of them. GB/s counts the packed weight bytes.
  for (DType dt : quantized_dtypes()) {
    for (size_t s = 0; s < 4; ++s) bench_matmul(be, shapes[s], dt, 1, "gemv");
    if (dt == DType::kQ4_0 || dt == DType::kQ4_K || dt == DType::kQ6_K || dt == DType::kQ8_0)
      for (size_t s = 0; s < 2; ++s) bench_matmul(be, shapes[s], dt, 8, "gemv");
  }
  // Dequantize-then-cuBLAS (M = 64 goes there) against the bf16 weight.
  for (DType dt : {DType::kBF16, DType::kQ4_0, DType::kQ4_K, DType::kQ6_K})
    bench_matmul(be, shapes[1], dt, 64, "cublas");

  // Attention over a paged bf16 cache (block_size 16): one token per sequence (decode), or every position of
  // each sequence (prefill; run through the tensor-core and the SIMT kernel).
  struct AttnShape {
    int64_t seqs, ctx, heads, kv_heads;
    bool prefill;
    int64_t hd = 128;
  };
  std::vector<AttnShape> attn = {
      {1, 4096, 32, 8, false},  {1, 32768, 32, 8, false}, {16, 2048, 32, 8, false}, {64, 1024, 32, 8, false},
      {32, 2048, 32, 32, false}, {1, 2048, 32, 32, true},  {1, 2048, 32, 8, true},   {1, 4096, 32, 32, true},
      {4, 512, 32, 8, true},     {1, 2048, 32, 32, true, 64}};
  if (quant_only) attn.clear();
  for (const AttnShape& a : attn) {
    const int64_t hd = a.hd, bs = 16;
    const int64_t blocks_per_seq = (a.ctx + bs - 1) / bs;
    const int64_t blocks = a.seqs * blocks_per_seq;
    Tensor kc = be.alloc({blocks, bs, a.kv_heads, hd}, DType::kBF16), vc = be.alloc(kc.shape(), DType::kBF16);
    fill(kc, 11);
    fill(vc, 12);
    std::vector<int32_t> pos, seq, table(static_cast<size_t>(blocks));
    for (int64_t i = 0; i < blocks; ++i) table[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    for (int64_t s = 0; s < a.seqs; ++s) {
      for (int64_t p = a.prefill ? 0 : a.ctx - 1; p < a.ctx; ++p) {
        pos.push_back(static_cast<int32_t>(p));
        seq.push_back(static_cast<int32_t>(s));
      }
    }
    const int64_t T = static_cast<int64_t>(pos.size());
    auto dev_i32 = [&](const std::vector<int32_t>& v, Shape shape) {
      Tensor h = Tensor::empty(shape, DType::kI32);
      std::memcpy(h.raw(), v.data(), v.size() * 4);
      Tensor d = be.alloc(shape, DType::kI32);
      be.copy(h, d);
      return d;
    };
    AttentionBatch batch;
    batch.positions = dev_i32(pos, {T});
    batch.token_seq = dev_i32(seq, {T});
    batch.slots = dev_i32(pos, {T});
    batch.block_tables = dev_i32(table, {a.seqs, blocks_per_seq});
    batch.n_tokens = T;
    batch.n_seqs = a.seqs;
    batch.max_blocks = blocks_per_seq;
    batch.block_size = bs;
    batch.max_position = a.ctx;
    Tensor q = be.alloc({T, a.heads, hd}, DType::kBF16), out = be.alloc(q.shape(), DType::kBF16);
    fill(q, 13);
    CHECK_CUDA(cudaDeviceSynchronize());  // fill ran on the legacy stream; the backends' streams do not wait for it
    char what[128], note[64];
    std::snprintf(what, sizeof what, "attn %s seqs=%lld ctx=%lld H=%lld Hkv=%lld hd=%lld",
                  a.prefill ? "prefill" : "decode", static_cast<long long>(a.seqs), static_cast<long long>(a.ctx),
                  static_cast<long long>(a.heads), static_cast<long long>(a.kv_heads), static_cast<long long>(hd));
    if (a.prefill) {
      // Causal FLOPs: QK^T and PV, 2 * 2 * hd per (query, key) pair, ctx (ctx + 1) / 2 pairs per sequence and head.
      const double flops = 4.0 * static_cast<double>(a.ctx) * static_cast<double>(a.ctx + 1) / 2 *
                           static_cast<double>(a.heads * hd * a.seqs);
      double mma_ms = 0;
      for (Backend* b : {mma_backend.get(), simt_backend.get()}) {
        Timer own{static_cast<cudaStream_t>(cuda_backend_stream(*b))};
        const double ms = own.median_ms(3, 10, [&](int) { b->attention(q, kc, vc, batch, 0.088f, out); });
        const bool mma = b == mma_backend.get();
        if (mma) mma_ms = ms;
        if (mma) std::snprintf(note, sizeof note, "%.1f TFLOP/s", flops / (ms * 1e-3) / 1e12);
        else std::snprintf(note, sizeof note, "%.1f TFLOP/s (tensor cores %.1fx faster)", flops / (ms * 1e-3) / 1e12,
                           ms / mma_ms);
        rows.push_back({std::string(what) + (mma ? " mma" : " simt"), ms * 1e3, 0, note});
      }
    } else {
      const double ms = timer.median_ms(3, reps, [&](int) { be.attention(q, kc, vc, batch, 0.088f, out); });
      const double bytes = 2.0 * a.seqs * a.ctx * a.kv_heads * hd * 2;
      const double gbs = bytes / (ms * 1e-3) / 1e9;
      std::snprintf(note, sizeof note, "%.0f%% of copy", 100.0 * gbs / copy_gbs);
      rows.push_back({what, ms * 1e3, gbs, note});
    }
  }
  be.synchronize();

  std::printf("\n%-52s %10s %9s  %s\n", "kernel", "median us", "GB/s", "vs ceiling");
  for (const Row& r : rows) std::printf("%-52s %10.1f %9.0f  %s\n", r.what.c_str(), r.us, r.gbs, r.note.c_str());
  std::printf("(ceiling: d2d copy %.0f GB/s measured above; GB/s counts weight/KV bytes read once)\n", copy_gbs);
  return 0;
}

}  // namespace
}  // namespace strata

// The comma-separated items after `prefix` in arg.
std::vector<std::string> list_after(const char* arg, const char* prefix) {
  std::vector<std::string> items;
  std::string rest = arg + std::strlen(prefix);
  for (size_t start = 0; start <= rest.size();) {
    const size_t end = std::min(rest.find(',', start), rest.size());
    if (end > start) items.push_back(rest.substr(start, end - start));
    start = end + 1;
  }
  return items;
}

int main(int argc, char** argv) {
  bool quick = false, quant_only = false, qmma_only = false, fp8 = false, rows_given = false;
  strata::QmmaSelection sel;
  try {
    for (int i = 1; i < argc; ++i) {
      quick = quick || std::strcmp(argv[i], "--quick") == 0;
      quant_only = quant_only || std::strcmp(argv[i], "--quant") == 0;
      qmma_only = qmma_only || std::strcmp(argv[i], "--qmma") == 0;
      fp8 = fp8 || std::strcmp(argv[i], "--fp8") == 0;
      sel.splits = sel.splits || std::strcmp(argv[i], "--qmma-splits") == 0;
      if (std::strncmp(argv[i], "--types=", 8) == 0) {
        sel.types.clear();
        for (const std::string& t : list_after(argv[i], "--types=")) sel.types.push_back(strata::dtype_from_name(t));
      }
      if (std::strncmp(argv[i], "--rows=", 7) == 0) {
        sel.rows.clear();
        rows_given = true;
        for (const std::string& r : list_after(argv[i], "--rows=")) sel.rows.push_back(std::stoll(r));
      }
    }
    if (fp8) return strata::bench_fp8(quick, rows_given ? sel.rows : std::vector<int64_t>{2048});
    return strata::run(quick, quant_only, qmma_only, sel);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernel_bench: %s\n", e.what());
    return 1;
  }
}
