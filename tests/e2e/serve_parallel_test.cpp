// tests/e2e/serve_parallel_test.cpp: `mpirun -np 2 strata serve --plan` with tensor and pipeline
// parallelism (both pipeline schedules): concurrent greedy answers (streamed and not) equal the single-rank `strata generate`
// ids, and SIGTERM to the serving rank answers every request in flight and ends every rank with 0. SIGTERM to
// mpirun itself (what Kubernetes sends a pod whose PID 1 is mpirun, and Slurm a job step) drains too when
// Open MPI's SIGKILL grace (odls_base_sigkill_timeout, 1 s by default) exceeds --drain-timeout, as the
// examples set it. A rank killed mid-stream under mpirun ends every stream with an error event, not a cut.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

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
  test::ServerProcess server("mpirun_drain", "mpirun --oversubscribe -np 2 --mca odls_base_sigkill_timeout 8 ",
                             "serve --plan " + plan + " --drain-timeout 5");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const int kClients = 6, kTokens = 64;
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
  // The ranks end inside the grace; mpirun itself lingers for it (the destructor ends it).
  const auto deadline_exit = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (server.log().find("shut down cleanly") == std::string::npos && std::chrono::steady_clock::now() < deadline_exit)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_NE(server.log().find("shut down cleanly"), std::string::npos) << server.log();
}

// The ranks mpirun started (its children) other than the serving one.
std::vector<pid_t> other_ranks(pid_t mpirun, pid_t server) {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const auto close = line.rfind(')');  // "pid (comm) state ppid ..."
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) != 2) continue;
    const pid_t pid = std::atoi(name.c_str());
    if (ppid == mpirun && pid != server) out.push_back(pid);
  }
  return out;
}

TEST(ServeParallelMpirun, ARankKilledMidStreamEndsEveryStreamWithAnErrorEvent) {
  const std::string plan = test::temp_dir("serve_parallel") + "/rank_death.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  tensor: 2\n", tiny_model().c_str());
  std::fclose(f);
  // mpirun SIGTERMs the surviving rank when one dies; the serving rank's engine is stuck in a collective
  // with the dead one, so after --stall-timeout (2 s) without a step it answers from the HTTP side.
  test::ServerProcess server("rank_death", "mpirun --oversubscribe -np 2 --mca odls_base_sigkill_timeout 8 ",
                             "serve --plan " + plan + " --drain-timeout 5 --stall-timeout 2");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const int kClients = 4;
  std::vector<HttpResponse> got(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] { got[c] = http(server.port(), "POST", "/v1/completions", body(c, 900, true)); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {  // kill once every request runs
    const std::string metrics = http(server.port(), "GET", "/metrics").body;
    const auto at = metrics.find("\nstrata_requests_running ");
    if (at != std::string::npos && std::atoi(metrics.c_str() + at + 25) >= kClients) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const std::vector<pid_t> ranks = other_ranks(server.pid(), server.server_pid());
  ASSERT_EQ(ranks.size(), 1u) << server.log();
  kill(ranks[0], SIGKILL);
  for (auto& t : clients) t.join();
  int errors = 0;
  for (int c = 0; c < kClients; ++c) {
    ASSERT_EQ(got[c].status, 200) << c << ": " << got[c].body << server.log();
    // Every stream ends: with its last token (finished before the kill) or an error event, then [DONE].
    EXPECT_NE(got[c].body.rfind("data: [DONE]"), std::string::npos) << c << ": " << got[c].body.substr(0, 400);
    if (got[c].body.find("\"error\"") != std::string::npos) ++errors;
  }
  EXPECT_GT(errors, 0) << "every request finished before the kill: the test did not test anything";
}

INSTANTIATE_TEST_SUITE_P(Layouts, ServeParallel, ::testing::Values("tensor", "pipeline", "interleaved"));

}  // namespace
}  // namespace strata
