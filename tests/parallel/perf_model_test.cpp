// tests/parallel/perf_model_test.cpp: parallel/perf_model.h against closed forms (all-reduce cost,
// pipeline bubble, parameter counts equal to ModelConfig::parameter_count), the hardware and sweep
// files of the repository, plan suggestion, and, printed but never asserted (tests do not assert on
// time), the model's error against the H100 measurements in bench/results.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "parallel/perf_model.h"
#include "runtime/error.h"
#include "runtime/model_presets.h"
#include "test_util.h"

namespace strata::parallel {
namespace {

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

Hardware simple_hw() {  // round numbers so every expectation is a closed form
  Hardware hw;
  hw.mem_gbs = 1000, hw.gemm_tflops = 1e6;  // a GEMM rate so high that decode is memory-bound
  hw.devices_per_node = 8;
  hw.intra = {100, 10};
  hw.inter = {10, 20};
  hw.activation_bytes = 2;
  return hw;
}

TEST(PerfModel, AllReduceIsTheCheaperOfRingAndTree) {
  const Link link{100, 10};  // 100 GB/s, 10 us
  // 1 MB on 4 ranks: ring 2*3/4 * 1e6/1e11 + 6 * 10us = 75 us; tree 2*2*10us + 2e6/1e11 = 60 us.
  EXPECT_NEAR(allreduce_seconds(1000000, 4, link), 60e-6, 1e-12);
  // 1 GB: ring 15 ms + 60 us beats tree 20 ms + 40 us.
  EXPECT_NEAR(allreduce_seconds(1000000000, 4, link), 15e-3 + 60e-6, 1e-12);
  EXPECT_EQ(allreduce_seconds(1000, 1, link), 0);
  EXPECT_NEAR(allgather_seconds(4000000, 4, link), 0.75 * 4e6 / 1e11 + 3 * 10e-6, 1e-12);
  EXPECT_NEAR(p2p_seconds(1000000, link), 1e6 / 1e11 + 10e-6, 1e-12);
}

TEST(PerfModel, BubbleFraction) {
  EXPECT_DOUBLE_EQ(bubble_fraction(1, 1), 0);
  EXPECT_DOUBLE_EQ(bubble_fraction(4, 4), 3.0 / 7.0);
  EXPECT_DOUBLE_EQ(bubble_fraction(2, 8), 1.0 / 9.0);
}

TEST(PerfModel, CountedParametersEqualParameterCount) {
  for (const std::string& name : model_preset_names()) {
    const ModelConfig c = model_preset(name);
    const int64_t globals = head_params(c, 1) * (c.tied_embeddings ? 1 : 2) + c.hidden;
    // A layer's small elements (norms, biases) are layer_params less its dense matrices.
    const int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
    const int64_t small = layer_params(c, 1) - (2 * c.hidden * q + 2 * c.hidden * kv + 3 * c.hidden * c.ffn);
    const double matrices = stage_matmuls(c, PlanShape{}, c.n_layers, 1).held;
    EXPECT_EQ(std::llround(matrices) + c.n_layers * small + globals, c.parameter_count()) << name;
    if (!c.moe.enabled()) {
      EXPECT_EQ(c.n_layers * layer_params(c, 1) + globals, c.parameter_count()) << name;
    }
  }
}

// A MoE layer holds every expert of its share and a step reads only the routed ones: batch 1 reads exactly
// n_used experts a layer, a large batch nearly all; EP2 holds half the experts and runs half of each token's.
TEST(PerfModel, MixtureOfExpertsHoldsItsShareAndReadsTheRoutedExperts) {
  for (const char* name : {"mixtral-8x7b-shape", "qwen3-30b-a3b-shape"}) {
    const ModelConfig c = model_preset(name);
    ASSERT_TRUE(c.moe.enabled()) << name;
    const auto L = static_cast<double>(c.n_layers), E = static_cast<double>(c.moe.n_experts),
               k = static_cast<double>(c.moe.n_used);
    const double attention = static_cast<double>(2 * c.hidden * c.n_heads * c.head_dim +
                                                 2 * c.hidden * c.n_kv_heads * c.head_dim);
    const double expert = 3.0 * static_cast<double>(c.hidden * c.moe.expert_ffn);
    const double router = E * static_cast<double>(c.hidden);
    PlanShape one, ep2;
    ep2.ep = 2;
    const StageMatmuls b1 = stage_matmuls(c, one, c.n_layers, 1);
    EXPECT_EQ(b1.sparse_layers, c.n_layers) << name;
    EXPECT_NEAR(b1.held, L * (attention + router + E * expert), 1) << name;
    EXPECT_NEAR(b1.read, L * (attention + router + k * expert), 1) << name;
    EXPECT_NEAR(b1.per_token, b1.read, 1) << name;  // one token multiplies what it reads
    const StageMatmuls many = stage_matmuls(c, one, c.n_layers, 4096);
    EXPECT_NEAR(many.read, b1.held, b1.held * 1e-6) << name;
    const StageMatmuls half = stage_matmuls(c, ep2, c.n_layers, 1);
    EXPECT_NEAR(b1.held - half.held, L * E / 2 * expert, 1) << name;
    EXPECT_NEAR(b1.per_token - half.per_token, L * k / 2 * expert, 1) << name;
  }
}

TEST(PerfModel, ExpertParallelPaysOneExpertCombinePerLayer) {
  const ModelConfig c = model_preset("mixtral-8x7b-shape");
  const Hardware hw = simple_hw();
  PlanShape s;
  s.ep = 2, s.overlap_chunks = 1;  // no overlap: every all-reduce is exposed
  EXPECT_EQ(s.str(), "tp1 pp1 dp1 ep2");
  EXPECT_EQ(s.world(), 2);
  const Prediction p = predict(c, s, hw, {1, 16, 64});
  // tp 1: no attention, embedding or logits collectives; each layer's experts combine over the 2 ranks.
  const double expected = static_cast<double>(c.n_layers) * allreduce_seconds(c.hidden * 2, 2, hw.intra);
  EXPECT_NEAR(p.decode.allreduce_s, expected, 1e-12);
  // Each rank holds half of the routed experts (bf16).
  const Prediction whole = predict(c, PlanShape{}, hw, {1, 16, 64});
  EXPECT_EQ(whole.weight_bytes_per_rank - p.weight_bytes_per_rank,
            2 * c.n_layers * (c.moe.n_experts / 2) * 3 * c.hidden * c.moe.expert_ffn);
  // EP2 x TP2: attention over tp 2 and the experts' combine over all 4 ranks of the stage.
  s.tp = 2;
  const Prediction both = predict(c, s, hw, {1, 16, 64});
  const int64_t act = c.hidden * 2;
  const double with_tp = static_cast<double>(c.n_layers) * (allreduce_seconds(act, 2, hw.intra) +
                                                            allreduce_seconds(act, 4, hw.intra)) +
                         allreduce_seconds(act, 2, hw.intra) + allgather_seconds(c.vocab_size * 4, 2, hw.intra);
  EXPECT_NEAR(both.decode.allreduce_s, with_tp, 1e-12);
}

TEST(PerfModel, TensorParallelSplitsMatricesAndReplicatesNorms) {
  const ModelConfig c = model_preset("7b-shape");  // 32 KV heads: nothing replicated but the norms
  for (int tp : {2, 4, 8})
    EXPECT_EQ(tp * (layer_params(c, tp) - 2 * c.hidden), layer_params(c, 1) - 2 * c.hidden) << tp;
  // 70b-shape on 16 ranks: 8 KV heads, each held by 2 ranks (one K and one V head per rank).
  const ModelConfig big = model_preset("70b-shape");
  EXPECT_EQ(layer_params(big, 16),
            2 * big.hidden * (64 / 16 * 128) + 2 * big.hidden * 128 + 3 * big.hidden * big.ffn / 16 + 2 * big.hidden);
  EXPECT_EQ(head_params(big, 3), (32000 + 2) / 3 * big.hidden);  // the vocab padded to a multiple of 3
}

TEST(PerfModel, SingleRankDecodeIsWeightBytesOverBandwidth) {
  const ModelConfig c = model_preset("7b-shape");
  const Hardware hw = simple_hw();
  PlanShape s;
  const Workload w{1, 16, 64};
  const Prediction p = predict(c, s, hw, w);
  // Per step: every layer and the head in bf16 (the embedding is a lookup), plus the KV cache of
  // one sequence at its mean context (16 + 64 / 2 positions).
  const double weights = 2.0 * static_cast<double>(c.n_layers * layer_params(c, 1) + head_params(c, 1) + c.hidden);
  const double kv = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * 2 * 48;
  EXPECT_NEAR(p.decode.total_s, (weights + kv) / 1e12, 1e-9);
  EXPECT_EQ(p.decode.bound, "memory");
  EXPECT_EQ(p.decode.allreduce_s, 0);
  EXPECT_NEAR(p.decode_tokens_per_s, 1 / p.decode.total_s, 1e-6);
  EXPECT_EQ(p.weight_bytes_per_rank, 2 * c.parameter_count());
}

// serve.kv_cache_dtype: fp8 counts each K/V row as head_dim e4m3 bytes plus its 4-byte scale, against 2 bytes
// an element in bf16: the memory a plan needs and the KV bytes each decode step reads shrink with it.
TEST(PerfModel, Fp8KvCacheCountsTheRealRowBytes) {
  const ModelConfig c = model_preset("llama3-8b-shape");
  const Hardware hw = simple_hw();
  PlanShape bf16, fp8;
  fp8.kv_cache_dtype = DType::kF8_E4M3;
  const Workload w{64, 1024, 1024};
  const Prediction a = predict(c, bf16, hw, w), b = predict(c, fp8, hw, w);
  const int64_t rows = 2 * c.n_layers * c.n_kv_heads * 64 * 2048;  // K and V rows of 64 sequences
  EXPECT_EQ(a.kv_bytes_per_rank, rows * c.head_dim * 2);
  EXPECT_EQ(b.kv_bytes_per_rank, rows * (c.head_dim + 4));
  EXPECT_EQ(a.device_bytes_per_rank - b.device_bytes_per_rank, a.kv_bytes_per_rank - b.kv_bytes_per_rank);
  EXPECT_LT(b.decode.total_s, a.decode.total_s);
}

TEST(PerfModel, TensorParallelPaysTwoAllReducesPerLayer) {
  const ModelConfig c = model_preset("7b-shape");
  const Hardware hw = simple_hw();
  PlanShape s;
  s.tp = 4, s.overlap_chunks = 1;  // no overlap: every all-reduce is exposed
  const Prediction p = predict(c, s, hw, {1, 16, 64});
  const int64_t act = c.hidden * 2;
  const double expected = (2 * c.n_layers + 1) * allreduce_seconds(act, 4, hw.intra) +
                          allgather_seconds(32000 * 4, 4, hw.intra);  // + embedding, + logits
  EXPECT_NEAR(p.decode.allreduce_s, expected, 1e-12);
  EXPECT_NEAR(p.decode.allreduce_exposed_s, expected, 1e-12);
  EXPECT_DOUBLE_EQ(p.decode.hidden_fraction(), 0);
  // TP past the node (8 devices) moves the all-reduces onto the inter-node link.
  s.tp = 16;
  EXPECT_TRUE(tp_crosses_nodes(16, hw));
  EXPECT_FALSE(tp_crosses_nodes(8, hw));
}

TEST(PerfModel, PipelineStepIsSlotsTimesTheSlowestStage) {
  const ModelConfig c = model_preset("7b-shape");
  const Hardware hw = simple_hw();
  PlanShape one, two;
  two.pp = 2, two.micro_batches = 2;
  const Prediction p1 = predict(c, two, hw, {1, 16, 64});  // one sequence: one micro-batch
  const Prediction p2 = predict(c, two, hw, {2, 16, 64});
  // Batch 1: the two stages run one after the other: the bubble is one stage's slot.
  EXPECT_NEAR(p1.decode.bubble_s, p1.decode.total_s / 2, p1.decode.total_s * 1e-9);
  // Batch 2 in two micro-batches: 3 slots, of which 1 is bubble: (pp - 1) / (m + pp - 1).
  EXPECT_NEAR(p2.decode.bubble_s / p2.decode.total_s, bubble_fraction(2, 2), 1e-9);
  EXPECT_GT(p2.decode.p2p_s, 0);
  EXPECT_GT(predict(c, one, hw, {2, 16, 64}).decode_tokens_per_s, 0);
}

TEST(PerfModel, ReadsTheRepositorysHardwareAndSweepFiles) {
  const std::string root = test::source_dir();
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(root + "/bench/hardware")) {
    const Hardware hw = parse_hardware(read(e.path().string()), e.path().string());
    EXPECT_GT(hw.mem_gbs, 0) << e.path();
    EXPECT_GT(hw.gemm_tflops, 0) << e.path();
    ++files;
  }
  EXPECT_GE(files, 4);
  const Hardware dgx = parse_hardware(read(root + "/bench/hardware/dgx-h100-ib.yaml"), "dgx");
  EXPECT_EQ(dgx.world(), 1024);
  EXPECT_LT(dgx.inter.gbs, dgx.intra.gbs);
  for (const auto& e : std::filesystem::directory_iterator(root + "/bench/scaling")) {
    const SweepSpec s = parse_sweep(read(e.path().string()), e.path().string());
    EXPECT_FALSE(s.plans.empty()) << e.path();
  }
}

TEST(PerfModel, BadHardwareFilesNameTheLineAndKey) {
  try {
    parse_hardware("device:\n  memory_gbs: 10\n  gemm_tflops: 1\n  memroy: 8GiB\n", "hw.yaml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hw.yaml:4:3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("memroy"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_hardware("device: {memory_gbs: fast, gemm_tflops: 1}\n", "hw.yaml"), Error);
  EXPECT_THROW(parse_sweep("model: {preset: tiny}\nplans: []\n", "s.yaml"), Error);
}

TEST(PerfModel, SuggestionsAreValidFitAndRanked) {
  const Hardware hw = parse_hardware(read(test::source_dir() + "/bench/hardware/dgx-h100-ib.yaml"), "dgx");
  const ModelConfig c = model_preset("70b-shape");
  for (int gpus : {8, 64, 1024}) {
    const SuggestResult r = suggest_plans(c, hw, gpus, {64, 512, 128}, Objective::kThroughput);
    ASSERT_FALSE(r.ranked.empty()) << gpus;
    for (size_t i = 0; i < r.ranked.size(); ++i) {
      const Suggestion& s = r.ranked[i];
      EXPECT_EQ(s.shape.world(), gpus);
      EXPECT_EQ(c.n_heads % s.shape.tp, 0);
      EXPECT_TRUE(s.prediction.fits);
      if (i > 0) {
        EXPECT_LE(s.prediction.decode_tokens_per_s, r.ranked[i - 1].prediction.decode_tokens_per_s);
      }
    }
    // 8 GPUs cannot hold 138 GB of weights on one, so tp1 pp1 dp8 is rejected for memory.
    if (gpus == 8) {
      bool rejected = false;
      for (const auto& why : r.rejected) rejected |= why.rfind("tp1 pp1 dp8", 0) == 0;
      EXPECT_TRUE(rejected);
    }
  }
}

// A mixture-of-experts model's suggestions include expert-parallel plans, each valid: the experts divide over
// every stage's tp x ep ranks.
TEST(PerfModel, SuggestionsForMixtureOfExpertsTryExpertParallelism) {
  const Hardware hw = parse_hardware(read(test::source_dir() + "/bench/hardware/dgx-h100-ib.yaml"), "dgx");
  const ModelConfig c = model_preset("mixtral-8x7b-shape");
  const SuggestResult r = suggest_plans(c, hw, 8, {64, 512, 128}, Objective::kThroughput);
  ASSERT_FALSE(r.ranked.empty());
  bool expert_parallel = false;
  for (const Suggestion& s : r.ranked) {
    EXPECT_EQ(s.shape.world(), 8) << s.shape.str();
    EXPECT_EQ(c.moe.n_experts % (s.shape.tp * s.shape.ep), 0) << s.shape.str();
    expert_parallel |= s.shape.ep > 1;
  }
  EXPECT_TRUE(expert_parallel);
  // A dense model gets none.
  for (const Suggestion& s : suggest_plans(model_preset("7b-shape"), hw, 8, {64, 512, 128}, Objective::kThroughput).ranked)
    EXPECT_EQ(s.shape.ep, 1) << s.shape.str();
}

// The error the docs state: predictions against bench/results (H100, 7b-shape bf16). Printed only.
TEST(PerfModel, PrintsErrorAgainstTheH100Measurements) {
  const Hardware hw = parse_hardware(read(test::source_dir() + "/bench/hardware/h100-sxm-node.yaml"), "h100");
  const ModelConfig c = model_preset("7b-shape");
  struct Row {
    const char* what;
    int64_t batch;
    int64_t host_bytes;
    double measured;
  };
  // gpu-h100-20261125-154435/decode-b*.json and offload-h100-sched/strata-host-b*.json (26 of 32
  // layers streamed from pinned host memory, 10523508736 bytes per pass).
  const Row rows[] = {{"decode, all resident", 1, 0, 155.26},        {"decode, all resident", 16, 0, 2225.82},
                      {"decode, all resident", 64, 0, 7611.27},      {"host-tier offload", 1, 10523508736, 4.79},
                      {"host-tier offload", 16, 10523508736, 79.52}, {"host-tier offload", 64, 10523508736, 308.49}};
  double worst = 0;
  for (const Row& r : rows) {
    PlanShape s;
    s.host_stream_bytes = r.host_bytes;
    const Prediction p = predict(c, s, hw, {r.batch, 16, 64});
    const double err = (p.decode_tokens_per_s - r.measured) / r.measured;
    worst = std::max(worst, std::abs(err));
    std::printf("[ calibration ] H100 7b-shape %-22s batch %3lld: predicted %7.1f tok/s (%s-bound), measured %7.1f, "
                "error %+5.1f%%\n",
                r.what, static_cast<long long>(r.batch), p.decode_tokens_per_s, p.decode.bound.c_str(), r.measured,
                100 * err);
  }
  const Prediction prefill = predict(c, PlanShape{}, hw, {1, 2048, 2});
  std::printf("[ calibration ] H100 7b-shape prefill 2048 tokens: predicted %.0f tok/s, measured 38731.4, error %+.1f%%\n",
              prefill.prefill_tokens_per_s, 100 * (prefill.prefill_tokens_per_s - 38731.4) / 38731.4);
  std::printf("[ calibration ] largest decode error %.1f%% (fitted on the same points: not a validation)\n", 100 * worst);
}

}  // namespace
}  // namespace strata::parallel
