// tests/gpu/moe_gpu_test.cpp: mixture-of-experts on the CUDA backend against the CPU backend. The MoE FFN
// alone (runtime/models/moe.h) on the same weights and input: decode-sized steps (each selected expert a
// GEMV over its rows, routed on the device or on the host), prefill-sized ones (grouped or per-expert GEMMs
// over the tokens sorted by expert), f32 and Q8_0/Q4_0 experts, Qwen2-MoE's shared expert, and one rank's
// slice of the experts (EP). The router's input and weights are built so every token's top-2 experts lead
// the rest by far more than bf16 rounding: no choice can flip, and the outputs differ by bf16 rounding only.
// Then whole models (the transformers fixtures and llama.cpp's Q8_0 GGUFs of them) against the CPU backend,
// as tests/gpu/model_gpu_test.cpp does, and their decode steps from CUDA graphs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "launcher/model_session.h"
#include "offload/tiered_weights.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/formats/block_quant.h"
#include "runtime/models/moe.h"
#include "runtime/sampler.h"
#include "gpu/gpu_cpu_logits.h"
#include "test_util.h"

namespace strata {
namespace {

Tensor quantized(const Tensor& f32, DType dtype) {
  if (dtype == DType::kF32) return f32;
  if (dtype == DType::kBF16 || dtype == DType::kF16) {  // 16-bit experts: the CPU runs the same rounded weights
    Tensor h = Tensor::empty(f32.shape(), dtype);
    auto* dst = static_cast<uint16_t*>(h.raw());
    for (int64_t i = 0; i < f32.numel(); ++i)
      dst[i] = dtype == DType::kBF16 ? f32_to_bf16(f32.data<float>()[i]) : f32_to_f16(f32.data<float>()[i]);
    return h;
  }
  Tensor q = Tensor::empty(f32.shape(), dtype);
  const int64_t cols = f32.dim(1), row_bytes = dtype_bytes(dtype, cols);
  for (int64_t r = 0; r < f32.dim(0); ++r)
    quantize_row(dtype, f32.data<float>() + r * cols, static_cast<uint8_t*>(q.raw()) + r * row_bytes, cols);
  return q;
}

struct MoeCase {
  std::string name;
  int64_t tokens;
  DType expert_dtype;
  bool shared;
  int64_t expert_first, held;  // this rank's experts (EP); all of them when held == experts
  int64_t experts = 8;
  int gemv_rows = 4;  // CudaBackendOptions::moe_gemv_max_rows: grouped GEMV up to this many rows per expert
  int gemm = 0;       // CudaBackendOptions::moe_gemm: 0 cuBLAS's grouped GEMM, 1 the tensor-core kernel
  bool device_route = true;  // CudaBackendOptions::moe_device_route (off: the host routing these steps had)
};

class MoeFfnOnGpu : public ::testing::TestWithParam<MoeCase> {};

TEST_P(MoeFfnOnGpu, EqualsTheCpuBackend) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const MoeCase& c = GetParam();
  constexpr int64_t D = 64, F = 96, Fs = 64;
  const int64_t E = c.experts;
  MoeConfig config;
  config.n_experts = E;
  config.n_used = 2;
  config.expert_ffn = F;
  config.shared_ffn = c.shared ? Fs : 0;
  config.norm_topk = !c.shared;

