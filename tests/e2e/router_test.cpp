// tests/e2e/router_test.cpp: `strata router` over two `strata serve` replicas on loopback, with faults
// injected as a cluster produces them: a replica killed (kill -9) under load and one hung (SIGSTOP).
// Non-streamed greedy requests never fail and equal the single-rank `strata generate` answer; a dead or
// hung replica leaves rotation and a resumed one comes back; /metrics counts retries and ejections.
// No timing is asserted: waits are bounded only so a broken router fails instead of hanging.
#include <gtest/gtest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "e2e/serve_client.h"
#include "e2e/serve_helpers.h"
#include "runtime/error.h"

namespace strata {
namespace {
using test::http;
using test::HttpResponse;

std::string tiny_model() { return test::tiny_model("router"); }

std::vector<int32_t> prompt_ids(int i) {
  std::vector<int32_t> ids = {1};
  for (int k = 0; k < 4 + i % 3; ++k) ids.push_back(5 + (i * 29 + k * 13) % 500);
  return ids;
}

constexpr int kPrompts = 4, kTokens = 32;

// Polls the router's /metrics until `sample` reaches `value`; false after `limit_s` (liveness only).
bool wait_for_metric(int port, const std::string& sample, double value, int limit_s = 60) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(limit_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (test::metric(port, sample) == value) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

class Router : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (int i = 0; i < kPrompts; ++i) expected_[i] = test::expected_text(tiny_model(), prompt_ids(i), kTokens);
    for (int i = 0; i < 2; ++i) {
      replicas_[i] = new test::ServerProcess(cat("replica", i), "", "serve --model " + tiny_model());
      ASSERT_TRUE(replicas_[i]->wait_ready()) << replicas_[i]->log();
    }
    router_ = new test::ServerProcess("router", "",
                                      cat("router --replica http://127.0.0.1:", replicas_[0]->port(),
                                          " --replica http://127.0.0.1:", replicas_[1]->port(),
                                          " --health-interval 0.2 --health-timeout 0.5"));
    ASSERT_TRUE(router_->wait_ready()) << router_->log();
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(wait_for_metric(router_->port(), healthy(i), 1)) << router_->log();
  }
  static void TearDownTestSuite() {
    delete router_;
    for (auto*& r : replicas_) delete r, r = nullptr;
    router_ = nullptr;
  }
  static std::string healthy(int i) {
    return cat("strata_router_replica_healthy{replica=\"http://127.0.0.1:", replicas_[i]->port(), "\"}");
  }
  // `clients` threads each send `per_client` greedy requests through the router; returns how many
  // failed or differed from the single-rank answer (each mismatch is reported).
  static int load(int clients, int per_client, const std::function<void()>& midway = {}) {
    std::atomic<int> bad{0}, sent{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c)
      threads.emplace_back([&, c] {
        for (int k = 0; k < per_client; ++k) {
          const int i = (c + k) % kPrompts;
          ++sent;
          const HttpResponse r =
              http(router_->port(), "POST", "/v1/completions", test::completion_body(prompt_ids(i), kTokens, false));
          const std::string text = r.status == 200 ? test::completion_text(r, false) : "";
          if (r.status != 200 || text != expected_[i]) {
            ++bad;
            ADD_FAILURE() << "status " << r.status << ": " << r.body << "\nexpected: " << expected_[i];
          }
        }
      });
    if (midway) {
      while (sent.load() < clients * per_client / 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      midway();
    }
    for (auto& t : threads) t.join();
    return bad.load();
  }
  static test::ServerProcess* replicas_[2];
  static test::ServerProcess* router_;
  static std::string expected_[kPrompts];
};
test::ServerProcess* Router::replicas_[2] = {nullptr, nullptr};
test::ServerProcess* Router::router_ = nullptr;
std::string Router::expected_[kPrompts];

// Runs first (gtest keeps file order): both replicas up.
TEST_F(Router, RelaysAndStreamsLikeAReplica) {
  EXPECT_EQ(http(router_->port(), "GET", "/health").status, 200);
  EXPECT_EQ(load(4, 4), 0);
  const HttpResponse s =
      http(router_->port(), "POST", "/v1/completions", test::completion_body(prompt_ids(1), kTokens, true));
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(test::completion_text(s, true), expected_[1]);
  const HttpResponse models = http(router_->port(), "GET", "/v1/models");
  ASSERT_EQ(models.status, 200) << models.body;
  EXPECT_EQ(models.json().at("data").at(0).at("id").as_string(), "tiny");
  // The replicas' own counters, summed: both served some of the 17 requests.
  EXPECT_GE(test::metric(router_->port(), "strata_requests_total{route=\"/v1/completions\",status=\"200\"}"), 17);
  EXPECT_EQ(http(router_->port(), "GET", "/nope").status, 404);
}

// Two versions of a model behind one name (a canary): requests split by the route's weights.
TEST_F(Router, WeightedVersionsSplitByWeight) {
  const std::string v1 = cat("http://127.0.0.1:", replicas_[0]->port()), v2 = cat("http://127.0.0.1:", replicas_[1]->port());
  test::ServerProcess canary("canary", "",
                             cat("router --replica v1=", v1, " --replica v2=", v2,
                                 " --route chat=v1:3,v2:1 --health-interval 0.2"));
  ASSERT_TRUE(canary.wait_ready()) << canary.log();
  for (const std::string& url : std::vector<std::string>{v1, v2})
    ASSERT_TRUE(wait_for_metric(canary.port(), cat("strata_router_replica_healthy{replica=\"", url, "\"}"), 1));
  for (int i = 0; i < 8; ++i) {
    const HttpResponse r = http(canary.port(), "POST", "/v1/completions",
                                test::completion_body(prompt_ids(i), 4, false, ", \"model\": \"chat\""));
    ASSERT_EQ(r.status, 200) << r.body;
  }
  EXPECT_EQ(test::metric(canary.port(), cat("strata_router_replica_requests_total{replica=\"", v1, "\"}")), 6);
  EXPECT_EQ(test::metric(canary.port(), cat("strata_router_replica_requests_total{replica=\"", v2, "\"}")), 2);
  // A version named directly goes to that version only.
  const HttpResponse direct = http(canary.port(), "POST", "/v1/completions",
                                   test::completion_body(prompt_ids(0), 4, false, ", \"model\": \"v2\""));
  ASSERT_EQ(direct.status, 200) << direct.body;
  EXPECT_EQ(test::metric(canary.port(), cat("strata_router_replica_requests_total{replica=\"", v2, "\"}")), 3);
}

TEST_F(Router, HungReplicaLeavesRotationAndComesBack) {
  replicas_[1]->signal(SIGSTOP);
  ASSERT_TRUE(wait_for_metric(router_->port(), healthy(1), 0)) << router_->log();
  EXPECT_EQ(load(4, 3), 0);  // all on replica 0
  replicas_[1]->signal(SIGCONT);
  ASSERT_TRUE(wait_for_metric(router_->port(), healthy(1), 1)) << router_->log();
  EXPECT_GE(test::metric(router_->port(), cat("strata_router_replica_readmissions_total{replica=\"http://127.0.0.1:",
                                              replicas_[1]->port(), "\"}")),
            1);
}

// Runs last: replica 0 is killed while requests are in flight; none of them fails.
TEST_F(Router, KilledReplicaCostsNoRequest) {
  EXPECT_EQ(load(6, 6, [] { kill(replicas_[0]->pid(), SIGKILL); }), 0);
  ASSERT_TRUE(wait_for_metric(router_->port(), healthy(0), 0)) << router_->log();
  EXPECT_EQ(test::metric(router_->port(), "strata_router_failed_total"), 0);
  EXPECT_EQ(http(router_->port(), "GET", "/health").status, 200);
  // With the other replica stopped too, the router says so instead of hanging.
  replicas_[1]->signal(SIGSTOP);
  ASSERT_TRUE(wait_for_metric(router_->port(), healthy(1), 0)) << router_->log();
  EXPECT_EQ(http(router_->port(), "GET", "/health").status, 503);
  const HttpResponse r =
      http(router_->port(), "POST", "/v1/completions", test::completion_body(prompt_ids(0), kTokens, false));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("no replica could answer"), std::string::npos) << r.body;
  replicas_[1]->signal(SIGCONT);
}

// --spawn: the router runs a replica itself and restarts it when it dies; clients need the router's
// key, and the router sends the replica's own key (which the spawned replica requires).
TEST(RouterSpawn, RestartsItsReplicaAndKeepsBothKeys) {
  test::ServerProcess router("spawn", "",
                             "router --spawn 1 --model " + tiny_model() +
                                 " --api-key client-key --replica-api-key replica-key --health-interval 0.2");
  ASSERT_TRUE(router.wait_ready()) << router.log();
  const std::string body = test::completion_body(prompt_ids(2), kTokens, false);
  EXPECT_EQ(http(router.port(), "POST", "/v1/completions", body).status, 401);
  auto with_key = [&](const std::string& key) {
    return test::raw_exchange(router.port(), "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                             "Authorization: Bearer " + key + "\r\nContent-Type: application/json\r\n"
                                             "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  };
  EXPECT_EQ(with_key("wrong").status, 401);
  HttpResponse ok = with_key("client-key");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(test::completion_text(ok, false), test::expected_text(tiny_model(), prompt_ids(2), kTokens));
  // The replica is the router's child: kill it, and the router brings up another.
  const auto children = test::run_command("pgrep -P " + std::to_string(router.pid()));
  const pid_t replica = std::atoi(children.output.c_str());
  ASSERT_GT(replica, 0) << children.output;
  kill(replica, SIGKILL);
  bool back = false;  // a new child, in rotation
  for (int i = 0; i < 600 && !back; ++i) {
    const pid_t now = std::atoi(test::run_command("pgrep -P " + std::to_string(router.pid())).output.c_str());
    back = now > 0 && now != replica && http(router.port(), "GET", "/health").status == 200;
    if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(back) << router.log();
  ok = with_key("client-key");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(test::completion_text(ok, false), test::expected_text(tiny_model(), prompt_ids(2), kTokens));
}

// Replicas that register themselves (strata serve --register-with) join the rotation of a router that
// started with none; registration needs the router's key, and a bad registration body is a 400.
TEST(RouterRegistration, ARegisteredReplicaJoinsTheRotation) {
  test::ServerProcess router("registry", "", "router --await-registrations --api-key router-key --health-interval 0.2");
  EXPECT_FALSE(router.wait_ready(3));  // no replica yet: /health says 503 (wait_ready reads the port meanwhile)
  ASSERT_GT(router.port(), 0) << router.log();
  EXPECT_EQ(http(router.port(), "GET", "/health").status, 503);
  auto with_key = [&](const std::string& method, const std::string& path, const std::string& body) {
    return test::raw_exchange(router.port(), method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                             "Authorization: Bearer router-key\r\nContent-Type: application/json\r\n"
                                             "Content-Length: " + std::to_string(body.size()) +
                                             "\r\nConnection: close\r\n\r\n" + body);
  };
  EXPECT_EQ(http(router.port(), "POST", "/router/replicas", "{\"url\": \"http://127.0.0.1:1\"}").status, 401);
  const HttpResponse bad = with_key("POST", "/router/replicas", "{\"host\": 1}");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("\\\"url\\\""), std::string::npos) << bad.body;

  test::ServerProcess replica("registering", "",
                              cat("serve --model ", tiny_model(), " --register-with http://127.0.0.1:", router.port(),
                                  " --register-key router-key --register-version v1"));
  ASSERT_TRUE(replica.wait_ready()) << replica.log();
  bool healthy = false;
  for (int i = 0; i < 200 && !healthy; ++i) {
    healthy = http(router.port(), "GET", "/health").status == 200;
    if (!healthy) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(healthy) << router.log() << replica.log();
  const HttpResponse list = with_key("GET", "/router/replicas", "");
  ASSERT_EQ(list.status, 200) << list.body;
  const boost::json::value listed = list.json();
  const auto& replicas = listed.at("replicas").as_array();
  ASSERT_EQ(replicas.size(), 1u) << list.body;  // the heartbeat repeats the registration, not the replica
  EXPECT_EQ(replicas[0].at("url").as_string(), cat("http://127.0.0.1:", replica.port()));
  EXPECT_EQ(replicas[0].at("version").as_string(), "v1");
  const HttpResponse ok = with_key("POST", "/v1/completions", test::completion_body(prompt_ids(3), kTokens, false));
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(test::completion_text(ok, false), test::expected_text(tiny_model(), prompt_ids(3), kTokens));
}

TEST(RouterFlags, BadReplicaAndRouteAreClearErrors) {
  const auto a = test::run_command(test::strata_binary() + " router --replica https://x:1");
  EXPECT_NE(a.exit_code, 0);
  EXPECT_NE(a.output.find("terminate TLS in front of the router"), std::string::npos) << a.output;
  const auto b = test::run_command(test::strata_binary() + " router --replica http://x:1 --route chat=v1:ninety");
  EXPECT_NE(b.exit_code, 0);
  EXPECT_NE(b.output.find("is not VERSION:WEIGHT"), std::string::npos) << b.output;
  const auto c = test::run_command(test::strata_binary() + " router");
  EXPECT_NE(c.exit_code, 0);
  EXPECT_NE(c.output.find("--replica http://HOST:PORT"), std::string::npos) << c.output;
}

}  // namespace
}  // namespace strata
