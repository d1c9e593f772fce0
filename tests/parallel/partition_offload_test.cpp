// tests/parallel/partition_offload_test.cpp: `strata plan --check` and the run place weights alike. For
// a few plans and budgets, the partition's tier of every shard and its bytes per tier (computed from the
// plan and the model's shapes) equal what offload::place decides at run time from the real checkpoint's
// tensors and the settings the launcher builds (parallel::residency_config), rank by rank.
#include <gtest/gtest.h>

#include <map>

#include "offload/residency.h"
#include "offload/tiered_weights.h"
#include "parallel/partition.h"
#include "parallel/plan_parser.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/formats/model_writer.h"
#include "runtime/model_presets.h"
#include "test_util.h"

namespace strata::parallel {
namespace {

std::string tiny_checkpoint() {
  MakeModelOptions o;
  o.preset = "tiny";
  o.dtype = "f32";
  o.out = test::temp_dir("partition_offload_tiny");
  make_model(o);
  return make_model_output_path(o);
}

void expect_same_placement(const std::string& yaml, const Checkpoint& ck) {
  SCOPED_TRACE(yaml);
  const ParsedPlan parsed = parse_plan(yaml, "p.yaml");
  ASSERT_TRUE(parsed.ok()) << join_diagnostics(parsed.diagnostics);
  const Plan& plan = parsed.plan;
  const Partition part = make_partition(plan, ck.config(), plan.world_size());
  for (const RankPartition& r : part.ranks) {
    SCOPED_TRACE(cat("rank ", r.rank));
    // What the run does: this rank's shard of the real checkpoint, placed with the launcher's settings.
    const ShardSpec spec = ShardSpec::make(ck.config(), r.tp, plan.parallel.tensor, r.layer_begin, r.layer_end);
    const std::vector<offload::TensorItem> items = offload::shard_items(ck, spec);
    const offload::Placement run = offload::place(items, residency_config(plan, r.rank));
    std::map<std::string, offload::Tier> run_tier;
    for (size_t i = 0; i < items.size(); ++i) run_tier[items[i].name] = run.tiers[i];
    ASSERT_EQ(run_tier.size(), r.shards.size());
    for (const ShardSlice& s : r.shards) {
      ASSERT_TRUE(run_tier.count(s.name)) << s.name << " is not in the run's shard";
      EXPECT_EQ(tier_name(s.tier), tier_name(run_tier.at(s.name))) << s.name;
    }
    EXPECT_EQ(r.bytes.device, run.resident_bytes);
    EXPECT_EQ(r.bytes.host, run.host_bytes);
    EXPECT_EQ(r.bytes.disk, run.disk_bytes);
    EXPECT_EQ(r.bytes.staging, run.ring_bytes());
    EXPECT_EQ(r.min_device_bytes, run.min_device_bytes);
    EXPECT_EQ(r.streams, run.streams());
    if (r.device_budget >= 0) {
      EXPECT_LE(r.bytes.device + r.bytes.staging, r.device_budget);
    }
  }
}

TEST(PartitionMatchesOffload, TiersAndBytesAgreeForSeveralPlansAndBudgets) {
  const std::unique_ptr<Checkpoint> ck = open_checkpoint(tiny_checkpoint());
  // tiny f32: ~1 MiB of weights at TP 1 (minimum budget ~834 KiB with a 3-slot ring), ~514 KiB per rank
  // at TP 2 (configs/tiny-offload.yaml). Stages of 2 layers cannot stream under a budget (the minimum
  // ring already holds both), so the PP plan streams by a rule.
  const std::string model = "model:\n  dtype: f32\n";
  expect_same_placement(model, *ck);  // no offload: everything resident
  expect_same_placement(model + "offload:\n  device_budget: 900KiB\n", *ck);
  expect_same_placement(model + "offload:\n  device_budget: 800KiB\n  cold_tier: disk\n  prefetch_depth: 1\n", *ck);
  expect_same_placement(model + "parallel:\n  tensor: 2\noffload:\n  device_budget: 480KiB\n  host_budget: 100KiB\n"
                                "  rules: [{match: \"blk.3.ffn_*\", tier: disk}]\n"
                                "  per_rank: [{ranks: 1, device_budget: 640KiB}]\n",
                        *ck);
  expect_same_placement(model + "parallel:\n  tensor: 2\n  pipeline: 2\noffload:\n"
                                "  rules: [{match: \"blk.*.ffn_down.weight\", tier: disk}]\n",
                        *ck);
}

TEST(PartitionMatchesOffload, ABudgetOffloadRejectsIsReportedWithItsMinimum) {
  const std::unique_ptr<Checkpoint> ck = open_checkpoint(tiny_checkpoint());
  const ParsedPlan parsed = parse_plan("model:\n  dtype: f32\noffload:\n  device_budget: 64KiB\n", "p.yaml");
  ASSERT_TRUE(parsed.ok());
  const Partition part = compute_partition(parsed.plan, ck->config(), PartitionOptions{1});
  const RankPartition& r = part.rank(0);
  EXPECT_FALSE(r.placement_error.empty());
  offload::ResidencyConfig unlimited = residency_config(parsed.plan, 0);
  unlimited.device_budget = -1;
  const ShardSpec spec = ShardSpec::make(ck->config(), 0, 1, 0, ck->config().n_layers);
  EXPECT_EQ(r.min_device_bytes, offload::place(offload::shard_items(*ck, spec), unlimited).min_device_bytes);
  EXPECT_THROW(make_partition(parsed.plan, ck->config(), 1), Error);  // plan_check turns it into an error
  // Settings offload refuses at startup whatever the budget are refused by the check too.
  const ParsedPlan depth0 =
      parse_plan("model:\n  dtype: f32\noffload:\n  device_budget: 900KiB\n  prefetch_depth: 0\n", "p.yaml");
  ASSERT_TRUE(depth0.ok());
  try {
    make_partition(depth0.plan, ck->config(), 1);
    ADD_FAILURE() << "prefetch_depth 0 passed the check but the run rejects it";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prefetch_depth must be 1..64"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace strata::parallel
