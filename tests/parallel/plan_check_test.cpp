// tests/parallel/plan_check_test.cpp: validation of plans against model shapes: each rule's error, where
// it points (file:line:col of the field to change) and the fix it names. Expected minimums are computed
// here from the model's hyper-parameters, not taken from the partition code.
#include "parallel/plan_check.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "parallel/plan_parser.h"
#include "runtime/error.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/formats/model_writer.h"
#include "runtime/model_presets.h"
#include "tests/test_util.h"

namespace strata::parallel {
namespace {

Plan plan_of(const std::string& text) {
  ParsedPlan p = parse_plan(text, "p.yaml");
  EXPECT_TRUE(p.ok()) << join_diagnostics(p.diagnostics);
  return p.plan;
}

std::vector<Diagnostic> errors_of(const std::vector<Diagnostic>& all) {
  std::vector<Diagnostic> out;
  for (const auto& d : all)
    if (d.severity == Severity::kError) out.push_back(d);
  return out;
}

// The errors of `text` on `config` (world = the plan's own product unless given).
std::vector<Diagnostic> check(const std::string& text, const ModelConfig& config, int world = 0) {
  return errors_of(validate_plan(plan_of(text), config, world));
}

ModelConfig heads(int64_t n_heads, int64_t n_kv, int64_t ffn = 1024) {
  ModelConfig c = model_preset("tiny");
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv;
  c.head_dim = 8;
  c.hidden = n_heads * 8;
  c.ffn = ffn;
  return c;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(PlanCheck, RealShapesPass) {
  const std::string base = "model:\n  shape: 70b-shape\nparallel:\n  tensor: ";
  for (int tp : {1, 2, 4, 8, 16}) EXPECT_TRUE(check(base + std::to_string(tp) + "\n", model_preset("70b-shape")).empty()) << tp;
  EXPECT_EQ(valid_tensor_sizes(model_preset("70b-shape"), DType::kF16), (std::vector<int>{1, 2, 4, 8, 16, 32, 64}));
  EXPECT_EQ(valid_tensor_sizes(model_preset("7b-shape"), DType::kF16), (std::vector<int>{1, 2, 4, 8, 16, 32}));
}

TEST(PlanCheck, TensorMustDivideHeads) {
  auto errs = check("model:\n  shape: 7b-shape\nparallel:\n  tensor: 3\n", model_preset("7b-shape"));
  ASSERT_EQ(errs.size(), 1u);
  const std::string s = errs[0].str();
  EXPECT_TRUE(contains(s, "p.yaml:4:11: error: parallel.tensor = 3 does not divide the 32 attention heads")) << s;
  EXPECT_TRUE(contains(s, "n_heads % tensor == 0 always")) << s;
  EXPECT_TRUE(contains(s, "tensor sizes that work for this model: 1, 2, 4, 8, 16, 32")) << s;
}

TEST(PlanCheck, KvHeadReplicationRule) {
  // TP above the KV heads must be a multiple of them (each KV head replicated on TP / n_kv ranks).
  auto errs = check("parallel:\n  tensor: 6\n", heads(12, 4, 1200));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_TRUE(contains(errs[0].message, "parallel.tensor = 6 is more than the 4 KV heads but not a multiple of them"))
      << errs[0].message;
  EXPECT_TRUE(contains(errs[0].message, "replicated on tensor / n_kv_heads ranks when tensor > n_kv_heads "
                                        "(tensor % n_kv_heads == 0)"));
  EXPECT_TRUE(contains(errs[0].message, "tensor sizes that work for this model: 1, 2, 4, 12"));
  // TP at or below the KV heads must divide them.
  errs = check("parallel:\n  tensor: 4\n", heads(12, 6, 1200));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_TRUE(contains(errs[0].message, "parallel.tensor = 4 does not divide the 6 KV heads")) << errs[0].message;
  EXPECT_TRUE(contains(errs[0].message, "n_kv_heads % tensor == 0"));
  // The replicated case itself is fine.
  EXPECT_TRUE(check("parallel:\n  tensor: 8\n", heads(8, 2)).empty());
}

TEST(PlanCheck, FfnMustSplit) {
  auto errs = check("parallel:\n  tensor: 4\n", heads(8, 4, 1026));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_TRUE(contains(errs[0].message, "does not divide the MLP width ffn = 1026")) << errs[0].message;
}

TEST(PlanCheck, QuantizedSplitKeepsWholeBlocks) {
  // tiny: n_heads * head_dim = 64, ffn 192. TP 4 leaves 16 and 48 input columns: not multiples of 32.
  auto errs = check("model:\n  dtype: q8_0\nparallel:\n  tensor: 4\n", model_preset("tiny"));
  ASSERT_EQ(errs.size(), 2u) << join_diagnostics(errs);
  EXPECT_TRUE(contains(errs[0].message, "with dtype q8_0, blk.*.attn_output.weight is split along its input dim into 16 "
                                        "columns per rank"))
      << errs[0].message;
  EXPECT_TRUE(contains(errs[1].message, "blk.*.ffn_down.weight is split along its input dim into 48 columns per rank "
                                        "(ffn 192 / tensor 4), not a multiple of the 32-element q8_0 block"))
      << errs[1].message;
  EXPECT_TRUE(contains(errs[1].message, "tensor sizes that work for this model: 1, 2"));
  EXPECT_TRUE(check("model:\n  dtype: q4_0\nparallel:\n  tensor: 2\n", model_preset("tiny")).empty());
  EXPECT_TRUE(check("model:\n  dtype: f16\nparallel:\n  tensor: 4\n", model_preset("tiny")).empty());
}

TEST(PlanCheck, KQuantSplitKeepsWhole256ElementBlocks) {
  // 7b-shape: ffn 11008 = 43 x 256. TP 2 leaves 5504 ffn_down input columns per rank: whole 32-element
  // q8_0 blocks, but 21.5 q4_K super-blocks.
  auto errs = check("model:\n  dtype: q4_k\nparallel:\n  tensor: 2\n", model_preset("7b-shape"));
  ASSERT_EQ(errs.size(), 1u) << join_diagnostics(errs);
  EXPECT_TRUE(contains(errs[0].message, "with dtype q4_k, blk.*.ffn_down.weight is split along its input dim into 5504 "
                                        "columns per rank (ffn 11008 / tensor 2), not a multiple of the 256-element "
                                        "q4_k block"))
      << errs[0].message;
  const std::string& msg = errs[0].message;
  EXPECT_EQ(msg.substr(msg.rfind("tensor sizes")), "tensor sizes that work for this model: 1");
  EXPECT_TRUE(check("model:\n  dtype: q8_0\nparallel:\n  tensor: 2\n", model_preset("7b-shape")).empty());
  // 70b-shape: 8192 / 8 = 1024 and 28672 / 8 = 3584 = 14 x 256 columns: every q6_K block stays whole.
  EXPECT_TRUE(check("model:\n  dtype: q6_k\nparallel:\n  tensor: 8\n", model_preset("70b-shape")).empty());
}

// A plan without model.dtype is checked against the checkpoint's own block types (a GGUF as llama-quantize
// writes it): 4 heads x 64 = 256 attn_output columns split over TP 2 leave half a q4_K block per rank.
TEST(PlanCheck, CheckpointBlockTypesJoinTheSplitCheck) {
  ModelConfig c = model_preset("tiny");
  c.n_layers = 1, c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 64, c.hidden = 256, c.ffn = 512;
  MakeModelOptions o;
  o.config = c;
  o.format = "gguf";
  o.dtype = "q4_k";
  o.out = test::temp_dir("plan_check_quant") + "/q4k.gguf";
  make_model(o);
  const auto ck = open_checkpoint(o.out);
  EXPECT_EQ(checkpoint_weight_dtype(*ck, DType::kBF16), DType::kQ4_K);
  PartitionOptions options;
  options.default_dtype = checkpoint_weight_dtype(*ck, DType::kBF16);
  const auto errs = errors_of(validate_plan(plan_of("parallel:\n  tensor: 2\n"), ck->config(), options));
  ASSERT_EQ(errs.size(), 1u) << join_diagnostics(errs);
  EXPECT_TRUE(contains(errs[0].message, "with dtype q4_k, blk.*.attn_output.weight is split along its input dim into "
                                        "128 columns per rank (n_heads * head_dim 256 / tensor 2), not a multiple of "
                                        "the 256-element q4_k block"))
      << errs[0].message;
  EXPECT_TRUE(errors_of(validate_plan(plan_of("parallel:\n  tensor: 2\n"), ck->config(), PartitionOptions{})).empty());
}

TEST(PlanCheck, WorldSizeMustMatch) {
  auto errs = check("parallel:\n  tensor: 2\n  pipeline: 2\n", model_preset("tiny"), 6);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].str(),
            "p.yaml:1:1: error: the world has 6 ranks but data 1 x pipeline 2 x tensor 2 = 4; launch 4 ranks "
            "(mpirun -np 4) or change the parallel sizes so that their product is 6");
  EXPECT_TRUE(check("parallel:\n  tensor: 2\n  pipeline: 2\n", model_preset("tiny"), 4).empty());
}

TEST(PlanCheck, PipelineNoLongerThanModel) {
  auto errs = check("parallel:\n  pipeline: 5\n", model_preset("tiny"));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_TRUE(contains(errs[0].str(), "p.yaml:2:13: error: parallel.pipeline = 5 is more than the 4 layers"));
}

TEST(PlanCheck, StagesOverlapMissOrDisorder) {
  const ModelConfig c = model_preset("7b-shape");  // 32 layers
  auto overlap = check("parallel:\n  pipeline: 2\n  stages:\n    - {layers: \"0-11\"}\n    - {layers: \"10-31\"}\n", c);
  ASSERT_EQ(overlap.size(), 1u);
  EXPECT_EQ(overlap[0].str(), "p.yaml:5:7: error: parallel.stages[1] overlaps parallel.stages[0] on layers 10-11; each "
                              "layer belongs to exactly one stage");
  auto gap = check("parallel:\n  pipeline: 2\n  stages: [\"0-11\", \"14-31\"]\n", c);
  ASSERT_EQ(gap.size(), 1u);
  EXPECT_TRUE(contains(gap[0].str(), "p.yaml:3:3: error: layers 12-13 are in no stage; parallel.stages must cover "
                                     "layers 0-31 exactly once"))
      << gap[0].str();
  auto split = check("parallel:\n  pipeline: 2\n  stages: [[0, 1, 2, 3, \"5-15\"], \"4\"]\n", c);
  ASSERT_FALSE(split.empty());
  EXPECT_TRUE(contains(split[0].message, "parallel.stages[0] holds layers 0-3, 5-15, which are not one contiguous range"))
      << split[0].message;
  auto range = check("parallel:\n  pipeline: 2\n  stages: [\"0-15\", \"16-32\"]\n", c);
  ASSERT_EQ(range.size(), 1u);
  EXPECT_TRUE(contains(range[0].message, "names layer 32 but the model has 32 layers (0-31)"));
  auto count = check("parallel:\n  pipeline: 3\n  stages: [\"0-15\", \"16-31\"]\n", c);
  ASSERT_EQ(count.size(), 1u);
  EXPECT_TRUE(contains(count[0].message, "lists 2 stages but parallel.pipeline is 3"));
  auto order = check("parallel:\n  pipeline: 2\n  stages: [\"16-31\", \"0-15\"]\n", c);
  ASSERT_EQ(order.size(), 1u);
  EXPECT_TRUE(contains(order[0].message, "list stages in layer order")) << order[0].message;
  EXPECT_TRUE(check("parallel:\n  pipeline: 2\n  stages: [\"0-19\", \"20-31\"]\n", c).empty());
}

TEST(PlanCheck, DeviceBudgetBelowMinimumGivesGiB) {
  // 7b-shape, f16, one rank, as offload::place counts it: pinned = embeddings + head (2 * 32000 * 4096 * 2
  // bytes) + final norm + the 2 norms of each of 32 layers; the ring = (1 + prefetch_depth 2) slots of
  // one layer's 7 matrices, each padded to its slot cost.
  const ModelConfig c = model_preset("7b-shape");
  const int64_t pinned = 2LL * 32000 * 4096 * 2 + 4096 * 2 + 32 * 2 * 4096 * 2;
  const int64_t layer = 4 * offload::slot_cost(4096LL * 4096 * 2) + 3 * offload::slot_cost(4096LL * 11008 * 2);
  const int64_t minimum = pinned + 3 * layer;
  const double gib = static_cast<double>(minimum) / (1 << 30);
  char expect[64];
  std::snprintf(expect, sizeof expect, "at least %.2f GiB", std::ceil(gib * 100) / 100);
  auto errs = check("model:\n  dtype: f16\noffload:\n  device_budget: 1GiB\n", c);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_TRUE(contains(errs[0].str(), "p.yaml:4:18: error: offload.device_budget 1.00 GiB is below the minimum of rank 0"))
      << errs[0].str();
  EXPECT_TRUE(contains(errs[0].message, expect)) << errs[0].message << " / " << expect;
  EXPECT_TRUE(contains(errs[0].message, "lower offload.prefetch_depth, or add tensor/pipeline ranks"));
  // Just enough: accepted, and the layers that do not fit stream from host.
  EXPECT_TRUE(check(cat("model:\n  dtype: f16\noffload:\n  device_budget: ", minimum, "\n"), c).empty());
  // A budget above the whole model never needs the minimum.
  EXPECT_TRUE(check("model:\n  dtype: f16\noffload:\n  device_budget: 20GiB\n", c).empty());
}

TEST(PlanCheck, PerRankBudgetPointsAtItsEntry) {
  const ModelConfig c = model_preset("7b-shape");
  auto errs = check("model:\n  dtype: f16\nparallel:\n  tensor: 2\noffload:\n  device_budget: 8GiB\n  per_rank:\n"
                    "    - {ranks: 1, device_budget: 512MiB}\n",
                    c);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_TRUE(contains(errs[0].str(), "p.yaml:8:33: error: offload.per_rank[0].device_budget 512.00 MiB is below the "
                                      "minimum of rank 1 (dp 0, pp 0, tp 1)"))
      << errs[0].str();
  auto bad_rank = check("parallel:\n  tensor: 2\noffload:\n  per_rank: [{ranks: \"1-2\", device_budget: 1GiB}]\n",
                        model_preset("tiny"));
  ASSERT_EQ(bad_rank.size(), 1u);
  EXPECT_TRUE(contains(bad_rank[0].message, "names rank 2 but the plan has 2 ranks (0-1)"));
}

TEST(PlanCheck, HostBudgetTooSmallSpillsToDiskWithAWarning) {
  // The run spills what the host tier cannot hold to disk (offload::place), so this is not an error;
  // the warning says where the weights will be.
  const std::string yaml = "model:\n  dtype: f16\noffload:\n  device_budget: 4GiB\n  host_budget: 1GiB\n";
  EXPECT_TRUE(check(yaml, model_preset("7b-shape")).empty());
  Plan plan = plan_of(yaml);
  std::vector<Diagnostic> all = validate_plan(plan, model_preset("7b-shape"), PartitionOptions{});
  ASSERT_EQ(all.size(), 1u);
  EXPECT_TRUE(contains(all[0].str(), "p.yaml:5:16: warning: offload.host_budget 1.00 GiB holds")) << all[0].str();
  EXPECT_TRUE(contains(all[0].message, "stay on disk")) << all[0].message;
  EXPECT_TRUE(validate_plan(plan_of(yaml + "  cold_tier: disk\n"), model_preset("7b-shape"), PartitionOptions{}).empty());
}

TEST(PlanCheck, DeviceMemoryResolvesShares) {
  Plan plan = plan_of("model:\n  dtype: f16\noffload:\n  device_budget: \"10%\"\n");
  PartitionOptions options;
  EXPECT_TRUE(errors_of(validate_plan(plan, model_preset("7b-shape"), options)).empty());  // unknown memory: no check
  options.device_memory = 8LL << 30;  // 10% = 819 MiB, below the ~1.6 GiB minimum
  auto errs = errors_of(validate_plan(plan, model_preset("7b-shape"), options));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_TRUE(contains(errs[0].message, "offload.device_budget 819.20 MiB is below the minimum")) << errs[0].message;
  // Without a budget, a model larger than the device is an error too.
  Plan no_budget = plan_of("model:\n  dtype: f16\n");
  errs = errors_of(validate_plan(no_budget, model_preset("7b-shape"), options));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_TRUE(contains(errs[0].message, "set offload.device_budget so cold layers stream")) << errs[0].message;
}

TEST(PlanCheck, RuleMatchingNothingWarns) {
  auto all = validate_plan(plan_of("offload:\n  rules: [{match: \"blk.*.fnn_*\", tier: host}]\n"), model_preset("tiny"), 0);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].severity, Severity::kWarning);
  EXPECT_TRUE(contains(all[0].str(), "p.yaml:2:19: warning: offload.rules[0].match 'blk.*.fnn_*' matches no tensor"))
      << all[0].str();
  EXPECT_TRUE(validate_plan(plan_of("offload:\n  rules: [{match: \"blk.2.*\", tier: host}]\n"), model_preset("tiny"), 0)
                  .empty());
}

TEST(PlanCheck, CheckPlanThrowsEveryErrorJoined) {
  Plan plan = plan_of("parallel:\n  tensor: 3\n  pipeline: 9\n");
  PartitionOptions options;
  options.world_size = 2;
  try {
    check_plan(plan, model_preset("tiny"), options);
    FAIL() << "check_plan accepted a bad plan";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConfig);
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "invalid plan (3 errors)")) << what;
    EXPECT_TRUE(contains(what, "p.yaml:1:1: error: the world has 2 ranks"));
    EXPECT_TRUE(contains(what, "p.yaml:2:11: error: parallel.tensor = 3 does not divide the 8 attention heads"));
    EXPECT_TRUE(contains(what, "p.yaml:3:13: error: parallel.pipeline = 9 is more than the 4 layers"));
  }
}

TEST(PlanCheck, BrokenModelConfigIsADiagnostic) {
  ModelConfig c = model_preset("tiny");
  c.n_kv_heads = 0;  // would divide by zero below
  auto errs = check("parallel:\n  tensor: 2\n", c);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_TRUE(contains(errs[0].message, "num_key_value_heads")) << errs[0].message;
}

}  // namespace
}  // namespace strata::parallel
