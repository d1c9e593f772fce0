// launcher/http/replica_router.cpp: replica choice and the per-replica accounting behind it. The
// lock is held while a replica's submit() runs (an Engine inbox push or a message queued for a link),
// so routing order equals submission order and routed() is exact for the step that follows.
#include "launcher/http/replica_router.h"

#include <algorithm>
#include <numeric>

#include "runtime/error.h"

namespace strata::launcher::http {

int64_t ReplicaRouter::Slot::load() const {
  int64_t n = stats.outstanding_tokens;
  for (const auto& [seq, tokens] : unreflected) n += tokens;
  return n;
}

ReplicaRouter::ReplicaRouter(std::vector<Replica> replicas, EventSink sink) : sink_(std::move(sink)) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, !replicas.empty(), "a router needs at least one replica");
  for (const Replica& r : replicas) {
    STRATA_CHECK_KIND(ErrorKind::kInternal, r.engine != nullptr, "replica without an engine");
    Slot s;
    s.replica = r;
    slots_.push_back(std::move(s));
  }
}

bool ReplicaRouter::submit(EngineRequest request) {
  const uint64_t id = request.id;
  const int64_t tokens = static_cast<int64_t>(request.prompt.size()) + request.max_new_tokens;
  validate(request);  // before it leaves this process: a remote replica answers only with events
  std::lock_guard<std::mutex> lock(mutex_);
  STRATA_CHECK_KIND(ErrorKind::kInternal, placed_.count(id) == 0, "request id ", id, " is already in flight");
  std::vector<int> order;
  for (int i = 0; i < size(); ++i) {
    const Slot& s = slots_[static_cast<size_t>(i)];
    if (s.ready && (s.replica.max_in_flight == 0 || s.in_flight < s.replica.max_in_flight)) order.push_back(i);
  }
  std::vector<int64_t> load(slots_.size());
  for (int i : order) load[static_cast<size_t>(i)] = slots_[static_cast<size_t>(i)].load();
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return load[static_cast<size_t>(a)] < load[static_cast<size_t>(b)]; });
  for (int i : order) {
    Slot& s = slots_[static_cast<size_t>(i)];
    const uint64_t seq = ++s.routed;
    placed_[id] = {i, seq};
    s.unreflected[seq] = tokens;
    ++s.in_flight;
    bool accepted = false;
    try {
      accepted = s.replica.engine->submit(request);
    } catch (...) {
      forget(id, "");
      throw;
    }
    if (accepted) {
      ++s.requests;
      return true;
    }
    forget(id, "");
  }
  return false;
}

void ReplicaRouter::cancel(uint64_t request_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = placed_.find(request_id);
  if (it == placed_.end()) return;  // finished already
  slots_[static_cast<size_t>(it->second.replica)].replica.engine->cancel(request_id);
}

EngineStats ReplicaRouter::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  EngineStats t;
  for (const Slot& slot : slots_) {
    const EngineStats& s = slot.stats;
    t.waiting += s.waiting;
    t.running += s.running;
    t.kv_blocks_used += s.kv_blocks_used;
    t.kv_blocks_total += s.kv_blocks_total;
    t.kv_blocks_cached += s.kv_blocks_cached;
    t.steps += s.steps;
    t.prompt_tokens += s.prompt_tokens;
    t.generated_tokens += s.generated_tokens;
    t.preemptions += s.preemptions;
    t.prefix_hit_tokens += s.prefix_hit_tokens;
    t.images_encoded += s.images_encoded;
    t.last_batch_size += s.last_batch_size;
    t.outstanding_tokens += s.outstanding_tokens;
    t.decode_steps += s.decode_steps;
    t.spec_verify_steps += s.spec_verify_steps;
    t.spec_draft_tokens += s.spec_draft_tokens;
    t.spec_accepted_tokens += s.spec_accepted_tokens;
    t.spec_emitted_tokens += s.spec_emitted_tokens;
    t.prefill_seconds += s.prefill_seconds;
    t.decode_seconds += s.decode_seconds;
    t.forward_seconds += s.forward_seconds;
    t.sample_seconds += s.sample_seconds;
    if (t.expert_tokens.size() < s.expert_tokens.size()) t.expert_tokens.resize(s.expert_tokens.size(), 0);
    for (size_t e = 0; e < s.expert_tokens.size(); ++e) t.expert_tokens[e] += s.expert_tokens[e];
    auto sum = [](std::vector<int64_t>& into, const std::vector<int64_t>& from) {
      if (into.size() < from.size()) into.resize(from.size(), 0);
      for (size_t i = 0; i < from.size(); ++i) into[i] += from[i];
    };
    sum(t.expert_cache_hits, s.expert_cache_hits);
    sum(t.expert_cache_misses, s.expert_cache_misses);
    sum(t.expert_layer_hits, s.expert_layer_hits);
    sum(t.expert_layer_misses, s.expert_layer_misses);
    t.expert_bytes_streamed += s.expert_bytes_streamed;
  }
  return t;
}

void ReplicaRouter::validate(const EngineRequest& request) const {
  // Every replica runs the same model and KV shape, so any that can tell speaks for all.
  for (const Slot& s : slots_) s.replica.engine->validate(request);
}

std::vector<ReplicaStatus> ReplicaRouter::replicas() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ReplicaStatus> out;
  for (int i = 0; i < size(); ++i) {
    const Slot& s = slots_[static_cast<size_t>(i)];
    ReplicaStatus r;
    r.index = i;
    r.ready = s.ready;
    r.routed = s.requests;
    r.in_flight = s.in_flight;
    r.cancelled = s.cancelled;
    r.load_tokens = s.load();
    r.stats = s.stats;
    out.push_back(r);
  }
  return out;
}

void ReplicaRouter::deliver(int replica, const std::vector<TokenEvent>& events) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, replica >= 0 && replica < size(), "no replica ", replica);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const TokenEvent& e : events)
      if (e.finished) forget(e.request_id, e.finish_reason);
  }
  if (!events.empty() && sink_) sink_(events);
}

void ReplicaRouter::report(int replica, const EngineStats& stats, uint64_t reflected) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, replica >= 0 && replica < size(), "no replica ", replica);
  std::function<void(double)> observe;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Slot& s = slots_[static_cast<size_t>(replica)];
    if (stats.steps > s.stats.steps && stats.last_batch_size > 0) observe = batch_observer_;
    s.ready = true;
    s.stats = stats;
    s.reflected = std::max(s.reflected, reflected);
    s.unreflected.erase(s.unreflected.begin(), s.unreflected.upper_bound(s.reflected));
  }
  if (observe) observe(static_cast<double>(stats.last_batch_size));
}

uint64_t ReplicaRouter::routed(int replica) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return slots_.at(static_cast<size_t>(replica)).routed;
}

bool ReplicaRouter::all_ready() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::all_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.ready; });
}

void ReplicaRouter::on_batch(std::function<void(double)> observer) {
  std::lock_guard<std::mutex> lock(mutex_);
  batch_observer_ = std::move(observer);
}

void ReplicaRouter::forget(uint64_t request_id, const std::string& finish_reason) {
  const auto it = placed_.find(request_id);
  if (it == placed_.end()) return;
  Slot& s = slots_[static_cast<size_t>(it->second.replica)];
  --s.in_flight;
  s.unreflected.erase(it->second.seq);
  if (finish_reason == "cancelled") ++s.cancelled;
  placed_.erase(it);
}

}  // namespace strata::launcher::http
