// launcher/http/engine_frontend.h: the HTTP side of the serving Engine. HTTP threads submit and
// cancel through it; the engine thread hands each step's TokenEvents to dispatch(), which routes
// them into per-request channels. It also counts responses in flight for graceful shutdown.
// Not an HTTP type: routes.cpp turns channels into responses.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "launcher/http/metrics.h"
#include "runtime/engine.h"

namespace strata::launcher::http {

// Where the server sends requests (the request sink): strata::Engine through EngineAdapter, a remote
// data-parallel replica (remote_replicas.h), the ReplicaRouter over several of them, a fake in unit
// tests. Token events come back through EngineFrontend::dispatch.
class RequestEngine {
 public:
  virtual ~RequestEngine() = default;
  virtual bool submit(EngineRequest request) = 0;  // false: queue full
  virtual void cancel(uint64_t request_id) = 0;
  virtual EngineStats stats() const = 0;
  // Throws kInvalidArgument for a request that can never run; sinks that cannot tell accept all.
  virtual void validate(const EngineRequest&) const {}
  // Per-replica figures for /metrics; empty for a sink that is not a router.
  virtual std::vector<ReplicaStatus> replicas() const { return {}; }
};

class EngineAdapter final : public RequestEngine {
 public:
  explicit EngineAdapter(Engine& engine) : engine_(engine) {}
  bool submit(EngineRequest request) override { return engine_.submit(std::move(request)); }
  void cancel(uint64_t request_id) override { engine_.cancel(request_id); }
  EngineStats stats() const override { return engine_.stats(); }
  void validate(const EngineRequest& request) const override { engine_.validate(request); }

 private:
  Engine& engine_;
};

// Thread-safe queue of one HTTP request's events. push() runs on the engine thread and never blocks
// on the client: it calls `notify` (which posts to the connection's strand) once per batch.
class RequestChannel {
 public:
  explicit RequestChannel(std::function<void()> notify) : notify_(std::move(notify)) {}
  void push(const TokenEvent& event);
  // Everything queued so far; the next push() notifies again.
  std::vector<TokenEvent> take();

 private:
  std::mutex mutex_;
  std::vector<TokenEvent> events_;
  bool notified_ = false;
  std::function<void()> notify_;
};

enum class ServeState { kLoading, kReady, kDraining, kFailed };
const char* serve_state_name(ServeState state);

enum class SubmitResult { kAccepted, kQueueFull, kUnavailable };

class EngineFrontend {
 public:
  EngineFrontend() = default;
  // The engine is ready: submissions are accepted from now on.
  void attach(RequestEngine* engine);
  ServeState state() const;
  uint64_t next_id() { return next_id_.fetch_add(1); }
  // Registers `channel` for request.id, then submits. Throws strata::Error (kInvalidArgument) for a
  // request the engine can never run.
  SubmitResult submit(EngineRequest request, std::shared_ptr<RequestChannel> channel);
  void cancel(uint64_t request_id);
  // Engine thread: routes events to channels; a finished event closes its request.
  void dispatch(const std::vector<TokenEvent>& events);
  EngineStats stats() const;
  std::vector<ReplicaStatus> replicas() const;

  // Engine progress for /health: the step loop calls note_step() after every step; stalled() is true
  // while requests are in flight and no step has ended for `stall_timeout_s` (a hung rank blocks its
  // replica's step in a collective until the communication timeout, which may be minutes).
  void set_stall_timeout(double seconds) { stall_timeout_s_ = seconds; }
  void note_step();
  bool stalled() const;
  double seconds_since_step() const;

  // Generation responses in flight (accepted, not yet fully written or abandoned by the client).
  void begin_response();
  void end_response();
  int64_t responses_in_flight() const;
  int64_t engine_requests() const;

  // Shutdown: refuse new work, then (after a deadline) cancel what is left. fail() ends every
  // request with an error event (the engine died) and marks the server unhealthy.
  void drain();
  void cancel_all();
  void fail(const std::string& message);

 private:
  mutable std::mutex mutex_;
  RequestEngine* engine_ = nullptr;
  ServeState state_ = ServeState::kLoading;
  std::unordered_map<uint64_t, std::shared_ptr<RequestChannel>> channels_;
  int64_t responses_ = 0;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<int64_t> last_step_ns_{0};  // steady clock; 0: no step yet
  double stall_timeout_s_ = 60;
};

}  // namespace strata::launcher::http
