// tests/parallel/fp8_kv_mpi_test.cpp: an fp8 (e4m3) KV cache chosen by the plan (serve.kv_cache_dtype: fp8)
// under TP2 and PP2 against the whole model on one rank with the same fp8 cache: greedy tokens identical and
// logits within 1e-4. A cache row is one token's KV head, so splitting heads over ranks or layers over
// stages leaves every row's scale, and so the quantization, as on one rank.
// mpi-np: 2
#include <gtest/gtest.h>

#include "launcher/model_session.h"
#include "launcher/rank_runtime.h"
#include "mpi_world.h"
#include "parallel/plan_parser.h"
#include "single_rank_reference.h"
#include "test_util.h"

namespace strata {
namespace {

comm::Communicator*& g_world = test::world_slot();  // tests/mpi_world.h keeps it alive

struct Layout {
  std::string name;
  int tp = 1, pp = 1;
};

class Fp8KvLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(Fp8KvLayouts, MatchSingleRankWithTheSameCache) {
  const Layout& layout = GetParam();
  if (layout.tp * layout.pp != g_world->size()) GTEST_SKIP() << layout.name << " needs " << layout.tp * layout.pp;
  const std::string path = test::layout_model("fixture:llama_gqa_untied", "fp8kv", g_world->rank());
  const std::string yaml = test::plan_yaml(path, {layout.tp, layout.pp, 1, "", false, 60}) +
                           "serve:\n  kv_cache_dtype: fp8\n";
  const parallel::ParsedPlan parsed = parallel::parse_plan(yaml, layout.name + ".yaml");
  ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);
  ASSERT_EQ(parsed.plan.serve.kv_cache_dtype, DType::kF8_E4M3);

  launcher::SessionOptions options;
  options.model_path = path;
  options.threads = 1;
  options.kv_cache_dtype = parsed.plan.serve.kv_cache_dtype;
  const test::SingleRankReference ref = test::single_rank_reference(options);

  launcher::RankRuntime rank(parsed.plan, "");
  rank.configure(options.generator);
  launcher::ModelSession session(options, rank.placement());
  session.prepare(256);
  EXPECT_EQ(session.kv_cache_dtype(), DType::kF8_E4M3);
  const auto outputs = session.generator().generate(ref.requests);
  ASSERT_EQ(outputs.size(), ref.requests.size());
  for (size_t k = 0; k < outputs.size(); ++k)
    EXPECT_EQ(outputs[k].tokens, ref.outputs[k].tokens) << layout.name << " request " << k;
  test::expect_logits_match(ref, session, layout.name);
  g_world->barrier();
}

INSTANTIATE_TEST_SUITE_P(Layouts, Fp8KvLayouts, ::testing::Values(Layout{"tp2", 2, 1}, Layout{"pp2", 1, 2}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace strata
