// tests/e2e/serve_test.cpp: `strata serve` as users run it, single rank: concurrent greedy answers
// (streamed and not) equal the single-request answer and `strata generate --print-ids`; every bad
// request gets its status and an OpenAI error body; malformed HTTP; a client that disconnects
// mid-stream frees its KV blocks; a soak loses nothing; SIGTERM answers every request in flight.
// Multi-rank layouts are in serve_parallel_test.cpp.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>

#include "e2e/serve_client.h"
#include "e2e/serve_helpers.h"
#include "runtime/formats/checkpoint.h"

namespace strata {
namespace {
namespace json = boost::json;
using test::http;
using test::HttpResponse;

std::string tiny_model() { return test::tiny_model("serve"); }

std::vector<int32_t> prompt_ids(int i) {
  std::vector<int32_t> ids = {1};
  for (int k = 0; k < 3 + i % 5; ++k) ids.push_back(3 + (i * 37 + k * 11) % 500);
  return ids;
}

using test::completion_body;
using test::completion_text;
using test::ids_json;
using test::metric;

// What the server must answer: the text of `strata generate --print-ids` ids decoded the way a
// stream continues a prompt.
std::string expected_text(const std::vector<int32_t>& prompt, int n) {
  const std::vector<int32_t> ids = test::generated_ids(tiny_model(), prompt, n);
  EXPECT_EQ(static_cast<int>(ids.size()), n);
  return test::continuation_text(tiny_model(), prompt.back(), ids);
}

class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new test::ServerProcess("single", "", "serve --model " + tiny_model() + " --max-body-bytes 65536");
    ASSERT_TRUE(server_->wait_ready()) << server_->log();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static int port() { return server_->port(); }
  static test::ServerProcess* server_;
};
test::ServerProcess* Serve::server_ = nullptr;

TEST_F(Serve, HealthModelsAndMetrics) {
  EXPECT_EQ(http(port(), "GET", "/health").status, 200);
  const HttpResponse models = http(port(), "GET", "/v1/models");
  ASSERT_EQ(models.status, 200) << models.body;
  EXPECT_EQ(models.json().at("data").at(0).at("id").as_string(), "tiny");
  const HttpResponse m = http(port(), "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  for (const char* name : {"strata_requests_total", "strata_time_to_first_token_seconds_bucket",
                           "strata_time_per_output_token_seconds_bucket", "strata_e2e_request_latency_seconds_bucket",
                           "strata_batch_size_bucket", "strata_kv_blocks_used", "strata_kv_blocks_total",
                           "strata_memory_bytes{tier=\"device\"}", "strata_bytes_streamed_total",
                           "strata_prompt_tokens_total", "strata_generation_tokens_total"})
    EXPECT_NE(m.body.find(name), std::string::npos) << name << "\n" << m.body;
  EXPECT_GT(metric(port(), "strata_kv_blocks_total"), 0);
}

TEST_F(Serve, ConcurrentGreedyAnswersEqualTheSingleRequestAndGenerate) {
  const int kPrompts = 8, kTokens = 24, kClients = 32;
  std::vector<std::string> single(kPrompts);
  for (int i = 0; i < kPrompts; ++i) {
    const HttpResponse r = http(port(), "POST", "/v1/completions", completion_body(prompt_ids(i), kTokens, false));
    ASSERT_EQ(r.status, 200) << r.body;
    single[i] = completion_text(r, false);
  }
  for (int i : {0, 5}) EXPECT_EQ(single[i], expected_text(prompt_ids(i), kTokens)) << "prompt " << i;
  std::vector<std::string> got(kClients);
  std::vector<int> status(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      const bool stream = c % 2 == 1;
      const HttpResponse r = http(port(), "POST", "/v1/completions", completion_body(prompt_ids(c % kPrompts), kTokens, stream));
      status[c] = r.status;
      got[c] = completion_text(r, stream);
    });
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) {
    EXPECT_EQ(status[c], 200) << "client " << c;
    EXPECT_EQ(got[c], single[c % kPrompts]) << "client " << c << (c % 2 ? " (stream)" : "");
  }
}

