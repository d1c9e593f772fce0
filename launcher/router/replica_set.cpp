// launcher/router/replica_set.cpp: health checks, ejection and re-admission, and the routing choice.
#include "launcher/router/replica_set.h"

#include <algorithm>
#include <chrono>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher::router {

namespace {
constexpr size_t kMaxAffinityKeys = 16384;
// An affinity replica keeps its prompts while it has at most this many more outstanding tokens than
// the least loaded one (or twice as many): reusing its KV prefix is worth a little imbalance.
constexpr int64_t kAffinitySlackTokens = 2048;
}  // namespace

ReplicaSpec parse_replica(const std::string& text) {
  ReplicaSpec spec;
  const auto eq = text.find('=');
  const std::string url = eq == std::string::npos ? text : text.substr(eq + 1);
  if (eq != std::string::npos) {
    spec.version = text.substr(0, eq);
    STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, !spec.version.empty(), "--replica '", text,
                      "': the version before '=' is empty; write VERSION=http://HOST:PORT or just the URL");
  }
  spec.endpoint = parse_endpoint(url);
  return spec;
}

Route parse_route(const std::string& text) {
  Route r;
  const auto eq = text.find('=');
  STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, eq != std::string::npos && eq > 0, "--route '", text,
                    "' is not of the form MODEL=VERSION:WEIGHT,VERSION:WEIGHT (e.g. chat=v1:90,v2:10)");
  r.model = text.substr(0, eq);
  size_t pos = eq + 1;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string part = text.substr(pos, comma - pos);
    const auto colon = part.rfind(':');
    char* end = nullptr;
    const long w = colon == std::string::npos ? -1 : std::strtol(part.c_str() + colon + 1, &end, 10);
    STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, colon != std::string::npos && colon > 0 && *end == '\0' && w >= 0,
                      "--route '", text, "': '", part, "' is not VERSION:WEIGHT with a weight >= 0");
    r.weights.emplace_back(part.substr(0, colon), static_cast<int>(w));
    pos = comma + 1;
  }
  int total = 0;
  for (const auto& [v, w] : r.weights) total += w;
  STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, total > 0, "--route '", text, "': the weights add up to 0");
  return r;
}

struct ReplicaSet::Replica {
  ReplicaSpec spec;
  ReplicaStatus status;
  int consecutive_failures = 0;
  bool ever_healthy = false;
  std::map<int, std::function<void()>> watchers;
  int next_watch = 0;
};

ReplicaSet::ReplicaSet(std::vector<ReplicaSpec> replicas, std::vector<Route> routes, HealthOptions health)
    : routes_(std::move(routes)), health_(health) {
  for (ReplicaSpec& spec : replicas) add(std::move(spec));
}

ReplicaSet::~ReplicaSet() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (health_thread_.joinable()) health_thread_.join();
}

void ReplicaSet::start() { health_thread_ = std::thread([this] { health_loop(); }); }

int ReplicaSet::add(ReplicaSpec spec) {
  std::lock_guard<std::mutex> lock(mu_);
  auto r = std::make_unique<Replica>();
  r->status.url = spec.endpoint.url();
  r->status.version = spec.version;
  r->spec = std::move(spec);
  replicas_.push_back(std::move(r));
  wake_.notify_all();
  return static_cast<int>(replicas_.size()) - 1;
}

int ReplicaSet::find_or_add(ReplicaSpec spec, bool* added) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string url = spec.endpoint.url();
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (replicas_[i]->status.url != url) continue;
      replicas_[i]->spec.version = replicas_[i]->status.version = spec.version;
      *added = false;
      return static_cast<int>(i);
    }
  }
  *added = true;
  LOG_INFO("router: replica ", spec.endpoint.url(), " registered itself");
  return add(std::move(spec));
}

void ReplicaSet::set_endpoint(int index, Endpoint endpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  Replica& r = *replicas_.at(static_cast<size_t>(index));
  r.spec.endpoint = std::move(endpoint);
  r.status.url = r.spec.endpoint.url();
  wake_.notify_all();
}

void ReplicaSet::set_health(size_t index, bool ok, const std::string& why) {
  Replica& r = *replicas_[index];
  if (ok) {
    r.consecutive_failures = 0;
    if (!r.status.healthy) {
      r.status.healthy = true;
      if (r.ever_healthy) ++r.status.readmissions;
      r.ever_healthy = true;
      LOG_INFO("router: replica ", r.status.url, " is healthy", r.status.readmissions > 0 ? " again" : "");
    }
    return;
  }
  ++r.consecutive_failures;
  r.status.last_error = why;
  if (r.status.healthy && r.consecutive_failures >= health_.failures_to_eject) {
    r.status.healthy = false;
    ++r.status.ejections;
    LOG_WARN("router: replica ", r.status.url, " out of rotation: ", why);
  }
}

void ReplicaSet::health_loop() {
  using clock = std::chrono::steady_clock;
  UpstreamRequest health_request;
  health_request.target = "/health";
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    const auto round = clock::now();
    for (size_t i = 0; i < replicas_.size() && !stop_; ++i) {
      const Endpoint endpoint = replicas_[i]->spec.endpoint;
      lock.unlock();
      UpstreamCall call;
      int status = 0;
      const UpstreamResult r = call.run(
          endpoint, health_request, UpstreamTimeouts{health_.timeout_s, health_.timeout_s, health_.timeout_s},
          [&](int s, const std::string&) { return (status = s), true; }, [](std::string_view) { return true; });
      std::vector<std::function<void()>> to_abort;
      lock.lock();
      const bool ok = r.ok() && status == 200;
      const bool was_healthy = replicas_[i]->status.healthy;
      // A refused connection is a dead process: no reason to wait for a second check.
      if (r.failure == UpstreamFailure::kConnect) replicas_[i]->consecutive_failures = health_.failures_to_eject;
      set_health(i, ok, ok ? "" : r.ok() ? cat("/health answered ", status) : r.error);
      if (was_healthy && !replicas_[i]->status.healthy)
        for (auto& [token, fn] : replicas_[i]->watchers) to_abort.push_back(fn);
      if (!to_abort.empty()) {
        lock.unlock();
        for (auto& fn : to_abort) fn();
        lock.lock();
      }
    }
    wake_.wait_until(lock, round + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(health_.interval_s)),
                     [&] { return stop_; });
  }
}