  LayerWeights host;
  // Token t leans on experts t % E (by 3) and (3t + 1) % E (by 2) through a near-diagonal router, so its
  // top-2 lead the rest by about 1.5 while bf16 moves a logit by about 0.01: the choices cannot flip.
  host.router = test::random_f32({E, D}, 11, 0.01f);
  for (int64_t e = 0; e < E; ++e) host.router.data<float>()[e * D + e] += 1.f;
  Tensor x = test::random_f32({c.tokens, D}, 7, 0.1f);
  for (int64_t t = 0; t < c.tokens; ++t) {
    const int64_t first = t % E, second = (3 * t + 1) % E == first ? (first + 1) % E : (3 * t + 1) % E;
    x.data<float>()[t * D + first] = 3.f;
    x.data<float>()[t * D + second] = 2.f;
  }
  host.expert_first = c.expert_first;
  for (int64_t e = c.expert_first; e < c.expert_first + c.held; ++e) {
    host.expert_gate.push_back(quantized(test::random_f32({F, D}, 100 + static_cast<uint32_t>(e), 0.2f), c.expert_dtype));
    host.expert_up.push_back(quantized(test::random_f32({F, D}, 200 + static_cast<uint32_t>(e), 0.2f), c.expert_dtype));
    host.expert_down.push_back(quantized(test::random_f32({D, F}, 300 + static_cast<uint32_t>(e), 0.2f), c.expert_dtype));
  }
  if (c.shared) {
    host.shared_router = test::random_f32({1, D}, 12, 0.3f);
    host.shared_gate = test::random_f32({Fs, D}, 13, 0.2f);
    host.shared_up = test::random_f32({Fs, D}, 14, 0.2f);
    host.shared_down = test::random_f32({D, Fs}, 15, 0.2f);
  }

  auto cpu = make_cpu_backend(1);
  Tensor ref = Tensor::empty({c.tokens, D}, DType::kF32);
  ExpertLoad cpu_load;
  moe_ffn(*cpu, config, host, x, ref, &cpu_load);

  CudaBackendOptions options;
  options.f32_weights_to_bf16 = false;  // the same weights, so only the activations' bf16 rounding differs
  options.moe_gemv_max_rows = c.gemv_rows;
  options.moe_gemm = c.gemm;
  options.moe_device_route = c.device_route;
  auto gpu = make_cuda_backend(0, options);
  LayerWeights dev;
  auto up = [&](const Tensor& t) { return t.defined() ? gpu->upload_weight(t) : Tensor(); };
  dev.router = up(host.router);
  dev.expert_first = host.expert_first;
  for (size_t e = 0; e < host.expert_gate.size(); ++e) {
    dev.expert_gate.push_back(up(host.expert_gate[e]));
    dev.expert_up.push_back(up(host.expert_up[e]));
    dev.expert_down.push_back(up(host.expert_down[e]));
  }
  dev.shared_router = up(host.shared_router);
  dev.shared_gate = up(host.shared_gate);
  dev.shared_up = up(host.shared_up);
  dev.shared_down = up(host.shared_down);
  Tensor xd = gpu->alloc({c.tokens, D}, gpu->activation_dtype());
  gpu->copy(x, xd);
  Tensor outd = gpu->alloc({c.tokens, D}, gpu->activation_dtype());
  ExpertLoad gpu_load;
  moe_ffn(*gpu, config, dev, xd, outd, &gpu_load);
  Tensor got = Tensor::empty({c.tokens, D}, DType::kF32);
  gpu->copy(outd, got);

  // Device routing (Backend::moe_routed) takes steps of at most moe_gemv_max_rows tokens of 16-bit experts.
  const bool sixteen_bit = c.expert_dtype == DType::kBF16 || c.expert_dtype == DType::kF16;
  const bool routed = c.device_route && sixteen_bit && c.tokens <= c.gemv_rows;
  EXPECT_EQ(gpu_load.device_routed, routed ? 1 : 0);
  EXPECT_EQ(gpu_load.host_routed, routed ? 0 : 1);
  const ExpertLoad gpu_counts = gpu_load.read(*gpu);  // the device counters, read back
  EXPECT_EQ(gpu_counts.tokens, cpu_load.tokens) << "the routing differs";
  EXPECT_EQ(gpu_counts.expert_bytes, cpu_load.expert_bytes);
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(ref.data<float>()[i]) - got.data<float>()[i]));
    scale = std::max(scale, std::abs(static_cast<double>(ref.data<float>()[i])));
  }
  ASSERT_GT(scale, 0.0);
  // bf16 activations; quantized experts add the CPU's 8-bit activation rounding (runtime/cpu/quant_dot.h).
  const bool quant = dtype_is_quantized(c.expert_dtype);
  const double tolerance = quant ? 0.03 : 0.02;
  EXPECT_LT(worst, tolerance * scale) << c.name << ": max |gpu - cpu| " << worst << " against max |cpu| " << scale;
}

