// launcher/router/upstream.h: the router's HTTP client to one replica. A call sends one request and
// hands the response to the caller as it arrives (head, then body pieces, chunked encoding undone), so
// streamed answers pass through token by token. Every network step has a deadline; another thread may
// abort a call (the replica was ejected, the client went away).
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace strata::launcher::router {

// "http://host:port" (the scheme may be left out; no path). Throws kInvalidArgument naming the URL.
struct Endpoint {
  std::string host;
  int port = 0;
  std::string url() const;
};
Endpoint parse_endpoint(const std::string& url);

struct UpstreamRequest {
  std::string method = "GET";
  std::string target = "/";
  std::string body;
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> headers;  // passed on as they are (Authorization, ...)
};

struct UpstreamTimeouts {
  double connect_s = 2.0;  // to open the connection and send the request
  double first_byte_s = 600.0;  // for the response head (a non-streamed answer comes whole, at the end)
  double idle_s = 600.0;   // between body pieces
};

enum class UpstreamFailure {
  kNone,
  kConnect,    // could not connect or send: nothing reached the replica
  kBroken,     // the connection broke or timed out before the response ended
  kAborted,    // abort() was called
};

struct UpstreamResult {
  UpstreamFailure failure = UpstreamFailure::kNone;
  int status = 0;  // 0 when no head arrived
  std::string error;
  bool ok() const { return failure == UpstreamFailure::kNone; }
};

class UpstreamCall {
 public:
  UpstreamCall();
  ~UpstreamCall();
  // Runs the exchange on the calling thread. `on_head(status, content_type)` runs once when the head
  // arrives; `on_data(piece)` for each body piece. Either returning false ends the call (kAborted).
  UpstreamResult run(const Endpoint& endpoint, const UpstreamRequest& request, const UpstreamTimeouts& timeouts,
                     const std::function<bool(int status, const std::string& content_type)>& on_head,
                     const std::function<bool(std::string_view piece)>& on_data);
  // From any thread: ends a running call (it returns kAborted), or makes the next run() return at once.
  void abort();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A whole GET (health checks, /metrics, /v1/models): the status and body; status 0 with `error` set
// when the replica did not answer within `timeout_s`.
struct SimpleResponse {
  int status = 0;
  std::string body;
  std::string error;
};
SimpleResponse http_get(const Endpoint& endpoint, const std::string& target, double timeout_s,
                        const std::vector<std::pair<std::string, std::string>>& headers = {});

}  // namespace strata::launcher::router
