// tests/runtime/engine_test.cpp: the serving Engine on one rank, on the committed GQA fixture model.
// References nobody here computed in the same way: each request run alone, teacher-forced logits of
// Generator::score (one step, no scheduling), and a Hugging Face greedy continuation (MQA fixture).
// Batching, chunked prefill, preemption and prefix caching must not change a single token.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "launcher/model_session.h"
#include "runtime/error.h"
#include "test_util.h"

namespace strata {
namespace {

using ::testing::HasSubstr;

std::string model_dir() { return test::fixture("hf/llama_gqa_untied"); }
std::string mqa_dir() { return test::fixture("hf/mistral_mqa"); }  // vocab 256, context 256

struct Result {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::string reason;
};

launcher::SessionOptions session_options(int64_t kv_tokens, const GeneratorOptions& g,
                                         const std::string& dir = model_dir()) {
  launcher::SessionOptions o;
  o.model_path = dir;
  o.threads = 1;
  o.kv_tokens = kv_tokens;
  o.generator = g;
  return o;
}

// Steps `engine` until every request ended; request i is submitted at step arrival[i].
std::map<uint64_t, Result> run_staggered(Engine& engine, const std::vector<EngineRequest>& requests,
                                         const std::vector<int64_t>& arrival, int64_t* max_batch = nullptr) {
  std::map<uint64_t, Result> out;
  size_t next = 0, ended = 0;
  std::vector<TokenEvent> events;
  for (int64_t step = 0; ended < requests.size(); ++step) {
    while (next < requests.size() && arrival[next] <= step) EXPECT_TRUE(engine.submit(requests[next++]));
    events.clear();
    EXPECT_TRUE(engine.step(events, 0));
    for (const TokenEvent& e : events) {
      Result& r = out[e.request_id];
      if (e.token >= 0) r.tokens.push_back(e.token), r.logprobs.push_back(e.logprob);
      if (e.finished) r.reason = e.finish_reason, ++ended;
    }
    if (max_batch != nullptr) *max_batch = std::max(*max_batch, engine.stats().last_batch_size);
    EXPECT_LT(step, 100000) << "the engine makes no progress";
    if (step >= 100000) break;
  }
  return out;
}

// Each request alone on an engine without prefix caching: the reference for every test.
std::map<uint64_t, Result> run_alone(const std::vector<EngineRequest>& requests,
                                     const std::string& dir = model_dir()) {
  GeneratorOptions g;
  g.prefix_caching = false;
  launcher::ModelSession session(session_options(0, g, dir));
  session.prepare(512);
  std::map<uint64_t, Result> out;
  for (const EngineRequest& r : requests) out[r.id] = run_staggered(session.generator().engine(), {r}, {0}).at(r.id);
  return out;
}

std::vector<EngineRequest> make_requests(size_t n, uint32_t seed, int64_t max_prompt, int64_t max_new,
                                         uint32_t vocab = 320) {
  std::mt19937 rng(seed);
  std::vector<EngineRequest> out(n);
  for (size_t i = 0; i < n; ++i) {
    EngineRequest& r = out[i];
    r.id = 1000 + i;
    const int64_t len = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(max_prompt));
    for (int64_t k = 0; k < len; ++k) r.prompt.push_back(static_cast<int32_t>(3 + rng() % (vocab - 3)));
    r.max_new_tokens = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(max_new));
    r.stop_ids = {2};
    if (i % 4 == 3) {  // seeded sampling is per (seed, token index): batching must not change it either
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = 40;
      r.sampling.seed = 77 + i;
    }
  }
  return out;
}

void expect_same(const std::map<uint64_t, Result>& got, const std::map<uint64_t, Result>& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [id, want] : expected) {
    const auto it = got.find(id);
    ASSERT_NE(it, got.end()) << "request " << id << " never ended";
    EXPECT_EQ(it->second.tokens, want.tokens) << "request " << id;
    EXPECT_EQ(it->second.reason, want.reason) << "request " << id;
    // Logprobs see any difference in the KV a token attended to, even where the argmax does not.
    ASSERT_EQ(it->second.logprobs.size(), want.logprobs.size()) << "request " << id;
    for (size_t k = 0; k < want.logprobs.size(); ++k)
      EXPECT_NEAR(it->second.logprobs[k], want.logprobs[k], 1e-5) << "request " << id << " token " << k;
  }
}

