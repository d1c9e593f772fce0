// tests/launcher/http_access_test.cpp: the access decisions of `strata serve` (launcher/http/access.h)
// and what error bodies may show clients: Host names a loopback server answers (DNS rebinding), CORS
// only for the listed origins, the Bearer key on every path but /health, and messages without
// source locations or peers' addresses.
#include <gtest/gtest.h>

#include "launcher/http/access.h"
#include "launcher/http/openai_schema.h"

namespace strata::launcher::http {
namespace {

AccessRequest get(const std::string& path, const std::string& host = "localhost:8080") {
  AccessRequest r;
  r.method = "GET";
  r.path = path;
  r.host = host;
  return r;
}

TEST(HttpAccess, LoopbackServerAnswersOnlyLoopbackHostNames) {
  AccessPolicy p;
  p.loopback_only = true;
  for (const char* ok : {"localhost", "localhost:8080", "127.0.0.1:1", "127.3.2.1", "[::1]:8080", "LOCALHOST:80",
                         "app.localhost:3000"})
    EXPECT_EQ(decide_access(p, get("/v1/models", ok)).status, 0) << ok;
  for (const char* bad : {"evil.example", "evil.example:8080", "127.0.0.1.evil.example", "10.0.0.1:8080",
                          "localhost.evil.example", "[fe80::1]:80", "1270.0.0.1"}) {
    const AccessDecision d = decide_access(p, get("/health", bad));
    EXPECT_EQ(d.status, 403) << bad;
    EXPECT_EQ(d.code, "host_not_allowed");
  }
  EXPECT_EQ(decide_access(p, get("/health", "")).status, 0);  // HTTP/1.0 without Host
  p.loopback_only = false;  // --host 0.0.0.0: any name (behind proxies, DNS names of the machine)
  EXPECT_EQ(decide_access(p, get("/health", "evil.example")).status, 0);
}

TEST(HttpAccess, ApiKeyIsABearerTokenOnEveryPathButHealth) {
  AccessPolicy p;
  p.api_key = "s3cret";
  EXPECT_EQ(decide_access(p, get("/health")).status, 0);
  for (const char* path : {"/v1/models", "/v1/completions", "/metrics", "/nothing"}) {
    AccessRequest r = get(path);
    const AccessDecision none = decide_access(p, r);
    EXPECT_EQ(none.status, 401) << path;
    EXPECT_EQ(none.code, "invalid_api_key");
    EXPECT_EQ(none.headers.back(), (std::pair<std::string, std::string>{"WWW-Authenticate", "Bearer"}));
    for (const char* wrong : {"Bearer s3cre", "Bearer s3cret2", "s3cret", "Basic s3cret", "Bearer "}) {
      r.authorization = wrong;
      EXPECT_EQ(decide_access(p, r).status, 401) << wrong;
    }
    for (const char* right : {"Bearer s3cret", "bearer s3cret", "  Bearer s3cret  "}) {
      r.authorization = right;
      EXPECT_EQ(decide_access(p, r).status, 0) << right;
    }
  }
  p.api_key.clear();
  EXPECT_EQ(decide_access(p, get("/v1/models")).status, 0);
}

TEST(HttpAccess, CorsOnlyForListedOrigins) {
  AccessPolicy p;
  AccessRequest r = get("/v1/models");
  r.origin = "http://app.example";
  EXPECT_TRUE(decide_access(p, r).cors_headers.empty());  // no --allowed-origins: no CORS at all
  r.method = "OPTIONS";
  r.preflight = true;
  EXPECT_EQ(decide_access(p, r).status, 0);  // left to the routes (405), no CORS grant
  p.allowed_origins = {"http://app.example"};
  p.api_key = "k";
  const AccessDecision pre = decide_access(p, r);  // preflights carry no credentials
  EXPECT_EQ(pre.status, 204);
  EXPECT_EQ(pre.cors_headers.front().second, "http://app.example");
  r.origin = "http://other.example";
  EXPECT_NE(decide_access(p, r).status, 204);
  r = get("/v1/models");
  r.origin = "http://app.example";
  r.authorization = "Bearer k";
  const AccessDecision ok = decide_access(p, r);
  EXPECT_EQ(ok.status, 0);
  EXPECT_EQ(ok.cors_headers.front(), (std::pair<std::string, std::string>{"Access-Control-Allow-Origin", "http://app.example"}));
  p.allowed_origins = {"*"};
  r.origin = "http://any.example";
  EXPECT_FALSE(decide_access(p, r).cors_headers.empty());
}

TEST(HttpErrors, ClientMessagesHideSourceLocationsAndPeers) {
  EXPECT_EQ(client_message("recv from rank 1 (world rank 1, 10.0.3.7:41234) timed out after 300 s [comm/tcp/tcp_mesh.cpp:211]"),
            "recv from rank 1 (world rank 1, a peer) timed out after 300 s");
  EXPECT_EQ(client_message("peer [fe80::1%eth0]:5000 closed"), "peer a peer closed");
  EXPECT_EQ(client_message("peer [fe80::1]:5000 closed [runtime/engine.cpp:9] [launcher/http/routes.cpp:12]"),
            "peer a peer closed");
  EXPECT_EQ(client_message("'top_p' must be between 1e-09 and 1, got 2"), "'top_p' must be between 1e-09 and 1, got 2");
  ApiError e;
  e.status = 500;
  e.message = "the engine failed: rank 2 (10.1.1.1:999) died [parallel/dp_link.cpp:40]";
  EXPECT_EQ(e.json().find("10.1.1.1"), std::string::npos) << e.json();
  EXPECT_EQ(e.json().find(".cpp"), std::string::npos) << e.json();
}

TEST(HttpAccess, LoopbackAddresses) {
  for (const char* a : {"127.0.0.1", "127.255.0.9", "::1", "localhost"}) EXPECT_TRUE(is_loopback_address(a)) << a;
  for (const char* a : {"0.0.0.0", "10.0.0.1", "::", "128.0.0.1", "127.0.0"}) EXPECT_FALSE(is_loopback_address(a)) << a;
  EXPECT_EQ(host_name_of("[::1]:8080"), "::1");
  EXPECT_EQ(host_name_of("Example.COM:80"), "example.com");
  EXPECT_EQ(host_name_of("::1"), "::1");
}

}  // namespace
}  // namespace strata::launcher::http
