// launcher/http/replica_router.h: data-parallel request routing on world rank 0. The frontend submits
// to the router as to one engine; it sends each request to the ready replica with the least
// outstanding tokens (its last reported EngineStats::outstanding_tokens plus the requests routed to
// it since that report; ties go to the lowest index) and sends cancellations where the request went.
// Replicas are RequestEngines: the local Engine (EngineAdapter) and RemoteReplica for the others.
// Events and stats reach it through deliver()/report() from whichever thread has them.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "launcher/http/engine_frontend.h"

namespace strata::launcher::http {

class ReplicaRouter final : public RequestEngine {
 public:
  using EventSink = std::function<void(const std::vector<TokenEvent>&)>;

  struct Replica {
    RequestEngine* engine = nullptr;
    // Routed requests in flight it may hold (0: no limit here, its submit() decides). Remote replicas
    // answer asynchronously, so the router keeps them within their queue to never be refused.
    int64_t max_in_flight = 0;
  };

  // `sink` receives every replica's events after the router has accounted for them (the frontend).
  ReplicaRouter(std::vector<Replica> replicas, EventSink sink);

  // Least-loaded ready replica first; a replica that refuses passes the request on to the next.
  bool submit(EngineRequest request) override;
  void cancel(uint64_t request_id) override;
  // Sum over replicas of their last reports.
  EngineStats stats() const override;
  void validate(const EngineRequest& request) const override;
  std::vector<ReplicaStatus> replicas() const override;

  // Any thread: `replica`'s token events; finished ones end their request here, then all go to the sink.
  void deliver(int replica, const std::vector<TokenEvent>& events);
  // Any thread: `replica`'s stats after a step that counted the first `reflected` requests routed to
  // it (see routed()). The first report marks the replica ready.
  void report(int replica, const EngineStats& stats, uint64_t reflected);
  // Requests routed to `replica` so far, i.e. what a report of a step that starts now reflects.
  uint64_t routed(int replica) const;
  bool all_ready() const;
  // Called for each engine step that did work on any replica (batch-size histogram).
  void on_batch(std::function<void(double sequences)> observer);
  int size() const { return static_cast<int>(slots_.size()); }

 private:
  struct Slot {
    Replica replica;
    bool ready = false;
    EngineStats stats;
    uint64_t reflected = 0;
    uint64_t routed = 0;
    std::map<uint64_t, int64_t> unreflected;  // routing seq -> tokens, routed after the last report
    int64_t requests = 0;  // accepted (routed counts attempts, for reflected)
    int64_t in_flight = 0, cancelled = 0;
    int64_t load() const;
  };
  struct Placed {
    int replica = 0;
    uint64_t seq = 0;
  };
  void forget(uint64_t request_id, const std::string& finish_reason);  // caller holds mutex_

  mutable std::mutex mutex_;
  std::vector<Slot> slots_;
  std::unordered_map<uint64_t, Placed> placed_;  // request id -> where it went
  EventSink sink_;
  std::function<void(double)> batch_observer_;
};

}  // namespace strata::launcher::http
