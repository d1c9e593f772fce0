// tests/offload/expert_cache_test.cpp: offloaded experts on the CPU backend. The cache policy against
// hand-worked router traces (rounds, LRU and frequency eviction, hit/miss counts); the tiny Mixtral and
// Qwen3-MoE transformers fixtures with fewer device slots than experts against the fully-resident run
// (logits bitwise equal, greedy tokens equal) and against transformers' logits; the counters against
// the router's own per-expert load (hits + misses = routed tokens, bytes streamed = misses x one
// expert); the device slots are a buffer apart from the host copies and hold what the policy says;
// budgets and resident_per_layer values that cannot work are refused with the sizes that fit.
#include <gtest/gtest.h>

#include <cstring>

#include "hf_fixture.h"
#include "launcher/http/metrics.h"
#include "launcher/model_session.h"
#include "offload/expert_cache.h"
#include "offload/expert_cache_policy.h"
#include "offload/residency.h"
#include "offload/tiered_weights.h"
#include "runtime/error.h"
#include "test_util.h"

namespace strata {
namespace {

using offload::ExpertCachePolicy;
using offload::ExpertEviction;
using offload::ExpertRound;
using offload::ResidencyConfig;

std::vector<int64_t> uses(int64_t experts, std::initializer_list<std::pair<int64_t, int64_t>> routed) {
  std::vector<int64_t> t(static_cast<size_t>(experts), 0);
  for (auto [e, n] : routed) t[static_cast<size_t>(e)] = n;
  return t;
}

// 1 layer, 4 experts, 2 slots (starting with experts 0 and 1). Worked by hand:
//   step {0, 2}: 0 hits; 2 misses and takes slot 1 (slot 0 holds 0, which the round uses)
//   step {1, 3}: both miss and replace 0 and 2 (neither is in the round)
TEST(ExpertCachePolicy, LruRoundsHitsAndMissesFollowAHandTrace) {
  ExpertCachePolicy p(1, 4, 2, ExpertEviction::kLru);
  EXPECT_EQ(p.expert_in(0, 0), 0);
  EXPECT_EQ(p.expert_in(0, 1), 1);
  std::vector<ExpertRound> r = p.plan(0, uses(4, {{0, 1}, {2, 1}}));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].experts, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(r[0].slots, (std::vector<int>{0, 1}));
  EXPECT_EQ(r[0].fetch, (std::vector<bool>{false, true}));
  EXPECT_EQ(p.total_hits(), 1);
  EXPECT_EQ(p.total_misses(), 1);

  r = p.plan(0, uses(4, {{1, 1}, {3, 1}}));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].experts, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(r[0].fetch, (std::vector<bool>{true, true}));
  EXPECT_EQ(p.slot_of(0, 0), -1);
  EXPECT_EQ(p.slot_of(0, 2), -1);
  EXPECT_EQ(p.total_misses(), 3);

  // Expert 3 used again: a hit; expert 0 misses and replaces 1 (used at the same tick as 3, but 3 is in
  // the round, so protected).
  r = p.plan(0, uses(4, {{0, 1}, {3, 1}}));
  EXPECT_EQ(r[0].fetch, (std::vector<bool>{true, false}));
  EXPECT_EQ(p.slot_of(0, 1), -1);
  EXPECT_EQ(p.total_hits(), 2);
  EXPECT_EQ(p.total_misses(), 4);
  EXPECT_EQ(p.hits()[3], 1);
  EXPECT_EQ(p.misses()[3], 1);
}

// A prefill step routing 5 tokens to 4 distinct experts with 2 slots: two rounds, the resident experts
// in the first; every token counts once (first token of a fetched expert a miss, the rest hits).
TEST(ExpertCachePolicy, MoreSelectedExpertsThanSlotsRunInRounds) {
  ExpertCachePolicy p(2, 4, 2, ExpertEviction::kLru);
  const std::vector<ExpertRound> r = p.plan(1, uses(4, {{0, 2}, {1, 3}, {2, 4}, {3, 1}}));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].experts, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(r[0].fetch, (std::vector<bool>{false, false}));
  EXPECT_EQ(r[1].experts, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r[1].fetch, (std::vector<bool>{true, true}));
  EXPECT_EQ(p.total_hits() + p.total_misses(), 2 + 3 + 4 + 1);
  EXPECT_EQ(p.total_misses(), 2);
  EXPECT_EQ(p.hits()[4 + 2], 3);  // layer 1, expert 2: 4 tokens, one miss
  // Layer 0 untouched.
  EXPECT_EQ(p.hits()[0] + p.misses()[0], 0);
  EXPECT_TRUE(p.plan(0, uses(4, {})).empty());
}