TEST(Engine, StaggeredBatchMatchesEachRequestAlone) {
  const std::vector<EngineRequest> requests = make_requests(32, 1, 40, 24);
  std::vector<int64_t> arrival;
  for (size_t i = 0; i < requests.size(); ++i) arrival.push_back(static_cast<int64_t>(i / 2 + (i % 3)));
  std::sort(arrival.begin(), arrival.end());
  const auto expected = run_alone(requests);

  GeneratorOptions g;
  g.max_step_tokens = 24;  // forces chunked prefill mixed with decodes
  g.max_running = 12;
  launcher::ModelSession session(session_options(0, g));
  session.prepare(32 * 80);
  Engine& engine = session.generator().engine();
  int64_t max_batch = 0;
  const auto got = run_staggered(engine, requests, arrival, &max_batch);
  expect_same(got, expected);
  const EngineStats s = engine.stats();
  EXPECT_GT(max_batch, 4);
  EXPECT_EQ(s.preemptions, 0);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.waiting, 0);
  int64_t generated = 0;
  for (const auto& [id, r] : expected) generated += static_cast<int64_t>(r.tokens.size());
  EXPECT_EQ(s.generated_tokens, generated);
}

TEST(Engine, GreedyTokensAndLogprobsMatchTeacherForcedScores) {
  std::vector<EngineRequest> requests = make_requests(6, 2, 30, 12);
  for (EngineRequest& r : requests) r.sampling = SamplingParams{}, r.logprobs = 3, r.stop_ids.clear();
  launcher::ModelSession session(session_options(0, GeneratorOptions{}));
  session.prepare(1024);
  const auto got = run_staggered(session.generator().engine(), requests, {0, 0, 1, 1, 2, 3});
  for (const EngineRequest& r : requests) {
    const Result& res = got.at(r.id);
    ASSERT_EQ(static_cast<int64_t>(res.tokens.size()), r.max_new_tokens);
    std::vector<int32_t> ids = r.prompt;
    ids.insert(ids.end(), res.tokens.begin(), res.tokens.end() - 1);
    const Tensor logits = session.generator().score(ids);
    const int64_t V = logits.dim(1);
    for (size_t k = 0; k < res.tokens.size(); ++k) {
      const std::span<const float> row(logits.data<float>() + (r.prompt.size() - 1 + k) * V, static_cast<size_t>(V));
      EXPECT_EQ(res.tokens[k], Sampler::argmax(row)) << "request " << r.id << " token " << k;
      EXPECT_NEAR(res.logprobs[k], Sampler::log_prob(row, res.tokens[k]), 1e-4);
    }
  }
}

// A score that throws mid-step (here: image rows of the wrong width) gives its KV blocks back: a cache
// just large enough for one full-length score still runs one afterwards.
TEST(Engine, AFailedScoreReturnsItsKvBlocks) {
  launcher::ModelSession session(session_options(0, GeneratorOptions{}));
  session.prepare(64);
  std::vector<int32_t> ids(64);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(3 + i % 50);
  ASSERT_EQ(session.generator().engine().stats().kv_blocks_total * 16, 64)  // blocks of 16 tokens (the default)
      << "the test needs a cache that one 64-token score fills";
  EmbeddingSplice bad;
  bad.rows = session.backend().alloc({1, session.config().hidden + 1}, session.backend().activation_dtype());
  bad.positions = {3};
  EXPECT_THROW(session.generator().score(ids, &bad), Error);
  const Tensor logits = session.generator().score(ids);
  EXPECT_EQ(logits.dim(0), 64);
}

TEST(Engine, TopLogprobsAreSortedAndStartWithTheGreedyToken) {
  launcher::ModelSession session(session_options(0, GeneratorOptions{}));
  session.prepare(256);
  Engine& engine = session.generator().engine();
  EngineRequest r;
  r.id = 5;
  r.prompt = {1, 50, 60, 70};
  r.max_new_tokens = 4;
  r.logprobs = 5;
  ASSERT_TRUE(engine.submit(r));
  std::vector<TokenEvent> events;
  while (events.empty() || !events.back().finished) ASSERT_TRUE(engine.step(events, 0));
  ASSERT_EQ(events.size(), 4u);
  for (const TokenEvent& e : events) {
    ASSERT_EQ(e.top_logprobs.size(), 5u);
    EXPECT_EQ(e.top_logprobs[0].token, e.token);
    EXPECT_FLOAT_EQ(e.top_logprobs[0].logprob, e.logprob);
    for (size_t k = 1; k < 5; ++k) EXPECT_LE(e.top_logprobs[k].logprob, e.top_logprobs[k - 1].logprob);
    EXPECT_LT(e.logprob, 0.f);
  }
}

