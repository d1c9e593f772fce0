// tests/runtime/speculative_stories_test.cpp: speculative decoding on the trained stories260K checkpoint
// (../shared/models): greedy output with prompt-lookup drafts, with the model as its own draft (which
// must accept every draft) and with an unrelated random draft of the same vocabulary (which must still
// give the same tokens) equals plain greedy decoding; several concurrent requests, under KV pressure,
// equal the same requests run alone; sampled speculation with a fixed seed is reproducible and draws
// only tokens the target allows; a draft of another vocabulary is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>

#include "launcher/model_session.h"
#include "runtime/error.h"
#include "speculative_models.h"

namespace strata {
namespace {

std::string stories() { return test::stories260k(); }
std::string random_draft() { return test::random_stories_draft(0); }

std::vector<GenerationOutput> run(const launcher::SpeculativeSettings& spec, const std::vector<GenerationRequest>& rs,
                                  GenerationStats* stats = nullptr, int64_t kv_tokens = 0,
                                  std::optional<DType> kv_dtype = std::nullopt) {
  launcher::SessionOptions o;
  o.model_path = stories();
  o.threads = 1;
  o.speculative = spec;
  o.kv_tokens = kv_tokens;
  o.kv_cache_dtype = kv_dtype;
  launcher::ModelSession session(o);
  session.prepare(2048);
  auto out = session.generator().generate(rs);
  if (stats != nullptr) *stats = session.generator().stats();
  return out;
}

GenerationRequest request(std::vector<int32_t> prompt, int64_t n) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = n;
  return r;
}

launcher::SpeculativeSettings ngram(int k = 4) {
  launcher::SpeculativeSettings s;
  s.method = "ngram";
  s.tokens = k;
  return s;
}

launcher::SpeculativeSettings draft(const std::string& path, int k = 4) {
  launcher::SpeculativeSettings s;
  s.method = "draft";
  s.draft_model = path;
  s.tokens = k;
  return s;
}

class SpeculativeStories : public ::testing::Test {
 protected:
  void SetUp() override {
    if (stories().empty()) GTEST_SKIP() << "../shared/models is absent; stories260K tests skipped";
  }
};

TEST_F(SpeculativeStories, GreedyNgramEqualsPlainGreedy) {
  // BOS alone: the story repeats names and phrases, so prompt lookup finds drafts.
  const std::vector<GenerationRequest> rs = {request({1}, 200)};
  const auto plain = run({}, rs);
  GenerationStats stats;
  for (int k : {1, 4, 7}) {
    const auto spec = run(ngram(k), rs, &stats);
    EXPECT_EQ(spec[0].tokens, plain[0].tokens) << "k " << k;
    EXPECT_EQ(spec[0].finish_reason, plain[0].finish_reason);
    EXPECT_GT(stats.spec_draft_tokens, 0);
    EXPECT_GT(stats.spec_accepted_tokens, 0);  // some drafts stood, so fewer steps than tokens
    EXPECT_LT(stats.decode_steps, 199);
    RecordProperty("ngram_k" + std::to_string(k) + "_acceptance",
                   std::to_string(static_cast<double>(stats.spec_accepted_tokens) / stats.spec_draft_tokens));
  }
}

TEST_F(SpeculativeStories, TheModelAsItsOwnDraftAcceptsEverything) {
  const std::vector<GenerationRequest> rs = {request({1}, 120), request({1, 403, 261, 379}, 90)};
  const auto plain = run({}, rs);
  GenerationStats stats;
  const auto spec = run(draft(stories(), 4), rs, &stats);
  for (size_t i = 0; i < rs.size(); ++i) EXPECT_EQ(spec[i].tokens, plain[i].tokens) << "request " << i;
  EXPECT_GT(stats.spec_draft_tokens, 0);
  EXPECT_EQ(stats.spec_accepted_tokens, stats.spec_draft_tokens);
  // Every verifying step emits its 4 drafts and one more; only the tail near max_new_tokens drafts fewer.
  EXPECT_GT(static_cast<double>(stats.spec_emitted_tokens) / stats.spec_verify_steps, 4.0);
}

// With an fp8 KV cache the draft's cache is fp8 too: the model as its own draft then computes exactly what
// the target verifies, so every draft stands (with an f32 draft cache its guesses drift from the target's).
TEST_F(SpeculativeStories, TheDraftsKvCacheTakesTheTargetsDtype) {
  const std::vector<GenerationRequest> rs = {request({1}, 120), request({1, 403, 261, 379}, 90)};
  const auto plain = run({}, rs, nullptr, 0, DType::kF8_E4M3);
  GenerationStats stats;
  const auto spec = run(draft(stories(), 4), rs, &stats, 0, DType::kF8_E4M3);
  for (size_t i = 0; i < rs.size(); ++i) EXPECT_EQ(spec[i].tokens, plain[i].tokens) << "request " << i;
  EXPECT_GT(stats.spec_draft_tokens, 0);
  EXPECT_EQ(stats.spec_accepted_tokens, stats.spec_draft_tokens);
}

TEST_F(SpeculativeStories, AnUnrelatedDraftStillGivesTheTargetsTokens) {
  const std::vector<GenerationRequest> rs = {request({1}, 100), request({1, 403, 261, 379}, 60)};
  const auto plain = run({}, rs);
  GenerationStats stats;
  const auto spec = run(draft(random_draft(), 3), rs, &stats);
  for (size_t i = 0; i < rs.size(); ++i) EXPECT_EQ(spec[i].tokens, plain[i].tokens) << "request " << i;
  EXPECT_GT(stats.spec_draft_tokens, 0);
  EXPECT_LT(stats.spec_accepted_tokens, stats.spec_draft_tokens);  // random weights guess badly
}

TEST_F(SpeculativeStories, ConcurrentRequestsEqualRequestsAlone) {
  // Different prompts and lengths, a stop token, all in one engine, with a KV cache that forces
  // preemption: each equals its plain greedy run alone.
  std::vector<GenerationRequest> rs = {request({1}, 150), request({1, 403, 261, 379}, 80), request({1, 71, 72}, 120),
                                       request({1, 300, 301, 302, 300, 301}, 60), request({1}, 40)};
  // A stop token inside the drafts: request 1 stops at the token its plain run emits 26th.
  rs[1].stop_ids = {run({}, {rs[1]})[0].tokens.at(25)};
  rs[2].stop_ids = {2};
  std::vector<std::vector<int32_t>> alone;
  for (const GenerationRequest& r : rs) alone.push_back(run({}, {r})[0].tokens);
  ASSERT_LE(alone[1].size(), 26u);
  for (const auto& spec : {ngram(4), draft(random_draft(), 2), draft(stories(), 5)}) {
    for (int64_t kv : {int64_t{0}, int64_t{256}}) {
      const auto together = run(spec, rs, nullptr, kv);
      for (size_t i = 0; i < rs.size(); ++i)
        EXPECT_EQ(together[i].tokens, alone[i]) << spec.method << " request " << i << " kv " << kv;
    }
  }
}

TEST_F(SpeculativeStories, SampledSpeculationIsReproducibleAndStaysInTheTargetsSupport) {
  GenerationRequest r = request({1, 403, 261, 379}, 80);
  r.sampling.temperature = 0.8f;
  r.sampling.top_k = 5;
  r.sampling.seed = 42;
  for (const auto& spec : {ngram(4), draft(random_draft(), 3), draft(stories(), 3)}) {
    const auto a = run(spec, {r});
    const auto b = run(spec, {r});
    ASSERT_EQ(a[0].tokens.size(), 80u) << spec.method;
    EXPECT_EQ(a[0].tokens, b[0].tokens) << spec.method;
    // Each token is among the target's 5 most likely after the prefix before it.
    launcher::SessionOptions o;
    o.model_path = stories();
    o.threads = 1;
    launcher::ModelSession session(o);
    session.prepare(512);
    std::vector<int32_t> ids = r.prompt;
    ids.insert(ids.end(), a[0].tokens.begin(), a[0].tokens.end());
    const Tensor logits = session.generator().score(ids);
    const int64_t V = session.config().vocab_size;
    for (size_t i = 0; i < a[0].tokens.size(); ++i) {
      const float* row = logits.data<float>() + (r.prompt.size() - 1 + i) * V;
      const float mine = row[a[0].tokens[i]];
      const int64_t above = std::count_if(row, row + V, [&](float v) { return v > mine; });
      EXPECT_LT(above, 5) << spec.method << " token " << i;
    }
  }
}

TEST_F(SpeculativeStories, GreedyWithRepetitionPenaltyEqualsPlain) {
  // The penalty's view of the history includes the drafts before each verified position.
  GenerationRequest r = request({1, 403, 261, 379}, 120);
  r.sampling.repetition_penalty = 1.3f;
  const auto plain = run({}, {r});
  for (const auto& spec : {ngram(4), draft(stories(), 4)}) EXPECT_EQ(run(spec, {r})[0].tokens, plain[0].tokens);
}

// The engine's token events: each emitted token's logprob and top alternatives come from its own row of
// the verification step, so they match the plain run's (up to the rounding of another attention path).
TEST_F(SpeculativeStories, LogprobsOfVerifiedTokensMatchPlainDecoding) {
  auto events = [&](const launcher::SpeculativeSettings& spec) {
    launcher::SessionOptions o;
    o.model_path = stories();
    o.threads = 1;
    o.speculative = spec;
    launcher::ModelSession session(o);
    session.prepare(512);
    Engine& engine = session.generator().engine();
    EngineRequest r;
    r.id = 1;
    r.prompt = {1, 403, 261, 379};
    r.max_new_tokens = 60;
    r.logprobs = 3;
    EXPECT_TRUE(engine.submit(r));
    std::vector<TokenEvent> out, step;
    while (out.empty() || !out.back().finished) {
      step.clear();
      engine.step(step, 0);
      out.insert(out.end(), step.begin(), step.end());
    }
    return out;
  };
  const std::vector<TokenEvent> plain = events({});
  for (const auto& spec : {ngram(4), draft(stories(), 4)}) {
    const std::vector<TokenEvent> got = events(spec);
    ASSERT_EQ(got.size(), plain.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].token, plain[i].token) << i;
      EXPECT_NEAR(got[i].logprob, plain[i].logprob, 1e-4) << i;
      ASSERT_EQ(got[i].top_logprobs.size(), 3u);
      for (size_t k = 0; k < 3; ++k) {
        EXPECT_EQ(got[i].top_logprobs[k].token, plain[i].top_logprobs[k].token) << i;
        EXPECT_NEAR(got[i].top_logprobs[k].logprob, plain[i].top_logprobs[k].logprob, 1e-4) << i;
      }
    }
    EXPECT_EQ(got.back().finish_reason, "length");
  }
}

TEST_F(SpeculativeStories, ADraftWithAnotherVocabularyIsRefused) {
  ModelConfig c;
  c.vocab_size = 500, c.hidden = 32, c.n_layers = 1, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 8;
  c.ffn = 64, c.max_seq = 512;
  const std::string other = test::layout_model("draft500", "speculative", 0, c);
  try {
    run(draft(other), {request({1}, 4)});
    FAIL() << "a 500-token draft for a 512-token model was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocabulary of 500 tokens"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(other), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace strata
