// tests/parallel/parallel_generate_mpi_test.cpp: every parallel layout against the single-rank run of
// the same model, computed by each rank itself: greedy tokens identical and logits within 1e-4
// (relative), for a batch of prompts of different lengths. Layouts run when the job size fits:
// np 2: TP2, PP2, DP2 (and Qwen2 biases under TP2); np 3: PP3 with uneven explicit stages;
// np 4: TP4 with fewer KV heads than ranks, TP4 with a padded vocabulary, TP2 x PP2.
// mpi-np: 2 3 4
#include <gtest/gtest.h>

#include "comm/bootstrap.h"
#include "launcher/model_session.h"
#include "launcher/rank_runtime.h"
#include "parallel/plan_parser.h"
#include "mpi_world.h"
#include "single_rank_reference.h"
#include "test_util.h"

namespace strata {
namespace {

comm::Communicator*& g_world = test::world_slot();  // tests/mpi_world.h keeps it alive

struct Layout {
  std::string name;
  int tp = 1, pp = 1, dp = 1;
  std::string stages;  // YAML flow list or ""
  std::string model;   // "fixture:<name>" or "tiny" / "padded-vocab" (written by make_model)
  bool interleaved = false;  // parallel.schedule: interleaved
};

std::string model_path(const std::string& spec) {
  std::optional<ModelConfig> config;
  if (spec == "padded-vocab") {  // 514 = 4 * 128 + 2: the last TP4 rank holds fewer rows
    ModelConfig c;
    c.vocab_size = 514, c.hidden = 64, c.n_layers = 2, c.n_heads = 8, c.n_kv_heads = 2, c.head_dim = 8;
    c.ffn = 128, c.max_seq = 256;
    config = c;
  }
  return test::layout_model(spec, "parallel", g_world->rank(), config);
}

class ParallelLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(ParallelLayouts, MatchSingleRank) {
  const Layout& layout = GetParam();
  if (layout.tp * layout.pp * layout.dp != g_world->size())
    GTEST_SKIP() << layout.name << " needs " << layout.tp * layout.pp * layout.dp << " ranks";
  const std::string path = model_path(layout.model);
  const std::string yaml =
      test::plan_yaml(path, {layout.tp, layout.pp, layout.dp, layout.stages, layout.interleaved, 60});
  const parallel::ParsedPlan parsed = parallel::parse_plan(yaml, layout.name + ".yaml");
  ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);

  // Reference: this rank alone, whole model.
  launcher::SessionOptions options;
  options.model_path = path;
  options.threads = 1;
  const test::SingleRankReference ref = test::single_rank_reference(options);

  launcher::RankRuntime rank(parsed.plan, "");
  rank.configure(options.generator);
  options.overlap_min_tokens = 1;  // chunks of any size: these short prompts take the overlapped TP path
  launcher::ModelSession session(options, rank.placement());
  session.prepare(256);
  // Data parallel: replica d takes requests d, d + DP, ...
  std::vector<GenerationRequest> mine;
  std::vector<size_t> index;
  for (size_t i = 0; i < ref.requests.size(); ++i)
    if (static_cast<int>(i) % layout.dp == rank.replica_index()) mine.push_back(ref.requests[i]), index.push_back(i);
  const auto outputs = session.generator().generate(mine);
  ASSERT_EQ(outputs.size(), mine.size());
  for (size_t k = 0; k < outputs.size(); ++k)
    EXPECT_EQ(outputs[k].tokens, ref.outputs[index[k]].tokens) << layout.name << " request " << index[k];
  test::expect_logits_match(ref, session, layout.name);
  // Each TP rank reads about 1/TP of the sharded tensors from the memory map.
  if (layout.tp > 1) {
    launcher::ModelSession whole(options);
    const double share = static_cast<double>(session.checkpoint_bytes_read()) / whole.checkpoint_bytes_read();
    EXPECT_LT(share, 1.0 / layout.tp / layout.pp + 0.2) << "rank read " << session.checkpoint_bytes_read()
                                                        << " bytes of " << whole.checkpoint_bytes_read();
  }
  g_world->barrier();
}

// The plan's overlap settings reach the model: a TP2 pass over 7 tokens runs each layer's two all-reduces
// whole under the default comm.overlap_min_tokens (128: a short step is bound by reading the weights,
// which every chunk would read again), and in 2 chunks each with overlap_min_tokens 1; 4 chunks asked
// for with 3-token chunks give 2.
TEST(OverlapChunks, ShortStepsRunWholeUnlessThePlanSaysOtherwise) {
  if (g_world->size() != 2) GTEST_SKIP() << "needs 2 ranks";
  const std::string path = model_path("fixture:llama_gqa_untied");
  const std::vector<int32_t> prompt = {1, 17, 29, 5, 88, 41, 7};
  const int64_t layers = 2;  // the fixture's num_hidden_layers
  for (auto [comm, per_layer] : {std::pair<std::string, int64_t>{"", 2},
                                 {"  overlap_min_tokens: 1\n", 4},
                                 {"  overlap_chunks: 4\n  overlap_min_tokens: 3\n", 4}}) {
    const std::string yaml = "model:\n  path: " + path + "\nparallel:\n  tensor: 2\ncomm:\n  timeout_s: 60\n" + comm;
    const parallel::ParsedPlan parsed = parallel::parse_plan(yaml, "overlap.yaml");
    ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);
    launcher::SessionOptions options;
    options.model_path = path;
    options.threads = 1;
    launcher::RankRuntime rank(parsed.plan, "");
    rank.configure(options.generator);
    const auto session = launcher::open_session(options, &rank);  // applies the plan's comm section
    session->prepare(64);
    const int64_t before = session->model().timings().all_reduces;
    (void)session->generator().score(prompt);
    EXPECT_EQ(session->model().timings().all_reduces - before, per_layer * layers) << yaml;
    g_world->barrier();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, ParallelLayouts,
    ::testing::Values(Layout{"tp2", 2, 1, 1, "", "fixture:llama_gqa_untied"},
                      Layout{"tp2_qwen2_bias", 2, 1, 1, "", "fixture:qwen2_bias"},
                      Layout{"pp2", 1, 2, 1, "", "fixture:llama_gqa_untied"},
                      Layout{"dp2", 1, 1, 2, "", "fixture:mistral_mqa"},
                      Layout{"pp3_uneven", 1, 3, 1, "[{layers: \"0-0\"}, {layers: \"1-2\"}, {layers: \"3-3\"}]", "tiny"},
                      Layout{"tp4_replicated_kv", 4, 1, 1, "", "fixture:llama_gqa_untied"},
                      Layout{"tp4_padded_vocab", 4, 1, 1, "", "padded-vocab"},
                      Layout{"tp2_pp2", 2, 2, 1, "", "tiny"},
                      Layout{"pp2_interleaved", 1, 2, 1, "", "fixture:llama_gqa_untied", true},
                      Layout{"pp3_uneven_interleaved", 1, 3, 1, "[{layers: \"0-0\"}, {layers: \"1-2\"}, {layers: \"3-3\"}]",
                             "tiny", true}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace strata
