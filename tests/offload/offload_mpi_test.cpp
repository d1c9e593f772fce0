// tests/offload/offload_mpi_test.cpp: offloaded weights under tensor and pipeline parallelism
// against the single-rank, all-resident run of the same model computed by each rank itself:
// greedy tokens identical, logits within 1e-4 (the TP all-reduce sums in another order than the
// single-rank matmul, the same tolerance as parallel_generate_mpi_test). Each rank streams only its
// own shards (TP column slices are read row by row from disk) and its pool stays within budget.
// mpi-np: 2
#include <gtest/gtest.h>

#include "comm/bootstrap.h"
#include "launcher/model_session.h"
#include "launcher/rank_runtime.h"
#include "offload/tiered_weights.h"
#include "offload_models.h"
#include "parallel/plan_parser.h"
#include "mpi_world.h"
#include "single_rank_reference.h"
#include "test_util.h"

namespace strata {
namespace {

comm::Communicator*& g_world = test::world_slot();  // tests/mpi_world.h keeps it alive

struct Layout {
  std::string name;
  int tp = 1, pp = 1;
  offload::Tier tier = offload::Tier::kHost;
  std::string model = "gqa8";
  int depth = 2;
  int resident_layers = 1;  // whole layers the budget leaves room for beyond the minimum
};

class OffloadLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(OffloadLayouts, MatchSingleRankResident) {
  const Layout& layout = GetParam();
  ASSERT_EQ(layout.tp * layout.pp, g_world->size());
  const std::string path = test::offload_model(layout.model, "_r" + std::to_string(g_world->rank()));
  const std::string yaml = test::plan_yaml(path, {layout.tp, layout.pp, 1, "", false, 60});
  const parallel::ParsedPlan parsed = parallel::parse_plan(yaml, layout.name + ".yaml");
  ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);

  launcher::SessionOptions options;
  options.model_path = path;
  options.threads = 1;
  const test::SingleRankReference ref = test::single_rank_reference(options);

  launcher::RankRuntime rank(parsed.plan, "");
  const parallel::RankPartition& part = rank.part();
  offload::ResidencyConfig config;
  config.cold_tier = layout.tier;
  config.prefetch_depth = layout.depth;
  {
    const auto ck = open_checkpoint(path);
    const ShardSpec spec = ShardSpec::make(ck->config(), part.tp, layout.tp, part.layer_begin, part.layer_end);
    config.device_budget = test::budget_streaming(*ck, spec, config, layout.resident_layers);
  }
  options.offload = config;
  rank.configure(options.generator);
  launcher::ModelSession session(options, rank.placement());
  session.prepare(256);
  const auto outputs = session.generator().generate(ref.requests);
  ASSERT_EQ(outputs.size(), ref.requests.size());
  for (size_t k = 0; k < outputs.size(); ++k)
    EXPECT_EQ(outputs[k].tokens, ref.outputs[k].tokens) << layout.name << " request " << k;
  test::expect_logits_match(ref, session, layout.name);

  offload::TieredWeights* tiered = session.offload();
  ASSERT_NE(tiered, nullptr);
  const offload::OffloadMetrics m = tiered->metrics();
  EXPECT_GT(m.placement.streamed_layers, 0) << layout.name;
  EXPECT_LE(m.pool_peak, m.pool_budget) << layout.name;
  EXPECT_EQ(m.stream.restarts, 0) << layout.name;
  EXPECT_GT(layout.tier == offload::Tier::kHost ? m.stream.bytes_host : m.stream.bytes_disk, 0) << layout.name;
  // Only this rank's shards stream: per pass, at most its share of the layers' bytes.
  int64_t whole_layers = 0;
  for (const auto& it : offload::shard_items(session.checkpoint(), ShardSpec::make(session.config(), 0, 1, 0,
                                                                                    session.config().n_layers)))
    if (it.layer >= 0) whole_layers += it.bytes;
  EXPECT_LE(m.placement.host_bytes + m.placement.disk_bytes, whole_layers / (layout.tp * layout.pp) + 4096)
      << layout.name;
  // Fills follow this rank's streamed layers in order, wrapping around.
  std::vector<int64_t> streamed;
  const auto items = offload::shard_items(session.checkpoint(), session.shard());
  for (size_t i = 0; i < items.size(); ++i)
    if (tiered->placement().tiers[i] != offload::Tier::kDevice && (streamed.empty() || streamed.back() != items[i].layer))
      streamed.push_back(items[i].layer);
  const std::vector<int64_t> order = tiered->fill_order();
  ASSERT_GT(order.size(), streamed.size());
  for (size_t i = 0; i < order.size(); ++i) ASSERT_EQ(order[i], streamed[i % streamed.size()]) << layout.name;
  g_world->barrier();
}

INSTANTIATE_TEST_SUITE_P(Layouts, OffloadLayouts,
                         ::testing::Values(Layout{"tp2_host", 2, 1, offload::Tier::kHost},
                                           Layout{"tp2_disk", 2, 1, offload::Tier::kDisk},
                                           // a stage has 4 (gqa8) or 3 (qwen6) layers: a smaller ring
                                           Layout{"pp2_host", 1, 2, offload::Tier::kHost, "gqa8", 2, 0},
                                           Layout{"pp2_disk", 1, 2, offload::Tier::kDisk, "gqa8", 1, 1},
                                           Layout{"tp2_disk_qwen_bias_tied", 2, 1, offload::Tier::kDisk, "qwen6"},
                                           Layout{"pp2_host_qwen_bias_tied", 1, 2, offload::Tier::kHost, "qwen6", 1, 0}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace strata
