// tests/runtime/moe_reference_test.cpp: mixture-of-experts models against Hugging Face transformers
// (fixtures from tools/reference/make_moe_fixtures.py): Mixtral (8 experts, top-2, renormalized), Qwen2-MoE
// (top-2 unnormalized, sigmoid-gated shared expert, q/k/v biases, a dense layer from mlp_only_layers),
// Qwen3-MoE (16 experts, top-4 with norm_topk_prob, per-head q/k norms, decoder_sparse_step 2). f32
// throughout: every position's logits within 1e-4 and transformers' greedy continuation.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstring>
#include <fstream>
#include <sstream>

#include "launcher/http/metrics.h"
#include "launcher/model_session.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/formats/hf_checkpoint.h"
#include "runtime/models/moe.h"
#include "hf_fixture.h"
#include "test_util.h"

namespace strata {
namespace {

class MoeReference : public ::testing::TestWithParam<std::string> {};

TEST_P(MoeReference, LogitsOfEveryPositionMatchTransformers) {
  const std::string dir = test::fixture("hf/" + GetParam());
  const test::HfFixture f = test::read_hf_fixture(dir);
  const test::NpyArray expected = test::read_npy(dir + "/logits.npy");
  launcher::SessionOptions options;
  options.model_path = dir;
  launcher::ModelSession session(options);
  session.prepare(256);
  const Tensor logits = session.generator().score(f.ids);
  ASSERT_EQ(logits.dim(0), expected.shape[0]);
  ASSERT_EQ(logits.dim(1), expected.shape[1]);
  const double err = test::max_rel_error(logits.data<float>(), expected.data.data(), expected.data.size());
  EXPECT_LT(err, 1e-4) << GetParam();
  // No token is dropped: every routed layer sends each of the T tokens to exactly n_used experts.
  const ModelConfig& c = session.config();
  int64_t routed_layers = 0, routed = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) routed_layers += c.moe.sparse_layer(l) ? 1 : 0;
  for (int64_t n : session.model().expert_load().tokens) routed += n;
  EXPECT_EQ(routed, static_cast<int64_t>(f.ids.size()) * c.moe.n_used * routed_layers) << GetParam();
}

TEST_P(MoeReference, GreedyContinuationMatchesTransformersGenerate) {
  const std::string dir = test::fixture("hf/" + GetParam());
  const test::HfFixture f = test::read_hf_fixture(dir);
  launcher::SessionOptions options;
  options.model_path = dir;
  launcher::ModelSession session(options);
  session.prepare(256);
  GenerationRequest r;
  r.prompt = f.greedy_prompt;
  r.max_new_tokens = static_cast<int64_t>(f.greedy.size());
  const auto out = session.generator().generate({r});
  EXPECT_EQ(out[0].tokens, f.greedy);
}

INSTANTIATE_TEST_SUITE_P(Models, MoeReference, ::testing::Values("mixtral_moe", "qwen2_moe", "qwen3_moe"));

// The layers that hold experts are the ones transformers built with a sparse block: the checkpoint has a
// router for exactly those (decoder_sparse_step and mlp_only_layers as transformers reads them).
TEST(MoeConfig, SparseLayersAreTheCheckpointsRoutedLayers) {
  for (const char* name : {"mixtral_moe", "qwen2_moe", "qwen3_moe"}) {
    const auto ckpt = open_checkpoint(test::fixture(std::string("hf/") + name));
    const ModelConfig& c = ckpt->config();
    ASSERT_TRUE(c.moe.enabled()) << name;
    for (int64_t l = 0; l < c.n_layers; ++l)
      EXPECT_EQ(c.moe.sparse_layer(l), ckpt->has(cat("blk.", l, ".ffn_gate_inp.weight"))) << name << " layer " << l;
  }
}

TEST(MoeConfig, ReadsTheExpertFieldsOfEachArchitecture) {
  const auto mixtral = open_checkpoint(test::fixture("hf/mixtral_moe"))->config().moe;
  EXPECT_EQ(mixtral.n_experts, 8);
  EXPECT_EQ(mixtral.n_used, 2);
  EXPECT_EQ(mixtral.expert_ffn, 24);
  EXPECT_TRUE(mixtral.norm_topk);
  const auto qwen2 = open_checkpoint(test::fixture("hf/qwen2_moe"))->config();
  EXPECT_EQ(qwen2.moe.shared_ffn, 32);
  EXPECT_FALSE(qwen2.moe.norm_topk);
  EXPECT_EQ(qwen2.moe.dense_layers, std::vector<int64_t>{1});
  EXPECT_TRUE(qwen2.qkv_bias);
  const auto qwen3 = open_checkpoint(test::fixture("hf/qwen3_moe"))->config();
  EXPECT_EQ(qwen3.moe.n_experts, 16);
  EXPECT_EQ(qwen3.moe.sparse_step, 2);
  EXPECT_TRUE(qwen3.moe.norm_topk);
  EXPECT_TRUE(qwen3.qk_norm);
  EXPECT_FALSE(qwen3.qkv_bias);
}

TEST(MoeConfig, MissingExpertFieldIsNamed) {
  const std::string text = R"({"model_type": "qwen3_moe", "hidden_size": 32, "intermediate_size": 40,
    "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 256, "num_experts": 8,
    "moe_intermediate_size": 8})";
  try {
    parse_hf_config(text, "cfg.json");
    FAIL() << "accepted a config without num_experts_per_tok";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_experts_per_tok"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
  }
}

