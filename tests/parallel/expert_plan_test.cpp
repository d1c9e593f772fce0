// tests/parallel/expert_plan_test.cpp: parallel.expert in plans: refused with the sizes that work when the
// experts do not split evenly (or the model has none), the rank grid and groups of expert x tensor ranks, every
// routed expert tensor held once per stage's expert group, and `plan --check`'s report of experts per rank.
#include <gtest/gtest.h>

#include <map>

#include "parallel/partition.h"
#include "parallel/plan_check.h"
#include "parallel/plan_parser.h"
#include "parallel/plan_report.h"
#include "runtime/formats/checkpoint.h"
#include "test_util.h"

namespace strata::parallel {
namespace {

Plan plan_of(const std::string& yaml) {
  const ParsedPlan parsed = parse_plan(yaml, "ep.yaml");
  EXPECT_TRUE(parsed.ok()) << join_diagnostics(parsed.diagnostics);
  return parsed.plan;
}

ModelConfig fixture_config(const std::string& name) { return open_checkpoint(test::fixture("hf/" + name))->config(); }

TEST(ExpertPlan, ExpertsThatDoNotSplitAreRefusedWithTheSizesThatWork) {
  const ModelConfig mixtral = fixture_config("mixtral_moe");  // 8 experts
  const Plan plan = plan_of("parallel:\n  tensor: 2\n  expert: 3\n");
  const auto diags = validate_plan(plan, mixtral, 6);
  ASSERT_TRUE(has_errors(diags));
  const std::string all = join_diagnostics(diags);
  EXPECT_NE(all.find("ep.yaml:3:11"), std::string::npos) << all;
  EXPECT_NE(all.find("2 x 3 = 6 ranks do not split the 8 experts"), std::string::npos) << all;
  EXPECT_NE(all.find("parallel.expert may be 1, 2, 4"), std::string::npos) << all;
  // Qwen2-MoE: the shared expert's 32 columns split over the group too.
  const auto qwen2 = validate_plan(plan_of("parallel:\n  expert: 8\n"), fixture_config("qwen2_moe"), 8);
  EXPECT_FALSE(has_errors(qwen2)) << join_diagnostics(qwen2);
}

// Block-quantized weights: each rank's share of the shared expert's down projection must be whole blocks
// (Qwen2-MoE's 32 columns over 2 ranks are 16, half a q8_0 block), refused at plan time, not at load.
TEST(ExpertPlan, QuantizedSharedExpertMustSplitIntoWholeBlocks) {
  const ModelConfig qwen2 = fixture_config("qwen2_moe");
  const auto q8 = validate_plan(plan_of("model:\n  dtype: q8_0\nparallel:\n  expert: 2\n"), qwen2, 2);
  ASSERT_TRUE(has_errors(q8));
  const std::string all = join_diagnostics(q8);
  EXPECT_NE(all.find("the shared expert's 32 columns in whole 32-column q8_0 blocks"), std::string::npos) << all;
  EXPECT_NE(all.find("parallel.expert may be 1"), std::string::npos) << all;
  const auto f16 = validate_plan(plan_of("model:\n  dtype: f16\nparallel:\n  expert: 2\n"), qwen2, 2);
  EXPECT_FALSE(has_errors(f16)) << join_diagnostics(f16);
}

TEST(ExpertPlan, DenseModelRefusesExpertParallelism) {
  const ModelConfig dense = fixture_config("llama_mha");
  const auto diags = validate_plan(plan_of("parallel:\n  expert: 2\n"), dense, 2);
  const std::string all = join_diagnostics(diags);
  EXPECT_NE(all.find("parallel.expert = 2 but llama has no experts"), std::string::npos) << all;
}

TEST(ExpertPlan, GridGroupsAndExpertCoverage) {
  const ModelConfig c = fixture_config("qwen3_moe");  // 16 experts, 4 layers (1 and 3 routed)
  const Plan plan = plan_of("parallel:\n  tensor: 2\n  expert: 2\n  pipeline: 2\n  data: 2\n");
  const Partition p = make_partition(plan, c, 16);
  ASSERT_EQ(p.ranks.size(), 16u);
  // rank = ((dp * PP + pp) * EP + ep) * TP + tp
  const RankPartition& r = p.rank(13);  // dp 1, pp 1, ep 0, tp 1
  EXPECT_EQ(r.dp, 1);
  EXPECT_EQ(r.pp, 1);
  EXPECT_EQ(r.ep, 0);
  EXPECT_EQ(r.tp, 1);
  EXPECT_EQ(r.tp_group, (std::vector<int>{12, 13}));
  EXPECT_EQ(r.expert_group, (std::vector<int>{12, 13, 14, 15}));
  EXPECT_EQ(r.pp_chain, (std::vector<int>{9, 13}));
  EXPECT_EQ(r.shard.expert_count, 4);
  EXPECT_EQ(r.shard.expert_begin, 4);  // expert-group rank ep * TP + tp = 1
  // Within each stage of each replica, every routed expert tensor is held by exactly one rank.
  std::map<std::tuple<int, int, std::string>, int> holders;
  for (const RankPartition& rank : p.ranks)
    for (const ShardSlice& s : rank.shards)
      if (s.expert >= 0) ++holders[{rank.dp, rank.pp, s.name}];
  EXPECT_EQ(holders.size(), 2u * 2 * 3 * 16);  // 2 replicas, 2 routed layers (one per stage), 3 projections, 16
  for (const auto& [key, n] : holders) EXPECT_EQ(n, 1) << std::get<2>(key);
}

TEST(ExpertPlan, CheckReportShowsExpertsPerRank) {
  const ModelConfig c = fixture_config("mixtral_moe");
  const Plan plan = plan_of("parallel:\n  tensor: 2\n  expert: 2\n");
  const std::string report = describe(plan, c, make_partition(plan, c, 4));
  EXPECT_NE(report.find("data 1 x pipeline 1 x expert 2 x tensor 2"), std::string::npos) << report;
  EXPECT_NE(report.find("experts 8 per expert layer (top-2, 24 wide), 2 per rank"), std::string::npos) << report;
  EXPECT_NE(report.find("rank 3 (dp 0, pp 0, ep 1, tp 1): layers 0-1, embedding, final norm + LM head, experts 6-7"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("blk.{0-1}.ffn_down.{6-7}.weight"), std::string::npos) << report;
}

}  // namespace
}  // namespace strata::parallel
