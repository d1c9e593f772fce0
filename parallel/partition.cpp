// parallel/partition.cpp: the shard arithmetic of partition.h and the tier of each shard. Tiers come
// from offload::place, the function the runtime places with, so `plan --check` shows the placement a
// run will use and rejects budgets it would reject.
#include "parallel/partition.h"

#include <algorithm>
#include <cmath>

#include "parallel/plan_check.h"
#include "runtime/error.h"

namespace strata::parallel {
namespace {

// The shards of one rank, in model order, as the model description slices them.
void add_shards(const ModelConfig& config, DType dtype, RankPartition& rank) {
  for (const TensorRef& t : rank_tensors(config, rank.shard)) {
    ShardSlice s;
    s.name = t.name;
    s.layer = t.layer;
    s.expert = t.expert;
    s.slot = t.slot;
    s.kind = t.slot->split;
    s.full_shape = t.slot->full_shape(config);
    const SliceRange range = slot_slice(*t.slot, config, rank.shard);
    s.offset = range.offset;
    s.count = range.count;
    s.local_shape = local_shape(*t.slot, config, rank.shard);
    // Norms and biases are never block-quantized: they stay f32, as in GGUF files.
    s.dtype = !t.slot->may_quantize() && dtype_is_quantized(dtype) ? DType::kF32 : dtype;
    s.bytes = dtype_bytes(s.dtype, shape_numel(s.local_shape));
    rank.shards.push_back(std::move(s));
  }
}

// Places the shards exactly as the run will: offload::place over this rank's shard items with the
// plan's residency settings, so `plan --check` and the runtime agree tier by tier. A placement that
// cannot work (a budget below the minimum, a rule offload rejects) keeps its message for
// plan_check; the sizes its diagnostic needs come from the same placement without the budget.
void place_shards(const Plan& plan, const ModelConfig& model, const PartitionOptions& options, RankPartition& r) {
  const offload::ResidencyConfig config = residency_config(plan, r.rank, options.device_memory);
  const int64_t experts_per_token = model.moe.enabled() ? model.moe.n_used : 0;
  r.device_budget = config.device_budget;
  r.host_budget = config.host_budget;
  std::vector<offload::TensorItem> items;
  int64_t layers = 0;
  for (const ShardSlice& s : r.shards) {
    items.push_back({s.name, s.layer, s.bytes, offload::tensor_group(*s.slot), s.expert});
    if (s.layer >= 0) layers = std::max(layers, s.layer - r.layer_begin + 1);
  }
  offload::Placement p;
  try {
    p = offload::place(items, config, experts_per_token);
    r.streams = p.streams();
  } catch (const Error& e) {
    r.placement_error = e.what();
    offload::ResidencyConfig unlimited = config;
    unlimited.device_budget = -1;
    unlimited.device_budget_percent = -1;
    try {
      unlimited.experts_resident_per_layer = -1;
      p = offload::place(items, unlimited, experts_per_token);
      // Only the budget was wrong: it would have to stream to fit. With experts the expert cache's own
      // message stands (the ring's minimum does not apply).
      r.streams = config.device_budget >= 0 && experts_per_token == 0;
    } catch (const Error&) {  // settings offload rejects whatever the budget: report them, place nothing off-device
      p = offload::Placement{};
      p.tiers.assign(items.size(), Tier::kDevice);
      for (const offload::TensorItem& it : items) p.resident_bytes += it.bytes;
      r.streams = false;
    }
  }
  for (size_t i = 0; i < r.shards.size(); ++i) r.shards[i].tier = p.tiers[i];
  r.bytes.device = p.resident_bytes + p.expert_resident_bytes();
  r.bytes.host = p.host_bytes + (p.expert_tier == Tier::kHost ? p.expert_streamed_bytes() : 0);
  r.expert_slots = p.expert_slots;
  r.expert_tier = p.expert_tier;
  r.expert_layers = p.expert_layers;
  r.expert_resident_bytes = p.expert_resident_bytes();
  r.expert_streamed_bytes = p.expert_streamed_bytes();
  r.expert_cache_bytes = p.expert_cache_bytes();
  if (p.expert_slots > 0)
    r.expert_fetch_bytes = std::min<int64_t>(experts_per_token, p.experts_held - p.expert_slots) * p.expert_layers *
                           (p.expert_bytes / std::max<int64_t>(1, p.experts_held * p.expert_layers));
  r.bytes.disk = p.disk_bytes + (p.expert_tier == Tier::kDisk ? p.expert_streamed_bytes() : 0);
  r.bytes.staging = p.ring_bytes();
  r.pinned_bytes = p.pinned_bytes;
  r.min_device_bytes = p.min_device_bytes;
  // The minimum's ring: (prefetch_depth + 1) slots of the largest streamable layer, fewer with fewer
  // layers (offload::place sizes it so).
  r.ring_slots = static_cast<int>(std::min<int64_t>(plan.offload.prefetch_depth + 1, layers));
  r.layer_slot_bytes =
      r.ring_slots > 0 ? (p.min_device_bytes - p.pinned_bytes - p.kv_reserve_bytes) / r.ring_slots : 0;
}

}  // namespace

bool glob_match(const std::string& pattern, const std::string& name) {
  // Iterative matcher with one backtrack point for the last '*': linear in practice.
  size_t p = 0, n = 0, star = std::string::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p, ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

DType plan_dtype(const Plan& plan, const PartitionOptions& options) {
  return plan.model.dtype.value_or(options.default_dtype);
}

std::vector<Stage> plan_stages(const Plan& plan, const ModelConfig& config) {
  std::vector<Stage> stages;
  if (!plan.parallel.stages.empty()) {
    for (const auto& s : plan.parallel.stages) {
      const auto [lo, hi] = std::minmax_element(s.layers.begin(), s.layers.end());
      stages.push_back(Stage{*lo, *hi + 1});
    }
    return stages;
  }
  int64_t begin = 0;
  for (int64_t n : balanced_stage_layers(config, plan.parallel.pipeline)) {
    stages.push_back(Stage{begin, begin + n});
    begin += n;
  }
  return stages;
}

std::vector<int64_t> balanced_stage_layers(const ModelConfig& c, int64_t pp) {
  const int64_t N = c.n_layers;
  if (pp <= 1) return {N};
  // Weights per layer and of the LM head, which the last stage also reads every step: counted in
  // layers, the head takes layers off the last stage so that no stage is the pipeline's bottleneck.
  const double layer = static_cast<double>(c.hidden) * static_cast<double>(2 * c.n_heads * c.head_dim +
                                                                             2 * c.n_kv_heads * c.head_dim + 3 * c.ffn);
  const double head = layer > 0 ? static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden) / layer : 0;
  // The last stage's layer count that makes the heaviest stage lightest (ties: more layers last).
  int64_t last = 1;
  double best = -1;
  for (int64_t n = 1; n <= N - (pp - 1); ++n) {
    const int64_t front = (N - n + pp - 2) / (pp - 1);  // the largest of the other stages
    const double heaviest = std::max(static_cast<double>(front), static_cast<double>(n) + head);
    if (best < 0 || heaviest <= best) best = heaviest, last = n;
  }
  const int64_t rest = N - last, base = rest / (pp - 1), extra = rest % (pp - 1);
  std::vector<int64_t> out;
  for (int64_t i = 0; i + 1 < pp; ++i) out.push_back(base + (i < extra ? 1 : 0));  // extra layers to the front
  out.push_back(last);
  return out;
}

Partition compute_partition(const Plan& plan, const ModelConfig& config, const PartitionOptions& options) {
  const auto& par = plan.parallel;
  Partition out;
  out.layout = RankLayout(par.tensor, par.pipeline, par.data, par.expert);
  out.dtype = plan_dtype(plan, options);
  if (!plan.model.dtype) out.dtype_source = options.default_dtype_source;
  out.stages = plan_stages(plan, config);
  const int64_t tp_size = par.tensor;
  out.vocab_size = config.vocab_size;
  out.vocab_per_rank = ShardSpec::make(config, 0, static_cast<int>(tp_size), 0, config.n_layers).vocab_shard;
  out.vocab_padded = out.vocab_per_rank * tp_size;
  out.kv_replication = tp_size > config.n_kv_heads ? tp_size / config.n_kv_heads : 1;

  {  // model_bytes: every tensor once, as the one-rank partition of the same model would hold it
    RankPartition whole;
    whole.shard = ShardSpec::make(config, 0, 1, 0, config.n_layers);
    add_shards(config, out.dtype, whole);
    for (const auto& s : whole.shards) out.model_bytes += s.bytes;
  }

  for (int rank = 0; rank < out.layout.world_size(); ++rank) {
    const RankCoord c = out.layout.coord(rank);
    RankPartition r;
    r.rank = rank;
    r.dp = c.dp, r.pp = c.pp, r.tp = c.tp, r.ep = c.ep;
    r.layer_begin = out.stages[static_cast<size_t>(c.pp)].layer_begin;
    r.layer_end = out.stages[static_cast<size_t>(c.pp)].layer_end;
    r.shard = ShardSpec::make(config, c.tp, static_cast<int>(tp_size), r.layer_begin, r.layer_end, c.ep, par.expert);
    r.tp_group = out.layout.tp_group(rank);
    r.expert_group = out.layout.expert_group(rank);
    r.pp_chain = out.layout.pp_chain(rank);
    r.replica = out.layout.replica(rank);
    r.prev_stage = out.layout.prev_stage_rank(rank);
    r.next_stage = out.layout.next_stage_rank(rank);

    add_shards(config, out.dtype, r);
    place_shards(plan, config, options, r);
    out.totals.device += r.bytes.device;
    out.totals.host += r.bytes.host;
    out.totals.disk += r.bytes.disk;
    out.totals.staging += r.bytes.staging;
    out.ranks.push_back(std::move(r));
  }
  return out;
}

offload::ResidencyConfig residency_config(const Plan& plan, int rank, int64_t device_memory) {
  const OffloadSection& o = plan.offload;
  Budget device = o.device_budget, host = o.host_budget;
  for (const auto& rb : o.per_rank) {  // later entries win
    if (std::find(rb.ranks.begin(), rb.ranks.end(), rank) == rb.ranks.end()) continue;
    if (rb.device_budget.is_set()) device = rb.device_budget;
    if (rb.host_budget.is_set()) host = rb.host_budget;
  }
  offload::ResidencyConfig c;
  c.device_budget = device.resolve(device_memory);
  if (c.device_budget < 0 && device.percent > 0) c.device_budget_percent = device.percent;  // resolved at startup
  c.host_budget = host.resolve(0);
  c.cold_tier = o.cold_tier;
  c.prefetch_depth = o.prefetch_depth;
  for (const auto& rule : o.rules) c.rules.push_back({rule.match, rule.tier});
  c.experts_resident_per_layer = o.experts_resident_per_layer;
  c.expert_eviction = o.expert_eviction;
  return c;
}

Partition make_partition(const Plan& plan, const ModelConfig& config, int world_size) {
  PartitionOptions options;
  options.world_size = world_size;
  return make_partition(plan, config, options);
}

Partition make_partition(const Plan& plan, const ModelConfig& config, const PartitionOptions& options) {
  throw_if_errors(validate_plan(plan, config, options));
  return compute_partition(plan, config, options);
}

}  // namespace strata::parallel