// Frequency eviction keeps the expert routed the most tokens even when it was used longest ago.
TEST(ExpertCachePolicy, FrequencyEvictionKeepsTheBusiestExpert) {
  ExpertCachePolicy lfu(1, 4, 2, ExpertEviction::kFrequency), lru(1, 4, 2, ExpertEviction::kLru);
  for (ExpertCachePolicy* p : {&lfu, &lru}) {
    p->plan(0, uses(4, {{0, 8}}));  // expert 0: 8 tokens
    p->plan(0, uses(4, {{1, 1}}));  // expert 1: 1 token, used later
    p->plan(0, uses(4, {{2, 1}}));  // a miss: who goes?
  }
  EXPECT_EQ(lfu.slot_of(0, 0), 0);   // kept: 8 tokens against 1
  EXPECT_EQ(lfu.slot_of(0, 1), -1);
  EXPECT_EQ(lru.slot_of(0, 0), -1);  // LRU drops it: used first
  EXPECT_EQ(lru.slot_of(0, 1), 1);
}

struct MoeRun {
  Tensor logits;
  std::vector<int32_t> greedy;
  std::vector<int64_t> expert_tokens;  // the router's per-expert load over every step
  ExpertCacheStats stats;
  offload::Placement placement;
};

MoeRun run(const std::string& dir, std::optional<ResidencyConfig> offload, bool check_slots = false) {
  const test::HfFixture f = test::read_hf_fixture(dir);
  launcher::SessionOptions options;
  options.model_path = dir;
  options.threads = 1;
  options.offload = offload;
  launcher::ModelSession session(options);
  session.prepare(256);
  MoeRun out;
  out.logits = session.generator().score(f.ids);
  GenerationRequest r;
  r.prompt = f.greedy_prompt;
  r.max_new_tokens = static_cast<int64_t>(f.greedy.size());
  out.greedy = session.generator().generate({r})[0].tokens;
  out.expert_tokens = session.model().expert_load().tokens;
  if (offload::TieredWeights* t = session.offload()) {
    out.stats = t->expert_cache_stats();
    out.placement = t->placement();
    const offload::ExpertCache* cache = t->expert_cache();
    if (check_slots && cache != nullptr) {
      // The model's layers carry no resident experts, only the cache's source.
      for (int64_t l = 0; l < session.config().n_layers; ++l) {
        if (!session.config().moe.sparse_layer(l)) continue;
        const LayerWeights& w = t->acquire(l);
        EXPECT_TRUE(w.expert_gate.empty());
        EXPECT_NE(w.expert_source, nullptr);
        t->release(l);
      }
      // Each device slot holds the host copy of the expert the policy put there, in memory of its own.
      const auto ck = open_checkpoint(dir);
      for (int64_t l = 0; l < cache->policy().layers(); ++l)
        for (int s = 0; s < cache->policy().slots(); ++s) {
          const int64_t e = cache->policy().expert_in(l, s);
          const int64_t layer = out.stats.layer_index[static_cast<size_t>(l)];
          const Tensor gate = ck->tensor(cat("blk.", layer, ".ffn_gate.", e, ".weight"));
          const Tensor down = ck->tensor(cat("blk.", layer, ".ffn_down.", e, ".weight"));
          const uint8_t* slot = cache->slot_data(l, s);
          EXPECT_NE(static_cast<const void*>(slot), gate.raw());
          EXPECT_EQ(std::memcmp(slot, gate.raw(), static_cast<size_t>(gate.nbytes())), 0) << "layer " << l << " slot " << s;
          const int64_t down_at = 2 * ((gate.nbytes() + 255) / 256 * 256);  // after gate and up, 256-aligned
          EXPECT_EQ(std::memcmp(slot + down_at, down.raw(), static_cast<size_t>(down.nbytes())), 0);
        }
    }
  }
  return out;
}