// /metrics reports the engine's per-expert load as one counter per expert, and nothing for a dense model.
TEST(MoeMetrics, ExpertLoadIsACounterPerExpert) {
  launcher::http::Metrics metrics;
  EngineStats stats;
  EXPECT_EQ(metrics.render(stats, true).find("strata_expert_tokens_total"), std::string::npos);
  stats.expert_tokens = {3, 0, 5};
  const std::string text = metrics.render(stats, true);
  EXPECT_NE(text.find("# TYPE strata_expert_tokens_total counter"), std::string::npos) << text;
  EXPECT_NE(text.find("strata_expert_tokens_total{expert=\"1\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("strata_expert_tokens_total{expert=\"2\"} 5\n"), std::string::npos) << text;
}

TEST(MoeNames, ExpertTensorsMapBothWays) {
  EXPECT_EQ(hf_to_canonical_name("model.layers.3.block_sparse_moe.experts.7.w2.weight", "mixtral"),
            "blk.3.ffn_down.7.weight");
  EXPECT_EQ(hf_to_canonical_name("model.layers.0.mlp.experts.12.up_proj.weight", "qwen3_moe"),
            "blk.0.ffn_up.12.weight");
  EXPECT_EQ(hf_to_canonical_name("model.layers.0.mlp.shared_expert_gate.weight", "qwen2_moe"),
            "blk.0.ffn_gate_inp_shexp.weight");
  EXPECT_EQ(hf_to_canonical_name("model.layers.0.mlp.experts.01.up_proj.weight", "qwen2_moe"), std::nullopt);
  EXPECT_EQ(hf_to_canonical_name("model.layers.0.mlp.experts.1.up_proj.weight", "llama"), std::nullopt);
  EXPECT_EQ(canonical_to_hf_name("blk.2.ffn_gate.5.weight", "qwen2_moe"),
            "model.layers.2.mlp.experts.5.gate_proj.weight");
  EXPECT_EQ(canonical_to_hf_name("blk.2.ffn_gate.5.weight", "mixtral"),
            "model.layers.2.block_sparse_moe.experts.5.w1.weight");
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// The combine by hand: each token's rows weighted and summed, an expert another rank holds (index -1)
// adding nothing, and accumulate adding onto what out held (the shared expert's pass).
TEST(MoeCombine, SumsEachTokensWeightedRowsAndSkipsOtherRanksExperts) {
  auto cpu = make_cpu_backend(1);
  Tensor src = Tensor::empty({3, 2}, DType::kF32), index = Tensor::empty({4}, DType::kI32);
  Tensor weight = Tensor::empty({4}, DType::kF32), out = Tensor::empty({2, 2}, DType::kF32);
  const float src_v[] = {1, 2, 3, 4, 5, 6}, weight_v[] = {0.5f, 9, 1, 2};
  const int32_t index_v[] = {2, -1, 0, 1};
  std::memcpy(src.raw(), src_v, sizeof(src_v));
  std::memcpy(weight.raw(), weight_v, sizeof(weight_v));
  std::memcpy(index.raw(), index_v, sizeof(index_v));
  for (int i = 0; i < 4; ++i) out.data<float>()[i] = 1.f;
  cpu->combine_rows(src, index, weight, /*accumulate=*/false, out);
  EXPECT_EQ(std::vector<float>(out.data<float>(), out.data<float>() + 4), (std::vector<float>{2.5f, 3, 7, 10}));
  cpu->combine_rows(src, index, weight, /*accumulate=*/true, out);
  EXPECT_EQ(std::vector<float>(out.data<float>(), out.data<float>() + 4), (std::vector<float>{5, 6, 14, 20}));
}

// Host routing counts each token's n_used experts, and not the padding rows after a recorded decode shape's
// real ones (its first run may route on the host): only real tokens count, as on the device.
TEST(MoeLoad, HostCountsSkipPaddingRows) {
  Routing routing;
  routing.n_used = 2;
  routing.expert = {0, 2, 1, 2, 2, 0};  // tokens 0, 1, 2
  ExpertLoad load;
  load.add(routing);
  EXPECT_EQ(load.tokens, (std::vector<int64_t>{2, 1, 3}));
  load.real_tokens = 2;  // token 2 pads the step
  load.add(routing);
  EXPECT_EQ(load.tokens, (std::vector<int64_t>{3, 2, 5}));
}

// Layers routed on a device backend count into device counters (tokens per expert, then bytes) that read()
// adds to the host counts, leaving the load itself as it was; the CPU backend has no device routing.
TEST(MoeLoad, ReadAddsTheDeviceCounters) {
  auto cpu = make_cpu_backend(1);
  ExpertLoad load;
  load.tokens = {1, 2, 3};
  load.expert_bytes = 10;
  EXPECT_EQ(load.read(*cpu).tokens, load.tokens);
  load.device = Tensor::empty({4}, DType::kI64);
  const int64_t counts[] = {5, 0, 1, 100};
  std::memcpy(load.device.raw(), counts, sizeof(counts));
  const ExpertLoad read = load.read(*cpu);
  EXPECT_EQ(read.tokens, (std::vector<int64_t>{6, 2, 4}));
  EXPECT_EQ(read.expert_bytes, 110);
  EXPECT_EQ(load.tokens, (std::vector<int64_t>{1, 2, 3}));
  MoeLayer layer;
  Tensor x = Tensor::zeros({1, 4}, DType::kF32), logits = Tensor::zeros({1, 3}, DType::kF32), out = x;
  EXPECT_FALSE(cpu->moe_routed(x, logits, layer, out));
}

}  // namespace
}  // namespace strata
