// tests/e2e/bench_moe_test.cpp: `strata bench decode` reports a mixture-of-experts model's per-expert load over
// the whole replica. Under a two-stage pipeline (mpirun, CPU) each stage routes its own layers; the load
// printed must equal the single-rank run's, which routes every layer on one rank, for the same batch.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "test_util.h"

namespace strata {
namespace {

// The "expert_tokens" array of bench decode's JSON line, as printed.
std::string expert_tokens(const std::string& out) {
  const std::string key = "\"expert_tokens\": [";
  const size_t at = out.find(key);
  return at == std::string::npos ? "" : out.substr(at + key.size(), out.find(']', at) - at - key.size());
}

TEST(BenchMoe, PipelineStagesReportTheSingleRankLoad) {
  const std::string model = test::fixture("hf/qwen2_moe");
  const std::string shape = " --batch 2 --prompt-len 6 -n 8 --mib 64 --threads 1";
  const auto single = test::run_command(test::strata_binary() + " bench decode --model " + model + shape);
  ASSERT_EQ(single.exit_code, 0) << single.output;
  const std::string want = expert_tokens(single.output);
  ASSERT_FALSE(want.empty()) << single.output;

  const std::string plan = test::temp_dir("bench_moe") + "/pp2.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  pipeline: 2\n", model.c_str());
  std::fclose(f);
  const auto pp2 = test::run_command(test::mpirun(2) + test::strata_binary() + " bench decode --plan " + plan + shape);
  ASSERT_EQ(pp2.exit_code, 0) << pp2.output;
  EXPECT_EQ(expert_tokens(pp2.output), want) << pp2.output;
}

}  // namespace
}  // namespace strata
