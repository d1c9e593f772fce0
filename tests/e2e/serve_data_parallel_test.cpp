// tests/e2e/serve_data_parallel_test.cpp: `mpirun strata serve --plan` with two data-parallel
// replicas (DP2 on 2 ranks, DP2 x TP2 on 4): 32 concurrent greedy answers (streamed and not) equal the
// single-rank `strata generate` ids and both replicas got requests; a client that leaves mid-stream on
// the remote replica has its request cancelled there and its KV blocks freed; SIGTERM to the serving
// rank answers every request in flight on both replicas and ends every rank with 0.
#include <gtest/gtest.h>

#include "e2e/serve_client.h"
#include "e2e/serve_helpers.h"

namespace strata {
namespace {
using test::http;
using test::HttpResponse;

std::string tiny_model() { return test::tiny_model("serve_dp"); }

std::vector<int32_t> prompt(int i) {
  std::vector<int32_t> ids = {1};
  for (int k = 0; k < 2 + i * 3; ++k) ids.push_back(7 + (i * 41 + k * 13) % 500);
  return ids;
}

std::string body(int i, int max_tokens, bool stream) { return test::completion_body(prompt(i), max_tokens, stream); }

// What the server must answer: single-rank `strata generate --print-ids`, decoded as the server streams.
std::string reference(int i, int n) { return test::expected_text(tiny_model(), prompt(i), n); }

using test::metric;
std::string of_replica(const std::string& name, int replica) {
  return name + "{replica=\"" + std::to_string(replica) + "\"}";
}

// Polls until `done` or about 10 s.
template <typename F>
bool eventually(F done) {
  for (int i = 0; i < 200; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

struct Layout {
  const char* name;
  int ranks;
  const char* parallel;  // the plan's parallel: section
};

void PrintTo(const Layout& layout, std::ostream* os) { *os << layout.name; }

class ServeDataParallel : public ::testing::TestWithParam<Layout> {};

TEST_P(ServeDataParallel, RoutesToBothReplicasCancelsRemotelyAndDrainsOnSigterm) {
  const Layout layout = GetParam();
  const std::string plan = test::temp_dir("serve_dp") + "/" + layout.name + ".yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s\nparallel:\n%scomm:\n  timeout_s: 60\n", tiny_model().c_str(), layout.parallel);
  std::fclose(f);
  test::ServerProcess server(layout.name, test::mpirun(layout.ranks), "serve --plan " + plan);
  ASSERT_TRUE(server.wait_ready()) << server.log();
  ASSERT_GT(server.server_pid(), 0) << server.log();
  const int port = server.port();
  const std::string routed0 = of_replica("strata_replica_requests_total", 0);
  const std::string routed1 = of_replica("strata_replica_requests_total", 1);

  // 1. Concurrent clients: answers equal the single-rank run, and both replicas served some.
  const int kPrompts = 4, kTokens = 16, kClients = 32;
  std::vector<std::string> expected(kPrompts);
  for (int i = 0; i < kPrompts; ++i) expected[i] = reference(i, kTokens);
  std::vector<std::string> got(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] { got[c] = test::completion_text(http(port, "POST", "/v1/completions", body(c % kPrompts, kTokens, c % 2)), c % 2); });
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(got[c], expected[c % kPrompts]) << "client " << c;
  EXPECT_GT(metric(port, routed0), 0);
  EXPECT_GT(metric(port, routed1), 0);
  EXPECT_EQ(metric(port, routed0) + metric(port, routed1), kClients);

  // 2. A client leaving mid-stream on replica 1. A long request keeps replica 0 loaded, so the
  // stream goes to the less loaded replica 1.
  ASSERT_TRUE(eventually([&] { return metric(port, of_replica("strata_replica_requests_in_flight", 0)) == 0 &&
                                      metric(port, of_replica("strata_replica_requests_in_flight", 1)) == 0; }));
  const double to_replica1 = metric(port, routed1);
  const double cancelled1 = metric(port, of_replica("strata_replica_requests_cancelled_total", 1));
  HttpResponse blocker_answer;
  std::thread blocker([&] { blocker_answer = http(port, "POST", "/v1/completions", body(1, 1000, false)); });
  ASSERT_TRUE(eventually([&] { return metric(port, of_replica("strata_replica_requests_in_flight", 0)) == 1; }));
  const int fd = test::connect_to(port);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(test::send_all(fd, test::request_bytes("POST", "/v1/completions", body(2, 900, true))));
  std::string streamed;
  char buf[4096];
  while (std::count(streamed.begin(), streamed.end(), '\n') < 12) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    ASSERT_GT(n, 0) << streamed;
    streamed.append(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(metric(port, routed1), to_replica1 + 1);
  close(fd);
  EXPECT_TRUE(eventually([&] {
    return metric(port, of_replica("strata_replica_requests_cancelled_total", 1)) == cancelled1 + 1 &&
           metric(port, of_replica("strata_replica_kv_blocks_used", 1)) == 0 &&
           metric(port, of_replica("strata_replica_requests_running", 1)) == 0;
  })) << http(port, "GET", "/metrics").body;
  EXPECT_NE(http(port, "GET", "/metrics").body.find("status=\"499\"} 1"), std::string::npos);
  blocker.join();
  std::string finish;
  test::completion_text(blocker_answer, false, &finish);
  EXPECT_EQ(finish, "length") << blocker_answer.body.substr(0, 300);

  // 3. SIGTERM to the serving rank once both replicas run requests: every one is answered in full.
  const int kLate = 8;
  std::vector<HttpResponse> late(kLate);
  clients.clear();
  for (int c = 0; c < kLate; ++c)
    clients.emplace_back([&, c] { late[c] = http(port, "POST", "/v1/completions", body(c % kPrompts, 800, c % 2)); });
  EXPECT_TRUE(eventually([&] {
    return metric(port, of_replica("strata_replica_requests_in_flight", 0)) +
               metric(port, of_replica("strata_replica_requests_in_flight", 1)) == kLate;
  }));
  EXPECT_GT(metric(port, of_replica("strata_replica_requests_in_flight", 1)), 0);
  kill(server.server_pid(), SIGTERM);
  for (auto& t : clients) t.join();
  for (int c = 0; c < kLate; ++c) {
    std::string reason;
    EXPECT_EQ(late[c].status, 200) << c << ": " << late[c].body.substr(0, 300);
    const std::string text = test::completion_text(late[c], c % 2, &reason);
    EXPECT_EQ(reason, "length") << c << ": " << text.substr(0, 200);
    // The 16-token reference, less its tail (a flush mid-character may render differently).
    const std::string& head = expected[c % kPrompts];
    EXPECT_EQ(text.substr(0, head.size() / 2), head.substr(0, head.size() / 2)) << c;
  }
  EXPECT_EQ(server.wait_exit(60), 0) << server.log();
  EXPECT_NE(server.log().find("shut down cleanly"), std::string::npos) << server.log();
}

INSTANTIATE_TEST_SUITE_P(Layouts, ServeDataParallel,
                         ::testing::Values(Layout{"dp2", 2, "  data: 2\n"},
                                           Layout{"dp2_tp2", 4, "  data: 2\n  tensor: 2\n"}),
                         [](const ::testing::TestParamInfo<Layout>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace strata
