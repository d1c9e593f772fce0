// tests/parallel/engine_mpi_test.cpp: the serving Engine across the ranks of one replica (TP, PP with
// micro-batches or the interleaved schedule, TP x PP, and KV caches small enough to preempt): 16 requests submitted on the
// driver at staggered steps give, on every rank, exactly the tokens of each request run alone on a
// single rank; then the driver's shutdown() ends every rank's step loop.
// mpi-np: 2 4
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <set>

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
  int tp = 1, pp = 1;
  std::string model;       // "fixture:<name>" or a make_model preset
  int64_t kv_tokens = 0;   // 0: room for every request at once
  bool expect_preemption = false;
  bool interleaved = false;  // parallel.schedule: interleaved
};

std::string model_path(const std::string& spec) { return test::layout_model(spec, "engine", g_world->rank()); }

struct Result {
  std::vector<int32_t> tokens;
  std::string reason;
};

std::vector<EngineRequest> make_requests(int32_t vocab) {
  std::mt19937 rng(11);
  std::vector<EngineRequest> out(16);
  for (size_t i = 0; i < out.size(); ++i) {
    EngineRequest& r = out[i];
    r.id = 100 + i;
    const int len = 1 + static_cast<int>(rng() % 30);
    for (int k = 0; k < len; ++k) r.prompt.push_back(static_cast<int32_t>(3 + rng() % static_cast<uint32_t>(vocab - 3)));
    r.max_new_tokens = 4 + static_cast<int64_t>(rng() % 20);
    if (i % 4 == 1) {  // seeded sampling travels in the control message to the sampler rank
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.9f;
      r.sampling.seed = 3 + i;
    }
  }
  return out;
}

// Each request alone on the single-rank `session`: what every rank of a replica must produce.
std::map<uint64_t, Result> single_rank_results(launcher::ModelSession& session, const std::vector<EngineRequest>& requests) {
  std::map<uint64_t, Result> out;
  for (const EngineRequest& r : requests) {
    GenerationRequest q;
    q.prompt = r.prompt;
    q.max_new_tokens = r.max_new_tokens;
    q.sampling = r.sampling;
    const GenerationOutput o = session.generator().generate({q})[0];
    out[r.id] = Result{o.tokens, o.finish_reason};
  }
  return out;
}

// Steps `engine` on this rank until the driver's shutdown (sent once `requests` have ended) stops it.
// `feed(step)` runs on the driver before each step: submits and cancels. Every request's tokens and
// finish reason, as this rank saw them.
std::map<uint64_t, Result> run_engine(Engine& engine, bool driver, size_t requests,
                                      const std::function<void(int64_t)>& feed) {
  std::map<uint64_t, Result> got;
  size_t ended = 0;
  bool stopping = false;
  std::vector<TokenEvent> events;
  for (int64_t step = 0;; ++step) {
    if (driver) {
      feed(step);
      if (ended == requests && !stopping) engine.shutdown(), stopping = true;
    }
    events.clear();
    const bool more = engine.step(events, 0);
    for (const TokenEvent& e : events) {
      if (e.token >= 0) got[e.request_id].tokens.push_back(e.token);
      if (e.finished) got[e.request_id].reason = e.finish_reason, ++ended;
    }
    if (!more) break;
    if (step >= 20000) {
      ADD_FAILURE() << "no progress";
      break;
    }
  }
  EXPECT_EQ(ended, requests);
  return got;
}

class EngineLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(EngineLayouts, StaggeredRequestsMatchSingleRank) {
  const Layout& layout = GetParam();
  if (layout.tp * layout.pp != g_world->size())
    GTEST_SKIP() << layout.name << " needs " << layout.tp * layout.pp << " ranks";
  const std::string path = model_path(layout.model);
  const std::string yaml = test::plan_yaml(path, {layout.tp, layout.pp, 1, "", layout.interleaved, 120});
  const parallel::ParsedPlan parsed = parallel::parse_plan(yaml, layout.name + ".yaml");
  ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);

  launcher::SessionOptions options;
  options.model_path = path;
  options.threads = 1;
  std::vector<EngineRequest> requests;
  std::map<uint64_t, Result> expected;
  {  // Reference: each request alone, whole model on this rank.
    launcher::SessionOptions single_options = options;
    single_options.generator.prefix_caching = false;
    launcher::ModelSession single(single_options);
    single.prepare(512);
    requests = make_requests(single.config().vocab_size);
    expected = single_rank_results(single, requests);
  }

  launcher::RankRuntime rank(parsed.plan, "");
  rank.configure(options.generator);
  options.generator.max_step_tokens = 20;  // chunked prefill next to decodes
  options.generator.max_running = 8;
  options.kv_tokens = layout.kv_tokens;
  launcher::ModelSession session(options, rank.placement());
  session.prepare(16 * 64);
  Engine& engine = session.generator().engine();
  const bool driver = session.link().is_driver();
  // Every step also gathers each rank's telemetry words onto the driver (the GPU series of /metrics):
  // the tokens must not change, and the driver must hold every rank's own words.
  const int me = g_world->rank();
  int64_t calls = 0;
  engine.set_telemetry(1e-9, [me, &calls] { return std::vector<int32_t>{me, 7, static_cast<int32_t>(++calls)}; });

  size_t submitted = 0;
  std::map<uint64_t, Result> got = run_engine(engine, driver, requests.size(), [&](int64_t step) {
    while (submitted < requests.size() && static_cast<int64_t>(submitted) <= step) {  // staggered arrivals
      EXPECT_TRUE(engine.submit(requests[submitted]));
      ++submitted;
    }
  });
  for (const auto& [id, want] : expected) {
    EXPECT_EQ(got[id].tokens, want.tokens) << layout.name << " rank " << g_world->rank() << " request " << id;
    EXPECT_EQ(got[id].reason, want.reason) << layout.name << " request " << id;
  }
  EXPECT_GT(calls, 0);
  if (driver) {
    const std::vector<std::vector<int32_t>> telemetry = engine.rank_telemetry();
    ASSERT_EQ(telemetry.size(), static_cast<size_t>(g_world->size()));
    for (int r = 0; r < g_world->size(); ++r) {  // replica positions are world ranks here (one replica)
      ASSERT_EQ(telemetry[static_cast<size_t>(r)].size(), 3u) << r;
      EXPECT_EQ(telemetry[static_cast<size_t>(r)][0], r);
      EXPECT_EQ(telemetry[static_cast<size_t>(r)][1], 7);
      EXPECT_EQ(telemetry[static_cast<size_t>(r)][2], calls) << "rank " << r << " took part in every gather";
    }
  }
  if (driver) {
    const EngineStats s = engine.stats();
    EXPECT_EQ(s.kv_blocks_used, 0);
    if (layout.expect_preemption) {
      EXPECT_GT(s.preemptions, 0) << layout.name;
    }
    // Interleaved: every stage had a batch of its own at some tick (sequences spread over the stages).
    EXPECT_EQ(s.most_batches_in_flight, layout.interleaved ? layout.pp : 0) << layout.name;
  }
  std::vector<TokenEvent> after;
  EXPECT_FALSE(engine.step(after, 0));  // stopped for good, without talking to the other ranks
  g_world->barrier();
}

