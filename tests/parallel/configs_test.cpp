// tests/parallel/configs_test.cpp: every plan in configs/ parses without a finding, validates against
// its model.shape on exactly its world size, and partitions; the README's full example sets every key.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "parallel/partition.h"
#include "parallel/plan_check.h"
#include "parallel/plan_parser.h"
#include "parallel/plan_report.h"
#include "runtime/error.h"
#include "runtime/model_presets.h"

namespace strata::parallel {
namespace {

namespace fs = std::filesystem;

fs::path configs_dir() {
  const char* root = std::getenv("STRATA_SOURCE_DIR");
  return fs::path(root != nullptr ? root : ".") / "configs";  // ctest sets STRATA_SOURCE_DIR
}

std::vector<fs::path> plan_files() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(configs_dir()))
    if (e.path().extension() == ".yaml" || e.path().extension() == ".yml") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Configs, TheNamedPlansExist) {
  for (const char* name : {"demo-tp2-pp2.yaml", "llama2-7b-tp2.yaml", "llama2-70b-tp8.yaml", "llama2-70b-tp4-pp2.yaml",
                           "llama3-70b-tp8-pp2.yaml"})
    EXPECT_TRUE(fs::exists(configs_dir() / name)) << name;
  EXPECT_GE(plan_files().size(), 5u);
}

TEST(Configs, EveryPlanChecksAgainstItsShape) {
  for (const fs::path& file : plan_files()) {
    SCOPED_TRACE(file.string());
    const ParsedPlan parsed = parse_plan_file(file.string());
    ASSERT_TRUE(parsed.diagnostics.empty()) << join_diagnostics(parsed.diagnostics);
    const Plan& plan = parsed.plan;
    ASSERT_FALSE(plan.model.shape.empty()) << "every plan names model.shape so it can be checked without weights";
    EXPECT_FALSE(plan.model.path.empty());
    const ModelConfig config = model_preset(plan.model.shape);
    const auto diagnostics = validate_plan(plan, config, plan.world_size());
    EXPECT_TRUE(diagnostics.empty()) << join_diagnostics(diagnostics);
    const Partition part = make_partition(plan, config, plan.world_size());
    ASSERT_EQ(static_cast<int>(part.ranks.size()), plan.world_size());
    int64_t layers = 0;
    for (const auto& r : part.ranks)
      if (r.dp == 0 && r.tp == 0) layers += r.layer_end - r.layer_begin;
    EXPECT_EQ(layers, config.n_layers);
    for (const auto& r : part.ranks) {  // planned device use never exceeds a budget
      if (r.device_budget >= 0) {
        EXPECT_LE(r.bytes.device + r.bytes.staging, r.device_budget) << "rank " << r.rank;
      }
    }
    const std::string report = describe(plan, config, part);
    EXPECT_NE(report.find("totals"), std::string::npos);
    EXPECT_NE(report.find(cat("rank ", plan.world_size() / plan.parallel.data - 1, " (dp 0")), std::string::npos);
  }
}

TEST(Configs, WrongWorldSizeIsCaught) {
  const ParsedPlan parsed = parse_plan_file((configs_dir() / "demo-tp2-pp2.yaml").string());
  const auto d = validate_plan(parsed.plan, model_preset(parsed.plan.model.shape), 3);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_NE(d[0].str().find("demo-tp2-pp2.yaml:"), std::string::npos);
  EXPECT_NE(d[0].message.find("launch 4 ranks"), std::string::npos);
}

TEST(Configs, ReadmeExampleSetsEveryKey) {
  std::ifstream in(configs_dir() / "README.md");
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  const std::string anchor = "A plan using every key";
  const size_t start = text.find("```yaml", text.find(anchor));
  ASSERT_NE(start, std::string::npos);
  const size_t body = text.find('\n', start) + 1;
  const std::string example = text.substr(body, text.find("```", body) - body);
  const ParsedPlan parsed = parse_plan(example, "README.md");
  ASSERT_TRUE(parsed.diagnostics.empty()) << join_diagnostics(parsed.diagnostics);
  // The schema; serve.kv_blocks is the alternative to serve.kv_budget, so the example cannot set both.
  for (const char* key :
       {"model.path", "model.dtype", "model.shape", "parallel.tensor", "parallel.pipeline", "parallel.data",
        "parallel.micro_batches", "parallel.stages", "offload.device_budget", "offload.host_budget", "offload.cold_tier",
        "offload.prefetch_depth", "offload.rules", "offload.per_rank", "comm.backend", "comm.overlap_chunks",
        "comm.overlap_min_tokens",
        "comm.timeout_s", "serve.port", "serve.max_batch_tokens", "serve.max_seqs", "serve.kv_budget",
        "serve.block_size", "serve.max_queue", "offload.rules[0].match", "offload.rules[0].tier",
        "offload.per_rank[0].ranks", "offload.per_rank[0].device_budget", "offload.per_rank[0].host_budget",
        "parallel.stages[0].layers", "speculative.method", "speculative.tokens", "speculative.ngram_min",
        "speculative.ngram_max"})
    EXPECT_TRUE(parsed.plan.locations.count(key)) << key;
  EXPECT_NE(text.find("`kv_blocks`"), std::string::npos);
  EXPECT_NE(text.find("`draft_model`"), std::string::npos);  // method draft's key (the example uses ngram)
  const ModelConfig config = model_preset(parsed.plan.model.shape);
  const auto diagnostics = validate_plan(parsed.plan, config, parsed.plan.world_size());
  EXPECT_TRUE(diagnostics.empty()) << join_diagnostics(diagnostics);
}

}  // namespace
}  // namespace strata::parallel
