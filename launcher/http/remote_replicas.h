// launcher/http/remote_replicas.h: world rank 0's side of the data-parallel replicas it does not run.
// Each RemoteReplica is a RequestEngine whose submit()/cancel() only queue a message (so HTTP threads
// never wait on the network); one link thread moves every replica's link: sends what is queued,
// pings idle links, and hands each report's events and stats to the router. The replicas' drivers
// run launcher/replica_server.h.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "launcher/http/replica_router.h"
#include "parallel/dp_link.h"

namespace strata::launcher::http {

class RemoteReplica final : public RequestEngine {
 public:
  bool submit(EngineRequest request) override;  // false once the replica is shutting down
  void cancel(uint64_t request_id) override;
  EngineStats stats() const override { return {}; }  // the router keeps what reports say

 private:
  friend class RemoteReplicas;
  std::vector<parallel::DpMessage> take();
  void close_with(parallel::DpMessage last);  // queues the last message; later submits are refused

  std::mutex mutex_;
  std::vector<parallel::DpMessage> outbox_;
  bool closed_ = false;
};

class RemoteReplicas {
 public:
  // Replicas 1 .. drivers.size()-1; rank r of `drivers` is the driver of replica r.
  RemoteReplicas(comm::Communicator& drivers, double timeout_s);
  ~RemoteReplicas();  // stops and joins the link thread
  RemoteReplicas(const RemoteReplicas&) = delete;
  RemoteReplicas& operator=(const RemoteReplicas&) = delete;

  int count() const { return static_cast<int>(remotes_.size()); }
  // The RequestEngine of replica `index` (1-based: replica 0 is local).
  RequestEngine& replica(int index);
  // Starts the link thread. Reports go to `router` as replica `index`. `on_failure` runs once, on the
  // link thread, when a replica reports a failure, falls silent past the timeout, or its link breaks;
  // the thread stops then.
  void start(ReplicaRouter& router, std::function<void(const std::string& why)> on_failure);
  // Tells every replica to shut down; their drivers end what is left ("cancelled") and say bye.
  void shutdown();
  // Waits until every replica said bye, failed, or `timeout_s` passed; true when all said bye.
  bool wait_closed(double timeout_s);
  // Any thread: the per-rank telemetry each remote replica last reported, replicas in order.
  std::vector<std::vector<int32_t>> rank_telemetry() const;

 private:
  struct Remote {
    std::unique_ptr<RemoteReplica> replica;
    std::unique_ptr<parallel::DpLink> link;
    bool shutdown_sent = false, said_bye = false;
    std::vector<std::vector<int32_t>> telemetry;  // under mutex_
  };
  void run(ReplicaRouter& router, const std::function<void(const std::string&)>& on_failure);
  bool pump(int index, Remote& remote, ReplicaRouter& router);  // true when it moved anything

  std::vector<Remote> remotes_;  // remotes_[i] is replica i + 1
  double keepalive_s_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::condition_variable closed_cv_;
  bool finished_ = false, all_bye_ = false;
};

}  // namespace strata::launcher::http
