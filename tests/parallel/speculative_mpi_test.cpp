// tests/parallel/speculative_mpi_test.cpp: speculative decoding under TP2 and PP2 plans of the trained
// stories260K checkpoint, configured by the plan's speculative section: greedy tokens of several
// concurrent requests equal each rank's own plain single-rank run, for prompt lookup and for draft
// models (stories260K as its own draft, and a random draft of the same vocabulary). The draft runs on
// the driver; the verification step is an ordinary multi-token step on every rank, the last stage
// decides what stood and shares it.
// mpi-np: 2
#include <gtest/gtest.h>

#include "launcher/model_session.h"
#include "launcher/rank_runtime.h"
#include "mpi_world.h"
#include "parallel/plan_parser.h"
#include "speculative_models.h"

namespace strata {
namespace {

comm::Communicator*& g_world = test::world_slot();

struct Case {
  std::string name;
  int tp = 1, pp = 1;
  std::string speculative;  // the plan's speculative section, without the draft path
  std::string draft;        // "", "self" or "random"
};

std::vector<GenerationRequest> requests() {
  std::vector<GenerationRequest> rs;
  for (auto [prompt, n] : {std::pair<std::vector<int32_t>, int64_t>{{1}, 120},
                           {{1, 403, 261, 379}, 70},
                           {{1, 300, 301, 302, 300, 301}, 50}}) {
    GenerationRequest r;
    r.prompt = prompt;
    r.max_new_tokens = n;
    rs.push_back(r);
  }
  return rs;
}

class SpeculativeLayouts : public ::testing::TestWithParam<Case> {};

TEST_P(SpeculativeLayouts, GreedyTokensMatchPlainSingleRank) {
  const Case& c = GetParam();
  if (c.tp * c.pp != g_world->size()) GTEST_SKIP() << c.name << " needs " << c.tp * c.pp << " ranks";
  if (test::stories260k().empty()) GTEST_SKIP() << "../shared/models is absent; stories260K tests skipped";
  const std::vector<GenerationRequest> rs = requests();

  launcher::SessionOptions options;
  options.model_path = test::stories260k();
  options.threads = 1;
  std::vector<GenerationOutput> alone;
  {
    launcher::ModelSession session(options);
    session.prepare(1024);
    alone = session.generator().generate(rs);
  }

  std::string yaml = test::plan_yaml(test::stories260k(), {c.tp, c.pp, 1, "", false, 60}) + c.speculative;
  if (c.draft == "self") yaml += "  draft_model: " + test::stories260k() + "\n";
  if (c.draft == "random") yaml += "  draft_model: " + test::random_stories_draft(g_world->rank()) + "\n";
  const parallel::ParsedPlan parsed = parallel::parse_plan(yaml, c.name + ".yaml");
  ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);
  launcher::RankRuntime rank(parsed.plan, "");
  rank.configure(options.generator);
  options.speculative = launcher::speculative_settings(nullptr, &parsed.plan);
  launcher::ModelSession session(options, rank.placement());
  session.prepare(1024);
  const auto outputs = session.generator().generate(rs);
  ASSERT_EQ(outputs.size(), rs.size());
  for (size_t i = 0; i < rs.size(); ++i) EXPECT_EQ(outputs[i].tokens, alone[i].tokens) << c.name << " request " << i;
  // Every rank counts the same verdicts (the sampler's broadcast), and drafts were verified.
  const GenerationStats& s = session.generator().stats();
  EXPECT_GT(s.spec_draft_tokens, 0) << c.name;
  if (c.draft == "self") {
    EXPECT_EQ(s.spec_accepted_tokens, s.spec_draft_tokens) << c.name;
  }
  g_world->barrier();
}

// Sampled speculation with a draft model under PP2: the driver (stage 0) draws the drafts, the last
// stage verifies them against the draft's distributions, which travel in the step's control message.
// The pipeline computes each layer as one rank does, so the tokens equal the single-rank speculative run
// with the same seed.
TEST(SpeculativeSampled, PipelineVerifiesWithTheDraftsDistributions) {
  if (g_world->size() != 2) GTEST_SKIP() << "needs 2 ranks";
  if (test::stories260k().empty()) GTEST_SKIP() << "../shared/models is absent; stories260K tests skipped";
  GenerationRequest r;
  r.prompt = {1, 403, 261, 379};
  r.max_new_tokens = 60;
  r.sampling.temperature = 0.9f;
  r.sampling.top_k = 8;
  r.sampling.seed = 11;
  launcher::SessionOptions options;
  options.model_path = test::stories260k();
  options.threads = 1;
  options.speculative.method = "draft";
  options.speculative.tokens = 3;
  options.speculative.draft_model = test::random_stories_draft(g_world->rank());
  std::vector<GenerationOutput> alone;
  {
    launcher::ModelSession session(options);
    session.prepare(512);
    alone = session.generator().generate({r});
  }
  const parallel::ParsedPlan parsed =
      parallel::parse_plan(test::plan_yaml(test::stories260k(), {1, 2, 1, "", false, 60}), "pp2_sampled.yaml");
  ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);
  launcher::RankRuntime rank(parsed.plan, "");
  rank.configure(options.generator);
  launcher::ModelSession session(options, rank.placement());
  session.prepare(512);
  const auto outputs = session.generator().generate({r});
  EXPECT_EQ(outputs[0].tokens, alone[0].tokens);
  EXPECT_GT(session.generator().stats().spec_draft_tokens, 0);
  g_world->barrier();
}

const char* kNgram = "speculative:\n  method: ngram\n  tokens: 4\n  ngram_min: 1\n  ngram_max: 3\n";
const char* kDraft = "speculative:\n  method: draft\n  tokens: 3\n";

INSTANTIATE_TEST_SUITE_P(Layouts, SpeculativeLayouts,
                         ::testing::Values(Case{"tp2_ngram", 2, 1, kNgram, ""}, Case{"pp2_ngram", 1, 2, kNgram, ""},
                                           Case{"tp2_draft_self", 2, 1, kDraft, "self"},
                                           Case{"pp2_draft_self", 1, 2, kDraft, "self"},
                                           Case{"tp2_draft_random", 2, 1, kDraft, "random"},
                                           Case{"pp2_draft_random", 1, 2, kDraft, "random"}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace strata
