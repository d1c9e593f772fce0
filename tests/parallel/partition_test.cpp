// tests/parallel/partition_test.cpp: the partition against closed-form math: rank coordinates and
// groups, head/KV-head/ffn/vocab ranges, stage splits, slices that tile each tensor exactly once, and
// byte totals equal to ModelConfig::parameter_count() plus the copies held more than once.
#include "parallel/partition.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "parallel/perf_model.h"
#include "parallel/plan_parser.h"
#include "runtime/error.h"
#include "runtime/model_presets.h"

namespace strata::parallel {
namespace {

Plan plan_of(const std::string& text) {
  ParsedPlan p = parse_plan(text, "p.yaml");
  EXPECT_TRUE(p.ok()) << join_diagnostics(p.diagnostics);
  return p.plan;
}

Plan sizes(int tp, int pp, int dp = 1, const std::string& extra = "") {
  return plan_of(cat("model:\n  dtype: f16\nparallel:\n  tensor: ", tp, "\n  pipeline: ", pp, "\n  data: ", dp, "\n", extra));
}

ModelConfig heads(int64_t n_heads, int64_t n_kv) {
  ModelConfig c = model_preset("tiny");
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv;
  c.head_dim = 8;
  c.hidden = n_heads * 8;
  return c;
}

const ShardSlice* find(const RankPartition& r, const std::string& name) {
  for (const auto& s : r.shards)
    if (s.name == name) return &s;
  return nullptr;
}

TEST(RankLayout, TensorFastestThenPipelineThenData) {
  RankLayout layout(2, 3, 2);  // TP 2, PP 3, DP 2
  EXPECT_EQ(layout.world_size(), 12);
  for (int rank = 0; rank < 12; ++rank) {
    const RankCoord c = layout.coord(rank);
    EXPECT_EQ(rank, (c.dp * 3 + c.pp) * 2 + c.tp);
    EXPECT_EQ(layout.rank_of(c), rank);
  }
  EXPECT_EQ(layout.coord(7).dp, 1);
  EXPECT_EQ(layout.coord(7).pp, 0);
  EXPECT_EQ(layout.coord(7).tp, 1);
  EXPECT_EQ(layout.tp_group(9), (std::vector<int>{8, 9}));
  EXPECT_EQ(layout.pp_chain(9), (std::vector<int>{7, 9, 11}));
  EXPECT_EQ(layout.replica(9), (std::vector<int>{6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(layout.dp_group(3), (std::vector<int>{3, 9}));
  EXPECT_EQ(layout.driver(9), 6);
  EXPECT_EQ(layout.prev_stage_rank(9), 7);
  EXPECT_EQ(layout.next_stage_rank(9), 11);
  EXPECT_EQ(layout.prev_stage_rank(7), -1);
  EXPECT_EQ(layout.next_stage_rank(11), -1);
  EXPECT_THROW(layout.coord(12), Error);
}

TEST(Partition, KvHeadsReplicatedWhenFewerThanRanks) {
  for (auto [n_heads, n_kv, tp] : {std::tuple{8, 1, 2}, std::tuple{8, 2, 4}, std::tuple{8, 4, 8}, std::tuple{16, 2, 4}}) {
    const ModelConfig c = heads(n_heads, n_kv);
    const Partition p = make_partition(sizes(tp, 1), c, tp);
    EXPECT_EQ(p.kv_replication, tp / n_kv);
    const int64_t group = n_heads / n_kv;  // query heads sharing one KV head (GQA)
    for (const auto& r : p.ranks) {
      EXPECT_EQ(r.shard.q_heads, n_heads / tp);
      EXPECT_EQ(r.shard.q_head_begin, r.tp * n_heads / tp);
      EXPECT_EQ(r.shard.kv_heads, 1);
      EXPECT_EQ(r.shard.kv_head_begin, r.tp / (tp / n_kv));
      // Every query head of the rank attends with the KV head the rank holds.
      for (int64_t q = r.shard.q_head_begin; q < r.shard.q_head_begin + r.shard.q_heads; ++q) EXPECT_EQ(q / group, r.shard.kv_head_begin);
      const ShardSlice* k = find(r, "blk.0.attn_k.weight");
      ASSERT_NE(k, nullptr);
      EXPECT_EQ(k->kind, TpSplit::kRows);
      EXPECT_EQ(k->offset, r.shard.kv_head_begin * c.head_dim);
      EXPECT_EQ(k->local_shape, (Shape{c.head_dim, c.hidden}));
    }
  }
}

TEST(Partition, KvHeadsSplitWhenAtLeastRanks) {
  const ModelConfig c = heads(16, 8);
  const Partition p = make_partition(sizes(4, 1), c, 4);
  EXPECT_EQ(p.kv_replication, 1);
  for (const auto& r : p.ranks) {
    EXPECT_EQ(r.shard.kv_heads, 2);
    EXPECT_EQ(r.shard.kv_head_begin, 2 * r.tp);
    for (int64_t q = r.shard.q_head_begin; q < r.shard.q_head_begin + r.shard.q_heads; ++q) {
      EXPECT_GE(q / 2, r.shard.kv_head_begin);
      EXPECT_LT(q / 2, r.shard.kv_head_begin + r.shard.kv_heads);
    }
  }
}

TEST(Partition, BalancedStagesGiveExtraLayersToEarlierStages) {
  const Partition p = make_partition(sizes(1, 3), model_preset("7b-shape"), 3);  // 32 layers
  ASSERT_EQ(p.stages.size(), 3u);
  EXPECT_EQ(p.stages[0].layer_begin, 0);
  EXPECT_EQ(p.stages[0].layer_end, 11);
  EXPECT_EQ(p.stages[1].layer_end, 22);
  EXPECT_EQ(p.stages[2].layer_end, 32);
  const Partition tiny = make_partition(sizes(1, 3), model_preset("tiny"), 3);  // 4 layers -> 2, 1, 1
  EXPECT_EQ(tiny.stages[0].size(), 2);
  EXPECT_EQ(tiny.stages[1].size(), 1);
  EXPECT_EQ(tiny.stages[2].size(), 1);
  EXPECT_TRUE(tiny.rank(0).shard.first_stage);
  EXPECT_FALSE(tiny.rank(0).shard.last_stage);
  EXPECT_FALSE(tiny.rank(1).shard.first_stage || tiny.rank(1).shard.last_stage);
  EXPECT_TRUE(tiny.rank(2).shard.last_stage);
  EXPECT_NE(find(tiny.rank(0), "token_embd.weight"), nullptr);
  EXPECT_EQ(find(tiny.rank(1), "token_embd.weight"), nullptr);
  EXPECT_NE(find(tiny.rank(2), "output.weight"), nullptr);
  EXPECT_NE(find(tiny.rank(2), "output_norm.weight"), nullptr);
  EXPECT_NE(find(tiny.rank(1), "blk.2.ffn_up.weight"), nullptr);
  EXPECT_EQ(find(tiny.rank(1), "blk.1.ffn_up.weight"), nullptr);
}

// The LM head is read every step by the last stage, so the split counts it: a model whose head is
// large next to a layer gives its last stage fewer layers, and the heaviest stage gets lighter than
// with layers alone. For Llama-sized models the head is under a layer and nothing moves.
TEST(Partition, BalancedStagesCountTheHeadOnTheLastStage) {
  const ModelConfig small = model_preset("small");
  const std::vector<int64_t> split = balanced_stage_layers(small, 2);
  ASSERT_EQ(split.size(), 2u);
  EXPECT_EQ(split[0] + split[1], small.n_layers);
  EXPECT_LT(split[1], split[0]);
  const double layer = static_cast<double>(layer_params(small, 1));
  const double head = static_cast<double>(head_params(small, 1));
  auto heaviest = [&](int64_t first, int64_t last) { return std::max(first * layer, last * layer + head); };
  const int64_t even = small.n_layers / 2;
  EXPECT_LT(heaviest(split[0], split[1]), heaviest(small.n_layers - even, even));
  for (const char* big : {"7b-shape", "13b-shape", "70b-shape"}) {
    const ModelConfig c = model_preset(big);
    for (int64_t pp : {2, 4, 8}) {
      const std::vector<int64_t> s = balanced_stage_layers(c, pp);
      EXPECT_EQ(*std::max_element(s.begin(), s.end()) - *std::min_element(s.begin(), s.end()),
                c.n_layers % pp == 0 ? 0 : 1)
          << big << " pp" << pp;
    }
  }
  EXPECT_EQ(balanced_stage_layers(model_preset("tiny"), 4), (std::vector<int64_t>{1, 1, 1, 1}));
}

TEST(Partition, ExplicitStages) {
  const Partition p = make_partition(sizes(2, 2, 1, "  stages: [{layers: \"0-2\"}, {layers: [3]}]\n"),
                                     model_preset("tiny"), 4);
  EXPECT_EQ(p.rank(1).layer_begin, 0);
  EXPECT_EQ(p.rank(1).layer_end, 3);
  EXPECT_EQ(p.rank(3).layer_begin, 3);
  EXPECT_EQ(p.rank(3).layer_end, 4);
  EXPECT_EQ(p.rank(3).pp_chain, (std::vector<int>{1, 3}));
  EXPECT_EQ(p.rank(3).prev_stage, 1);
  EXPECT_EQ(p.rank(1).next_stage, 3);
}

TEST(Partition, VocabPaddedToMultipleOfTensor) {
  ModelConfig c = model_preset("tiny");
  c.vocab_size = 1001;
  const Partition p = make_partition(sizes(4, 1), c, 4);
  EXPECT_EQ(p.vocab_padded, 1004);
  EXPECT_EQ(p.vocab_per_rank, 251);
  int64_t total = 0;
  for (const auto& r : p.ranks) {
    EXPECT_EQ(r.shard.vocab_begin, r.tp * 251);
    EXPECT_EQ(r.shard.vocab_count, r.tp < 3 ? 251 : 248);  // the last shard is short, not padded
    const ShardSlice* e = find(r, "token_embd.weight");
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->local_shape, (Shape{r.shard.vocab_count, c.hidden}));
    EXPECT_EQ(find(r, "output.weight")->offset, r.shard.vocab_begin);
    total += r.shard.vocab_count;
  }
  EXPECT_EQ(total, 1001);
}

// Every split tensor is tiled exactly once by its TP group; replicated ones are whole on every rank.
TEST(Partition, SlicesTileEachTensor) {
  const ModelConfig c = model_preset("70b-shape");
  const Partition p = make_partition(sizes(8, 2), c, 16);
  std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> pieces;
  std::map<std::string, const ShardSlice*> any;
  for (const auto& r : p.ranks)
    for (const auto& s : r.shards) {
      pieces[s.name].push_back({s.offset, s.count});
      any[s.name] = &s;
      EXPECT_EQ(shape_numel(s.local_shape) * 2, s.bytes) << s.name;
    }
  EXPECT_EQ(pieces.size(), 3u + 80u * 9u);
  for (auto& [name, ranges] : pieces) {
    const ShardSlice& s = *any[name];
    std::sort(ranges.begin(), ranges.end());
    if (s.kind == TpSplit::kReplicated) {
      EXPECT_EQ(ranges.size(), 8u) << name;
      continue;
    }
    const int64_t dim = s.full_shape[s.kind == TpSplit::kRows ? 0 : 1];
    int64_t next = 0;
    for (auto [offset, count] : ranges) {
      EXPECT_EQ(offset, next) << name;
      next = offset + count;
    }
    EXPECT_EQ(next, dim) << name;
  }
  EXPECT_EQ(any["blk.0.attn_output.weight"]->kind, TpSplit::kCols);
  EXPECT_EQ(any["blk.0.ffn_down.weight"]->kind, TpSplit::kCols);
  EXPECT_EQ(any["blk.0.ffn_gate.weight"]->kind, TpSplit::kRows);
  EXPECT_EQ(any["blk.0.attn_q.weight"]->local_shape, (Shape{1024, 8192}));
  EXPECT_EQ(any["blk.0.ffn_down.weight"]->local_shape, (Shape{8192, 3584}));
}

// Sum of bytes over ranks = the model's parameters x 2 bytes (f16), plus every extra copy: norms on each
// TP rank, KV heads replicated beyond the first copy, the head's copy of tied embeddings.
int64_t expected_total(const ModelConfig& c, int tp, int pp, int dp) {
  const int64_t norms = (2 * c.n_layers + 1) * c.hidden;  // replicated on every TP rank
  int64_t extra = (tp - 1) * norms;
  if (tp > c.n_kv_heads)  // attn_k and attn_v weights (and biases) of each KV head, once per extra holder
    extra += (tp / c.n_kv_heads - 1) * c.n_layers * 2 * c.n_kv_heads * c.head_dim * (c.hidden + (c.qkv_bias ? 1 : 0));
  if (c.tied_embeddings && pp > 1) extra += c.vocab_size * c.hidden;
  return dp * (c.parameter_count() + extra) * 2;
}

TEST(Partition, ByteTotalsMatchParameterCount) {
  struct Case {
    const char* shape;
    int tp, pp, dp;
  };
  for (const Case& k : {Case{"7b-shape", 2, 2, 1}, Case{"70b-shape", 8, 1, 1}, Case{"70b-shape", 16, 1, 1},
                        Case{"70b-shape", 4, 2, 1}, Case{"llama3-70b-shape", 8, 2, 1}, Case{"small", 2, 2, 2},
                        Case{"qwen2-tiny", 2, 1, 1}, Case{"qwen2-tiny", 2, 3, 1}, Case{"qwen2-tiny", 4, 1, 1}}) {
    const ModelConfig c = model_preset(k.shape);
    const Partition p = make_partition(sizes(k.tp, k.pp, k.dp), c, k.tp * k.pp * k.dp);
    EXPECT_EQ(p.model_bytes, c.parameter_count() * 2) << k.shape;
    EXPECT_EQ(p.totals.weights(), expected_total(c, k.tp, k.pp, k.dp)) << k.shape << " tp" << k.tp << " pp" << k.pp;
    int64_t summed = 0;
    for (const auto& r : p.ranks) {
      int64_t rank_bytes = 0;
      for (const auto& s : r.shards) rank_bytes += s.bytes;
      EXPECT_EQ(rank_bytes, r.bytes.weights());
      summed += rank_bytes;
    }
    EXPECT_EQ(summed, p.totals.weights());
  }
}

TEST(Partition, QkvBiasAndTiedEmbeddings) {
  const ModelConfig c = model_preset("qwen2-tiny");  // 4 heads, 2 KV heads, head_dim 16, tied
  const Partition p = make_partition(sizes(2, 3), c, 6);
  const RankPartition& r = p.rank(1);  // tp 1 of stage 0
  const ShardSlice* qb = find(r, "blk.0.attn_q.bias");
  ASSERT_NE(qb, nullptr);
  EXPECT_EQ(qb->kind, TpSplit::kRows);
  EXPECT_EQ(qb->offset, 2 * 16);
  EXPECT_EQ(qb->local_shape, (Shape{32}));
  EXPECT_EQ(find(r, "blk.0.attn_k.bias")->offset, 16);
  EXPECT_EQ(find(p.rank(5), "output.weight"), nullptr);  // tied: the head is token_embd
  const ShardSlice* head = find(p.rank(5), "token_embd.weight");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->offset, 256);
  EXPECT_EQ(find(p.rank(3), "token_embd.weight"), nullptr);  // the middle stage has neither
}

TEST(Partition, QuantizedBlocksAndF32Norms) {
  Plan plan = plan_of("model:\n  dtype: q8_0\nparallel:\n  tensor: 2\n");
  const ModelConfig c = model_preset("tiny");
  const Partition p = make_partition(plan, c, 2);
  const ShardSlice* down = find(p.rank(0), "blk.0.ffn_down.weight");
  EXPECT_EQ(down->local_shape, (Shape{64, 96}));
  EXPECT_EQ(down->bytes, 64 * 96 / 32 * 34);
  const ShardSlice* norm = find(p.rank(0), "blk.0.attn_norm.weight");
  EXPECT_EQ(norm->dtype, DType::kF32);
  EXPECT_EQ(norm->bytes, 64 * 4);
  EXPECT_THROW(make_partition(plan_of("model:\n  dtype: q8_0\nparallel:\n  tensor: 4\n"), c, 4), Error);
}

TEST(Partition, ReplicasHoldTheSameShards) {
  const Partition p = make_partition(sizes(2, 2, 3), model_preset("tiny"), 12);
  for (int rank = 4; rank < 12; ++rank) {
    const RankPartition& r = p.rank(rank);
    const RankPartition& twin = p.rank(rank % 4);
    EXPECT_EQ(r.dp, rank / 4);
    ASSERT_EQ(r.shards.size(), twin.shards.size());
    for (size_t i = 0; i < r.shards.size(); ++i) {
      EXPECT_EQ(r.shards[i].name, twin.shards[i].name);
      EXPECT_EQ(r.shards[i].offset, twin.shards[i].offset);
    }
    EXPECT_EQ(r.replica.front(), rank / 4 * 4);
  }
}

TEST(Partition, OffloadPlacementKeepsTheBudgetAndTheRules) {
  // The tiers come from offload::place (tests/parallel/partition_offload_test.cpp checks they equal the
  // run's); here, what any placement must do: rules win, the head stays, every weight is on one tier
  // and the device holds no more than its budget.
  const ModelConfig c = model_preset("tiny");
  const int64_t pinned = 2 * 512 * 64 * 4 + 64 * 4;
  const int64_t layer = (64 * 64 * 2 + 32 * 64 * 2 + 3 * 64 * 192) * 4 + 512;
  const int64_t budget = pinned + 3 * layer + layer / 2;  // a ring and some resident weights, not all
  Plan plan = plan_of(cat("model:\n  dtype: f32\noffload:\n  device_budget: ", budget,
                          "\n  cold_tier: disk\n  rules: [{match: \"blk.3.attn_*\", tier: host}]\n"));
  const Partition p = make_partition(plan, c, 1);
  const RankPartition& r = p.rank(0);
  EXPECT_TRUE(r.streams);
  EXPECT_TRUE(r.placement_error.empty()) << r.placement_error;
  EXPECT_EQ(find(r, "blk.3.attn_q.weight")->tier, Tier::kHost);  // the rule wins over cold_tier
  EXPECT_EQ(find(r, "output.weight")->tier, Tier::kDevice);
  EXPECT_EQ(find(r, "blk.0.attn_norm.weight")->tier, Tier::kDevice);  // norms are never streamed
  EXPECT_GT(r.bytes.disk, 0);  // what does not fit goes to cold_tier
  EXPECT_EQ(r.bytes.weights(), p.model_bytes);
  EXPECT_LE(r.bytes.device + r.bytes.staging, budget);
  EXPECT_GT(r.min_device_bytes, r.pinned_bytes);
  EXPECT_EQ(r.ring_slots, 3);  // the computing layer + prefetch_depth 2
}

TEST(Partition, GlobMatch) {
  EXPECT_TRUE(glob_match("blk.*.ffn_*", "blk.12.ffn_down.weight"));
  EXPECT_FALSE(glob_match("blk.*.ffn_*", "blk.12.attn_q.weight"));
  EXPECT_TRUE(glob_match("blk.?.attn_q.weight", "blk.3.attn_q.weight"));
  EXPECT_FALSE(glob_match("blk.?.attn_q.weight", "blk.13.attn_q.weight"));
  EXPECT_TRUE(glob_match("*", "output.weight"));
  EXPECT_FALSE(glob_match("output", "output.weight"));
}

}  // namespace
}  // namespace strata::parallel