TEST_F(Serve, StopStringsAreTrimmedAndChatWorks) {
  const auto ids = prompt_ids(3);
  const std::string full = completion_text(http(port(), "POST", "/v1/completions", completion_body(ids, 24, false)), false);
  ASSERT_GE(full.size(), 8u);
  const std::string stop = full.substr(4, 3);  // ends the text right before its first occurrence
  for (bool stream : {false, true}) {
    std::string finish;
    const HttpResponse r = http(port(), "POST", "/v1/completions",
                                completion_body(ids, 24, stream, ", \"stop\": " + json::serialize(json::value(stop))));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(completion_text(r, stream, &finish), full.substr(0, full.find(stop))) << stream;
    EXPECT_EQ(finish, "stop");
  }
  const HttpResponse chat = http(port(), "POST", "/v1/chat/completions",
                                 "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", "
                                 "\"content\": \"hi <s> [INST]\"}], \"max_tokens\": 5, \"temperature\": 0, \"logprobs\": true}");
  ASSERT_EQ(chat.status, 200) << chat.body;
  EXPECT_EQ(chat.json().at("choices").at(0).at("message").at("role").as_string(), "assistant");
  EXPECT_EQ(chat.json().at("choices").at(0).at("logprobs").at("content").as_array().size(), 5u);
  const HttpResponse chat_stream = http(port(), "POST", "/v1/chat/completions",
                                        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 5, "
                                        "\"temperature\": 0, \"stream\": true, \"stream_options\": {\"include_usage\": true}}");
  const auto events = chat_stream.events();
  ASSERT_GE(events.size(), 3u) << chat_stream.body;
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(json::parse(events[events.size() - 2]).at("usage").at("completion_tokens").as_int64(), 5);
}

struct Bad {
  const char* name;
  std::string method, path, body;
  int status;
  std::string param;  // expected "param" of the error ("" = null)
};

TEST_F(Serve, BadRequestsGetTheirStatusAndAnOpenAiError) {
  const std::vector<Bad> cases = {
      {"invalid json", "POST", "/v1/completions", "{\"prompt\": ", 400, ""},
      {"not an object", "POST", "/v1/completions", "[1, 2]", 400, ""},
      {"missing prompt", "POST", "/v1/completions", "{\"max_tokens\": 3}", 400, "prompt"},
      {"prompt type", "POST", "/v1/completions", "{\"prompt\": 5}", 400, "prompt"},
      {"temperature type", "POST", "/v1/completions", "{\"prompt\": \"a\", \"temperature\": \"hot\"}", 400, "temperature"},
      {"top_p range", "POST", "/v1/completions", "{\"prompt\": \"a\", \"top_p\": 2}", 400, "top_p"},
      {"max_tokens zero", "POST", "/v1/completions", "{\"prompt\": \"a\", \"max_tokens\": 0}", 400, "max_tokens"},
      {"beyond context", "POST", "/v1/completions", "{\"prompt\": [1, 2], \"max_tokens\": 100000}", 400, "max_tokens"},
      {"id outside vocab", "POST", "/v1/completions", "{\"prompt\": [1, 99999]}", 400, "prompt"},
      {"stop type", "POST", "/v1/completions", "{\"prompt\": \"a\", \"stop\": 3}", 400, "stop"},
      {"unsupported penalty", "POST", "/v1/completions", "{\"prompt\": \"a\", \"presence_penalty\": 1}", 400, "presence_penalty"},
      {"n > 1", "POST", "/v1/completions", "{\"prompt\": \"a\", \"n\": 2}", 400, "n"},
      {"bad role", "POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"robot\", \"content\": \"a\"}]}", 400,
       "messages[0].role"},
      {"no messages", "POST", "/v1/chat/completions", "{\"messages\": []}", 400, "messages"},
      {"unknown model", "POST", "/v1/completions", "{\"model\": \"gpt-9\", \"prompt\": \"a\"}", 404, "model"},
      {"unknown route", "GET", "/v2/nothing", "", 404, ""},
      {"wrong method", "GET", "/v1/completions", "", 405, ""},
      {"wrong method 2", "POST", "/health", "{}", 405, ""},
      {"oversized body", "POST", "/v1/completions", "{\"prompt\": \"" + std::string(70000, 'a') + "\"}", 413, ""},
  };
  for (const Bad& b : cases) {
    const HttpResponse r = http(port(), b.method, b.path, b.body);
    EXPECT_EQ(r.status, b.status) << b.name << ": " << r.body;
    const json::value v = r.json();
    ASSERT_TRUE(v.is_object() && v.as_object().contains("error")) << b.name << ": " << r.body;
    const auto& e = v.at("error");
    EXPECT_FALSE(e.at("message").as_string().empty()) << b.name;
    EXPECT_TRUE(e.as_object().contains("type") && e.as_object().contains("code")) << b.name;
    if (b.param.empty()) EXPECT_TRUE(e.at("param").is_null()) << b.name << ": " << r.body;
    else EXPECT_EQ(e.at("param"), json::value(b.param)) << b.name << ": " << r.body;
  }
  EXPECT_EQ(http(port(), "GET", "/health").status, 200);
}