INSTANTIATE_TEST_SUITE_P(
    Steps, MoeFfnOnGpu,
    ::testing::Values(MoeCase{"decode1_f32", 1, DType::kF32, false, 0, 8},
                      MoeCase{"decode16_f32", 16, DType::kF32, false, 0, 8},
                      MoeCase{"prefill300_f32", 300, DType::kF32, false, 0, 8},
                      MoeCase{"decode1_q8_0", 1, DType::kQ8_0, false, 0, 8},
                      MoeCase{"prefill300_q8_0", 300, DType::kQ8_0, false, 0, 8},
                      MoeCase{"decode4_q4_0", 4, DType::kQ4_0, false, 0, 8},
                      MoeCase{"decode1_shared", 1, DType::kF32, true, 0, 8},
                      MoeCase{"prefill64_shared", 64, DType::kF32, true, 0, 8},
                      MoeCase{"ep_slice_prefill64", 64, DType::kF32, false, 4, 4},
                      // 16-bit experts take the grouped launches (cuda_backend_moe.cpp): a decode step's few rows
                      // per expert the grouped GEMV (1, 2, 3-4 and 5-8 rows), larger ones cuBLAS's grouped GEMM;
                      // 32 experts leave most with no token.
                      MoeCase{"grouped_gemv_decode1_bf16_e32", 1, DType::kBF16, false, 0, 32, 32},
                      MoeCase{"grouped_gemv_decode16_bf16_e32", 16, DType::kBF16, false, 0, 32, 32},
                      MoeCase{"grouped_gemv_decode12_bf16", 12, DType::kBF16, false, 0, 8},
                      MoeCase{"grouped_gemv_rows6_bf16_e32", 96, DType::kBF16, false, 0, 32, 32, 8},
                      MoeCase{"grouped_gemv_decode4_f16", 4, DType::kF16, false, 0, 8},
                      MoeCase{"grouped_gemv_decode1_bf16_shared", 1, DType::kBF16, true, 0, 8},
                      MoeCase{"grouped_gemm_decode64_bf16", 64, DType::kBF16, false, 0, 8},
                      MoeCase{"grouped_gemm_prefill300_bf16_e32", 300, DType::kBF16, false, 0, 32, 32},
                      MoeCase{"grouped_gemm_ep_slice_prefill64_bf16", 64, DType::kBF16, false, 4, 4},
                      MoeCase{"grouped_mma_prefill300_bf16_e32", 300, DType::kBF16, false, 0, 32, 32, 4, 1},
                      MoeCase{"grouped_mma_prefill300_bf16_shared", 300, DType::kBF16, true, 0, 8, 8, 4, 1},
                      MoeCase{"per_expert_prefill300_f16", 300, DType::kF16, false, 0, 8},
                      // Routed on the device (the routing kernel, the grouped GEMVs reading its table), 1..8
                      // tokens, the shared expert folded into the combine, one rank's slice (another rank's
                      // experts add nothing), and the same steps forced through the host routing.
                      MoeCase{"device_route_decode2_bf16_e32", 2, DType::kBF16, false, 0, 32, 32},
                      MoeCase{"device_route_decode3_bf16", 3, DType::kBF16, false, 0, 8},
                      MoeCase{"device_route_decode8_bf16_e32", 8, DType::kBF16, false, 0, 32, 32, 8},
                      MoeCase{"device_route_decode4_bf16_shared", 4, DType::kBF16, true, 0, 8},
                      MoeCase{"device_route_ep_slice_decode4_bf16", 4, DType::kBF16, false, 4, 4},
                      MoeCase{"device_route_ep_slice_decode1_bf16", 1, DType::kBF16, false, 1, 3},
                      MoeCase{"host_route_decode1_bf16_e32", 1, DType::kBF16, false, 0, 32, 32, 4, 0, false},
                      MoeCase{"host_route_decode4_f16", 4, DType::kF16, false, 0, 8, 8, 4, 0, false},
                      MoeCase{"host_route_decode1_bf16_shared", 1, DType::kBF16, true, 0, 8, 8, 4, 0, false},
                      MoeCase{"host_route_ep_slice_decode4_bf16", 4, DType::kBF16, false, 4, 4, 8, 4, 0, false}),
    [](const auto& info) { return info.param.name; });