std::optional<ReplicaSet::Choice> ReplicaSet::choose(const std::string& model, uint64_t prefix_key,
                                                     const std::set<int>& exclude) {
  std::lock_guard<std::mutex> lock(mu_);
  auto usable = [&](size_t i, const std::string* version) {
    const Replica& r = *replicas_[i];
    return r.status.healthy && exclude.count(static_cast<int>(i)) == 0 &&
           (version == nullptr || r.spec.version == *version);
  };
  auto any_usable = [&](const std::string* version) {
    for (size_t i = 0; i < replicas_.size(); ++i)
      if (usable(i, version)) return true;
    return false;
  };
  // Which version: a route's weighted draw, a version named directly, or any.
  std::optional<std::string> version;
  for (const Route& route : routes_) {
    if (route.model != model) continue;
    int total = 0;
    for (const auto& [v, w] : route.weights)
      if (any_usable(&v)) total += w;
    if (total == 0) break;  // no weighted version is up: any healthy replica
    int draw = static_cast<int>(route_draw_++ % static_cast<uint64_t>(total));
    for (const auto& [v, w] : route.weights) {
      if (!any_usable(&v)) continue;
      if (draw < w) {
        version = v;
        break;
      }
      draw -= w;
    }
    break;
  }
  if (!version)
    for (const auto& r : replicas_)
      if (!r->spec.version.empty() && r->spec.version == model && any_usable(&model)) version = model;
  const std::string* want = version ? &*version : nullptr;

  int best = -1;
  for (size_t i = 0; i < replicas_.size(); ++i) {
    if (!usable(i, want)) continue;
    const ReplicaStatus& s = replicas_[i]->status;
    if (best < 0 || s.outstanding_tokens < replicas_[static_cast<size_t>(best)]->status.outstanding_tokens ||
        (s.outstanding_tokens == replicas_[static_cast<size_t>(best)]->status.outstanding_tokens &&
         s.in_flight < replicas_[static_cast<size_t>(best)]->status.in_flight))
      best = static_cast<int>(i);
  }
  if (best < 0) return std::nullopt;
  if (prefix_key != 0) {
    const auto it = affinity_.find(prefix_key);
    if (it != affinity_.end() && it->second != best && static_cast<size_t>(it->second) < replicas_.size() &&
        usable(static_cast<size_t>(it->second), want)) {
      const int64_t least = replicas_[static_cast<size_t>(best)]->status.outstanding_tokens;
      const int64_t mine = replicas_[static_cast<size_t>(it->second)]->status.outstanding_tokens;
      if (mine <= std::max(least + kAffinitySlackTokens, 2 * least)) best = it->second;
    }
    if (affinity_.emplace(prefix_key, best).second) {
      affinity_order_.push_back(prefix_key);
      if (affinity_order_.size() > kMaxAffinityKeys) {
        affinity_.erase(affinity_order_.front());
        affinity_order_.pop_front();
      }
    } else {
      affinity_[prefix_key] = best;
    }
  }
  return Choice{best, replicas_[static_cast<size_t>(best)]->spec.endpoint, version.has_value()};
}

void ReplicaSet::begin(int index, int64_t tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  ReplicaStatus& s = replicas_.at(static_cast<size_t>(index))->status;
  s.outstanding_tokens += tokens;
  ++s.in_flight;
  ++s.requests;
}

void ReplicaSet::end(int index, int64_t tokens, bool failed, const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  ReplicaStatus& s = replicas_.at(static_cast<size_t>(index))->status;
  s.outstanding_tokens -= tokens;
  --s.in_flight;
  if (failed) {
    ++s.failures;
    s.last_error = error;
  }
}

void ReplicaSet::eject(int index, const std::string& why) {
  std::vector<std::function<void()>> to_abort;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Replica& r = *replicas_.at(static_cast<size_t>(index));
    if (!r.status.healthy) return;
    r.consecutive_failures = health_.failures_to_eject;
    set_health(static_cast<size_t>(index), false, why);
    for (auto& [token, fn] : r.watchers) to_abort.push_back(fn);
  }
  for (auto& fn : to_abort) fn();
}

int ReplicaSet::watch(int index, std::function<void()> on_eject) {
  std::lock_guard<std::mutex> lock(mu_);
  Replica& r = *replicas_.at(static_cast<size_t>(index));
  const int token = r.next_watch++;
  r.watchers.emplace(token, std::move(on_eject));
  return token;
}

void ReplicaSet::unwatch(int index, int token) {
  std::lock_guard<std::mutex> lock(mu_);
  replicas_.at(static_cast<size_t>(index))->watchers.erase(token);
}

std::vector<ReplicaStatus> ReplicaSet::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ReplicaStatus> out;
  for (const auto& r : replicas_) out.push_back(r->status);
  return out;
}

int ReplicaSet::healthy_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (const auto& r : replicas_) n += r->status.healthy ? 1 : 0;
  return n;
}

std::vector<Endpoint> ReplicaSet::healthy_endpoints() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Endpoint> out;
  for (const auto& r : replicas_)
    if (r->status.healthy) out.push_back(r->spec.endpoint);
  return out;
}

}  // namespace strata::launcher::router
