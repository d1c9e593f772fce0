// launcher/http/metrics.cpp: Prometheus text exposition (format 0.0.4) of the server's metrics.
#include "launcher/http/metrics.h"

#include <cstdio>

#include "runtime/error.h"

namespace strata::launcher::http {
namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

void gauge(std::string& out, const std::string& name, const std::string& help, double value,
           const char* type = "gauge") {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + num(value) + "\n";
}

std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
          1,     1.5,    2,     3,    5,     7.5,  10,    15,  20,  30,  60,  120};
}

// One series per replica for each figure the router keeps.
std::string render_replicas(const std::vector<ReplicaStatus>& replicas) {
  struct Series {
    const char* name;
    const char* help;
    const char* type;
    int64_t (*value)(const ReplicaStatus&);
  };
  static const Series kSeries[] = {
      {"strata_replica_requests_total", "requests routed to each data-parallel replica", "counter",
       [](const ReplicaStatus& r) { return r.routed; }},
      {"strata_replica_requests_in_flight", "routed requests not finished, per replica", "gauge",
       [](const ReplicaStatus& r) { return r.in_flight; }},
      {"strata_replica_requests_cancelled_total", "requests a replica ended as cancelled", "counter",
       [](const ReplicaStatus& r) { return r.cancelled; }},
      {"strata_replica_load_tokens", "outstanding tokens routing compares (reported plus routed since)", "gauge",
       [](const ReplicaStatus& r) { return r.load_tokens; }},
      {"strata_replica_requests_running", "sequences in each replica's running batch", "gauge",
       [](const ReplicaStatus& r) { return r.stats.running; }},
      {"strata_replica_kv_blocks_used", "KV cache blocks in use, per replica", "gauge",
       [](const ReplicaStatus& r) { return r.stats.kv_blocks_used; }},
      {"strata_replica_ready", "1 once the replica has reported", "gauge",
       [](const ReplicaStatus& r) { return static_cast<int64_t>(r.ready); }},
  };
  std::string out;
  for (const Series& s : kSeries) {
    out += cat("# HELP ", s.name, " ", s.help, "\n# TYPE ", s.name, " ", s.type, "\n");
    for (const ReplicaStatus& r : replicas) out += cat(s.name, "{replica=\"", r.index, "\"} ", s.value(r), "\n");
  }
  return out;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  std::lock_guard<std::mutex> lock(mutex_);
  ++counts_[i];
  sum_ += value;
  ++count_;
}

int64_t Histogram::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return count_;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out = "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + num(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
  return out;
}

Metrics::Metrics()
    : ttft_(latency_buckets()),
      tpot_({0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
             0.5, 0.75, 1, 2.5}),
      latency_(latency_buckets()),
      batch_({1, 2, 4, 8, 16, 32, 64, 128, 256, 512}) {}

void Metrics::count_request(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
}

void Metrics::add_tokens(int64_t prompt, int64_t generated) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += prompt;
  generated_tokens_ += generated;
}

void Metrics::set_tier_hook(std::function<TierBytes()> hook) {
  std::lock_guard<std::mutex> lock(mutex_);
  tier_hook_ = std::move(hook);
}

void Metrics::set_extra_hook(std::function<std::string()> hook) {
  std::lock_guard<std::mutex> lock(mutex_);
  extra_hook_ = std::move(hook);
}