// Backend::expert_ffn alone on bf16 experts, CUDA's grouped launches against the CPU backend's per-expert
// matmuls: experts with no rows in the list, the grouped GEMV's K splits (K of 2048 and 8192 on the gate/up
// or the down side) and its 1..8-row forms, cuBLAS's grouped GEMM, and the tensor-core grouped GEMM (experts
// of more than one 64-row slice, output columns that end inside a block's tile).
struct ExpertFfnCase {
  std::string name;
  int64_t D, F;
  std::vector<int64_t> rows;  // per expert, consecutive in x
  int gemv_rows = 8;
  int gemm = 0;
};

class ExpertFfnOnGpu : public ::testing::TestWithParam<ExpertFfnCase> {};

TEST_P(ExpertFfnOnGpu, EqualsTheCpuBackend) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const ExpertFfnCase& c = GetParam();
  int64_t N = 0;
  for (int64_t r : c.rows) N += r;
  const Tensor x = test::random_f32({N, c.D}, 21, 1.f);
  auto cpu = make_cpu_backend(1);
  CudaBackendOptions options;
  options.moe_gemv_max_rows = c.gemv_rows;
  options.moe_gemm = c.gemm;
  auto gpu = make_cuda_backend(0, options);
  std::vector<ExpertRows> host, dev;
  int64_t begin = 0;
  for (size_t e = 0; e < c.rows.size(); ++e) {
    const auto seed = static_cast<uint32_t>(10 * e);
    const float scale = 1.f / std::sqrt(static_cast<float>(c.D));
    ExpertRows h{quantized(test::random_f32({c.F, c.D}, 400 + seed, scale), DType::kBF16),
                 quantized(test::random_f32({c.F, c.D}, 500 + seed, scale), DType::kBF16),
                 quantized(test::random_f32({c.D, c.F}, 600 + seed, 1.f / std::sqrt(static_cast<float>(c.F))),
                           DType::kBF16),
                 begin, c.rows[e]};
    dev.push_back({gpu->upload_weight(h.gate), gpu->upload_weight(h.up), gpu->upload_weight(h.down), begin, c.rows[e]});
    host.push_back(std::move(h));
    begin += c.rows[e];
  }
  Tensor ref = Tensor::zeros({N, c.D}, DType::kF32);
  cpu->expert_ffn(x, host, ref);
  Tensor xd = gpu->alloc({N, c.D}, DType::kBF16), yd = gpu->alloc({N, c.D}, DType::kBF16);
  gpu->copy(x, xd);
  gpu->expert_ffn(xd, dev, yd);
  Tensor got = Tensor::empty({N, c.D}, DType::kF32);
  gpu->copy(yd, got);
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(ref.data<float>()[i]) - got.data<float>()[i]));
    scale = std::max(scale, std::abs(static_cast<double>(ref.data<float>()[i])));
  }
  ASSERT_GT(scale, 0.0);
  EXPECT_LT(worst, 0.02 * scale) << c.name << ": max |gpu - cpu| " << worst << " against max |cpu| " << scale;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ExpertFfnOnGpu,
    ::testing::Values(ExpertFfnCase{"gemv_rows1to4_with_empty_experts", 64, 96, {3, 0, 4, 0, 1, 2}},
                      ExpertFfnCase{"gemv_k2048_split4", 2048, 256, {1, 0, 2, 1}},
                      ExpertFfnCase{"gemv_k8192_split2_gate", 8192, 64, {1, 0, 1}},
                      ExpertFfnCase{"gemv_k8192_split2_down", 64, 8192, {1, 1, 0}},
                      ExpertFfnCase{"gemv_rows8", 128, 64, {8, 5, 0, 7}},
                      ExpertFfnCase{"gemm_with_empty_experts", 256, 512, {9, 0, 17, 3, 0, 40}, 4},
                      ExpertFfnCase{"mma_with_empty_experts", 256, 512, {9, 0, 17, 3, 0, 40}, 4, 1},
                      ExpertFfnCase{"mma_slices_over_64_rows", 128, 192, {70, 0, 130, 5}, 4, 1},
                      ExpertFfnCase{"mma_partial_column_tiles", 96, 160, {33, 64, 0, 7}, 4, 1}),
    [](const auto& info) { return info.param.name; });

