// parallel/partition.h: which rank holds which slice of which weight. Plain structs read by the loader
// (slices to read), the model code (head / ffn / vocab ranges), the comm layer (group member lists) and
// the residency manager (tier of each shard, from offload::place). Conventions, also in configs/README.md:
//  - stages: balanced by default; with n_layers = q * PP + r the first r stages get q + 1 layers, since
//    the last stage also runs the LM head, a matmul as large as one or more layers.
//  - which tensors exist, their shapes and how each splits (replicated, rows = column-parallel, cols =
//    row-parallel) come from the model description (runtime/models/model_description.h).
//  - KV heads: with TP <= n_kv each rank holds n_kv / TP consecutive heads; with TP > n_kv each KV head
//    is replicated on TP / n_kv consecutive ranks and rank tp holds head tp / (TP / n_kv). Query heads
//    of rank tp are [tp * n_heads / TP, (tp + 1) * n_heads / TP) either way.
//  - vocab: padded up to a multiple of TP; rank tp owns rows [tp * vocab_per_rank, +vocab_per_rank) of
//    the padded vocab, but its shard holds only the real rows (vocab_count), so the last ranks' shards
//    are short (never padded with zeros in memory). The model pads its local logits to vocab_per_rank
//    (with -inf) before the all-gather, and treats ids outside its rows as zero embeddings.
//  - tied embeddings with PP > 1: the last stage holds its own vocab-parallel copy of token_embd.weight
//    as the LM head.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "parallel/plan.h"
#include "parallel/rank_layout.h"
#include "runtime/dtype.h"
#include "runtime/model_config.h"
#include "runtime/models/model_description.h"
#include "runtime/shard_spec.h"
#include "runtime/tensor.h"

