// launcher/http/access.cpp: Host, CORS and API-key checks (see access.h).
#include "launcher/http/access.h"

#include <algorithm>
#include <cctype>

namespace strata::launcher::http {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Compares in time independent of where the strings differ, so the key cannot be guessed byte by byte.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

bool is_ipv4_loopback(std::string_view s) {
  // 127.x.y.z: four decimal parts, the first 127.
  int parts = 0;
  size_t i = 0;
  std::string first;
  while (i <= s.size()) {
    const size_t dot = std::min(s.find('.', i), s.size());
    const std::string_view part = s.substr(i, dot - i);
    if (part.empty() || part.size() > 3 || !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    if (std::stoi(std::string(part)) > 255) return false;
    if (parts == 0) first = part;
    ++parts;
    i = dot + 1;
  }
  return parts == 4 && first == "127";
}

bool allowed_origin(const AccessPolicy& policy, const std::string& origin) {
  for (const std::string& o : policy.allowed_origins)
    if (o == "*" || lower(o) == lower(origin)) return true;
  return false;
}

}  // namespace

bool is_loopback_address(std::string_view address) {
  const std::string a = lower(trim(address));
  return a == "localhost" || a == "::1" || a == "[::1]" || is_ipv4_loopback(a) ||
         (a.size() > 10 && a.compare(a.size() - 10, 10, ".localhost") == 0);
}

std::string host_name_of(std::string_view host_header) {
  std::string_view h = trim(host_header);
  if (!h.empty() && h.front() == '[') {
    const size_t close = h.find(']');
    return std::string(close == std::string_view::npos ? h.substr(1) : h.substr(1, close - 1));
  }
  const size_t colon = h.rfind(':');
  if (colon != std::string_view::npos && h.find(':') == colon) h = h.substr(0, colon);  // one colon: host:port
  return lower(h);
}

AccessDecision decide_access(const AccessPolicy& policy, const AccessRequest& request) {
  AccessDecision d;
  // A page on evil.example whose name is made to resolve to 127.0.0.1 sends Host: evil.example; a
  // loopback server answers only requests addressed to loopback. No Host at all is an HTTP/1.0
  // client, not a browser.
  if (policy.loopback_only && !request.host.empty() && !is_loopback_address(host_name_of(request.host))) {
    d.status = 403;
    d.code = "host_not_allowed";
    d.message = "the Host header '" + request.host + "' does not name this server: it listens on loopback and "
                "answers only requests addressed to localhost, 127.0.0.1 or [::1] (a DNS-rebinding guard); start it "
                "with --host to serve other names";
    return d;
  }
  const bool cors = !request.origin.empty() && allowed_origin(policy, request.origin);
  if (cors) {
    d.cors_headers = {{"Access-Control-Allow-Origin", request.origin}, {"Vary", "Origin"}};
    if (request.preflight) {
      // Browsers send preflights without credentials: answer them before the key check.
      d.status = 204;
      d.headers = d.cors_headers;
      d.headers.emplace_back("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      d.headers.emplace_back("Access-Control-Allow-Headers", "Authorization, Content-Type");
      d.headers.emplace_back("Access-Control-Max-Age", "600");
      return d;
    }
  }
  if (policy.api_key.empty() ||
      std::find(policy.public_paths.begin(), policy.public_paths.end(), request.path) != policy.public_paths.end())
    return d;
  const std::string_view auth = trim(request.authorization);
  const bool bearer = auth.size() > 7 && lower(auth.substr(0, 7)) == "bearer ";
  if (bearer && same_secret(trim(auth.substr(7)), policy.api_key)) return d;
  d.status = 401;
  d.code = "invalid_api_key";
  d.message = request.authorization.empty()
                  ? "no API key given: send it as 'Authorization: Bearer <key>' (the key this server was started with, "
                    "--api-key or STRATA_API_KEY)"
                  : "incorrect API key: send 'Authorization: Bearer <key>' with the key this server was started with";
  d.headers = d.cors_headers;
  d.headers.emplace_back("WWW-Authenticate", "Bearer");
  return d;
}

}  // namespace strata::launcher::http