// The combine alone: every token's k rows summed in order, negative indices skipped, accumulate or not.
TEST(CombineRowsOnGpu, EqualsTheHostDefault) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  constexpr int64_t T = 5, k = 3, R = 9;
  Tensor index = Tensor::empty({T * k}, DType::kI32), weight = test::random_f32({T * k}, 4, 1.f);
  for (int64_t i = 0; i < T * k; ++i) index.data<int32_t>()[i] = i % 4 == 3 ? -1 : static_cast<int32_t>((i * 5) % R);
  auto cpu = make_cpu_backend(1);
  CudaBackendOptions options;
  auto gpu = make_cuda_backend(0, options);
  auto dev = [&](const Tensor& t, DType dt) {
    Tensor d = gpu->alloc(t.shape(), dt);
    gpu->copy(t, d);
    return d;
  };
  // 40 columns: one block a row; 1100: a row over 3 blocks of 256 threads, the last one partial.
  for (int64_t D : {40, 1100}) {
    const Tensor src = test::random_f32({R, D}, 3, 1.f);
    for (bool accumulate : {false, true}) {
      Tensor ref = test::random_f32({T, D}, 5, 1.f);
      Tensor outd = dev(ref, DType::kF32);
      cpu->combine_rows(src, index, weight, accumulate, ref);
      gpu->combine_rows(dev(src, DType::kF32), dev(index, DType::kI32), dev(weight, DType::kF32), accumulate, outd);
      Tensor got = Tensor::empty({T, D}, DType::kF32);
      gpu->copy(outd, got);
      for (int64_t i = 0; i < T * D; ++i)
        EXPECT_NEAR(got.data<float>()[i], ref.data<float>()[i], 1e-5) << D << " columns, element " << i;
    }
  }
}

// Whole models: the HF fixtures and llama.cpp's Q8_0 GGUFs of them, on CUDA against the CPU backend.
class MoeModelOnGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(MoeModelOnGpu, LogitsMatchTheCpuBackend) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const std::vector<int32_t> ids = {1, 40, 7, 100, 12, 99, 5, 250, 17, 3, 64, 128, 2, 77};
  const test::CpuGpuLogits logits = test::score_on_cpu_and_gpu(test::fixture(GetParam()), ids);
  ASSERT_EQ(logits.gpu.numel(), logits.cpu.numel());
  const auto [worst, spread, agree, decided] = test::compare_logits(logits.cpu, logits.gpu);
  // bf16 activations can move a near-tied router choice, which moves that token's logits more than
  // rounding does: the dense test's 3% of the spread, doubled; and Q8_0 on the CPU rounds activations to
  // 8 bits per 32 for its integer dot where the CUDA tensor-core path (decode batches 4-32) multiplies the
  // exact codes by bf16 activations (qwen2_moe-q8_0 measured 0.063 of the spread on an H100): 8%.
  EXPECT_LT(worst, 0.08 * spread) << "max |gpu - cpu| " << worst << " against a logit spread of " << spread;
  EXPECT_EQ(agree, decided);
  // The decode path (one token per step, not graph-recorded) runs through generate.
  launcher::SessionOptions options;
  options.model_path = test::fixture(GetParam());
  options.device = "cuda";
  launcher::ModelSession gpu(options);
  gpu.prepare(64);
  GenerationRequest r;
  r.prompt = {1, 40, 7, 100};
  r.max_new_tokens = 6;
  EXPECT_EQ(gpu.generator().generate({r})[0].tokens.size(), 6u);
}

