// launcher/http/engine_frontend.cpp: request registry between HTTP threads and the engine thread.
#include "launcher/http/engine_frontend.h"

#include <utility>

#include "runtime/error.h"

namespace strata::launcher::http {

void RequestChannel::push(const TokenEvent& event) {
  bool notify = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(event);
    notify = !notified_;
    notified_ = true;
  }
  if (notify && notify_) notify_();
}

std::vector<TokenEvent> RequestChannel::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  notified_ = false;
  return std::exchange(events_, {});
}

const char* serve_state_name(ServeState state) {
  switch (state) {
    case ServeState::kLoading: return "loading";
    case ServeState::kReady: return "ready";
    case ServeState::kDraining: return "draining";
    case ServeState::kFailed: return "failed";
  }
  return "unknown";
}

void EngineFrontend::attach(RequestEngine* engine) {
  std::lock_guard<std::mutex> lock(mutex_);
  engine_ = engine;
  if (state_ == ServeState::kLoading) state_ = ServeState::kReady;
}

ServeState EngineFrontend::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_;
}

SubmitResult EngineFrontend::submit(EngineRequest request, std::shared_ptr<RequestChannel> channel) {
  const uint64_t id = request.id;
  RequestEngine* engine = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ != ServeState::kReady || engine_ == nullptr) return SubmitResult::kUnavailable;
    STRATA_CHECK_KIND(ErrorKind::kInternal, channels_.count(id) == 0, "request id ", id, " is already in flight");
    // Registered before the engine sees the request, so its first event always finds the channel.
    channels_[id] = std::move(channel);
    engine = engine_;
  }
  bool accepted = false;
  try {
    accepted = engine->submit(std::move(request));
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    channels_.erase(id);
    throw;
  }
  if (!accepted) {
    std::lock_guard<std::mutex> lock(mutex_);
    channels_.erase(id);
    return SubmitResult::kQueueFull;
  }
  return SubmitResult::kAccepted;
}

void EngineFrontend::cancel(uint64_t request_id) {
  RequestEngine* engine = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (channels_.count(request_id) == 0) return;  // already finished
    engine = engine_;
  }
  if (engine != nullptr) engine->cancel(request_id);
}

void EngineFrontend::dispatch(const std::vector<TokenEvent>& events) {
  for (const TokenEvent& e : events) {
    std::shared_ptr<RequestChannel> channel;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = channels_.find(e.request_id);
      if (it == channels_.end()) continue;
      channel = it->second;
      if (e.finished) channels_.erase(it);
    }
    channel->push(e);
  }
}

EngineStats EngineFrontend::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return engine_ != nullptr ? engine_->stats() : EngineStats{};
}

std::vector<ReplicaStatus> EngineFrontend::replicas() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return engine_ != nullptr ? engine_->replicas() : std::vector<ReplicaStatus>{};
}

namespace {
int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void EngineFrontend::note_step() { last_step_ns_ = steady_ns(); }

double EngineFrontend::seconds_since_step() const {
  const int64_t last = last_step_ns_.load();
  return last == 0 ? 0.0 : static_cast<double>(steady_ns() - last) * 1e-9;
}

bool EngineFrontend::stalled() const {
  if (last_step_ns_.load() == 0 || engine_requests() == 0) return false;  // idle engines take no steps to note
  return seconds_since_step() > stall_timeout_s_;
}

void EngineFrontend::begin_response() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++responses_;
}

void EngineFrontend::end_response() {
  std::lock_guard<std::mutex> lock(mutex_);
  --responses_;
}

int64_t EngineFrontend::responses_in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return responses_;
}

int64_t EngineFrontend::engine_requests() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(channels_.size());
}

void EngineFrontend::drain() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (state_ == ServeState::kReady || state_ == ServeState::kLoading) state_ = ServeState::kDraining;
}

void EngineFrontend::cancel_all() {
  std::vector<uint64_t> ids;
  RequestEngine* engine = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [id, channel] : channels_) ids.push_back(id);
    engine = engine_;
  }
  if (engine != nullptr)
    for (uint64_t id : ids) engine->cancel(id);
}

void EngineFrontend::fail(const std::string& message) {
  std::unordered_map<uint64_t, std::shared_ptr<RequestChannel>> channels;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    state_ = ServeState::kFailed;
    channels.swap(channels_);
  }
  for (auto& [id, channel] : channels) {
    TokenEvent e;
    e.request_id = id;
    e.finished = true;
    e.finish_reason = "error";
    e.error = message;
    channel->push(e);
  }
}

}  // namespace strata::launcher::http
