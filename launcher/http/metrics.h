// launcher/http/metrics.h: the server's Prometheus metrics: requests by status, tokens, latency
// histograms (TTFT, time per output token, end to end; p50/p95/p99 follow from the buckets), batch
// size, KV blocks, and memory per tier through a hook the offload layer fills.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/engine.h"

namespace strata::launcher::http {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Prometheus exposition of `name` (buckets, _sum, _count).
  std::string render(const std::string& name, const std::string& help) const;
  int64_t count() const;

 private:
  mutable std::mutex mutex_;
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // per bucket (not cumulative); the last one is +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

// One data-parallel replica as the router on world rank 0 sees it (replica_router.h).
struct ReplicaStatus {
  int index = 0;
  bool ready = false;  // has reported since it started
  int64_t routed = 0;     // requests sent to it so far
  int64_t in_flight = 0;  // routed and not finished
  int64_t cancelled = 0;  // requests it ended "cancelled" (client gone, shutdown)
  int64_t load_tokens = 0;  // what routing compares: its outstanding tokens plus routed ones not yet in them
  EngineStats stats;        // its last report
};

// Weight and cache bytes by residency tier, and bytes streamed so far. Zero until the offload layer
// provides a hook (set_tier_hook).
struct TierBytes {
  int64_t device = 0, host = 0, disk = 0;
  int64_t streamed = 0;
};

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& route, int status);
  void add_tokens(int64_t prompt, int64_t generated);
  void observe_ttft(double seconds) { ttft_.observe(seconds); }
  void observe_tpot(double seconds) { tpot_.observe(seconds); }
  void observe_latency(double seconds) { latency_.observe(seconds); }
  void observe_batch(double sequences) { batch_.observe(sequences); }
  void set_tier_hook(std::function<TierBytes()> hook);
  // Series appended to every exposition (the GPU monitor's), rendered by the hook.
  void set_extra_hook(std::function<std::string()> hook);
  // The whole exposition; `stats` is the engine's (summed over replicas), `state` 1 when ready;
  // `replicas` adds per-replica series (data-parallel serving).
  std::string render(const EngineStats& stats, bool ready, const std::vector<ReplicaStatus>& replicas = {}) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  Histogram ttft_, tpot_, latency_, batch_;
  std::function<TierBytes()> tier_hook_;
  std::function<std::string()> extra_hook_;
};

}  // namespace strata::launcher::http