TEST_F(Serve, MalformedHttpGetsA400AndTheServerKeepsServing) {
  EXPECT_EQ(test::raw_exchange(port(), "\x16\x03\x01 garbage \xff\xfe\r\n\r\n").status, 400);
  EXPECT_EQ(test::raw_exchange(port(), "POST /v1/completions HTTP/1.1\r\nContent-Length: zz\r\n\r\n").status, 400);
  // Truncated: the body is shorter than Content-Length and the client stops sending.
  {
    const int fd = test::connect_to(port());
    test::send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"prompt\"");
    shutdown(fd, SHUT_WR);
    const HttpResponse r = test::parse_response(test::read_all(fd));
    close(fd);
    EXPECT_TRUE(r.status == 400 || r.status == 0) << r.status;
  }
  // A request that stops mid-header and a connection that says nothing are both just closed.
  {
    const int fd = test::connect_to(port());
    test::send_all(fd, "GET /heal");
    close(fd);
    close(test::connect_to(port()));
  }
  EXPECT_EQ(http(port(), "GET", "/health").status, 200);
  const HttpResponse ok = http(port(), "POST", "/v1/completions", completion_body(prompt_ids(1), 4, false));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST_F(Serve, ClientThatDisconnectsMidStreamIsCancelledAndItsBlocksFreed) {
  EXPECT_EQ(metric(port(), "strata_kv_blocks_used"), 0);
  const double generated_before = metric(port(), "strata_generation_tokens_total");
  const int fd = test::connect_to(port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(test::send_all(fd, test::request_bytes("POST", "/v1/completions", completion_body(prompt_ids(2), 1000, true))));
  std::string got;
  char buf[4096];
  while (got.find("data: ") == std::string::npos || std::count(got.begin(), got.end(), '\n') < 12) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  // The cancellation frees the blocks: back to the idle level, and the request counted as 499.
  double used = -1;
  for (int i = 0; i < 100; ++i) {
    used = metric(port(), "strata_kv_blocks_used");
    if (used == 0 && metric(port(), "strata_requests_running") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(used, 0);
  EXPECT_NE(http(port(), "GET", "/metrics").body.find("status=\"499\"} 1"), std::string::npos);
  // Cancelled well before its 1000 tokens.
  EXPECT_LT(metric(port(), "strata_generation_tokens_total") - generated_before, 1000);
}

TEST_F(Serve, SoakOfHundredsOfRequestsLosesNone) {
  const int kRequests = 300, kClients = 8;
  std::atomic<int> next{0}, ok{0};
  std::mutex mutex;
  std::map<int, std::string> failures;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&] {
      for (int i = next++; i < kRequests; i = next++) {
        const bool stream = i % 3 == 0;
        const HttpResponse r = http(port(), "POST", "/v1/completions", completion_body(prompt_ids(i), 3 + i % 5, stream));
        std::string finish;
        completion_text(r, stream, &finish);
        if (r.status == 200 && finish == "length") ++ok;
        else {
          std::lock_guard<std::mutex> lock(mutex);
          failures[i] = std::to_string(r.status) + " " + r.body.substr(0, 200);
        }
      }
    });
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kRequests) << (failures.empty() ? "" : failures.begin()->second);
}

TEST(ServeLimits, FullQueueAnswers503WithRetryAfter) {
  test::ServerProcess server("queue", "", "serve --model " + tiny_model() + " --max-seqs 1 --max-queue 1");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const int kClients = 8;
  std::vector<HttpResponse> responses(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      responses[c] = http(server.port(), "POST", "/v1/completions", completion_body(prompt_ids(c), 200, false));
    });
  for (auto& t : clients) t.join();
  int ok = 0, full = 0;
  for (const HttpResponse& r : responses) {
    if (r.status == 200) ++ok;
    if (r.status == 503) {
      ++full;
      EXPECT_EQ(r.header("Retry-After"), "1");
      EXPECT_EQ(r.json().at("error").at("code").as_string(), "queue_full") << r.body;
    }
  }
  EXPECT_EQ(ok + full, kClients);
  EXPECT_GE(ok, 1);
  EXPECT_GE(full, 1);
}

