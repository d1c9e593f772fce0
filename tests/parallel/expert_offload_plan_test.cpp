// tests/parallel/expert_offload_plan_test.cpp: offload.experts in plans: parsed with errors at file:line:col,
// placed by offload::place exactly as the run places them (resident vs streamed expert bytes per rank in
// `plan --check`, under expert parallelism too), and a resident_per_layer or budget that cannot hold a
// token's top-k experts per layer refused with the sizes that fit.
#include <gtest/gtest.h>

#include "offload/residency.h"
#include "parallel/partition.h"
#include "parallel/plan_check.h"
#include "parallel/plan_parser.h"
#include "parallel/plan_report.h"
#include "runtime/formats/checkpoint.h"
#include "test_util.h"

namespace strata::parallel {
namespace {

ModelConfig mixtral() { return open_checkpoint(test::fixture("hf/mixtral_moe"))->config(); }  // 8 experts, top-2

TEST(ExpertOffloadPlan, ParsesTheKeysAndRefusesBadValuesAtTheirLine) {
  const ParsedPlan ok = parse_plan("offload:\n  experts: {resident_per_layer: 3, eviction: frequency}\n", "e.yaml");
  ASSERT_TRUE(ok.ok()) << join_diagnostics(ok.diagnostics);
  EXPECT_EQ(ok.plan.offload.experts_resident_per_layer, 3);
  EXPECT_EQ(ok.plan.offload.expert_eviction, offload::ExpertEviction::kFrequency);
  const ParsedPlan bad = parse_plan("offload:\n  experts:\n    resident_per_layer: 0\n    eviction: fifo\n", "e.yaml");
  const std::string all = join_diagnostics(bad.diagnostics);
  EXPECT_NE(all.find("e.yaml:3:25"), std::string::npos) << all;
  EXPECT_NE(all.find("offload.experts.resident_per_layer must be a positive integer"), std::string::npos) << all;
  EXPECT_NE(all.find("offload.experts.eviction must be lru or frequency, got 'fifo'"), std::string::npos) << all;
  const ParsedPlan typo = parse_plan("offload:\n  experts: {resident: 3}\n", "e.yaml");
  EXPECT_FALSE(typo.ok());
}

// EP2: each rank holds 4 of the 8 experts of each of the 2 layers and keeps 3 of them on the device.
TEST(ExpertOffloadPlan, CheckShowsResidentAndStreamedExpertBytesPerRank) {
  const ModelConfig c = mixtral();
  const ParsedPlan parsed =
      parse_plan("model:\n  dtype: f32\nparallel:\n  expert: 2\noffload:\n  experts: {resident_per_layer: 3}\n", "e.yaml");
  ASSERT_TRUE(parsed.ok()) << join_diagnostics(parsed.diagnostics);
  const auto diags = validate_plan(parsed.plan, c, 2);
  ASSERT_FALSE(has_errors(diags)) << join_diagnostics(diags);
  const Partition p = make_partition(parsed.plan, c, 2);
  const int64_t one = c.moe.expert_ffn * c.hidden * 4 * 3;  // gate, up and down in f32 (whole 256-byte multiples)
  for (const RankPartition& r : p.ranks) {
    EXPECT_EQ(r.expert_slots, 3);
    EXPECT_EQ(r.expert_layers, 2);
    EXPECT_EQ(r.expert_resident_bytes, 3 * 2 * one);
    EXPECT_EQ(r.expert_streamed_bytes, 1 * 2 * one);
    // A token fetches at most its top-2 experts per layer, of which at most 1 can be cold here.
    EXPECT_EQ(r.expert_fetch_bytes, 1 * 2 * one);
    EXPECT_TRUE(r.streams);
  }
  const std::string report = describe(parsed.plan, c, p);
  EXPECT_NE(report.find("experts cached: 3 of 4 per layer x 2 layers on the device"), std::string::npos) << report;
  EXPECT_NE(report.find("experts resident_per_layer 3 (lru)"), std::string::npos) << report;

  // cold_tier: disk: the streamed experts are read from the checkpoint, not pinned.
  const ParsedPlan disk = parse_plan(
      "model:\n  dtype: f32\nparallel:\n  expert: 2\noffload:\n  cold_tier: disk\n  experts: {resident_per_layer: 3}\n",
      "e.yaml");
  ASSERT_TRUE(disk.ok());
  const RankPartition& r = make_partition(disk.plan, c, 2).rank(1);
  EXPECT_EQ(r.expert_tier, offload::Tier::kDisk);
  EXPECT_EQ(r.bytes.disk, 1 * 2 * one);
  EXPECT_EQ(r.bytes.host, 0);
  EXPECT_NE(describe(disk.plan, c, make_partition(disk.plan, c, 2)).find("streamed from the mapped checkpoint"),
            std::string::npos);
}

TEST(ExpertOffloadPlan, FewerThanTopKOrABudgetBelowThemIsRefused) {
  const ModelConfig c = mixtral();
  const ParsedPlan one = parse_plan("offload:\n  experts: {resident_per_layer: 1}\n", "e.yaml");
  ASSERT_TRUE(one.ok());
  std::string all = join_diagnostics(validate_plan(one.plan, c, 1));
  EXPECT_NE(all.find("offload.experts.resident_per_layer 1 is below the 2 experts a token is routed to"),
            std::string::npos) << all;
  EXPECT_NE(all.find("use 2..8"), std::string::npos) << all;

  const ParsedPlan tight = parse_plan("model:\n  dtype: f32\noffload:\n  device_budget: 100KiB\n", "e.yaml");
  ASSERT_TRUE(tight.ok());
  all = join_diagnostics(validate_plan(tight.plan, c, 1));
  EXPECT_NE(all.find("a layer needs at least its top-k = 2 experts on the device, so the minimum is"), std::string::npos)
      << all;
  // A budget with room: the slots that fit, derived from it.
  const ParsedPlan room = parse_plan("model:\n  dtype: f32\noffload:\n  device_budget: 140KiB\n", "e.yaml");
  ASSERT_TRUE(room.ok());
  const auto diags = validate_plan(room.plan, c, 1);
  ASSERT_FALSE(has_errors(diags)) << join_diagnostics(diags);
  const RankPartition& r = make_partition(room.plan, c, 1).rank(0);
  EXPECT_GE(r.expert_slots, 2);
  EXPECT_LT(r.expert_slots, 8);
  EXPECT_LE(r.bytes.device - r.expert_resident_bytes + r.expert_cache_bytes, 140 << 10);
}

}  // namespace
}  // namespace strata::parallel