TEST(Engine, HuggingFaceGreedyContinuationInsideABatch) {
  std::ifstream in(mqa_dir() + "/ids.json");
  std::stringstream text;
  text << in.rdbuf();
  const boost::json::value v = boost::json::parse(text.str());
  EngineRequest hf;
  hf.id = 1;
  for (const auto& x : v.at("greedy_prompt").as_array()) hf.prompt.push_back(static_cast<int32_t>(x.as_int64()));
  std::vector<int32_t> expected;
  for (const auto& x : v.at("greedy_continuation").as_array()) expected.push_back(static_cast<int32_t>(x.as_int64()));
  hf.max_new_tokens = static_cast<int64_t>(expected.size());
  std::vector<EngineRequest> requests = make_requests(8, 3, 30, 20, 256);
  requests.insert(requests.begin() + 3, hf);
  GeneratorOptions g;
  g.max_step_tokens = 16;
  launcher::ModelSession session(session_options(0, g, mqa_dir()));
  session.prepare(2048);
  const auto got = run_staggered(session.generator().engine(), requests, {0, 0, 1, 2, 2, 3, 5, 6, 8});
  EXPECT_EQ(got.at(1).tokens, expected);
  expect_same(got, run_alone(requests, mqa_dir()));
}

TEST(Engine, PreemptionByRecomputeKeepsResults) {
  const std::vector<EngineRequest> requests = make_requests(16, 4, 40, 40);
  std::vector<int64_t> arrival(requests.size(), 0);
  for (size_t i = 0; i < arrival.size(); ++i) arrival[i] = static_cast<int64_t>(i);
  const auto expected = run_alone(requests);
  for (bool caching : {false, true}) {
    GeneratorOptions g;
    g.max_step_tokens = 32;
    g.prefix_caching = caching;
    // 8 blocks of 16 tokens: two long sequences already fill it, so decodes run out of blocks.
    launcher::ModelSession session(session_options(128, g));
    session.prepare(128);
    Engine& engine = session.generator().engine();
    const auto got = run_staggered(engine, requests, arrival);
    expect_same(got, expected);
    const EngineStats s = engine.stats();
    EXPECT_GT(s.preemptions, 0) << "caching " << caching;
    EXPECT_EQ(s.kv_blocks_used, 0);
    EXPECT_EQ(s.kv_blocks_total, 8);
  }
}

TEST(Engine, PrefixCacheSharesBlocksAndKeepsResults) {
  std::mt19937 rng(9);
  std::vector<int32_t> shared;
  for (int k = 0; k < 50; ++k) shared.push_back(static_cast<int32_t>(3 + rng() % 317));
  std::vector<EngineRequest> requests(10);
  for (size_t i = 0; i < requests.size(); ++i) {
    EngineRequest& r = requests[i];
    r.id = 10 + i;
    r.prompt = shared;
    for (size_t k = 0; k < i % 4; ++k) r.prompt.push_back(static_cast<int32_t>(3 + rng() % 317));
    r.max_new_tokens = 6 + static_cast<int64_t>(i);
  }
  // A prompt of exactly three full blocks, twice: the second reuses two and recomputes the last
  // block's tokens (its final token must produce logits, and a shared block is never written).
  EngineRequest whole;
  whole.prompt.assign(shared.begin(), shared.begin() + 48);
  whole.max_new_tokens = 5;
  whole.id = 100;
  requests.push_back(whole);
  whole.id = 101;
  requests.push_back(whole);
  std::vector<int64_t> arrival;
  for (size_t i = 0; i < requests.size(); ++i) arrival.push_back(static_cast<int64_t>(3 * i));
  const auto expected = run_alone(requests);

  // 32 blocks: the 400-token request below needs every one, so idle cached blocks must be evicted.
  launcher::ModelSession session(session_options(512, GeneratorOptions{}));
  session.prepare(512);
  Engine& engine = session.generator().engine();
  const auto got = run_staggered(engine, requests, arrival);
  expect_same(got, expected);
  const EngineStats s = engine.stats();
  // Requests 1..9 each find the 48 tokens of the shared prefix's three full blocks; 101 finds two.
  EXPECT_GE(s.prefix_hit_tokens, 9 * 48 + 32);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_GT(s.kv_blocks_cached, 0);
  // Cached blocks are evicted for new work once the allocator runs dry.
  EngineRequest big;
  big.id = 500;
  for (int k = 0; k < 400; ++k) big.prompt.push_back(static_cast<int32_t>(3 + (k * 37) % 317));
  big.max_new_tokens = 100;
  const auto big_got = run_staggered(engine, {big}, {0});
  EXPECT_EQ(big_got.at(500).tokens, run_alone({big}).at(500).tokens);
  EXPECT_EQ(engine.stats().kv_blocks_used, 0);
}