INSTANTIATE_TEST_SUITE_P(Models, MoeModelOnGpu,
                         ::testing::Values("hf/mixtral_moe", "hf/qwen2_moe", "hf/qwen3_moe",
                                           "gguf_moe/mixtral_moe-q8_0.gguf", "gguf_moe/qwen2_moe-q8_0.gguf",
                                           "gguf_moe/qwen3_moe-q8_0.gguf"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (ch == '/' || ch == '.' || ch == '-') ch = '_';
                           return n;
                         });

// Steps of 1..4 tokens route on the device (Backend::moe_routed): scoring prompts that short runs every
// position through it, against the CPU backend within MoeModelOnGpu's bounds, and so does the host routing
// (moe_device_route=0). Then decode steps of 1..4 sequences: replayed from CUDA graphs they give the
// uncaptured tokens (batch 3 replays padded to 4 rows: equal until a bf16 near-tie may diverge), only the
// device routing records, and the per-expert counts (device counters, padding rows masked) sum to what the
// host routing counts.
class MoeDecodeOnGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(MoeDecodeOnGpu, DeviceRoutedStepsMatchTheCpuBackend) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const std::vector<int32_t> ids = {1, 40, 7, 100, 12, 99, 5, 250, 17, 3};
  launcher::SessionOptions options;
  options.model_path = test::fixture(GetParam());
  options.device = "cpu";
  launcher::ModelSession cpu(options);
  cpu.prepare(64);
  options.device = "cuda";
  for (bool device_route : {true, false}) {
    options.backend.cuda.moe_device_route = device_route;
    launcher::ModelSession gpu(options);
    gpu.prepare(64);
    for (size_t n = 1; n <= 4; ++n) {
      const auto from = ids.begin() + static_cast<int64_t>(n * (n - 1) / 2);  // n tokens: ids 0, 1-2, 3-5, 6-9
      const std::vector<int32_t> prompt(from, from + static_cast<int64_t>(n));
      const Tensor ref = cpu.generator().score(prompt), got = gpu.generator().score(prompt);
      ASSERT_EQ(got.numel(), ref.numel());
      const auto [worst, spread, agree, decided] = test::compare_logits(ref, got);
      EXPECT_LT(worst, 0.08 * spread) << n << " tokens, device_route " << device_route << ": max |gpu - cpu| "
                                      << worst << " against a logit spread of " << spread;
      EXPECT_EQ(agree, decided) << n << " tokens, device_route " << device_route;
    }
    const ExpertLoad load = gpu.model().expert_load();
    EXPECT_EQ(load.device_routed > 0, device_route);
    EXPECT_EQ(load.host_routed == 0, device_route);
  }
}

