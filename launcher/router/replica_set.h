// launcher/router/replica_set.h: the replicas behind the router, their health and their load, and the
// routing decision. A replica is a whole `strata serve` job (its own mpirun world, any plan). Health
// checks (GET /health) take a dead or hung replica out of rotation and put it back once it answers;
// requests go to the least outstanding tokens, with prefix affinity (a prompt whose beginning was
// routed before goes back to the replica that holds its KV prefix while that one is not much busier),
// and weighted splits between model versions (canary releases, A/B tests).
#pragma once
#include <condition_variable>
#include <deque>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "launcher/router/upstream.h"

namespace strata::launcher::router {

struct ReplicaSpec {
  std::string version;  // model version the replica serves ("" when the router routes no versions)
  Endpoint endpoint;
};
// "http://h:p" or "VERSION=http://h:p"; throws kInvalidArgument naming the flag value.
ReplicaSpec parse_replica(const std::string& text);

// `--route MODEL=v1:90,v2:10`: requests for MODEL go to version v1 with weight 90, v2 with weight 10.
struct Route {
  std::string model;
  std::vector<std::pair<std::string, int>> weights;
};
Route parse_route(const std::string& text);

struct HealthOptions {
  double interval_s = 1.0;    // between checks of one replica
  double timeout_s = 1.0;     // a check that takes longer failed (a hung replica)
  int failures_to_eject = 2;  // consecutive failed checks; a refused connection ejects at once
};

struct ReplicaStatus {
  std::string url, version;
  bool healthy = false;
  int64_t outstanding_tokens = 0, in_flight = 0;
  int64_t requests = 0, failures = 0, ejections = 0, readmissions = 0;
  std::string last_error;
};

class ReplicaSet {
 public:
  ReplicaSet(std::vector<ReplicaSpec> replicas, std::vector<Route> routes, HealthOptions health);
  ~ReplicaSet();  // stops the health thread
  ReplicaSet(const ReplicaSet&) = delete;
  ReplicaSet& operator=(const ReplicaSet&) = delete;

  // Starts the health thread (the replicas start out healthy only once a check passed).
  void start();
  // Adds a replica (self-registration, or one the spawner restarted on a new port); returns its index.
  int add(ReplicaSpec spec);
  // Self-registration: the index of the replica at the same URL (its version updated), or a new one.
  // `added` says which.
  int find_or_add(ReplicaSpec spec, bool* added);
  void set_endpoint(int index, Endpoint endpoint);

  struct Choice {
    int index = -1;
    Endpoint endpoint;
    bool by_version = false;  // the model named a route or a version: the replica serves it under its own name
  };
  // The replica for a request: its model (a route name, a version, or anything else), the prefix key
  // (a hash of the prompt's beginning; 0 = none) and its token estimate; `exclude` holds replicas
  // already tried. nullopt when no healthy replica can take it.
  std::optional<Choice> choose(const std::string& model, uint64_t prefix_key, const std::set<int>& exclude);
  // Accounting around a proxied call. `tokens` is the estimate passed to begin().
  void begin(int index, int64_t tokens);
  void end(int index, int64_t tokens, bool failed, const std::string& error = "");
  // A call could not reach the replica: out of rotation now, without waiting for the next check.
  void eject(int index, const std::string& why);
  // Calls `fn` for every call to replica `index` that should stop because it was ejected; register
  // with watch() and unregister with unwatch(). Used to retry non-streamed calls stuck on a hung replica.
  int watch(int index, std::function<void()> on_eject);
  void unwatch(int index, int token);

  std::vector<ReplicaStatus> status() const;
  int healthy_count() const;
  std::vector<Endpoint> healthy_endpoints() const;

 private:
  struct Replica;
  void health_loop();
  void set_health(size_t index, bool ok, const std::string& why);  // with mu_ held

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::vector<Route> routes_;
  HealthOptions health_;
  std::map<uint64_t, int> affinity_;  // prefix key -> replica (bounded; oldest entries dropped)
  std::deque<uint64_t> affinity_order_;  // insertion order, oldest first
  uint64_t route_draw_ = 0;           // deterministic weighted rotation between versions
  bool stop_ = false;
  std::thread health_thread_;
};

}  // namespace strata::launcher::router
