// tests/parallel/expert_parallel_mpi_test.cpp: expert parallelism (parallel.expert) against the single-rank
// run of the same mixture-of-experts model, computed by each rank itself: greedy tokens identical and every
// position's logits within 1e-4 (relative), for the three transformers fixtures (Mixtral, Qwen2-MoE with its
// shared expert, Qwen3-MoE), and llama.cpp's GGUF conversions of them (stacked experts, Q8_0). np 2: EP2, and
// TP2 (the experts spread over the TP group), PP2; np 4: EP4, EP2 x TP2, EP2 x PP2. The *_cached layouts
// offload the experts (offload.experts): each rank's own experts in a cache of fewer slots than it holds,
// counted against the router's load. The driver's engine counters (what /metrics shows) cover every stage
// and every rank's cache. Steps of 6 or more tokens run in two row groups (comm.overlap_chunks), each group's
// expert combine in flight while the next computes.
// mpi-np: 2 4
#include <gtest/gtest.h>

#include "comm/bootstrap.h"
#include "launcher/model_session.h"
#include "launcher/rank_runtime.h"
#include "parallel/partition.h"
#include "parallel/plan_parser.h"
#include "mpi_world.h"
#include "test_util.h"

namespace strata {
namespace {

comm::Communicator*& g_world = test::world_slot();  // tests/mpi_world.h keeps it alive

struct Layout {
  std::string name;
  int tp = 1, ep = 1, pp = 1;
  std::string fixture;
  int experts_resident = 0;  // > 0: offload.experts.resident_per_layer
};

std::string layout_name(const ::testing::TestParamInfo<Layout>& info) { return info.param.name; }

class ExpertLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(ExpertLayouts, MatchSingleRank) {
  const Layout& layout = GetParam();
  if (layout.tp * layout.ep * layout.pp != g_world->size())
    GTEST_SKIP() << layout.name << " needs " << layout.tp * layout.ep * layout.pp << " ranks";
  const bool gguf = layout.fixture.find(".gguf") != std::string::npos;
  const std::string path = test::fixture((gguf ? "gguf_moe/" : "hf/") + layout.fixture);
  const std::string yaml = "model:\n  path: " + path + "\nparallel:\n  tensor: " + std::to_string(layout.tp) +
                           "\n  expert: " + std::to_string(layout.ep) + "\n  pipeline: " + std::to_string(layout.pp) +
                           "\n  micro_batches: 2\ncomm:\n  timeout_s: 60\n" +
                           // Prefill steps in two row groups: the first group's expert combine overlaps the
                           // second's experts (LlamaModel::project_and_experts); decode steps stay whole.
                           "  overlap_chunks: 2\n  overlap_min_tokens: 3\n" +
                           (layout.experts_resident > 0
                                ? "offload:\n  experts: {resident_per_layer: " + std::to_string(layout.experts_resident) + "}\n"
                                : std::string());
  const parallel::ParsedPlan parsed = parallel::parse_plan(yaml, layout.name + ".yaml");
  ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);

