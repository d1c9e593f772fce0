// launcher/replica_server.cpp: the routed replica's step loop. While the replica has no request the
// driver watches the link (up to idle_wait_ms, the cadence of idle steps the replica's ranks already
// use) so a new request starts without waiting out an Engine idle wait that nothing here would wake.
#include "launcher/replica_server.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <unordered_set>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher {
namespace {
using Clock = std::chrono::steady_clock;
using parallel::DpKind;
using parallel::DpMessage;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

TokenEvent ended(uint64_t id, const char* reason, std::string error = {}) {
  TokenEvent e;
  e.request_id = id;
  e.finished = true;
  e.finish_reason = reason;
  e.error = std::move(error);
  return e;
}
}  // namespace

void serve_replica(Engine& engine, parallel::DpLink& router, int idle_wait_ms) {
  const double keepalive_s = std::clamp(router.timeout_s() / 10, 0.05, 1.0);
  uint64_t received = 0;               // submits handed to the Engine (or refused), in router order
  std::unordered_set<uint64_t> live;   // submitted, not yet ended
  std::vector<TokenEvent> refused;     // answers for requests the Engine never took
  bool stopping = false;

  auto handle = [&](DpMessage& m) {
    switch (m.kind) {
      case DpKind::kSubmit: {
        ++received;
        const uint64_t id = m.request.id;
        try {
          if (engine.submit(std::move(m.request))) live.insert(id);
          else refused.push_back(ended(id, "cancelled"));  // shutting down (the router keeps within the queue)
        } catch (const Error& e) {
          refused.push_back(ended(id, "error", e.what()));
        }
        break;
      }
      case DpKind::kCancel: engine.cancel(m.request_id); break;
      case DpKind::kShutdown:
        engine.shutdown();  // the router drained first; what is left ends "cancelled"
        stopping = true;
        break;
      case DpKind::kPing: break;
      default:
        STRATA_THROW(ErrorKind::kComm, "unexpected ", parallel::dp_kind_name(m.kind), " message from the router");
    }
  };

  std::vector<TokenEvent> events;
  int64_t steps_reported = -1;
  std::vector<std::vector<int32_t>> telemetry_sent;
  Clock::time_point last_report;
  while (true) {
    const auto until = Clock::now() + std::chrono::milliseconds(idle_wait_ms);
    while (true) {
      while (std::optional<DpMessage> m = router.poll()) handle(*m);
      router.flushed();
      if (!live.empty() || stopping || !refused.empty() || Clock::now() >= until) break;
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    const uint64_t reflected = received;
    events = std::exchange(refused, {});
    const bool more = engine.step(events, 0);
    for (const TokenEvent& e : events)
      if (e.finished) live.erase(e.request_id);
    const EngineStats stats = engine.stats();
    std::vector<std::vector<int32_t>> telemetry = engine.rank_telemetry();
    const bool new_telemetry = telemetry != telemetry_sent;
    if (!events.empty() || stats.steps != steps_reported || since(last_report) > keepalive_s || !more ||
        new_telemetry) {
      if (new_telemetry) telemetry_sent = telemetry;
      else telemetry.clear();
      router.send(parallel::dp_report({stats, reflected, events, std::move(telemetry)}));
      steps_reported = stats.steps;
      last_report = Clock::now();
    }
    if (!more) break;
  }
  router.send(parallel::dp_signal(DpKind::kBye));
  const Clock::time_point start = Clock::now();
  while (!router.flushed()) {
    // flushed() throws once a send is older than the comm timeout; this bound is only a backstop.
    STRATA_CHECK_KIND(ErrorKind::kTimeout, since(start) <= router.timeout_s() + 1, "the bye to the router did not go out");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void report_failure(parallel::DpLink& router, const std::string& error, double grace_s) {
  try {
    router.send(parallel::dp_failed(error));
    const Clock::time_point start = Clock::now();
    while (!router.flushed() && since(start) < std::min(grace_s, 5.0))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    // The router answers its clients and then ends the job; waiting here keeps this rank from ending
    // it first (which would cut those answers off).
    while (since(start) < grace_s) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } catch (const std::exception& e) {
    LOG_WARN("could not tell the router that this replica failed: ", e.what());
  }
}

}  // namespace strata::launcher