TEST(Engine, CancelEndsRunningAndQueuedRequestsAndFreesBlocks) {
  GeneratorOptions g;
  g.max_running = 2;
  launcher::ModelSession session(session_options(0, g));
  session.prepare(1024);
  Engine& engine = session.generator().engine();
  std::vector<EngineRequest> requests = make_requests(3, 5, 20, 1);
  for (EngineRequest& r : requests) r.max_new_tokens = 60, r.stop_ids.clear(), r.sampling = SamplingParams{};
  for (const EngineRequest& r : requests) ASSERT_TRUE(engine.submit(r));
  std::map<uint64_t, Result> got;
  std::vector<TokenEvent> events;
  auto pump = [&] {
    events.clear();
    ASSERT_TRUE(engine.step(events, 0));
    for (const TokenEvent& e : events) {
      if (e.token >= 0) got[e.request_id].tokens.push_back(e.token);
      if (e.finished) got[e.request_id].reason = e.finish_reason;
    }
  };
  for (int i = 0; i < 5; ++i) pump();
  EXPECT_EQ(engine.stats().running, 2);
  EXPECT_EQ(engine.stats().waiting, 1);
  const int64_t used = engine.stats().kv_blocks_used;
  EXPECT_GT(used, 0);
  engine.cancel(requests[0].id);  // running
  engine.cancel(requests[2].id);  // still queued (max_running 2)
  engine.cancel(999999);          // unknown: ignored
  pump();
  EXPECT_EQ(got[requests[0].id].reason, "cancelled");
  EXPECT_EQ(got[requests[2].id].reason, "cancelled");
  EXPECT_TRUE(got[requests[2].id].tokens.empty());
  EXPECT_LT(engine.stats().kv_blocks_used, used);
  while (got[requests[1].id].reason.empty()) pump();
  EXPECT_EQ(got[requests[1].id].reason, "length");
  const EngineStats s = engine.stats();
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.running + s.waiting, 0);
  EXPECT_EQ(got[requests[1].id].tokens, run_alone({requests[1]}).at(requests[1].id).tokens);
  // The id is free again once its request ended.
  EXPECT_TRUE(engine.submit(requests[0]));
}

TEST(Engine, SubmitRefusesWhenTheQueueIsFull) {
  GeneratorOptions g;
  g.max_queue = 2;
  launcher::ModelSession session(session_options(0, g));
  session.prepare(256);
  Engine& engine = session.generator().engine();
  std::vector<EngineRequest> requests = make_requests(4, 6, 8, 4);
  EXPECT_TRUE(engine.submit(requests[0]));
  EXPECT_TRUE(engine.submit(requests[1]));
  EXPECT_FALSE(engine.submit(requests[2]));
  std::vector<TokenEvent> events;
  ASSERT_TRUE(engine.step(events, 0));  // both admitted: the queue has room again
  EXPECT_TRUE(engine.submit(requests[2]));
  engine.shutdown();
  EXPECT_FALSE(engine.submit(requests[3]));  // shutting down
}

