// launcher/step_breakdown.cpp: the measured decode-step split (step_breakdown.h).
#include "launcher/step_breakdown.h"

#include <algorithm>

#include "launcher/model_session.h"
#include "offload/tiered_weights.h"

namespace strata::launcher {
namespace json = boost::json;

StepCounters read_counters(ModelSession& session) {
  StepCounters c;
  const EngineStats e = session.generator().engine().stats();
  c.steps = e.steps;
  c.prefill_s = e.prefill_seconds;
  c.decode_s = e.decode_seconds;
  c.forward_s = e.forward_seconds;
  c.sample_s = e.sample_seconds;
  c.comm = session.tp().stats();
  if (offload::TieredWeights* t = session.offload()) {
    const offload::PrefetchStats s = t->metrics().stream;
    c.stream_wait_s = s.acquire_wait_s;
    c.stream_busy_s = s.fill_s;
    c.stream_bytes = s.bytes_host + s.bytes_disk;
  }
  return c;
}

void StepBreakdown::observe(const StepCounters& now) {
  const StepCounters& a = last_;
  if (now.steps > a.steps && now.prefill_s == a.prefill_s) {
    sum_.steps += now.steps - a.steps;
    sum_.decode_s += now.decode_s - a.decode_s;
    sum_.forward_s += now.forward_s - a.forward_s;
    sum_.sample_s += now.sample_s - a.sample_s;
    sum_.comm.ops += now.comm.ops - a.comm.ops;
    sum_.comm.bytes += now.comm.bytes - a.comm.bytes;
    sum_.comm.busy_seconds += now.comm.busy_seconds - a.comm.busy_seconds;
    sum_.comm.blocked_seconds += now.comm.blocked_seconds - a.comm.blocked_seconds;
    if (now.comm.device_busy_seconds >= 0)
      sum_.comm.device_busy_seconds =
          std::max(0.0, sum_.comm.device_busy_seconds) + now.comm.device_busy_seconds - a.comm.device_busy_seconds;
    sum_.stream_wait_s += now.stream_wait_s - a.stream_wait_s;
    sum_.stream_busy_s += now.stream_busy_s - a.stream_busy_s;
    sum_.stream_bytes += now.stream_bytes - a.stream_bytes;
  }
  last_ = now;
}

StepParts StepBreakdown::parts() const {
  StepParts p;
  p.steps = sum_.steps;
  if (p.steps == 0) return p;
  const double n = static_cast<double>(p.steps);
  const double forward = sum_.forward_s / n;
  p.step = sum_.decode_s / n;
  // Waits happen inside the forward pass; the clamps only absorb clock granularity, so the parts
  // always add up to the step.
  p.comm_exposed = std::clamp(sum_.comm.blocked_seconds / n, 0.0, forward);
  p.stream_wait = std::clamp(sum_.stream_wait_s / n, 0.0, forward - p.comm_exposed);
  p.compute = forward - p.comm_exposed - p.stream_wait;
  p.sample = std::clamp(sum_.sample_s / n, 0.0, std::max(0.0, p.step - forward));
  p.schedule = std::max(0.0, p.step - forward - p.sample);
  p.comm_total = std::max(sum_.comm.busy_seconds / n, p.comm_exposed);
  p.comm_hidden = p.comm_total - p.comm_exposed;
  if (p.comm_total > 0) p.comm_hidden_fraction = p.comm_hidden / p.comm_total;
  if (sum_.comm.device_busy_seconds >= 0) {
    // Stream-ordered (NCCL): the GPU-timed total is the communication time, and how much of it the step
    // waited for is not visible from the host; a --skip-all-reduces run of the same step measures it.
    p.comm_stream_ordered = true;
    p.comm_total = sum_.comm.device_busy_seconds / n;
    p.comm_exposed = 0;
    p.compute = forward - p.stream_wait;
    p.comm_hidden = 0;
    p.comm_hidden_fraction.reset();
  }
  p.stream_total = std::max(sum_.stream_busy_s / n, p.stream_wait);
  p.stream_hidden = p.stream_total - p.stream_wait;
  if (sum_.stream_bytes > 0 && p.stream_total > 0) p.stream_hidden_fraction = p.stream_hidden / p.stream_total;
  p.comm_ops = sum_.comm.ops / p.steps;
  p.comm_bytes = sum_.comm.bytes / p.steps;
  p.stream_bytes = sum_.stream_bytes / p.steps;
  return p;
}

json::object parts_json(const StepParts& p) {
  auto fraction = [](const std::optional<double>& f) { return f ? json::value(*f) : json::value(nullptr); };
  return json::object{{"steps", p.steps},
                      {"step_ms", p.step * 1e3},
                      {"compute_ms", p.compute * 1e3},
                      {"comm_exposed_ms", p.comm_exposed * 1e3},
                      {"stream_wait_ms", p.stream_wait * 1e3},
                      {"sample_ms", p.sample * 1e3},
                      {"schedule_ms", p.schedule * 1e3},
                      {"comm_total_ms", p.comm_total * 1e3},
                      {"comm_hidden_ms", p.comm_hidden * 1e3},
                      {"comm_hidden_fraction", fraction(p.comm_hidden_fraction)},
                      {"comm_ops_per_step", p.comm_ops},
                      {"comm_stream_ordered", p.comm_stream_ordered},
                      {"comm_bytes_per_step", p.comm_bytes},
                      {"stream_total_ms", p.stream_total * 1e3},
                      {"stream_hidden_ms", p.stream_hidden * 1e3},
                      {"stream_hidden_fraction", fraction(p.stream_hidden_fraction)},
                      {"stream_bytes_per_step", p.stream_bytes}};
}

void split_by_no_comm_run(json::object& b, double no_comm_step_ms) {
  auto num = [&](const char* key) { return b.contains(key) ? b.at(key).to_number<double>() : 0.0; };
  const double step = num("step_ms"), total = num("comm_total_ms");
  const double exposed = std::clamp(step - no_comm_step_ms, 0.0, num("compute_ms"));
  b["no_comm_step_ms"] = no_comm_step_ms;
  b["comm_exposed_ms"] = exposed;
  b["compute_ms"] = num("compute_ms") - exposed;
  b["comm_hidden_ms"] = std::max(0.0, total - exposed);
  b["comm_hidden_fraction"] = total > 0 ? json::value(std::max(0.0, total - exposed) / total) : json::value(nullptr);
  b["comm_exposed_from"] = "step time minus a --skip-all-reduces run of the same point";
}

json::object memory_json(ModelSession& session) {
  int64_t device = 0, host = 0, disk = 0, ring = 0;
  if (offload::TieredWeights* t = session.offload()) {
    const offload::Placement& p = t->placement();
    const int64_t experts_host = p.expert_tier == offload::Tier::kHost ? p.expert_bytes : 0;
    device = p.resident_bytes + p.expert_cache_bytes(), host = p.host_bytes + experts_host,
    disk = p.disk_bytes + (p.expert_bytes - experts_host), ring = p.ring_bytes();
  } else {
    for (const offload::TensorItem& item : offload::shard_items(session.checkpoint(), session.shard()))
      device += item.bytes;
  }
  return json::object{{"weights_device_bytes", device}, {"weights_host_bytes", host}, {"weights_disk_bytes", disk},
                      {"stream_ring_bytes", ring},      {"kv_bytes", session.kv_bytes()}};
}

}  // namespace strata::launcher
