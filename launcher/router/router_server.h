// launcher/router/router_server.h: `strata router`'s front: an OpenAI-compatible HTTP server (the same
// Beast server as `strata serve`) whose completion routes are relayed to a replica of the ReplicaSet,
// streamed answers passed through as they come. A request that fails before anything reached the
// client (the replica refused, died or hung) is retried on another replica, so a non-streamed request
// never fails because one replica went away; a stream cut after its first bytes ends with an error
// event. /health says whether any replica is up; /metrics sums the replicas' and adds the router's.
// Replicas may register themselves (POST /router/replicas, what `strata serve --register-with` sends).
#pragma once
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "launcher/http/http_server.h"
#include "launcher/router/replica_set.h"

namespace strata::launcher::router {

struct RouterOptions {
  int max_attempts = 3;          // replicas one request may try
  UpstreamTimeouts timeouts;
  double metrics_timeout_s = 1.0;  // per replica, for /metrics and /v1/models
  int max_in_flight = 4096;      // requests relayed at once; more get 503
  std::vector<std::pair<std::string, std::string>> replica_headers;  // sent on every call (the replicas' API key)
};

class RouterServer {
 public:
  RouterServer(ReplicaSet& replicas, RouterOptions options);
  ~RouterServer();  // wait_idle()
  void handle(const std::shared_ptr<http::Exchange>& exchange);
  // Returns once no request is being relayed.
  void wait_idle();

  struct Counters {
    std::atomic<int64_t> requests{0}, retries{0}, failed{0}, completed{0};
  };
  const Counters& counters() const { return counters_; }

 private:
  void relay(std::shared_ptr<http::Exchange> exchange);
  std::string metrics_text();
  void replicas_route(const std::shared_ptr<http::Exchange>& exchange);

  ReplicaSet& replicas_;
  RouterOptions options_;
  Counters counters_;
  std::mutex mu_;
  std::condition_variable idle_;
  int in_flight_ = 0;
};

// The Prometheus text of several replicas summed sample by sample (same name and labels); summary
// quantiles, which do not add up, are left out. HELP/TYPE lines are kept once per metric.
std::string sum_prometheus(const std::vector<std::string>& texts);

}  // namespace strata::launcher::router
