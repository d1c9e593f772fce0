// tests/e2e/serve_security_test.cpp: `strata serve`'s safe defaults from outside: it listens on loopback
// unless --host says otherwise; --api-key (or STRATA_API_KEY) guards every route but /health with
// OpenAI-shaped 401s; Host headers naming other sites are refused (DNS rebinding); CORS only for
// --allowed-origins; connections past --max-connections get 503; running out of file descriptors
// neither floods the log nor stops the server; a huge prompt being tokenized does not hold up /health.
#include <gtest/gtest.h>


#include <algorithm>
#include <future>

#include "e2e/serve_client.h"
#include "e2e/serve_helpers.h"

namespace strata {
namespace {
namespace json = boost::json;
using test::HttpResponse;

std::string tiny_model() { return test::tiny_model("serve_security"); }

std::string get_bytes(const std::string& path, const std::string& extra_headers, const std::string& host = "localhost") {
  return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n" + extra_headers + "\r\n";
}

std::string post_bytes(const std::string& path, const std::string& body, const std::string& extra_headers) {
  return "POST " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n" +
         extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

bool connects(const std::string& ip, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

void expect_openai_401(const HttpResponse& r, const std::string& what) {
  EXPECT_EQ(r.status, 401) << what << ": " << r.body;
  EXPECT_EQ(r.header("WWW-Authenticate"), "Bearer") << what;
  const json::value v = r.json();
  ASSERT_TRUE(v.is_object() && v.as_object().contains("error")) << what << ": " << r.body;
  EXPECT_EQ(v.at("error").at("type").as_string(), "invalid_request_error") << what;
  EXPECT_EQ(v.at("error").at("code").as_string(), "invalid_api_key") << what;
  EXPECT_TRUE(v.at("error").at("param").is_null()) << what;
  EXPECT_FALSE(v.at("error").at("message").as_string().empty()) << what;
}

TEST(ServeSecurity, ListensOnLoopbackByDefaultAndRefusesForeignHostNames) {
  test::ServerProcess server("default-bind", "", "serve --model " + tiny_model());
  ASSERT_TRUE(server.wait_ready()) << server.log();
  EXPECT_NE(server.log().find("listening on http://127.0.0.1:"), std::string::npos) << server.log();
  const std::string ip = test::non_loopback_ipv4();
  if (!ip.empty()) {
    EXPECT_FALSE(connects(ip, server.port())) << "reachable on " << ip;
  }
  // A page of evil.example whose name was made to resolve to 127.0.0.1 (DNS rebinding).
  for (const std::string& host : {std::string("evil.example"), "evil.example:" + std::to_string(server.port())}) {
    const HttpResponse r = test::raw_exchange(server.port(), get_bytes("/v1/models", "", host));
    EXPECT_EQ(r.status, 403) << host << ": " << r.body;
    EXPECT_EQ(r.json().at("error").at("code").as_string(), "host_not_allowed") << r.body;
  }
  for (const std::string& host : {"localhost:" + std::to_string(server.port()), std::string("127.0.0.1"), std::string("[::1]:1")})
    EXPECT_EQ(test::raw_exchange(server.port(), get_bytes("/v1/models", "", host)).status, 200) << host;
  // No --allowed-origins: no CORS grant, and a preflight is not answered as one.
  const HttpResponse cross = test::raw_exchange(server.port(), get_bytes("/v1/models", "Origin: http://app.example\r\n"));
  EXPECT_EQ(cross.status, 200);
  EXPECT_EQ(cross.header("Access-Control-Allow-Origin"), "");
  const HttpResponse pre = test::raw_exchange(
      server.port(), "OPTIONS /v1/completions HTTP/1.1\r\nHost: localhost\r\nOrigin: http://app.example\r\n"
                     "Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n");
  EXPECT_NE(pre.status, 204);
  EXPECT_EQ(pre.header("Access-Control-Allow-Origin"), "");
}

TEST(ServeSecurity, HostMayBeAName) {
  test::ServerProcess server("host-name", "", "serve --model " + tiny_model() + " --host localhost");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  EXPECT_EQ(test::raw_exchange(server.port(), get_bytes("/v1/models", "", "evil.example")).status, 403);
}

TEST(ServeSecurity, OpenHostServesOtherNames) {
  test::ServerProcess server("open-bind", "", "serve --model " + tiny_model() + " --host 0.0.0.0 --api-key k");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  EXPECT_NE(server.log().find("listening on http://0.0.0.0:"), std::string::npos) << server.log();
  const std::string ip = test::non_loopback_ipv4();
  if (!ip.empty()) {
    EXPECT_TRUE(connects(ip, server.port())) << "not reachable on " << ip;
  }
  EXPECT_EQ(test::raw_exchange(server.port(), get_bytes("/v1/models", "Authorization: Bearer k\r\n", "api.example")).status,
            200);
}

TEST(ServeSecurity, ApiKeyGuardsEveryRouteButHealth) {
  test::ServerProcess server("api-key", "", "serve --model " + tiny_model() + " --api-key s3cret --allowed-origins "
                                             "http://app.example");
  ASSERT_TRUE(server.wait_ready()) << server.log();  // /health needs no key
  const int port = server.port();
  const std::string body = test::completion_body({1, 5, 9}, 4, false);
  expect_openai_401(test::http(port, "GET", "/v1/models"), "models, no key");
  expect_openai_401(test::http(port, "GET", "/metrics"), "metrics, no key");
  expect_openai_401(test::http(port, "POST", "/v1/completions", body), "completions, no key");
  expect_openai_401(test::raw_exchange(port, post_bytes("/v1/chat/completions", "{}", "Authorization: Bearer wrong\r\n")),
                    "chat, wrong key");
  expect_openai_401(test::raw_exchange(port, get_bytes("/v1/models", "Authorization: s3cret\r\n")), "no Bearer");
  const std::string key = "Authorization: Bearer s3cret\r\n";
  EXPECT_EQ(test::raw_exchange(port, get_bytes("/v1/models", key)).status, 200);
  EXPECT_EQ(test::raw_exchange(port, get_bytes("/metrics", key)).status, 200);
  const HttpResponse ok = test::raw_exchange(port, post_bytes("/v1/completions", body, key));
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(test::completion_text(ok, false), test::expected_text(tiny_model(), {1, 5, 9}, 4));
  // CORS for the listed origin: the preflight (no credentials) and the grant on the real response.
  const HttpResponse pre = test::raw_exchange(
      port, "OPTIONS /v1/completions HTTP/1.1\r\nHost: localhost\r\nOrigin: http://app.example\r\n"
            "Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(pre.status, 204);
  EXPECT_EQ(pre.header("Access-Control-Allow-Origin"), "http://app.example");
  EXPECT_NE(pre.header("Access-Control-Allow-Headers").find("Authorization"), std::string::npos);
  const HttpResponse granted = test::raw_exchange(port, get_bytes("/v1/models", key + "Origin: http://app.example\r\n"));
  EXPECT_EQ(granted.header("Access-Control-Allow-Origin"), "http://app.example");
  const HttpResponse other = test::raw_exchange(port, get_bytes("/v1/models", key + "Origin: http://evil.example\r\n"));
  EXPECT_EQ(other.header("Access-Control-Allow-Origin"), "");
  // `strata bench serve` sends the key it is given; without it every request is refused.
  const std::string bench = test::strata_binary() + " bench serve --url http://127.0.0.1:" + std::to_string(port) +
                            " --requests 4 --concurrency 2 --prompt-len 4 --output-len 4";
  const auto with_key = test::run_command(bench + " --api-key s3cret");
  EXPECT_EQ(with_key.exit_code, 0) << with_key.output;
  EXPECT_NE(with_key.output.find("\"completed\":4"), std::string::npos) << with_key.output;
  const auto without = test::run_command(bench);
  EXPECT_NE(without.exit_code, 0) << without.output;
  EXPECT_NE(without.output.find("401"), std::string::npos) << without.output;
}

TEST(ServeSecurity, ApiKeyFromTheEnvironment) {
  test::ServerProcess server("api-key-env", "env STRATA_API_KEY=from-env ", "serve --model " + tiny_model());
  ASSERT_TRUE(server.wait_ready()) << server.log();
  expect_openai_401(test::http(server.port(), "GET", "/v1/models"), "no key");
  EXPECT_EQ(test::raw_exchange(server.port(), get_bytes("/v1/models", "Authorization: Bearer from-env\r\n")).status, 200);
}

TEST(ServeSecurity, ConnectionsPastTheCapGet503AndTheServerRecovers) {
  test::ServerProcess server("max-conn", "", "serve --model " + tiny_model() + " --max-connections 3");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  std::vector<int> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(test::connect_to(server.port()));
  // Accepted in order: the fourth connection is over the cap.
  const HttpResponse over = test::http(server.port(), "GET", "/health");
  EXPECT_EQ(over.status, 503) << over.body;
  EXPECT_EQ(over.header("Retry-After"), "1");
  for (int fd : idle) close(fd);
  int status = 0;
  for (int i = 0; i < 200 && status != 200; ++i) {
    status = test::http(server.port(), "GET", "/health").status;
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(status, 200);
}

TEST(ServeSecurity, OutOfFileDescriptorsBacksOffAndKeepsServing) {
  // 64 descriptors in all, the cap set far above that: accept() fails with EMFILE.
  test::ServerProcess server("emfile", "prlimit --nofile=64 ", "serve --model " + tiny_model() + " --max-connections 10000");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  std::vector<int> held;
  for (int i = 0; i < 100; ++i) held.push_back(test::connect_to(server.port()));
  // The failing accepts are retried with a pause; give them a second to flood the log if they would.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  for (int fd : held) close(fd);
  int status = 0;
  for (int i = 0; i < 200 && status != 200; ++i) {
    status = test::http(server.port(), "GET", "/health").status;
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(status, 200);
  const std::string log = server.log();
  size_t reports = 0;
  for (size_t p = log.find("accept failed"); p != std::string::npos; p = log.find("accept failed", p + 1)) ++reports;
  EXPECT_GE(reports, 1u) << log.substr(0, 2000);  // the limit was reached...
  EXPECT_LE(reports, 3u) << log.substr(0, 2000);  // ...and reported once per 5 s, not once per retry
  const HttpResponse ok = test::http(server.port(), "POST", "/v1/completions", test::completion_body({1, 2, 3}, 2, false));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST(ServeSecurity, HealthAnswersWhileAHugePromptIsTokenized) {
  // One I/O thread: if it tokenized the 3 MB prompt itself, /health would wait for it.
  test::ServerProcess server("tokenize-off-io", "", "serve --model " + tiny_model() +
                                                        " --http-threads 1 --max-body-bytes 8000000");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  std::string text;
  while (text.size() < 3000000) text += "the quick brown fox jumps over the lazy dog 0123456789 ";
  const std::string body = "{\"prompt\": \"" + text + "\", \"max_tokens\": 1}";
  std::atomic<bool> big_done{false};
  auto big = std::async(std::launch::async, [&] {
    const HttpResponse r = test::http(server.port(), "POST", "/v1/completions", body);
    big_done = true;
    return r;
  });
  // Once the body is in (the server is tokenizing or has answered), ask for /health.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const bool big_done_before = big_done;
  const HttpResponse health = test::http(server.port(), "GET", "/health");
  const bool big_done_after_health = big_done;
  EXPECT_EQ(health.status, 200);
  const HttpResponse r = big.get();
  EXPECT_EQ(r.status, 400) << r.body.substr(0, 300);  // longer than the context
  EXPECT_EQ(r.json().at("error").at("param").as_string(), "prompt");
  if (!big_done_before) {
    EXPECT_FALSE(big_done_after_health) << "/health waited for the tokenization";
  }
}

}  // namespace
}  // namespace strata
