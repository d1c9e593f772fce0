// tests/e2e/serve_data_parallel_test.cpp: `mpirun strata serve --plan` with two data-parallel
// replicas (DP2 on 2 ranks, DP2 x TP2 on 4): 32 concurrent greedy answers (streamed and not) equal the
// single-rank `strata generate` ids and both replicas got requests; a client that leaves mid-stream on
// the remote replica has its request cancelled there and its KV blocks freed; SIGTERM to the serving
// rank answers every request in flight on both replicas and ends every rank with 0.
#include <gtest/gtest.h>

#include "e2e/serve_client.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace strata {
namespace {
namespace json = boost::json;
using test::http;
using test::HttpResponse;

std::string tiny_model() {
  static const std::string dir = [] {
    const std::string d = test::temp_dir("serve_dp") + "/tiny";
    const auto r = test::run_command(test::strata_binary() + " make-model --preset tiny --out " + d);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return d;
  }();
  return dir;
}

std::vector<int32_t> prompt(int i) {
  std::vector<int32_t> ids = {1};
  for (int k = 0; k < 2 + i * 3; ++k) ids.push_back(7 + (i * 41 + k * 13) % 500);
  return ids;
}

std::string body(int i, int max_tokens, bool stream) {
  json::array a;
  for (int32_t id : prompt(i)) a.push_back(id);
  return "{\"prompt\": " + json::serialize(a) + ", \"max_tokens\": " + std::to_string(max_tokens) +
         ", \"ignore_eos\": true, \"stream\": " + (stream ? "true" : "false") + "}";
}

// The completion text, and its finish reason in `finish`; "<...>" when the answer is malformed.
std::string text_of(const HttpResponse& r, bool stream, std::string* finish = nullptr) {
  if (!stream) {
    const json::value v = r.json();
    if (!v.is_object() || !v.as_object().contains("choices")) return "<" + r.body + ">";
    const auto& c = v.at("choices").at(0);
    if (finish != nullptr) *finish = json::value_to<std::string>(c.at("finish_reason"));
    return json::value_to<std::string>(c.at("text"));
  }
  const auto events = r.events();
  if (events.empty() || events.back() != "[DONE]") return "<no [DONE]: " + r.body + ">";
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json::value v = json::parse(events[i]);
    if (!v.as_object().contains("choices")) return "<" + events[i] + ">";
    const auto& c = v.at("choices").at(0);
    text += json::value_to<std::string>(c.at("text"));
    if (finish != nullptr && !c.at("finish_reason").is_null()) *finish = json::value_to<std::string>(c.at("finish_reason"));
  }
  return text;
}

// Single-rank `strata generate --print-ids`, decoded the way the server streams a continuation.
std::string reference(int i, int n) {
  std::string ids_arg;
  for (int32_t id : prompt(i)) ids_arg += std::to_string(id) + " ";
  const auto r = test::run_command(test::strata_binary() + " generate --model " + tiny_model() + " --prompt-ids '" +
                                   ids_arg + "' -n " + std::to_string(n) + " --ignore-eos --print-ids --quiet");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::istringstream in(r.output.substr(r.output.find("ids:") + 4));
  static const auto tokenizer = Tokenizer::create(*open_checkpoint(tiny_model())->tokenizer());
  TokenStreamDecoder decoder(*tokenizer);
  decoder.set_previous(prompt(i).back());
  std::string text;
  int count = 0;
  for (int32_t id; count < n && in >> id; ++count) text += decoder.push(id);
  return unicode::sanitize(text + decoder.flush());
}

// A sample of /metrics by name, labels included ("strata_replica_requests_total{replica=\"1\"}").
double metric(int port, const std::string& name) {
  const std::string text = http(port, "GET", "/metrics").body;
  const auto p = text.find("\n" + name + " ");
  return p == std::string::npos ? -1 : std::atof(text.c_str() + p + name.size() + 2);
}
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
    clients.emplace_back([&, c] { got[c] = text_of(http(port, "POST", "/v1/completions", body(c % kPrompts, kTokens, c % 2)), c % 2); });
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
  text_of(blocker_answer, false, &finish);
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
    const std::string text = text_of(late[c], c % 2, &reason);
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