std::string Metrics::render(const EngineStats& stats, bool ready, const std::vector<ReplicaStatus>& replicas) const {
  std::string out;
  TierBytes tiers;
  std::function<std::string()> extra_hook;  // called outside the lock: it may take a while (NVML)
  {
    std::lock_guard<std::mutex> lock(mutex_);
    out += "# HELP strata_requests_total HTTP requests answered, by route and status code (499: client went away)\n"
           "# TYPE strata_requests_total counter\n";
    for (const auto& [key, n] : requests_)
      out += "strata_requests_total{route=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
             std::to_string(n) + "\n";
    gauge(out, "strata_prompt_tokens_total", "prompt tokens of accepted requests", static_cast<double>(prompt_tokens_),
          "counter");
    gauge(out, "strata_generation_tokens_total", "tokens generated", static_cast<double>(generated_tokens_), "counter");
    if (tier_hook_) tiers = tier_hook_();
    extra_hook = extra_hook_;
  }
  out += ttft_.render("strata_time_to_first_token_seconds", "time from arrival to the first generated token");
  out += tpot_.render("strata_time_per_output_token_seconds", "mean time between generated tokens of a request");
  out += latency_.render("strata_e2e_request_latency_seconds", "time from arrival to the last token");
  out += batch_.render("strata_batch_size", "sequences in each engine step that did work");
  gauge(out, "strata_ready", "1 when the engine accepts requests", ready ? 1 : 0);
  gauge(out, "strata_requests_running", "sequences in the running batch", static_cast<double>(stats.running));
  gauge(out, "strata_requests_waiting", "requests queued", static_cast<double>(stats.waiting));
  gauge(out, "strata_kv_blocks_used", "KV cache blocks in use", static_cast<double>(stats.kv_blocks_used));
  gauge(out, "strata_kv_blocks_cached", "idle KV blocks kept for prefix reuse (not in use, evicted on demand)",
        static_cast<double>(stats.kv_blocks_cached));
  gauge(out, "strata_kv_blocks_total", "KV cache blocks", static_cast<double>(stats.kv_blocks_total));
  gauge(out, "strata_engine_steps_total", "engine iterations", static_cast<double>(stats.steps), "counter");
  gauge(out, "strata_engine_decode_steps_total", "engine iterations that ran decodes only",
        static_cast<double>(stats.decode_steps), "counter");
  // Where the engine's time went: steps that carried prompt tokens against decode-only steps, and within
  // all steps the forward pass (up to logits on the host) and sampling with the token broadcast.
  out += "# HELP strata_engine_step_seconds_total wall time of engine steps, by whether they carried prompt tokens\n"
         "# TYPE strata_engine_step_seconds_total counter\n";
  out += cat("strata_engine_step_seconds_total{kind=\"prefill\"} ", stats.prefill_seconds, "\n");
  out += cat("strata_engine_step_seconds_total{kind=\"decode\"} ", stats.decode_seconds, "\n");
  out += "# HELP strata_engine_phase_seconds_total step time in the forward pass and in sampling (the rest of a "
         "step is scheduling)\n# TYPE strata_engine_phase_seconds_total counter\n";
  out += cat("strata_engine_phase_seconds_total{phase=\"forward\"} ", stats.forward_seconds, "\n");
  out += cat("strata_engine_phase_seconds_total{phase=\"sample\"} ", stats.sample_seconds, "\n");
  if (!stats.expert_tokens.empty()) {  // per-expert load of a mixture-of-experts model (every stage)
    out += "# HELP strata_expert_tokens_total tokens routed to each expert, summed over the expert layers of "
           "every pipeline stage\n# TYPE strata_expert_tokens_total counter\n";
    for (size_t e = 0; e < stats.expert_tokens.size(); ++e)
      out += cat("strata_expert_tokens_total{expert=\"", e, "\"} ", stats.expert_tokens[e], "\n");
  }
  if (!stats.expert_cache_hits.empty()) {  // offloaded experts: every rank's expert cache
    out += "# HELP strata_expert_cache_hits_total routed tokens whose expert was on the device, per expert\n"
           "# TYPE strata_expert_cache_hits_total counter\n";
    for (size_t e = 0; e < stats.expert_cache_hits.size(); ++e)
      out += cat("strata_expert_cache_hits_total{expert=\"", e, "\"} ", stats.expert_cache_hits[e], "\n");
    out += "# HELP strata_expert_cache_misses_total routed tokens whose expert was fetched from host memory (one "
           "copy each), per expert\n# TYPE strata_expert_cache_misses_total counter\n";
    for (size_t e = 0; e < stats.expert_cache_misses.size(); ++e)
      out += cat("strata_expert_cache_misses_total{expert=\"", e, "\"} ", stats.expert_cache_misses[e], "\n");
    out += "# HELP strata_expert_cache_hit_rate hits / (hits + misses) of each expert layer so far\n"
           "# TYPE strata_expert_cache_hit_rate gauge\n";
    for (size_t l = 0; l < stats.expert_layer_hits.size(); ++l) {
      const int64_t n = stats.expert_layer_hits[l] + stats.expert_layer_misses[l];
      if (n > 0)
        out += cat("strata_expert_cache_hit_rate{layer=\"", l, "\"} ",
                   static_cast<double>(stats.expert_layer_hits[l]) / static_cast<double>(n), "\n");
    }
    gauge(out, "strata_expert_bytes_streamed_total", "expert weight bytes fetched into the device's expert cache",
          static_cast<double>(stats.expert_bytes_streamed), "counter");
  }
  gauge(out, "strata_preemptions_total", "sequences preempted for KV blocks", static_cast<double>(stats.preemptions),
        "counter");
  gauge(out, "strata_prefix_cache_hit_tokens_total", "prompt tokens served from the prefix cache",
        static_cast<double>(stats.prefix_hit_tokens), "counter");
  gauge(out, "strata_images_encoded_total", "request images run through the vision encoder",
        static_cast<double>(stats.images_encoded), "counter");
  // Speculative decoding (zero while it is off).
  gauge(out, "strata_spec_draft_tokens_total", "draft tokens the model verified", static_cast<double>(stats.spec_draft_tokens),
        "counter");
  gauge(out, "strata_spec_accepted_tokens_total", "draft tokens the model accepted",
        static_cast<double>(stats.spec_accepted_tokens), "counter");
  gauge(out, "strata_spec_verify_steps_total", "sequence-steps that verified drafts",
        static_cast<double>(stats.spec_verify_steps), "counter");
  gauge(out, "strata_spec_acceptance_rate", "accepted / verified draft tokens so far",
        stats.spec_draft_tokens > 0 ? static_cast<double>(stats.spec_accepted_tokens) / static_cast<double>(stats.spec_draft_tokens) : 0.0);
  gauge(out, "strata_spec_tokens_per_step", "tokens a sequence-step that verified drafts emitted, on average",
        stats.spec_verify_steps > 0 ? static_cast<double>(stats.spec_emitted_tokens) / static_cast<double>(stats.spec_verify_steps) : 0.0);
  out += "# HELP strata_memory_bytes weight bytes by residency tier\n# TYPE strata_memory_bytes gauge\n";
  out += "strata_memory_bytes{tier=\"device\"} " + std::to_string(tiers.device) + "\n";
  out += "strata_memory_bytes{tier=\"host\"} " + std::to_string(tiers.host) + "\n";
  out += "strata_memory_bytes{tier=\"disk\"} " + std::to_string(tiers.disk) + "\n";
  gauge(out, "strata_bytes_streamed_total", "weight bytes streamed from host or disk", static_cast<double>(tiers.streamed),
        "counter");
  if (!replicas.empty()) out += render_replicas(replicas);
  if (extra_hook) out += extra_hook();
  return out;
}

}  // namespace strata::launcher::http
