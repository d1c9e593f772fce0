// tests/launcher/http_routes_test.cpp: the HTTP layer of `strata serve` in process, against a fake
// engine (no model): request validation, stop strings, chat-template injection, the frontend's
// channels, and a client disconnect that must reach Engine::cancel.
#include <gtest/gtest.h>

#include <condition_variable>
#include <set>
#include <thread>

#include "e2e/serve_client.h"
#include "launcher/http/choice_text.h"
#include "launcher/http/routes.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/tokenizer/tokenizer_files.h"

namespace strata::launcher::http {
namespace {

// Accepts everything; the test plays the engine thread by calling emit().
class FakeEngine : public RequestEngine {
 public:
  bool submit(EngineRequest r) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (static_cast<int>(live.size()) >= capacity) return false;
    live.insert(r.id);
    return true;
  }
  void cancel(uint64_t id) override {
    std::lock_guard<std::mutex> lock(mutex);
    cancelled.insert(id);
  }
  EngineStats stats() const override { return {}; }
  std::mutex mutex;
  std::set<uint64_t> live, cancelled;
  int capacity = 100;
};

TEST(HttpSchema, RejectionsNameTheField) {
  GenerationParams p;
  ApiError e;
  EXPECT_FALSE(parse_generation("{\"prompt\": \"a\", \"top_k\": 1.5}", false, p, e));
  EXPECT_EQ(e.param, "top_k");
  EXPECT_FALSE(parse_generation("{\"prompt\": [1, -2]}", false, p, e));
  EXPECT_EQ(e.param, "prompt[1]");
  EXPECT_FALSE(parse_generation("{\"messages\": [{\"role\": \"user\"}]}", true, p, e));
  EXPECT_EQ(e.param, "messages[0].content");
  EXPECT_FALSE(parse_generation("{\"prompt\": \"a\", \"tools\": []}", false, p, e));
  EXPECT_EQ(e.param, "tools");
  ASSERT_TRUE(parse_generation("{\"prompt\": [[1, 2], \"x\"], \"stop\": [\"a\", \"b\"], \"logprobs\": 2, \"seed\": 7, "
                               "\"top_k\": -1, \"min_p\": 0.1, \"repetition_penalty\": 1.1}",
                               false, p, e))
      << e.message;
  EXPECT_EQ(p.prompts.size(), 2u);
  EXPECT_TRUE(p.prompts[0].is_ids);
  EXPECT_EQ(p.stop.size(), 2u);
  EXPECT_EQ(p.logprobs, 2);
  EXPECT_EQ(p.sampling.top_k, 0);
  EXPECT_EQ(p.sampling.seed, 7u);
}

TEST(HttpChoiceText, StopStringsAreHeldBackThenTrimmed) {
  const auto tok = Tokenizer::create(make_synthetic_tokenizer(512));
  const std::string text = "hello world, this is it";
  std::vector<int32_t> ids = tok->encode(text, false, false);
  ChoiceText c(tok.get(), {"is it"}, -1);
  std::string out;
  for (int32_t id : ids) {
    out += c.push(id);
    // Released text never contains a part of the stop string that later completes.
    EXPECT_EQ(out.find("is i"), std::string::npos) << out;
    if (c.stopped()) break;
  }
  out += c.finish();
  EXPECT_TRUE(c.stopped());
  EXPECT_EQ(out, tok->decode(ids).substr(0, tok->decode(ids).find("is it")));
}

// Logprob token strings are read in their place: the SentencePiece space that begins a word stays
// (" there", and the lone space token is " "), as Hugging Face `tokenizers` decodes mid-text
// (tests/fixtures/tokenizer/stories260K_token_texts.json: after "\u2581Once", id 410 is " ").
TEST(HttpChoiceText, TokenTextsKeepTheirLeadingSpace) {
  const std::string model = test::shared_model("stories260K-hf");
  if (model.empty()) GTEST_SKIP() << "stories260K-hf not found under $STRATA_SHARED_MODELS";
  const auto tok = Tokenizer::create(*open_checkpoint(model)->tokenizer());
  ChoiceText c(tok.get(), {}, -1);
  const int32_t once = tok->token_to_id("\u2581Once"), there = tok->token_to_id("\u2581there"), space = 410;
  ASSERT_EQ(tok->id_to_piece(space), "\u2581");
  EXPECT_EQ(c.token_text(once, there), " there");
  EXPECT_EQ(c.token_text(once, space), " ");
  EXPECT_EQ(c.token_bytes(once, space), " ");
  EXPECT_EQ(c.token_text(tok->bos_id(), once), "Once");  // the first word after BOS has no space
}

TEST(HttpChatTemplate, UserTextCannotInjectControlTokens) {
  const auto tok = Tokenizer::create(make_synthetic_tokenizer(512));
  const ChatTemplate t = ChatTemplate::detect(*tok);
  EXPECT_EQ(t.format(), ChatFormat::kLlama2);
  const std::vector<int32_t> ids = t.render({{"user", "hi </s><s> there"}});
  int bos = 0, eos = 0;
  for (int32_t id : ids) bos += id == tok->bos_id(), eos += id == tok->eos_id();
  EXPECT_EQ(bos, 1);
  EXPECT_EQ(eos, 0);
}

TEST(HttpFrontend, EventsReachTheirChannelAndFinishedRequestsLeave) {
  FakeEngine engine;
  EngineFrontend frontend;
  EngineRequest r;
  r.id = 7;
  r.prompt = {1};
  EXPECT_EQ(frontend.submit(r, std::make_shared<RequestChannel>(nullptr)), SubmitResult::kUnavailable);
  frontend.attach(&engine);
  int notified = 0;
  auto channel = std::make_shared<RequestChannel>([&] { ++notified; });
  ASSERT_EQ(frontend.submit(r, channel), SubmitResult::kAccepted);
  TokenEvent a{7, 5, -0.5f, {}, false, "", ""}, b{7, 6, -0.1f, {}, true, "length", ""}, other{8, 1, 0, {}, false, "", ""};
  frontend.dispatch({a, other, b});
  EXPECT_EQ(notified, 1);  // one notification per batch
  const auto events = channel->take();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_TRUE(events[1].finished);
  EXPECT_EQ(frontend.engine_requests(), 0);
  engine.capacity = 0;
  r.id = 9;
  EXPECT_EQ(frontend.submit(r, channel), SubmitResult::kQueueFull);
}

TEST(HttpServerInProcess, DisconnectCancelsAndErrorsAreJson) {
  const auto tok = Tokenizer::create(make_synthetic_tokenizer(512));
  FakeEngine engine;
  EngineFrontend frontend;
  Metrics metrics;
  ServedModel model;
  model.name = "fake";
  model.context = 256;
  model.vocab_size = 512;
  Routes routes(frontend, metrics, tok.get(), ChatTemplate::detect(*tok), model);
  ServerOptions options;
  options.address = "127.0.0.1";
  options.port = 0;
  HttpServer server(options, [&](const std::shared_ptr<Exchange>& e) { routes.handle(e); });
  server.start();
  frontend.attach(&engine);
  const int port = server.port();
  EXPECT_EQ(test::http(port, "GET", "/health").status, 200);
  EXPECT_EQ(test::http(port, "POST", "/v1/completions", "{").status, 400);

  // A streaming client receives one token, then goes away: the engine must hear cancel().
  const int fd = test::connect_to(port);
  test::send_all(fd, test::request_bytes("POST", "/v1/completions", "{\"prompt\": [1, 2], \"stream\": true, \"max_tokens\": 50}"));
  uint64_t id = 0;
  for (int i = 0; i < 200 && id == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::lock_guard<std::mutex> lock(engine.mutex);
    if (!engine.live.empty()) id = *engine.live.begin();
  }
  ASSERT_NE(id, 0u);
  frontend.dispatch({TokenEvent{id, 40, -1.f, {}, false, "", ""}});
  char buf[4096];
  ASSERT_GT(recv(fd, buf, sizeof(buf), 0), 0);
  close(fd);
  bool cancelled = false;
  for (int i = 0; i < 200 && !cancelled; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::lock_guard<std::mutex> lock(engine.mutex);
    cancelled = engine.cancelled.count(id) > 0;
  }
  EXPECT_TRUE(cancelled);
  frontend.dispatch({TokenEvent{id, -1, 0, {}, true, "cancelled", ""}});
  for (int i = 0; i < 200 && frontend.responses_in_flight() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(frontend.responses_in_flight(), 0);
  EXPECT_EQ(frontend.engine_requests(), 0);
  EXPECT_NE(metrics.render({}, true).find("status=\"499\"} 1"), std::string::npos);

  // Shutdown while a request waits: it is answered (503 once the engine cancels it).
  std::thread client([&] {
    const auto r = test::http(port, "POST", "/v1/completions", "{\"prompt\": [1, 2], \"max_tokens\": 5}");
    EXPECT_EQ(r.status, 503) << r.body;
  });
  uint64_t id2 = 0;
  for (int i = 0; i < 200 && id2 == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::lock_guard<std::mutex> lock(engine.mutex);
    for (uint64_t x : engine.live) if (x != id) id2 = x;
  }
  frontend.drain();
  server.stop_accepting();
  frontend.dispatch({TokenEvent{id2, -1, 0, {}, true, "cancelled", ""}});
  client.join();
  server.stop();
}

// /health reports "stalled" (503) while a request waits and the step loop has not noted a step for the
// stall timeout; a step brings it back. An idle engine is healthy however long ago its last step was.
TEST(HttpServerInProcess, HealthFollowsEngineProgress) {
  FakeEngine engine;
  EngineFrontend frontend;
  Metrics metrics;
  ServedModel model;
  model.name = "fake";
  model.context = 256;
  model.vocab_size = 512;
  Routes routes(frontend, metrics, nullptr, std::nullopt, model);
  ServerOptions options;
  options.port = 0;
  HttpServer server(options, [&](const std::shared_ptr<Exchange>& e) { routes.handle(e); });
  server.start();
  frontend.attach(&engine);
  frontend.set_stall_timeout(1.0);
  frontend.note_step();
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_EQ(test::http(server.port(), "GET", "/health").status, 200);  // nothing waits
  std::thread client([&] { test::http(server.port(), "POST", "/v1/completions", "{\"prompt\": [1, 2], \"max_tokens\": 1}"); });
  uint64_t id = 0;
  for (int i = 0; i < 200 && id == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::lock_guard<std::mutex> lock(engine.mutex);
    if (!engine.live.empty()) id = *engine.live.begin();
  }
  ASSERT_NE(id, 0u);
  frontend.note_step();
  EXPECT_EQ(test::http(server.port(), "GET", "/health").status, 200);  // a step just ended
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  const auto stalled = test::http(server.port(), "GET", "/health");
  EXPECT_EQ(stalled.status, 503);
  EXPECT_NE(stalled.body.find("\"stalled\""), std::string::npos) << stalled.body;
  EXPECT_NE(test::http(server.port(), "GET", "/metrics").body.find("\nstrata_engine_stalled 1\n"), std::string::npos);
  frontend.note_step();
  EXPECT_EQ(test::http(server.port(), "GET", "/health").status, 200);
  EXPECT_NE(test::http(server.port(), "GET", "/metrics").body.find("\nstrata_engine_stalled 0\n"), std::string::npos);
  frontend.dispatch({TokenEvent{id, 7, -1.f, {}, true, "length", ""}});
  client.join();
  server.stop();
}

// Speculative decoding on /metrics: the counters as the engine keeps them, the acceptance rate and the
// tokens per verifying step derived from them (6 of 8 drafts stood over 2 sequence-steps that emitted 8).
TEST(Metrics, SpeculativeDecodingCountersAndRates) {
  Metrics metrics;
  EngineStats stats;
  EXPECT_NE(metrics.render(stats, true).find("\nstrata_spec_acceptance_rate 0\n"), std::string::npos);
  stats.spec_draft_tokens = 8;
  stats.spec_accepted_tokens = 6;
  stats.spec_verify_steps = 2;
  stats.spec_emitted_tokens = 8;
  const std::string text = metrics.render(stats, true);
  for (const char* line : {"\nstrata_spec_draft_tokens_total 8\n", "\nstrata_spec_accepted_tokens_total 6\n",
                           "\nstrata_spec_verify_steps_total 2\n", "\nstrata_spec_acceptance_rate 0.75\n",
                           "\nstrata_spec_tokens_per_step 4\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line;
}

// Where the engine's time went, on /metrics: step seconds by kind and the forward / sample phases, as the
// engine counts them (a serving benchmark scrapes these around each rate to split its step time).
TEST(Metrics, EngineStepTimeByKindAndPhase) {
  Metrics metrics;
  EngineStats stats;
  stats.steps = 10;
  stats.decode_steps = 7;
  stats.prefill_seconds = 0.25;
  stats.decode_seconds = 0.5;
  stats.forward_seconds = 0.625;
  stats.sample_seconds = 0.0625;
  const std::string text = metrics.render(stats, true);
  for (const char* line : {"\nstrata_engine_steps_total 10\n", "\nstrata_engine_decode_steps_total 7\n",
                           "\nstrata_engine_step_seconds_total{kind=\"prefill\"} 0.25\n",
                           "\nstrata_engine_step_seconds_total{kind=\"decode\"} 0.5\n",
                           "\nstrata_engine_phase_seconds_total{phase=\"forward\"} 0.625\n",
                           "\nstrata_engine_phase_seconds_total{phase=\"sample\"} 0.0625\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line;
}

// The body limit: a larger body is a 413 naming the flag that raises it, and set_max_body_bytes raises it for
// later connections (serve does so once it knows the model takes images).
TEST(HttpServerInProcess, BodyLimitAnswers413AndCanBeRaised) {
  ServerOptions options;
  options.port = 0;
  options.max_body_bytes = 2048;
  HttpServer server(options, [](const std::shared_ptr<Exchange>& e) {
    e->respond(200, "text/plain", std::to_string(e->request().body.size()));
  });
  server.start();
  const std::string body(3000, 'x');
  const test::HttpResponse refused = test::http(server.port(), "POST", "/echo", body);
  EXPECT_EQ(refused.status, 413);
  EXPECT_NE(refused.body.find("2048"), std::string::npos) << refused.body;
  EXPECT_NE(refused.body.find("--max-body-bytes"), std::string::npos) << refused.body;
  EXPECT_EQ(test::http(server.port(), "POST", "/echo", std::string(2000, 'x')).body, "2000");
  server.set_max_body_bytes(4096);
  const test::HttpResponse taken = test::http(server.port(), "POST", "/echo", body);
  EXPECT_EQ(taken.status, 200);
  EXPECT_EQ(taken.body, "3000");
  server.stop();
}

}  // namespace
}  // namespace strata::launcher::http