class OffloadedExperts : public ::testing::TestWithParam<std::string> {};

TEST_P(OffloadedExperts, FewerSlotsThanExpertsEqualTheResidentRunAndTransformers) {
  const std::string dir = test::fixture("hf/" + GetParam());
  const auto ck = open_checkpoint(dir);
  const MoeConfig& moe = ck->config().moe;
  const MoeRun resident = run(dir, std::nullopt);
  // Host tier (pinned copies, one copy per fetch) with either eviction, and the disk tier (the mapped
  // checkpoint, one copy per tensor).
  const std::vector<std::pair<ExpertEviction, offload::Tier>> variants = {
      {ExpertEviction::kLru, offload::Tier::kHost},
      {ExpertEviction::kFrequency, offload::Tier::kHost},
      {ExpertEviction::kLru, offload::Tier::kDisk}};
  for (const auto& [eviction, tier] : variants) {
    ResidencyConfig c;
    c.experts_resident_per_layer = moe.n_used;  // the least that works: most routed experts miss
    c.expert_eviction = eviction;
    c.cold_tier = tier;
    const MoeRun cached = run(dir, c, /*check_slots=*/true);
    SCOPED_TRACE(GetParam() + " " + offload::eviction_name(eviction) + " " + offload::tier_name(tier));
    EXPECT_EQ(cached.placement.expert_tier, tier);
    ASSERT_EQ(cached.placement.strategy, "experts cached");
    EXPECT_EQ(cached.placement.expert_slots, moe.n_used);
    ASSERT_EQ(cached.logits.numel(), resident.logits.numel());
    EXPECT_EQ(std::memcmp(cached.logits.raw(), resident.logits.raw(), static_cast<size_t>(resident.logits.nbytes())), 0);
    EXPECT_EQ(cached.greedy, resident.greedy);
    EXPECT_EQ(cached.greedy, test::read_hf_fixture(dir).greedy);  // transformers' own continuation
    const test::NpyArray expected = test::read_npy(dir + "/logits.npy");
    EXPECT_LT(test::max_rel_error(cached.logits.data<float>(), expected.data.data(), expected.data.size()), 1e-4);

    // The counters against the router: every routed token is one lookup, per expert.
    const ExpertCacheStats& s = cached.stats;
    ASSERT_TRUE(s.enabled());
    std::vector<int64_t> lookups(static_cast<size_t>(moe.n_experts), 0);
    int64_t hits = 0, misses = 0;
    for (int64_t l = 0; l < s.layers; ++l)
      for (int64_t e = 0; e < s.experts; ++e) {
        const auto i = static_cast<size_t>(l * s.experts + e);
        lookups[static_cast<size_t>(s.expert_first + e)] += s.hits[i] + s.misses[i];
        hits += s.hits[i], misses += s.misses[i];
      }
    EXPECT_EQ(lookups, cached.expert_tokens);
    EXPECT_EQ(cached.expert_tokens, resident.expert_tokens);  // the same routing
    int64_t routed = 0;
    for (int64_t n : resident.expert_tokens) routed += n;
    EXPECT_EQ(hits + misses, routed);
    EXPECT_GT(misses, 0);
    EXPECT_EQ(s.bytes_streamed, misses * s.expert_bytes);
    // One expert: gate, up and down, f32.
    EXPECT_EQ(s.expert_bytes, 3 * moe.expert_ffn * ck->config().hidden * 4);
  }
}