// Interleaved pipeline: requests cancelled while their batches are in flight end as "cancelled" on every
// rank with a prefix of their single-rank tokens; the others are untouched and every block comes back.
TEST(EngineInterleaved, CancelWhileInFlight) {
  if (g_world->size() != 2) GTEST_SKIP() << "needs 2 ranks";
  const std::string path = model_path("fixture:llama_gqa_untied");
  const parallel::ParsedPlan parsed = parallel::parse_plan(
      "model:\n  path: " + path + "\nparallel:\n  pipeline: 2\n  schedule: interleaved\ncomm:\n  timeout_s: 120\n",
      "interleaved.yaml");
  ASSERT_TRUE(parsed.ok()) << parallel::join_diagnostics(parsed.diagnostics);
  launcher::SessionOptions options;
  options.model_path = path;
  options.threads = 1;
  std::vector<EngineRequest> requests;
  std::map<uint64_t, Result> expected;
  {
    launcher::ModelSession single(options);
    single.prepare(512);
    requests = make_requests(single.config().vocab_size);
    requests.resize(8);
    for (EngineRequest& r : requests) r.max_new_tokens = 24;
    expected = single_rank_results(single, requests);
  }
  launcher::RankRuntime rank(parsed.plan, "");
  rank.configure(options.generator);
  launcher::ModelSession session(options, rank.placement());
  session.prepare(16 * 64);
  Engine& engine = session.generator().engine();
  const bool driver = session.link().is_driver();
  const std::set<uint64_t> cancelled = {requests[1].id, requests[4].id};
  std::map<uint64_t, Result> got = run_engine(engine, driver, requests.size(), [&](int64_t step) {
    if (step == 0) {
      for (const EngineRequest& r : requests) EXPECT_TRUE(engine.submit(r));
    }
    if (step == 9) {  // after a few tokens each, with both stages busy
      for (uint64_t id : cancelled) engine.cancel(id);
    }
  });
  for (const auto& [id, want] : expected) {
    const Result& r = got[id];
    if (cancelled.count(id) > 0) {
      EXPECT_EQ(r.reason, "cancelled") << id;
      EXPECT_LT(r.tokens.size(), want.tokens.size()) << id;
      EXPECT_TRUE(std::equal(r.tokens.begin(), r.tokens.end(), want.tokens.begin())) << id;
    } else {
      EXPECT_EQ(r.tokens, want.tokens) << id;
      EXPECT_EQ(r.reason, want.reason) << id;
    }
  }
  if (driver) {
    EXPECT_EQ(engine.stats().kv_blocks_used, 0);
  }
  g_world->barrier();
}

INSTANTIATE_TEST_SUITE_P(Layouts, EngineLayouts,
                         ::testing::Values(Layout{"tp2", 2, 1, "fixture:llama_gqa_untied"},
                                           Layout{"pp2", 1, 2, "fixture:llama_gqa_untied"},
                                           Layout{"tp2_preempt", 2, 1, "fixture:llama_gqa_untied", 128, true},
                                           Layout{"tp2_pp2", 2, 2, "tiny"},
                                           Layout{"tp2_pp2_preempt", 2, 2, "tiny", 128, true},
                                           Layout{"pp2_interleaved", 1, 2, "fixture:llama_gqa_untied", 0, false, true},
                                           Layout{"pp2_interleaved_preempt", 1, 2, "tiny", 128, true, true},
                                           Layout{"pp4_interleaved", 1, 4, "tiny", 0, false, true},
                                           Layout{"tp2_pp2_interleaved", 2, 2, "tiny", 0, false, true}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace strata
