// tests/parallel/hf_quant_tp_mpi_test.cpp: quantized Hugging Face checkpoints (issue 23) split by TP and PP
// against the single-rank run of the same checkpoint, computed by each rank itself: the transcoded blocks
// stay whole per rank (q4_0 / q5_0 / q8_0 under TP2: 64 of 128 input columns per rank), greedy tokens are
// identical and every position's logits within 1e-4 (relative). FP8 blocks hold 128 columns, so the FP8
// fixture splits by pipeline stages instead. Layers are transcoded when first read: each rank transcodes the
// quantized layers of its own stage, each once (RankRuntime's look at the checkpoint transcodes nothing).
// mpi-np: 2
#include <gtest/gtest.h>

#include "comm/bootstrap.h"
#include "launcher/model_session.h"
#include "launcher/rank_runtime.h"
#include "parallel/plan_parser.h"
#include "runtime/models/model_description.h"
#include "mpi_world.h"
#include "test_util.h"

namespace strata {
namespace {

comm::Communicator*& g_world = test::world_slot();  // tests/mpi_world.h keeps it alive

// The session transcoded exactly the quantized layers of its stage (all of them for the whole model).
void expect_only_own_layers_transcoded(const launcher::ModelSession& session, const std::string& name) {
  const Checkpoint& ck = session.checkpoint();
  const ShardSpec& spec = session.shard();
  uint64_t tensors = 0, bytes = 0, all = 0;
  for (const TensorEntry& e : ck.entries()) {
    if (!e.built_on_access) continue;
    ++all;
    const int64_t layer = tensor_layer_index(e.name);
    if (layer >= spec.layer_begin && layer < spec.layer_end) ++tensors, bytes += e.nbytes;
  }
  EXPECT_GT(all, 0u) << name;
  EXPECT_EQ(ck.tensors_built(), tensors) << name << ": layers [" << spec.layer_begin << ", " << spec.layer_end
                                         << ") hold " << tensors << " of the " << all << " quantized tensors";
  EXPECT_EQ(ck.bytes_built(), bytes) << name;
}

struct Layout {
  std::string name;
  int tp = 1, pp = 1;
  std::string fixture;
};

class QuantLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(QuantLayouts, MatchSingleRank) {
  const Layout& layout = GetParam();
  ASSERT_EQ(layout.tp * layout.pp, g_world->size());
  const std::string path = test::fixture("hf_quant/" + layout.fixture);
  const std::string yaml = "model:\n  path: " + path + "\nparallel:\n  tensor: " + std::to_string(layout.tp) +
                           "\n  pipeline: " + std::to_string(layout.pp) + "\n  micro_batches: 2\ncomm:\n  timeout_s: 60\n";
  const parallel::ParsedPlan parsed = parallel::parse_plan(yaml, layout.name + ".yaml");
  ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);

  launcher::SessionOptions options;
  options.model_path = path;
  options.threads = 1;
  std::vector<GenerationRequest> requests(2);
  const std::vector<std::vector<int32_t>> prompts = {{1, 17, 29, 5, 88, 41, 7}, {1, 3, 100}};
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i].prompt = prompts[i];
    requests[i].max_new_tokens = 8;
  }
  std::vector<GenerationOutput> expected;
  Tensor expected_logits;
  {  // reference: this rank alone, whole model
    launcher::ModelSession single(options);
    single.prepare(64);
    expected = single.generator().generate(requests);
    expected_logits = single.generator().score(prompts[0]);
    expect_only_own_layers_transcoded(single, layout.name + " (single rank)");
  }
  launcher::RankRuntime rank(parsed.plan, "");
  rank.configure(options.generator);
  launcher::ModelSession session(options, rank.placement());
  session.prepare(64);
  expect_only_own_layers_transcoded(session, layout.name);
  const auto outputs = session.generator().generate(requests);
  ASSERT_EQ(outputs.size(), requests.size());
  for (size_t k = 0; k < outputs.size(); ++k)
    EXPECT_EQ(outputs[k].tokens, expected[k].tokens) << layout.name << " request " << k;
  const Tensor logits = session.generator().score(prompts[0]);
  ASSERT_EQ(logits.numel(), expected_logits.numel());
  EXPECT_LT(test::max_rel_error(logits.data<float>(), expected_logits.data<float>(), static_cast<size_t>(logits.numel())),
            1e-4)
      << layout.name;
  g_world->barrier();
}

INSTANTIATE_TEST_SUITE_P(Layouts, QuantLayouts,
                         ::testing::Values(Layout{"gptq_q4_0_tp2", 2, 1, "gptq_int4_g32_sym"},
                                           Layout{"awq_q5_0_tp2", 2, 1, "awq_int4_g64"},
                                           Layout{"w8a8_q8_0_tp2", 2, 1, "ct_w8a8_int8"},
                                           Layout{"fp8_pp2", 1, 2, "fp8_block128"},
                                           Layout{"gptq_q4_0_pp2", 1, 2, "gptq_int4_g32_sym"}),
                         [](const ::testing::TestParamInfo<Layout>& p) { return p.param.name; });

}  // namespace
}  // namespace strata