TEST(ServeShutdown, SigtermAnswersEveryRequestInFlightAndExitsZero) {
  test::ServerProcess server("sigterm", "", "serve --model " + tiny_model());
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const int kClients = 8;
  std::vector<HttpResponse> responses(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      responses[c] = http(server.port(), "POST", "/v1/completions", completion_body(prompt_ids(c), 300, c % 2 == 1));
    });
  // Signal once every request is running.
  for (int i = 0; i < 200 && metric(server.port(), "strata_requests_running") < kClients; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  server.signal(SIGTERM);
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) {
    std::string finish;
    EXPECT_EQ(responses[c].status, 200) << c << ": " << responses[c].body.substr(0, 300);
    completion_text(responses[c], c % 2 == 1, &finish);
    EXPECT_EQ(finish, "length") << c;
  }
  EXPECT_EQ(server.wait_exit(30), 0) << server.log();
  EXPECT_NE(server.log().find("shut down cleanly"), std::string::npos) << server.log();
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// --kv-budget sizes the KV cache: a size gives floor(size / block bytes) blocks, the block bytes computed
// here from the model's shape (K and V of every layer and KV head, f32 on the CPU backend, 16 tokens); a
// budget too small for one block is refused with the flag named.
TEST(ServeKvBudget, SizesTheCacheFromTheBudget) {
  const auto checkpoint = open_checkpoint(tiny_model());
  const ModelConfig& c = checkpoint->config();
  const int64_t block_bytes = 2 * c.n_layers * c.n_kv_heads * c.head_dim * 4 * 16;
  const int64_t budget = 3 * 1024 * 1024 + 12345;
  test::ServerProcess server("kv-budget", "", "serve --model " + tiny_model() + " --kv-budget " + std::to_string(budget) + "B");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  EXPECT_EQ(metric(server.port(), "strata_kv_blocks_total"), static_cast<double>(budget / block_bytes)) << server.log();
  const HttpResponse r = http(server.port(), "POST", "/v1/completions", completion_body(prompt_ids(0), 8, false));
  EXPECT_EQ(r.status, 200) << r.body;

  const auto tiny = test::run_command(test::strata_binary() + " serve --model " + tiny_model() + " --port 0 --kv-budget " +
                                      std::to_string(block_bytes - 1) + "B");
  EXPECT_NE(tiny.exit_code, 0);
  EXPECT_NE(tiny.output.find("--kv-budget"), std::string::npos) << tiny.output;
  EXPECT_NE(tiny.output.find("no KV block"), std::string::npos) << tiny.output;
}

// --kv-cache-dtype fp8 counts the cache's real bytes: rows of head_dim e4m3 codes and a 4-byte scale, so the
// same budget holds 2 x head_dim / (head_dim + 4) times the blocks of bf16 (head_dim 8 here: 4/3; ~1.94 at
// 128, kv_cache_test). /metrics shows the blocks; an unknown dtype is refused with the flag named.
TEST(ServeKvBudget, Fp8CacheHoldsTheBlocksItsRowBytesAllow) {
  const auto checkpoint = open_checkpoint(tiny_model());
  const ModelConfig& c = checkpoint->config();
  const int64_t rows_per_block = 2 * c.n_layers * c.n_kv_heads * 16;
  const int64_t budget = 3 * 1024 * 1024 + 12345;
  std::map<std::string, double> blocks;
  for (const std::string dtype : {"bf16", "fp8"}) {
    test::ServerProcess server("kv-budget-" + dtype, "", "serve --model " + tiny_model() + " --kv-budget " +
                                                             std::to_string(budget) + "B --kv-cache-dtype " + dtype);
    ASSERT_TRUE(server.wait_ready()) << server.log();
    blocks[dtype] = metric(server.port(), "strata_kv_blocks_total");
    const HttpResponse r = http(server.port(), "POST", "/v1/completions", completion_body(prompt_ids(1), 8, false));
    EXPECT_EQ(r.status, 200) << r.body;
  }
  EXPECT_EQ(blocks["bf16"], static_cast<double>(budget / (rows_per_block * c.head_dim * 2)));
  EXPECT_EQ(blocks["fp8"], static_cast<double>(budget / (rows_per_block * (c.head_dim + 4))));
  EXPECT_GT(blocks["fp8"], blocks["bf16"]);

  const auto bad = test::run_command(test::strata_binary() + " serve --model " + tiny_model() +
                                     " --port 0 --kv-cache-dtype int4");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--kv-cache-dtype 'int4' is not a KV cache dtype"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace strata
