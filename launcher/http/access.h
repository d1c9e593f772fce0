// launcher/http/access.h: who may use the server, decided per request before any route runs: the
// Host header when the server listens on loopback only (a DNS-rebinding guard), CORS for the browser
// origins named by --allowed-origins (none by default), and the API key, an OpenAI Bearer token, on
// every path but the public ones (/health). Plain functions of a request, so they test without sockets.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace strata::launcher::http {

struct AccessPolicy {
  std::string api_key;                       // "": no authentication
  std::vector<std::string> allowed_origins;  // CORS; empty: no CORS headers at all; "*" allows any origin
  bool loopback_only = false;                // listening on loopback: the Host header must name loopback
  std::vector<std::string> public_paths = {"/health"};  // answered without the API key
};

// What a request carries that access decisions read.
struct AccessRequest {
  std::string method;
  std::string path;  // without the query
  std::string host, origin, authorization;
  bool preflight = false;  // OPTIONS with Access-Control-Request-Method
};

struct AccessDecision {
  int status = 0;  // 0: let the request through; else answer it with this status now
  std::string message, code;
  std::vector<std::pair<std::string, std::string>> headers;       // for that answer
  std::vector<std::pair<std::string, std::string>> cors_headers;  // for every response to this request
};

AccessDecision decide_access(const AccessPolicy& policy, const AccessRequest& request);

// True for 127.0.0.0/8, ::1 and "localhost": a listen address only this machine can reach.
bool is_loopback_address(std::string_view address);
// The host part of a Host header ("[::1]:8080" -> "::1", "localhost:80" -> "localhost").
std::string host_name_of(std::string_view host_header);

}  // namespace strata::launcher::http