namespace strata::parallel {

struct ShardSlice {
  std::string name;    // canonical GGUF name, e.g. "blk.3.attn_q.weight"
  int64_t layer = -1;  // block index; -1 for token_embd, output_norm, output
  int64_t expert = -1;  // routed experts' tensors: the expert's index
  const TensorSlot* slot = nullptr;  // the model description's row (runtime/models/model_description.h)
  TpSplit kind = TpSplit::kReplicated;
  Shape full_shape;    // [out, in] for matrices, [n] for norms and biases
  int64_t offset = 0;  // first row (kRows) / column (kCols) held; 0 for kReplicated
  int64_t count = 0;   // rows (kRows) / columns (kCols) held; full_shape[0] for kReplicated
  Shape local_shape;
  DType dtype = DType::kF32;
  int64_t bytes = 0;
  Tier tier = Tier::kDevice;  // home, as offload::place decides it at run time
};

struct TierBytes {
  int64_t device = 0;   // weights resident on the device
  int64_t host = 0;     // weights in pinned host memory, streamed in
  int64_t disk = 0;     // weights left in the mapped checkpoint, streamed in
  int64_t staging = 0;  // device staging ring for streamed layers (prefetch_depth slots)
  int64_t weights() const { return device + host + disk; }
};

struct RankPartition {
  int rank = 0, dp = 0, pp = 0, tp = 0, ep = 0;
  int64_t layer_begin = 0, layer_end = 0;  // the stage's layers, [begin, end)
  // The rank's tensor-parallel split (ShardSpec::make, the only place it is computed): heads, FFN
  // columns, real vocab rows held (see vocab above); first_stage holds the embedding, last_stage the
  // final norm and LM head. The launcher hands it to the model as is.
  ShardSpec shard;
  std::vector<ShardSlice> shards;            // in model order (rank_tensors)
  TierBytes bytes;
  int64_t device_budget = -1;     // resolved bytes; -1 = no limit
  int64_t host_budget = -1;       // resolved bytes; -1 = no limit
  int64_t layer_slot_bytes = 0;   // largest layer shard that may stream: the size of one ring slot
  int ring_slots = 0;             // slots of the smallest workable ring: prefetch_depth + 1 (fewer layers: fewer)
  int64_t pinned_bytes = 0;       // what must stay on the device: embeddings, norms, head, device rules
  int64_t min_device_bytes = 0;   // pinned + the ring of ring_slots x layer_slot_bytes
  bool streams = false;           // some layer weights live off the device and stream in
  std::string placement_error;    // why offload::place rejected this rank's budget or rules; empty when placed
  // The expert cache (offload.experts, or a budget below a MoE model): experts per layer on the device,
  // the routed-expert bytes those slots hold and those fetched from pinned host memory on demand (counted
  // in bytes.device and bytes.host), and the cache's device bytes (whole slots, padded).
  int expert_slots = 0;
  Tier expert_tier = Tier::kHost;  // host: pinned copies of every expert; disk: the mapped checkpoint
  int64_t expert_layers = 0, expert_resident_bytes = 0, expert_streamed_bytes = 0, expert_cache_bytes = 0;
  int64_t expert_fetch_bytes = 0;  // the most one token's routed experts can fetch (top-k misses per layer)
  std::vector<int> tp_group, pp_chain, replica;
  std::vector<int> expert_group;  // the stage's tensor x expert ranks (ShardSpec's expert group)
  int prev_stage = -1, next_stage = -1;  // pp neighbours of the same (dp, tp); -1 at the ends
};

struct Stage {
  int64_t layer_begin = 0, layer_end = 0;  // [begin, end)
  int64_t size() const { return layer_end - layer_begin; }
};

struct Partition {
  RankLayout layout;
  DType dtype = DType::kBF16;  // matrices; norms and biases are f32 when dtype is quantized
  std::string dtype_source;    // empty when the plan's model.dtype, else PartitionOptions::default_dtype_source
  int64_t vocab_size = 0, vocab_padded = 0, vocab_per_rank = 0;
  int64_t kv_replication = 1;  // ranks holding each KV head: TP / n_kv when TP > n_kv, else 1
  std::vector<Stage> stages;
  std::vector<RankPartition> ranks;  // indexed by rank
  int64_t model_bytes = 0;           // every tensor once, unsharded, in `dtype`
  TierBytes totals;                  // summed over ranks: replicated tensors count once per holder
  const RankPartition& rank(int r) const { return ranks.at(static_cast<size_t>(r)); }
};

struct PartitionOptions {
  int world_size = 0;                  // 0 = data * pipeline * tensor of the plan
  int64_t device_memory = 0;           // bytes per device, to resolve "40%" budgets; 0 = unknown
  DType default_dtype = DType::kBF16;  // when the plan has no model.dtype (pass the checkpoint's)
  // Where default_dtype came from, for the report ("the checkpoint's", or assumed without one).
  std::string default_dtype_source = "not in the plan: assumed";
};

// Validates (validate_plan) and throws strata::Error(kConfig) with every diagnostic, or partitions.
Partition make_partition(const Plan& plan, const ModelConfig& config, int world_size);
Partition make_partition(const Plan& plan, const ModelConfig& config, const PartitionOptions& options);

// The layer range of each stage: the plan's explicit stages, else balanced. Assumes they are valid.
std::vector<Stage> plan_stages(const Plan& plan, const ModelConfig& config);
// Layers per stage when the plan names none: even once the LM head on the last stage is counted in
// layer-sized units of weight (it is read every step too), leftover layers to the earlier stages.
std::vector<int64_t> balanced_stage_layers(const ModelConfig& config, int64_t pp);
// The dtype the ranks hold weights in.
DType plan_dtype(const Plan& plan, const PartitionOptions& options);
// Partitions without validating; for validate_plan, which runs it once the structure is known good.
Partition compute_partition(const Plan& plan, const ModelConfig& config, const PartitionOptions& options);
// One rank's residency settings (offload/): the plan's offload section with that rank's per_rank
// budgets applied. A share of device memory is resolved against `device_memory` when it is known,
// else left as a share for the runtime to resolve. The partition places with it, and so does the run.
offload::ResidencyConfig residency_config(const Plan& plan, int rank, int64_t device_memory = 0);
// Shell-style glob over tensor names: '*' any run of characters, '?' one character.
bool glob_match(const std::string& pattern, const std::string& name);

}  // namespace strata::parallel