  launcher::SessionOptions options;
  options.model_path = path;
  options.threads = 1;
  std::vector<GenerationRequest> requests(3);
  const std::vector<std::vector<int32_t>> prompts = {{1, 17, 29, 5, 88, 41, 7}, {1, 3}, {1, 200, 9, 14, 60}};
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i].prompt = prompts[i];
    requests[i].max_new_tokens = 8 + static_cast<int64_t>(i);
  }
  std::vector<GenerationOutput> expected;
  Tensor expected_logits;
  std::vector<int64_t> expected_load, generate_load;
  {  // reference: this rank alone, whole model
    launcher::ModelSession single(options);
    single.prepare(256);
    expected = single.generator().generate(requests);
    generate_load = single.model().expert_load().tokens;
    expected_logits = single.generator().score(prompts[0]);
    expected_load = single.model().expert_load().tokens;
  }

  launcher::RankRuntime rank(parsed.plan, "");
  rank.configure(options.generator);
  launcher::SessionOptions ranked = options;
  if (layout.experts_resident > 0) ranked.offload = parallel::residency_config(parsed.plan, g_world->rank());
  ranked.overlap_chunks = parsed.plan.comm.overlap_chunks;  // as open_session takes them from the plan
  ranked.overlap_min_tokens = parsed.plan.comm.overlap_min_tokens;
  launcher::ModelSession session(ranked, rank.placement());
  const ModelConfig& c = session.config();
  // Each rank of a stage's expert group holds its own share of the experts.
  const int group = layout.tp * layout.ep;
  EXPECT_EQ(session.shard().expert_count, c.moe.n_experts / group);
  EXPECT_EQ(session.shard().expert_begin, rank.part().shard.expert_group_rank() * c.moe.n_experts / group);
  session.prepare(256);
  // Gather every rank's counters onto the driver after every step (serving does it every few seconds).
  session.generator().engine().set_telemetry(1e-9, nullptr);
  const auto outputs = session.generator().generate(requests);
  ASSERT_EQ(outputs.size(), requests.size());
  for (size_t k = 0; k < outputs.size(); ++k)
    EXPECT_EQ(outputs[k].tokens, expected[k].tokens) << layout.name << " request " << k;
  if (session.link().is_driver()) {  // what /metrics shows: every stage's routed tokens, every rank's cache
    const EngineStats stats = session.generator().engine().stats();
    EXPECT_EQ(stats.expert_tokens, generate_load) << layout.name;
    if (layout.experts_resident > 0) {  // one cache lookup per token routed to an expert
      ASSERT_EQ(stats.expert_cache_hits.size(), generate_load.size()) << layout.name;
      for (size_t e = 0; e < generate_load.size(); ++e)
        EXPECT_EQ(stats.expert_cache_hits[e] + stats.expert_cache_misses[e], generate_load[e])
            << layout.name << " expert " << e;
    }
  }
  const Tensor logits = session.generator().score(prompts[0]);
  ASSERT_EQ(logits.numel(), expected_logits.numel());
  EXPECT_LT(test::max_rel_error(logits.data<float>(), expected_logits.data<float>(),
                                static_cast<size_t>(logits.numel())),
            1e-4)
      << layout.name;
  // Every rank routes every token of its stage's layers, so a single-stage layout counts what one rank did.
  if (layout.pp == 1) {
    EXPECT_EQ(session.model().expert_load().tokens, expected_load) << layout.name;
    if (layout.experts_resident > 0) {  // each of this rank's experts: one lookup per token routed to it
      const ExpertCacheStats cache = session.model().expert_cache_stats();
      ASSERT_TRUE(cache.enabled()) << layout.name;
      EXPECT_EQ(cache.resident_per_layer, layout.experts_resident);
      for (int64_t e = 0; e < cache.experts; ++e) {
        int64_t lookups = 0;
        for (int64_t l = 0; l < cache.layers; ++l)
          lookups += cache.hits[static_cast<size_t>(l * cache.experts + e)] + cache.misses[static_cast<size_t>(l * cache.experts + e)];
        EXPECT_EQ(lookups, expected_load[static_cast<size_t>(cache.expert_first + e)]) << layout.name << " expert " << e;
      }
    }
  }
  g_world->barrier();
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, ExpertLayouts,
    ::testing::Values(Layout{"mixtral_ep2", 1, 2, 1, "mixtral_moe"}, Layout{"qwen2_ep2", 1, 2, 1, "qwen2_moe"},
                      Layout{"qwen3_ep2", 1, 2, 1, "qwen3_moe"}, Layout{"mixtral_tp2", 2, 1, 1, "mixtral_moe"},
                      Layout{"qwen2_tp2", 2, 1, 1, "qwen2_moe"}, Layout{"mixtral_ep4", 1, 4, 1, "mixtral_moe"},
                      Layout{"qwen3_ep4", 1, 4, 1, "qwen3_moe"}, Layout{"mixtral_ep2_tp2", 2, 2, 1, "mixtral_moe"},
                      Layout{"qwen2_ep2_tp2", 2, 2, 1, "qwen2_moe"}, Layout{"qwen3_ep2_tp2", 2, 2, 1, "qwen3_moe"},
                      Layout{"qwen3_ep2_pp2", 1, 2, 2, "qwen3_moe"}, Layout{"qwen2_pp2", 1, 1, 2, "qwen2_moe"},
                      Layout{"mixtral_pp2_cached", 1, 1, 2, "mixtral_moe", 2},
                      Layout{"qwen3_ep2_pp2_cached", 1, 2, 2, "qwen3_moe", 4},
                      // llama.cpp's GGUFs: each rank takes its experts' slices of the stacked tensors, Q8_0 kept.
                      Layout{"mixtral_q8_0_gguf_ep2", 1, 2, 1, "mixtral_moe-q8_0.gguf"},
                      Layout{"qwen2_f16_gguf_ep2", 1, 2, 1, "qwen2_moe-f16.gguf"},
                      Layout{"qwen3_q8_0_gguf_ep4", 1, 4, 1, "qwen3_moe-q8_0.gguf"},
                      Layout{"mixtral_ep2_cached", 1, 2, 1, "mixtral_moe", 2},
                      Layout{"qwen3_ep2_cached", 1, 2, 1, "qwen3_moe", 4},
                      Layout{"mixtral_q8_0_gguf_ep2_cached", 1, 2, 1, "mixtral_moe-q8_0.gguf", 3}),
    layout_name);

}  // namespace
}  // namespace strata
