// parallel/plan_check.cpp: validation of a plan against a model. Structural rules first (sizes, heads,
// stages); only when they hold is the partition computed, to check the budgets against real shard sizes.
#include "parallel/plan_check.h"

#include <algorithm>
#include <map>

#include "parallel/byte_size.h"
#include "runtime/error.h"
#include "runtime/models/model_description.h"

namespace strata::parallel {
namespace {

std::string int_list(const std::vector<int>& values) {
  std::string out;
  for (int v : values) {
    if (!out.empty()) out += ", ";
    out += std::to_string(v);
  }
  return out.empty() ? "none" : out;
}

// "0-3, 5, 8-9" for sorted unique values.
std::string ranges_str(const std::vector<int64_t>& values) {
  std::string out;
  for (size_t i = 0; i < values.size();) {
    size_t j = i;
    while (j + 1 < values.size() && values[j + 1] == values[j] + 1) ++j;
    if (!out.empty()) out += ", ";
    out += (i == j ? std::to_string(values[i]) : cat(values[i], "-", values[j]));
    i = j + 1;
  }
  return out;
}

const char* kKvRule =
    "each rank holds n_heads / tensor query heads (so n_heads % tensor == 0 always); KV heads are split "
    "when tensor <= n_kv_heads (n_kv_heads % tensor == 0) and replicated on tensor / n_kv_heads ranks when "
    "tensor > n_kv_heads (tensor % n_kv_heads == 0)";

// Divisibility rules for TP; appends a diagnostic per broken rule when `out` is given.
bool check_tensor(const Plan* plan, const ModelConfig& c, int tp, DType dtype, std::vector<Diagnostic>* out) {
  bool ok = true;
  auto fail = [&](std::string message) {
    ok = false;
    if (out != nullptr) {
      message += cat("; tensor sizes that work for this model: ", int_list(valid_tensor_sizes(c, dtype)));
      out->push_back(plan->diagnostic("parallel.tensor", std::move(message)));
    }
  };
  if (c.n_heads % tp != 0) {
    fail(cat("parallel.tensor = ", tp, " does not divide the ", c.n_heads, " attention heads; ", kKvRule));
    return false;  // the rules below assume whole query heads per rank
  }
  if (tp > c.n_kv_heads && tp % c.n_kv_heads != 0)
    fail(cat("parallel.tensor = ", tp, " is more than the ", c.n_kv_heads,
             " KV heads but not a multiple of them, so KV heads cannot be replicated evenly; ", kKvRule));
  if (tp <= c.n_kv_heads && c.n_kv_heads % tp != 0)
    fail(cat("parallel.tensor = ", tp, " does not divide the ", c.n_kv_heads, " KV heads; ", kKvRule));
  if (c.ffn % tp != 0)
    fail(cat("parallel.tensor = ", tp, " does not divide the MLP width ffn = ", c.ffn,
             "; ffn_gate/ffn_up/ffn_down are split into ffn / tensor columns per rank"));
  if (!dtype_is_quantized(dtype) || !ok) return ok;
  // Block-quantized rows store `block` consecutive input elements per block (32, or 256 for the K-quants),
  // so a row-parallel split of the input dim (the model description's kCols slots) must land on block
  // boundaries.
  const int64_t block = dtype_block_elems(dtype);
  for (const TensorSlot& slot : model_description(c).slots) {
    if (slot.split != TpSplit::kCols || !slot.may_quantize() || !slot.present(c)) continue;
    const int64_t whole = slot.full_shape(c)[1], local = whole / tp;
    if (local % block == 0 || local == whole) continue;  // unsplit (tensor 1): whole rows, whole blocks
    fail(cat("with dtype ", dtype_name(dtype), ", ", slot.per_layer ? "blk.*." : "", slot.name,
             " is split along its input dim into ", local, " columns per rank (", dim_name(slot.shape[1]), " ", whole,
             " / tensor ", tp, "), not a multiple of the ", block, "-element ", dtype_name(dtype),
             " block, so a rank would hold part of a block; pick a tensor size that keeps it a multiple of ", block,
             ", a dtype with smaller blocks (q8_0, q4_0: 32) or an unquantized model.dtype (f16, bf16)"));
  }
  return ok;
}

void check_stages(const Plan& plan, const ModelConfig& c, std::vector<Diagnostic>& out) {
  const auto& stages = plan.parallel.stages;
  if (stages.empty()) return;
  if (static_cast<int>(stages.size()) != plan.parallel.pipeline) {
    out.push_back(plan.diagnostic("parallel.stages",
                                  cat("parallel.stages lists ", stages.size(), " stages but parallel.pipeline is ",
                                      plan.parallel.pipeline, "; give one entry per pipeline stage")));
    return;
  }
  const size_t before = out.size();
  std::vector<int> owner(static_cast<size_t>(c.n_layers), -1);
  for (size_t i = 0; i < stages.size(); ++i) {
    const std::string field = cat("parallel.stages[", i, "]");
    std::vector<int64_t> layers = stages[i].layers;
    if (layers.empty()) {  // only from a plan built in code: the parser reports an unreadable set itself
      out.push_back(plan.diagnostic(field, cat(field, " has no layers; give a range such as \"0-11\"")));
      continue;
    }
    std::sort(layers.begin(), layers.end());
    const auto dup = std::adjacent_find(layers.begin(), layers.end());
    if (dup != layers.end()) {
      out.push_back(plan.diagnostic(field, cat(field, " lists layer ", *dup, " twice; each layer belongs to exactly one stage")));
      continue;
    }
    if (layers.back() >= c.n_layers) {
      out.push_back(plan.diagnostic(field, cat(field, " names layer ", layers.back(), " but the model has ", c.n_layers,
                                               " layers (0-", c.n_layers - 1, ")")));
      continue;
    }
    if (layers.back() - layers.front() + 1 != static_cast<int64_t>(layers.size())) {
      out.push_back(plan.diagnostic(field, cat(field, " holds layers ", ranges_str(layers),
                                               ", which are not one contiguous range; activations flow from stage to "
                                               "stage, so each stage holds consecutive layers")));
      continue;
    }
    std::vector<int64_t> shared;
    int other = -1;
    for (int64_t l : layers) {
      int& o = owner[static_cast<size_t>(l)];
      if (o >= 0) shared.push_back(l), other = o;
      else o = static_cast<int>(i);
    }
    if (!shared.empty())
      out.push_back(plan.diagnostic(field, cat(field, " overlaps parallel.stages[", other, "] on layers ",
                                               ranges_str(shared), "; each layer belongs to exactly one stage")));
  }
  if (out.size() != before) return;
  std::vector<int64_t> missing;
  for (int64_t l = 0; l < c.n_layers; ++l)
    if (owner[static_cast<size_t>(l)] < 0) missing.push_back(l);
  if (!missing.empty()) {
    out.push_back(plan.diagnostic("parallel.stages",
                                  cat("layers ", ranges_str(missing), " are in no stage; parallel.stages must cover layers 0-",
                                      c.n_layers - 1, " exactly once (or drop stages for a balanced split)")));
    return;
  }
  for (size_t i = 1; i < stages.size(); ++i) {
    const auto lo = *std::min_element(stages[i].layers.begin(), stages[i].layers.end());
    const auto prev_lo = *std::min_element(stages[i - 1].layers.begin(), stages[i - 1].layers.end());
    if (lo < prev_lo) {
      out.push_back(plan.diagnostic(cat("parallel.stages[", i, "]"),
                                    cat("parallel.stages[", i, "] starts at layer ", lo, ", before parallel.stages[", i - 1,
                                        "] (layer ", prev_lo, "); list stages in layer order, stage 0 first")));
      return;
    }
  }
}

// Field that set this rank's device (or host) budget: the last per_rank entry naming it, else offload.
std::string budget_field(const Plan& plan, int rank, bool device) {
  std::string field = device ? "offload.device_budget" : "offload.host_budget";
  for (size_t i = 0; i < plan.offload.per_rank.size(); ++i) {
    const auto& rb = plan.offload.per_rank[i];
    const bool sets = device ? rb.device_budget.is_set() : rb.host_budget.is_set();
    if (sets && std::find(rb.ranks.begin(), rb.ranks.end(), rank) != rb.ranks.end())
      field = cat("offload.per_rank[", i, "].", device ? "device_budget" : "host_budget");
  }
  return field;
}

// Bytes placed on the disk tier that no disk rule asked for: the host budget's overflow.
int64_t spilled_to_disk(const Plan& plan, const RankPartition& r) {
  if (plan.offload.cold_tier != Tier::kHost) return 0;
  int64_t bytes = 0;
  for (const ShardSlice& s : r.shards) {
    if (s.tier != Tier::kDisk) continue;
    const TierRule* rule = nullptr;
    for (const auto& candidate : plan.offload.rules)
      if (glob_match(candidate.match, s.name)) {
        rule = &candidate;
        break;
      }
    if (rule == nullptr || rule->tier != Tier::kDisk) bytes += s.bytes;
  }
  return bytes;
}

void check_budgets(const Plan& plan, const Partition& part, const PartitionOptions& options,
                   std::vector<Diagnostic>& out) {
  struct Short {
    std::vector<int> ranks;
    const RankPartition* worst = nullptr;
  };
  std::map<std::string, Short> device_short, host_short, device_full;
  for (const auto& r : part.ranks) {
    if (r.device_budget >= 0 && r.streams && r.device_budget < r.min_device_bytes) {
      Short& s = device_short[budget_field(plan, r.rank, true)];
      s.ranks.push_back(r.rank);
      if (s.worst == nullptr || r.min_device_bytes > s.worst->min_device_bytes) s.worst = &r;
    }
    if (r.host_budget >= 0 && spilled_to_disk(plan, r) > 0) {
      Short& s = host_short[budget_field(plan, r.rank, false)];
      s.ranks.push_back(r.rank);
      if (s.worst == nullptr || spilled_to_disk(plan, r) > spilled_to_disk(plan, *s.worst)) s.worst = &r;
    }
    if (r.device_budget < 0 && options.device_memory > 0 && r.bytes.device > options.device_memory) {
      Short& s = device_full["offload.device_budget"];
      s.ranks.push_back(r.rank);
      if (s.worst == nullptr || r.bytes.device > s.worst->bytes.device) s.worst = &r;
    }
  }
  auto others = [](const Short& s) {
    std::vector<int> rest;
    for (int r : s.ranks)
      if (r != s.worst->rank) rest.push_back(r);
    return rest.empty() ? std::string() : cat(" (also too small on ranks ", int_list(rest), ")");
  };
  for (const auto& [field, s] : device_short) {
    const RankPartition& r = *s.worst;
    const int64_t budget = r.device_budget;
    out.push_back(plan.diagnostic(
        field, cat(field, " ", format_bytes(budget), " is below the minimum of rank ", r.rank, " (dp ", r.dp, ", pp ", r.pp,
                   ", tp ", r.tp, "): ", format_bytes_ceil(r.min_device_bytes), " = embeddings/norms/head ",
                   format_bytes(r.pinned_bytes), " + a ring of ", r.ring_slots, " layer slots x ",
                   format_bytes(r.layer_slot_bytes), " (prefetch_depth ", plan.offload.prefetch_depth,
                   " + 1, at most one per layer of the stage)", others(s), "; raise it to at least ", format_bytes_ceil(r.min_device_bytes),
                   ", lower offload.prefetch_depth, or add tensor/pipeline ranks")));
  }
  // What offload::place rejected for other reasons (a rule it cannot follow, a host budget the rules
  // overfill): the run would fail the same way at startup.
  for (const auto& r : part.ranks) {
    const bool reported = r.device_budget >= 0 && r.streams && r.device_budget < r.min_device_bytes;
    if (!r.placement_error.empty() && !reported)
      out.push_back(plan.diagnostic("offload", cat("rank ", r.rank, ": ", r.placement_error)));
  }
  // offload::place spills what the host budget cannot hold to the disk tier, so the run works; it
  // only streams slower. A warning, so `plan --check` says what the run will do.
  for (const auto& [field, s] : host_short) {
    const RankPartition& r = *s.worst;
    out.push_back(plan.diagnostic(
        field,
        cat(field, " ", format_bytes(r.host_budget), " holds ", format_bytes(r.bytes.host), " of the weights rank ",
            r.rank, " streams; the other ", format_bytes(spilled_to_disk(plan, r)),
            " stay on disk and stream from the checkpoint", others(s), "; raise it to at least ",
            format_bytes_ceil(r.bytes.host + spilled_to_disk(plan, r)),
            " to keep them in host memory, or set offload.cold_tier: disk if that is the intent"),
        Severity::kWarning));
  }
  for (const auto& [field, s] : device_full) {
    const RankPartition& r = *s.worst;
    out.push_back(plan.diagnostic(
        "offload", cat("rank ", r.rank, " holds ", format_bytes(r.bytes.device), " of weights but its device has ",
                       format_bytes(options.device_memory), others(s),
                       "; set offload.device_budget so cold layers stream from host, or add tensor/pipeline ranks")));
  }
}

void check_rules(const Plan& plan, const ModelConfig& c, std::vector<Diagnostic>& out) {
  if (plan.offload.rules.empty()) return;
  std::vector<std::string> names = {"token_embd.weight", "output_norm.weight"};
  if (!c.tied_embeddings) names.push_back("output.weight");
  for (int64_t l = 0; l < c.n_layers; ++l) {
    for (const char* t : {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                          "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"})
      names.push_back(cat("blk.", l, ".", t));
    if (c.qkv_bias)
      for (const char* t : {"attn_q.bias", "attn_k.bias", "attn_v.bias"}) names.push_back(cat("blk.", l, ".", t));
  }
  for (size_t i = 0; i < plan.offload.rules.size(); ++i) {
    const auto& rule = plan.offload.rules[i];
    const bool any = std::any_of(names.begin(), names.end(), [&](const std::string& n) { return glob_match(rule.match, n); });
    if (!any)
      out.push_back(plan.diagnostic(cat("offload.rules[", i, "].match"),
                                    cat("offload.rules[", i, "].match '", rule.match,
                                        "' matches no tensor of this model; names look like token_embd.weight, "
                                        "blk.0.ffn_up.weight, output.weight"),
                                    Severity::kWarning));
  }
}

}  // namespace

std::vector<int> valid_tensor_sizes(const ModelConfig& config, DType dtype) {
  std::vector<int> out;
  for (int tp = 1; tp <= config.n_heads; ++tp)
    if (check_tensor(nullptr, config, tp, dtype, nullptr)) out.push_back(tp);
  return out;
}

// parallel.expert: the model must have experts, and tensor x expert ranks must split each stage's experts
// (and the shared expert's columns) evenly; the message lists the expert sizes that work with this tensor size.
static void check_experts(const Plan& plan, const ModelConfig& c, DType dtype, std::vector<Diagnostic>& out) {
  const int tp = plan.parallel.tensor, ep = plan.parallel.expert;
  if (!c.moe.enabled()) {
    if (ep > 1)
      out.push_back(plan.diagnostic("parallel.expert", cat("parallel.expert = ", ep, " but ", c.arch,
                                                           " has no experts; remove parallel.expert or set it to 1")));
    return;
  }
  // The shared expert's down projection is split along its input over the whole group: with a block-quantized
  // dtype each rank's columns must be whole blocks.
  const int64_t block = dtype_is_quantized(dtype) ? dtype_block_elems(dtype) : 1;
  const auto splits = [&](int64_t group) {
    return c.moe.n_experts % group == 0 && c.moe.shared_ffn % group == 0 &&
           (group == 1 || (c.moe.shared_ffn / group) % block == 0);
  };
  if (splits(int64_t{tp} * ep)) return;
  std::vector<int> work;
  for (int e = 1; e <= c.moe.n_experts; ++e)
    if (splits(int64_t{tp} * e)) work.push_back(e);
  const std::string field = ep > 1 ? "parallel.expert" : "parallel.tensor";
  out.push_back(plan.diagnostic(
      field, cat("tensor x expert = ", tp, " x ", ep, " = ", int64_t{tp} * ep, " ranks do not split the ",
                 c.moe.n_experts, " experts of each layer", c.moe.shared_ffn > 0 ? cat(" (and the shared expert's ",
                 c.moe.shared_ffn, " columns", block > 1 ? cat(" in whole ", block, "-column ", dtype_name(dtype),
                 " blocks") : std::string(), ")") : std::string(), " evenly; ",
                 work.empty() ? cat("no expert size works with tensor ", tp, "; choose a tensor size that divides ",
                                    c.moe.n_experts)
                              : cat("with tensor ", tp, ", parallel.expert may be ", int_list(work)))));
}

std::vector<Diagnostic> validate_plan(const Plan& plan, const ModelConfig& config, const PartitionOptions& options) {
  std::vector<Diagnostic> out;
  try {  // a zero head count would make every rule below divide by zero
    config.validate(plan.model.shape.empty() ? plan.model.path : "model.shape " + plan.model.shape);
  } catch (const Error& e) {
    out.push_back(plan.diagnostic("model", e.what()));
    return out;
  }
  const auto& par = plan.parallel;
  if (par.tensor < 1 || par.pipeline < 1 || par.data < 1 || par.expert < 1) {  // only from a plan built in code
    out.push_back(plan.diagnostic("parallel", cat("parallel sizes must be positive, got tensor ", par.tensor,
                                                  ", pipeline ", par.pipeline, ", data ", par.data, ", expert ",
                                                  par.expert)));
    return out;
  }
  if (options.world_size > 0 && options.world_size != plan.world_size())
    out.push_back(plan.diagnostic(
        "parallel", cat("the world has ", options.world_size, " ranks but data ", par.data, " x pipeline ", par.pipeline,
                        par.expert > 1 ? cat(" x expert ", par.expert) : std::string(), " x tensor ", par.tensor, " = ",
                        plan.world_size(), "; launch ", plan.world_size(),
                        " ranks (mpirun -np ", plan.world_size(), ") or change the parallel sizes so that their product is ",
                        options.world_size)));
  const DType dtype = plan_dtype(plan, options);
  if (dtype_is_quantized(dtype) && config.hidden % dtype_block_elems(dtype) != 0)
    out.push_back(plan.diagnostic("model.dtype", cat("model.dtype ", dtype_name(dtype), " stores rows in blocks of ",
                                                     dtype_block_elems(dtype), " but the model's hidden size ", config.hidden,
                                                     " is not a multiple of it; use f16 or bf16")));
  check_tensor(&plan, config, par.tensor, dtype, &out);
  check_experts(plan, config, dtype, out);
  if (par.pipeline > config.n_layers)
    out.push_back(plan.diagnostic("parallel.pipeline", cat("parallel.pipeline = ", par.pipeline, " is more than the ",
                                                           config.n_layers, " layers of the model; every stage needs at "
                                                           "least one layer")));
  else
    check_stages(plan, config, out);
  for (size_t i = 0; i < plan.offload.per_rank.size(); ++i) {
    const auto& rb = plan.offload.per_rank[i];
    const int worst = *std::max_element(rb.ranks.begin(), rb.ranks.end());
    if (worst >= plan.world_size())
      out.push_back(plan.diagnostic(cat("offload.per_rank[", i, "].ranks"),
                                    cat("offload.per_rank[", i, "] names rank ", worst, " but the plan has ",
                                        plan.world_size(), " ranks (0-", plan.world_size() - 1, ")")));
  }
  check_rules(plan, config, out);
  if (has_errors(out)) return out;  // the partition below assumes the structure holds
  const Partition part = compute_partition(plan, config, options);
  check_budgets(plan, part, options, out);
  return out;
}

std::vector<Diagnostic> validate_plan(const Plan& plan, const ModelConfig& config, int world_size) {
  PartitionOptions options;
  options.world_size = world_size;
  return validate_plan(plan, config, options);
}

void check_plan(const Plan& plan, const ModelConfig& config, const PartitionOptions& options) {
  throw_if_errors(validate_plan(plan, config, options));
}

DType checkpoint_weight_dtype(const Checkpoint& checkpoint, DType fallback) {
  const ModelConfig& c = checkpoint.config();
  DType out = fallback;
  for (const TensorRef& t : layer_tensors(c, 0))  // the first matrix: what the layers hold
    if (t.slot->may_quantize() && checkpoint.has(t.name)) {
      out = checkpoint.entry(t.name).dtype;
      break;
    }
  // A row-parallel split must keep whole blocks of the largest block type among the kCols matrices.
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (const TensorRef& t : layer_tensors(c, l)) {
      if (t.slot->split != TpSplit::kCols || !t.slot->may_quantize() || !checkpoint.has(t.name)) continue;
      const DType d = checkpoint.entry(t.name).dtype;
      if (dtype_is_quantized(d) && (!dtype_is_quantized(out) || dtype_block_elems(d) > dtype_block_elems(out))) out = d;
    }
  return out;
}

}  // namespace strata::parallel