// Every expert in the cache: nothing misses after the first use... and with as many slots as experts
// the policy starts with all of them resident, so nothing misses at all.
TEST_P(OffloadedExperts, AllSlotsNeverMiss) {
  const std::string dir = test::fixture("hf/" + GetParam());
  const auto ck = open_checkpoint(dir);
  ResidencyConfig c;
  c.experts_resident_per_layer = ck->config().moe.n_experts;
  const MoeRun cached = run(dir, c);
  int64_t misses = 0;
  for (int64_t m : cached.stats.misses) misses += m;
  EXPECT_EQ(misses, 0);
  EXPECT_EQ(cached.stats.bytes_streamed, 0);
  EXPECT_EQ(cached.greedy, test::read_hf_fixture(dir).greedy);
}

// The model computes on the device slots' bytes: zeroing the slots (the experts resident in them, not their
// host copies) changes the next step's logits, while the resident-equal run before it matched.
TEST(OffloadedExperts, TheModelReadsTheDeviceSlots) {
  const std::string dir = test::fixture("hf/mixtral_moe");
  const std::vector<int32_t> ids = test::read_hf_fixture(dir).ids;
  launcher::SessionOptions options;
  options.model_path = dir;
  options.threads = 1;
  launcher::ModelSession resident(options);
  resident.prepare(256);
  const Tensor expected = resident.generator().score(ids);
  ResidencyConfig c;
  c.experts_resident_per_layer = 2;
  options.offload = c;
  launcher::ModelSession cached(options);
  cached.prepare(256);
  const Tensor before = cached.generator().score(ids);
  ASSERT_EQ(std::memcmp(before.raw(), expected.raw(), static_cast<size_t>(expected.nbytes())), 0);
  const offload::ExpertCache& cache = *cached.offload()->expert_cache();
  for (int64_t l = 0; l < cache.policy().layers(); ++l)
    for (int s = 0; s < cache.policy().slots(); ++s)
      std::memset(const_cast<uint8_t*>(cache.slot_data(l, s)), 0, 256);  // the start of each resident gate
  const Tensor after = cached.generator().score(ids);
  EXPECT_NE(std::memcmp(after.raw(), expected.raw(), static_cast<size_t>(expected.nbytes())), 0);
}

// The engine's stats and /metrics carry the cache's counters: per expert (global index) they add up to the
// router's per-expert load, per layer to routed tokens; the bytes equal misses x one expert.
TEST(OffloadedExpertMetrics, EngineStatsAndMetricsCarryTheCounters) {
  const std::string dir = test::fixture("hf/mixtral_moe");
  launcher::SessionOptions options;
  options.model_path = dir;
  options.threads = 1;
  ResidencyConfig c;
  c.experts_resident_per_layer = 3;
  options.offload = c;
  launcher::ModelSession session(options);
  session.prepare(256);
  GenerationRequest r;
  r.prompt = test::read_hf_fixture(dir).greedy_prompt;
  r.max_new_tokens = 8;
  session.generator().generate({r});
  const EngineStats stats = session.generator().engine().stats();
  ASSERT_EQ(stats.expert_cache_hits.size(), stats.expert_tokens.size());
  int64_t misses = 0, layer_lookups = 0, routed = 0;
  for (size_t e = 0; e < stats.expert_tokens.size(); ++e) {
    EXPECT_EQ(stats.expert_cache_hits[e] + stats.expert_cache_misses[e], stats.expert_tokens[e]) << "expert " << e;
    misses += stats.expert_cache_misses[e];
    routed += stats.expert_tokens[e];
  }
  for (size_t l = 0; l < stats.expert_layer_hits.size(); ++l)
    layer_lookups += stats.expert_layer_hits[l] + stats.expert_layer_misses[l];
  EXPECT_EQ(layer_lookups, routed);
  EXPECT_GT(misses, 0);
  EXPECT_EQ(stats.expert_bytes_streamed, misses * session.offload()->expert_cache_stats().expert_bytes);
  launcher::http::Metrics metrics;
  const std::string text = metrics.render(stats, true);
  EXPECT_NE(text.find("# TYPE strata_expert_cache_hits_total counter"), std::string::npos) << text;
  EXPECT_NE(text.find(cat("strata_expert_cache_misses_total{expert=\"0\"} ", stats.expert_cache_misses[0], "\n")),
            std::string::npos) << text;
  EXPECT_NE(text.find("strata_expert_cache_hit_rate{layer=\"1\"} "), std::string::npos) << text;
  EXPECT_NE(text.find(cat("strata_expert_bytes_streamed_total ", stats.expert_bytes_streamed)), std::string::npos) << text;
  // The offload report has the per-layer and per-expert rates.
  const std::string report = session.offload()->metrics().json();
  EXPECT_NE(report.find("\"expert_cache\": {\"resident_per_layer\": 3, \"experts_per_layer\": 8"), std::string::npos)
      << report;
  EXPECT_NE(report.find("\"per_expert\": [{\"expert\": 0, "), std::string::npos) << report;
}