TEST(Engine, InvalidRequestsThrowClearMessages) {
  launcher::ModelSession session(session_options(64, GeneratorOptions{}));  // 4 blocks of 16
  session.prepare(64);
  Engine& engine = session.generator().engine();
  auto message = [&](EngineRequest r) -> std::string {
    try {
      engine.submit(std::move(r));
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      return e.what();
    }
    return "no error";
  };
  EngineRequest ok;
  ok.id = 7;
  ok.prompt = {1, 2, 3};
  ok.max_new_tokens = 4;
  EngineRequest r = ok;
  r.prompt.clear();
  EXPECT_THAT(message(r), HasSubstr("request 7 has an empty prompt"));
  r = ok, r.prompt = {1, 320};
  EXPECT_THAT(message(r), HasSubstr("prompt token id 320 is outside the vocabulary of 320"));
  r = ok, r.prompt = {-1};
  EXPECT_THAT(message(r), HasSubstr("prompt token id -1 is outside the vocabulary"));
  r = ok, r.stop_ids = {1000};
  EXPECT_THAT(message(r), HasSubstr("stop token id 1000"));
  r = ok, r.max_new_tokens = 0;
  EXPECT_THAT(message(r), HasSubstr("max_new_tokens must be >= 1"));
  r = ok, r.max_new_tokens = 600;
  EXPECT_THAT(message(r), HasSubstr("exceeds the model's context of 512 tokens"));
  r = ok, r.max_new_tokens = 100;
  EXPECT_THAT(message(r), HasSubstr("needs 7 KV blocks of 16 tokens but the whole cache has 4"));
  r = ok, r.logprobs = 21;
  EXPECT_THAT(message(r), HasSubstr("logprobs must be in 0..20"));
  r = ok, r.sampling.top_p = 0;
  EXPECT_THAT(message(r), HasSubstr("top_p must be in (0, 1]"));
  EXPECT_TRUE(engine.submit(ok));
  EXPECT_THAT(message(ok), HasSubstr("request id 7 is already in flight"));
  EXPECT_EQ(engine.stats().waiting, 0);  // nothing else got queued
}

TEST(Engine, ShutdownCancelsOrDrains) {
  const std::vector<EngineRequest> requests = make_requests(3, 7, 10, 1);
  for (bool drain : {false, true}) {
    launcher::ModelSession session(session_options(0, GeneratorOptions{}));
    session.prepare(512);
    Engine& engine = session.generator().engine();
    for (EngineRequest r : requests) {
      r.max_new_tokens = 20;
      r.stop_ids.clear();
      ASSERT_TRUE(engine.submit(r));
    }
    std::vector<TokenEvent> events;
    ASSERT_TRUE(engine.step(events, 0));
    engine.shutdown(drain);
    int steps = 0;
    while (engine.step(events, 0)) ASSERT_LT(++steps, 100);
    EXPECT_FALSE(engine.step(events, 0));  // stays stopped
    int ended = 0, cancelled = 0;
    for (const TokenEvent& e : events) ended += e.finished, cancelled += e.finish_reason == "cancelled";
    EXPECT_EQ(ended, 3);
    EXPECT_EQ(cancelled, drain ? 0 : 3);
    EXPECT_EQ(engine.stats().kv_blocks_used, 0);
  }
}

TEST(Engine, SubmitFromAnotherThreadWhileStepping) {
  const std::vector<EngineRequest> requests = make_requests(12, 8, 20, 10);
  const auto expected = run_alone(requests);
  GeneratorOptions g;
  g.max_running = 4;
  g.max_queue = 3;
  launcher::ModelSession session(session_options(0, g));
  session.prepare(1024);
  Engine& engine = session.generator().engine();
  std::thread client([&] {
    for (const EngineRequest& r : requests) {
      while (!engine.submit(r)) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // queue full: retry
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  std::map<uint64_t, Result> got;
  size_t ended = 0;
  std::vector<TokenEvent> events;
  while (ended < requests.size()) {
    events.clear();
    ASSERT_TRUE(engine.step(events, 20));
    for (const TokenEvent& e : events) {
      if (e.token >= 0) got[e.request_id].tokens.push_back(e.token), got[e.request_id].logprobs.push_back(e.logprob);
      if (e.finished) got[e.request_id].reason = e.finish_reason, ++ended;
    }
  }
  client.join();
  expect_same(got, expected);
  engine.shutdown();
  EXPECT_FALSE(engine.step(events, 20));
}

}  // namespace
}  // namespace strata
