// runtime/engine_experts.cpp: the replica's mixture-of-experts counters on its driver. Each rank counts what
// its own stage routed and what its own expert cache hit or fetched; the driver adds the other ranks' counts,
// gathered with the telemetry (every few seconds when serving), so /metrics and the router cover every stage
// of a pipeline, not only the driver's.
#include <algorithm>

#include "runtime/engine_impl.h"
#include "runtime/word_codec.h"

namespace strata {
namespace {

// The rank that reports its stage's routed tokens: the first of the stage's expert group.
bool reports_stage_load(const LlamaModel& model) { return model.spec().expert_group_rank() == 0; }

void add_into(std::vector<int64_t>& total, const std::vector<int64_t>& part) {
  if (total.size() < part.size()) total.resize(part.size(), 0);
  for (size_t i = 0; i < part.size(); ++i) total[i] += part[i];
}

void write_counts(WordWriter& w, const std::vector<int64_t>& v) {
  w.i32(static_cast<int32_t>(v.size()));
  for (int64_t x : v) w.i64(x);
}

std::vector<int64_t> read_counts(WordReader& r) {
  std::vector<int64_t> v(r.count());
  for (int64_t& x : v) x = r.i64();
  return v;
}

}  // namespace

std::vector<int64_t> gather_replica_expert_tokens(const LlamaModel& model, StageLink& link) {
  WordWriter w;
  write_counts(w, reports_stage_load(model) ? model.expert_load().tokens : std::vector<int64_t>{});
  const std::vector<std::vector<int32_t>> all = link.gather_to_driver(w.take());
  std::vector<int64_t> total;
  for (const std::vector<int32_t>& rank_words : all) {
    if (rank_words.empty()) continue;
    WordReader r(rank_words, "expert counts", "every rank of the replica runs the same strata build");
    add_into(total, read_counts(r));
  }
  return total;
}

// Each rank reports its own expert cache, whose experts no other rank holds, and one rank a stage its routed
// tokens (reports_stage_load).
ExpertCounts Engine::Impl::own_expert_counts(bool with_load) const {
  ExpertCounts c;
  if (with_load) c.tokens = model.expert_load().tokens;
  if (const ExpertCacheStats s = model.expert_cache_stats(); s.enabled()) {
    const ModelConfig& config = model.config();
    c.cache_hits.assign(static_cast<size_t>(config.moe.n_experts), 0);
    c.cache_misses.assign(static_cast<size_t>(config.moe.n_experts), 0);
    c.layer_hits.assign(static_cast<size_t>(config.n_layers), 0);
    c.layer_misses.assign(static_cast<size_t>(config.n_layers), 0);
    for (int64_t l = 0; l < s.layers; ++l)
      for (int64_t e = 0; e < s.experts; ++e) {
        const auto i = static_cast<size_t>(l * s.experts + e);
        const auto g = static_cast<size_t>(s.expert_first + e);
        const auto layer = static_cast<size_t>(s.layer_index[static_cast<size_t>(l)]);
        c.cache_hits[g] += s.hits[i], c.cache_misses[g] += s.misses[i];
        c.layer_hits[layer] += s.hits[i], c.layer_misses[layer] += s.misses[i];
      }
    c.bytes_streamed = s.bytes_streamed;
  }
  return c;
}

void Engine::Impl::gather_expert_counts() {
  if (model.config().moe.n_experts == 0) return;  // the same on every rank: all gather or none
  std::vector<int32_t> words;
  if (!link.is_driver()) {  // the driver adds its own counts live (refresh_expert_stats)
    const ExpertCounts c = own_expert_counts(reports_stage_load(model));
    WordWriter w;
    for (const auto* v : {&c.tokens, &c.cache_hits, &c.cache_misses, &c.layer_hits, &c.layer_misses})
      write_counts(w, *v);
    w.i64(c.bytes_streamed);
    words = w.take();
  }
  const std::vector<std::vector<int32_t>> all = link.gather_to_driver(words);
  if (!link.is_driver()) return;
  ExpertCounts others;
  for (const std::vector<int32_t>& rank_words : all) {
    if (rank_words.empty()) continue;  // the driver's own place
    WordReader r(rank_words, "expert counts", "every rank of the replica runs the same strata build");
    add_into(others.tokens, read_counts(r));
    add_into(others.cache_hits, read_counts(r));
    add_into(others.cache_misses, read_counts(r));
    add_into(others.layer_hits, read_counts(r));
    add_into(others.layer_misses, read_counts(r));
    others.bytes_streamed += r.i64();
  }
  std::lock_guard<std::mutex> lock(mu);
  other_ranks_experts = std::move(others);
}

void Engine::Impl::refresh_expert_stats(bool read_load) {
  if (model.config().moe.n_experts == 0) return;
  ExpertCounts c = own_expert_counts(read_load);
  if (!read_load) c.tokens = own_expert_tokens;
  own_expert_tokens = c.tokens;
  const ExpertCounts& o = other_ranks_experts;
  add_into(c.tokens, o.tokens);
  add_into(c.cache_hits, o.cache_hits);
  add_into(c.cache_misses, o.cache_misses);
  add_into(c.layer_hits, o.layer_hits);
  add_into(c.layer_misses, o.layer_misses);
  stats.expert_tokens = std::move(c.tokens);
  stats.expert_cache_hits = std::move(c.cache_hits);
  stats.expert_cache_misses = std::move(c.cache_misses);
  stats.expert_layer_hits = std::move(c.layer_hits);
  stats.expert_layer_misses = std::move(c.layer_misses);
  stats.expert_bytes_streamed = c.bytes_streamed + o.bytes_streamed;
}

}  // namespace strata