INSTANTIATE_TEST_SUITE_P(Models, OffloadedExperts, ::testing::Values("mixtral_moe", "qwen3_moe"));

// A device budget decides the slots: what is left after the other weights, in whole experts per layer.
TEST(ExpertPlacement, ABudgetGivesTheSlotsThatFitAndRefusesLessThanTopK) {
  const auto ck = open_checkpoint(test::fixture("hf/mixtral_moe"));
  const ModelConfig& c = ck->config();
  const ShardSpec spec = ShardSpec::make(c, 0, 1, 0, c.n_layers);
  const std::vector<offload::TensorItem> items = offload::shard_items(*ck, spec);
  int64_t other = 0;
  for (const auto& it : items) other += it.expert < 0 ? it.bytes : 0;
  const int64_t one = c.moe.expert_ffn * c.hidden * 4, slot = 3 * ((one + 255) / 256 * 256);
  ResidencyConfig r;
  r.device_budget = other + 3 * c.n_layers * slot + slot / 2;  // 3 experts per layer and a half
  offload::Placement p = offload::place(items, r, c.moe.n_used);
  EXPECT_EQ(p.strategy, "experts cached");
  EXPECT_EQ(p.expert_slots, 3);
  EXPECT_EQ(p.expert_slot_bytes, slot);
  EXPECT_EQ(p.expert_layers, c.n_layers);
  EXPECT_LE(p.device_bytes(), r.device_budget);
  EXPECT_EQ(p.min_device_bytes, other + c.moe.n_used * c.n_layers * slot);
  EXPECT_EQ(p.expert_resident_bytes() + p.expert_streamed_bytes(), p.expert_bytes);

  // One layer's top-2 experts do not fit: refused, naming the minimum.
  r.device_budget = other + c.n_layers * slot;
  try {
    offload::place(items, r, c.moe.n_used);
    ADD_FAILURE() << "a budget below top-k experts per layer was accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("top-k = 2"), std::string::npos) << m;
    EXPECT_NE(m.find("the minimum is " + offload::format_size(p.min_device_bytes, true)), std::string::npos) << m;
    EXPECT_NE(m.find("device_budget"), std::string::npos) << m;
  }
  // resident_per_layer below top-k, or above the experts held: refused, naming the field and the range.
  ResidencyConfig asked;
  asked.experts_resident_per_layer = 1;
  EXPECT_THROW(
      {
        try {
          offload::place(items, asked, c.moe.n_used);
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("offload.experts.resident_per_layer 1 is below"), std::string::npos);
          EXPECT_NE(std::string(e.what()).find("use 2..8"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  asked.experts_resident_per_layer = 9;
  EXPECT_THROW(offload::place(items, asked, c.moe.n_used), Error);
  // A budget with room for 4 but resident_per_layer 6: refused, saying how many fit.
  asked.experts_resident_per_layer = 6;
  asked.device_budget = other + 4 * c.n_layers * slot;
  try {
    offload::place(items, asked, c.moe.n_used);
    ADD_FAILURE() << "resident_per_layer beyond the budget was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds at most 4 resident experts per layer"), std::string::npos) << e.what();
  }
}

// The session refuses the same budget at load, before any step.
TEST(ExpertPlacement, ASessionWithTooSmallABudgetIsRefused) {
  const std::string dir = test::fixture("hf/qwen3_moe");
  ResidencyConfig r;
  r.device_budget = 64 << 10;
  EXPECT_THROW(run(dir, r), Error);
}

}  // namespace
}  // namespace strata