TEST_P(MoeDecodeOnGpu, GraphsGiveTheUncapturedTokens) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  constexpr size_t kNew = 24;
  launcher::SessionOptions options;
  options.model_path = test::fixture(GetParam());
  options.device = "cuda";
  struct Run {
    std::vector<std::vector<int32_t>> tokens;
    int64_t routed = 0;  // tokens x layers x top-k, from the per-expert counts
    int64_t graph_replays = 0;
  };
  auto run = [&](bool graphs, bool device_route, size_t batch) {
    options.backend.cuda.graphs = graphs;
    options.backend.cuda.moe_device_route = device_route;
    launcher::ModelSession session(options);
    session.prepare(256);
    std::vector<GenerationRequest> reqs(batch);
    for (size_t i = 0; i < batch; ++i) {
      reqs[i].prompt = {1, static_cast<int32_t>(5 + 7 * i), 9, static_cast<int32_t>(33 + i), 2};
      reqs[i].max_new_tokens = kNew;
    }
    Run out;
    for (const GenerationOutput& o : session.generator().generate(reqs, nullptr)) out.tokens.push_back(o.tokens);
    for (int64_t t : session.model().expert_load().tokens) out.routed += t;
    out.graph_replays = session.model().timings().graph_replays;
    return out;
  };
  for (size_t batch : {1, 2, 3, 4}) {
    const Run eager = run(false, true, batch), graphed = run(true, true, batch), host = run(true, false, batch);
    EXPECT_GT(graphed.graph_replays, 0) << "batch " << batch;
    EXPECT_EQ(host.graph_replays, 0) << "host-routed MoE steps must not be recorded";
    EXPECT_GT(host.routed, 0);
    EXPECT_EQ(graphed.routed, host.routed) << "batch " << batch;
    EXPECT_EQ(eager.routed, host.routed) << "batch " << batch;
    ASSERT_EQ(eager.tokens.size(), batch);
    ASSERT_EQ(graphed.tokens.size(), batch);
    for (size_t i = 0; i < batch; ++i) {
      ASSERT_EQ(eager.tokens[i].size(), kNew);
      ASSERT_EQ(graphed.tokens[i].size(), kNew);
      if (batch != 3) {
        EXPECT_EQ(graphed.tokens[i], eager.tokens[i]) << "batch " << batch << " sequence " << i;
      } else {
        size_t same = 0;
        while (same < kNew && graphed.tokens[i][same] == eager.tokens[i][same]) ++same;
        EXPECT_GE(same, 12u) << "batch " << batch << " sequence " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, MoeDecodeOnGpu, ::testing::Values("hf/mixtral_moe", "hf/qwen2_moe", "hf/qwen3_moe"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (ch == '/') ch = '_';
                           return n;
                         });

// Offloaded experts on CUDA (offload/expert_cache.h): top-k device slots per layer, misses copied from
// pinned host memory on the copy stream, each expert's matmuls waiting on its slot's event. The same
// kernels read the same bytes (the host copies are what upload_weight made), but the experts' rows sit at
// other offsets of the gathered buffer (round order), so kernels chosen by alignment may sum in another
// order: the logits agree with the resident CUDA run to bf16 rounding (a stale or half-copied expert would
// move them by a good part of the spread), the argmax wherever it is clear; the counters hold their
// invariants. (The first H100 run asserted bitwise equality and failed it; not yet re-run with this bound.)
class MoeExpertsOffloadedOnGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(MoeExpertsOffloadedOnGpu, EqualTheResidentRun) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const std::vector<int32_t> ids = {1, 40, 7, 100, 12, 99, 5, 250, 17, 3, 64, 128, 2, 77};
  struct Run {
    Tensor logits;
    std::vector<int32_t> tokens;
    ExpertCacheStats stats;
  };
  auto run = [&](std::optional<offload::ResidencyConfig> offload) {
    launcher::SessionOptions options;
    options.model_path = test::fixture(GetParam());
    options.device = "cuda";
    options.offload = offload;
    launcher::ModelSession session(options);
    session.prepare(64);
    Run out;
    out.logits = session.generator().score(ids);
    GenerationRequest r;
    r.prompt = {1, 40, 7, 100};
    r.max_new_tokens = 12;
    out.tokens = session.generator().generate({r})[0].tokens;
    if (session.offload() != nullptr) out.stats = session.offload()->expert_cache_stats();
    return out;
  };
  const Run resident = run(std::nullopt);
  offload::ResidencyConfig c;
  c.experts_resident_per_layer = open_checkpoint(test::fixture(GetParam()))->config().moe.n_used;
  const Run cached = run(c);
  ASSERT_EQ(cached.logits.numel(), resident.logits.numel());
  const auto [worst, spread, agree, decided] = test::compare_logits(resident.logits, cached.logits);
  std::printf("%s: offloaded vs resident max |diff| %.4g of a logit spread %.4g\n", GetParam().c_str(), worst, spread);
  EXPECT_LT(worst, 0.02 * spread);
  EXPECT_EQ(agree, decided);
  EXPECT_EQ(cached.tokens.size(), resident.tokens.size());
  ASSERT_TRUE(cached.stats.enabled());
  int64_t misses = 0;
  for (int64_t m : cached.stats.misses) misses += m;
  EXPECT_GT(misses, 0);
  EXPECT_EQ(cached.stats.bytes_streamed, misses * cached.stats.expert_bytes);
}

INSTANTIATE_TEST_SUITE_P(Models, MoeExpertsOffloadedOnGpu,
                         ::testing::Values("hf/mixtral_moe", "hf/qwen3_moe", "gguf_moe/mixtral_moe-q8_0.gguf"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (ch == '/' || ch == '.' || ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace strata
