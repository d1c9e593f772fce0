// tests/e2e/serve_parallel_test.cpp: `mpirun -np 2 strata serve --plan` with tensor and pipeline
// parallelism (both pipeline schedules): concurrent greedy answers (streamed and not) equal the single-rank `strata generate`
// ids, and SIGTERM to the serving rank answers every request in flight and ends every rank with 0. SIGTERM to
// mpirun itself (what Kubernetes sends a pod whose PID 1 is mpirun, and Slurm a job step) drains too when
// Open MPI's SIGKILL grace (odls_base_sigkill_timeout, 1 s by default) exceeds --drain-timeout, as the
// examples set it.
#include <gtest/gtest.h>

#include <cstdlib>

#include "e2e/serve_client.h"
#include "e2e/serve_helpers.h"
#include "runtime/formats/checkpoint.h"

namespace strata {
namespace {
using test::http;
using test::HttpResponse;

std::string tiny_model() { return test::tiny_model("serve_parallel"); }

std::vector<int32_t> prompt(int i) {
  std::vector<int32_t> ids = {1};
  for (int k = 0; k < 2 + i * 3; ++k) ids.push_back(5 + (i * 53 + k * 17) % 500);
  return ids;
}

std::string body(int i, int max_tokens, bool stream) { return test::completion_body(prompt(i), max_tokens, stream); }

// What the server must answer: single-rank `strata generate --print-ids`, decoded as the server streams.
std::string reference(int i, int n) { return test::expected_text(tiny_model(), prompt(i), n); }

class ServeParallel : public ::testing::TestWithParam<const char*> {};

TEST_P(ServeParallel, ConcurrentAnswersEqualSingleRankAndSigtermDrains) {
  const std::string plan = test::temp_dir("serve_parallel") + "/" + GetParam() + ".yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  // serve.kv_budget sizes every rank's cache; the ranks agree on the smallest block count. Each rank
  // here holds half the K/V bytes per token (half the KV heads with TP2, half the layers with PP2).
  const int64_t budget = 1 << 20;
  const std::string layout = GetParam();
  const bool interleaved = layout == "interleaved";  // the pipeline with parallel.schedule: interleaved
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  %s: 2\n%sserve:\n  kv_budget: %lldB\n", tiny_model().c_str(),
               interleaved ? "pipeline" : layout.c_str(), interleaved ? "  schedule: interleaved\n" : "",
               static_cast<long long>(budget));
  std::fclose(f);
  test::ServerProcess server(GetParam(), test::mpirun(2), "serve --plan " + plan);
  ASSERT_TRUE(server.wait_ready()) << server.log();
  ASSERT_GT(server.server_pid(), 0) << server.log();
  {
    const ModelConfig& c = open_checkpoint(tiny_model())->config();
    ASSERT_EQ(c.n_kv_heads % 2, 0);
    ASSERT_EQ(c.n_layers % 2, 0);
    const int64_t block_bytes = 2 * c.n_layers * c.n_kv_heads * c.head_dim * 4 * 16 / 2;  // f32 on CPU, 16 tokens
    const std::string metrics = http(server.port(), "GET", "/metrics").body;
    const auto at = metrics.find("\nstrata_kv_blocks_total ");
    ASSERT_NE(at, std::string::npos) << metrics;
    EXPECT_EQ(std::atoll(metrics.c_str() + at + 24), budget / block_bytes) << server.log();
  }

  const int kPrompts = 4, kTokens = 16, kClients = 16;
  std::vector<std::string> expected(kPrompts);
  for (int i = 0; i < kPrompts; ++i) expected[i] = reference(i, kTokens);
  std::vector<std::string> got(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] { got[c] = test::completion_text(http(server.port(), "POST", "/v1/completions", body(c % kPrompts, kTokens, c % 2)), c % 2); });
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(got[c], expected[c % kPrompts]) << "client " << c;

  // Graceful stop: signal the serving rank (mpirun's own SIGTERM kills ranks after 1 s).
  std::vector<HttpResponse> late(6);
  clients.clear();
  for (int c = 0; c < 6; ++c)
    clients.emplace_back([&, c] { late[c] = http(server.port(), "POST", "/v1/completions", body(c % kPrompts, 200, c % 2)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  kill(server.server_pid(), SIGTERM);
  for (auto& t : clients) t.join();
  for (int c = 0; c < 6; ++c) {
    // Accepted before the signal: a full answer; after it: 503. Never nothing.
    EXPECT_TRUE(late[c].status == 200 || late[c].status == 503) << c << ": " << late[c].status << " " << late[c].body;
    if (late[c].status == 200) {
      EXPECT_EQ(test::completion_text(late[c], c % 2).substr(0, 4), expected[c % kPrompts].substr(0, 4)) << c;
    }
  }
  EXPECT_EQ(server.wait_exit(60), 0) << server.log();
  EXPECT_NE(server.log().find("shut down cleanly"), std::string::npos) << server.log();
}

TEST(ServeParallelMpirun, SigtermToMpirunAnswersEveryRequestInFlight) {
  const std::string plan = test::temp_dir("serve_parallel") + "/mpirun_drain.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  tensor: 2\n", tiny_model().c_str());
  std::fclose(f);
  // Open MPI forwards SIGTERM to every rank and SIGKILLs them after the grace: the serving rank drains
  // within --drain-timeout, then ends the other ranks' engines, all inside the grace.
  test::ServerProcess server("mpirun_drain", "mpirun --oversubscribe -np 2 --mca odls_base_sigkill_timeout 10 ",
                             "serve --plan " + plan + " --drain-timeout 8");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const int kClients = 6, kTokens = 200;
  std::vector<std::string> expected(kClients);
  for (int c = 0; c < kClients; ++c) expected[c] = reference(c % 4, kTokens);
  std::vector<HttpResponse> got(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] { got[c] = http(server.port(), "POST", "/v1/completions", body(c % 4, kTokens, c % 2)); });
  // Signal once the engine holds every request (running or waiting), so each must be answered in full.
  auto gauge = [](const std::string& metrics, const std::string& name) {
    const auto at = metrics.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::atoi(metrics.c_str() + at + name.size() + 2);
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string metrics = http(server.port(), "GET", "/metrics").body;
    if (gauge(metrics, "strata_requests_running") + gauge(metrics, "strata_requests_waiting") >= kClients) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  server.signal(SIGTERM);  // to mpirun, not to the serving rank
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) {
    // Accepted before the signal: the whole answer; after it: 503. Never a cut connection.
    ASSERT_TRUE(got[c].status == 200 || got[c].status == 503) << c << ": " << got[c].status << " " << got[c].body
                                                               << server.log();
    if (got[c].status == 200) {
      EXPECT_EQ(test::completion_text(got[c], c % 2), expected[c]) << c;
    }
  }
  server.wait_exit(90);
  EXPECT_NE(server.log().find("shut down cleanly"), std::string::npos) << server.log();
}

INSTANTIATE_TEST_SUITE_P(Layouts, ServeParallel, ::testing::Values("tensor", "pipeline", "interleaved"));

}  // namespace
}  // namespace strata
