// offload/residency.h: where each of a rank's weight shards lives (device, pinned host, disk) under a
// device budget, decided once at load time. A pure function of shard sizes and the config, so
// `strata plan --check` prints the same placement the runtime uses. Not the streaming itself
// (prefetcher.h) and not the plan's YAML (launcher/ translates parallel::OffloadSection into this).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "offload/expert_cache_policy.h"
#include "runtime/models/model_description.h"

namespace strata::offload {

enum class Tier : uint8_t { kDevice, kHost, kDisk };
const char* tier_name(Tier tier);

// How the disk tier reads. kDirect: O_DIRECT for large reads (bypasses the page cache: a cold
// checkpoint streams at the disk's rate without evicting the host tier). kBuffered: pread through
// the page cache. kAuto: buffered when the file fits in half the RAM (it stays cached after the
// first pass, and a cached read beats the disk), else O_DIRECT where the file system takes it.
enum class DiskIo : uint8_t { kAuto, kDirect, kBuffered };
const char* disk_io_name(DiskIo io);

struct TierRule {  // tensors whose canonical name matches the glob ('*', '?') live on `tier`
  std::string match;
  Tier tier = Tier::kHost;
};

struct ResidencyConfig {
  int64_t device_budget = -1;  // bytes of compute-device memory for weights + KV reserve + ring; -1 = no limit
  double device_budget_percent = -1;  // "40%": a share of the device's memory, used when device_budget < 0
  int64_t host_budget = -1;    // bytes of pinned host memory for the host tier; -1 = no limit
  Tier cold_tier = Tier::kHost;
  int prefetch_depth = 2;      // layers copied ahead of the one computing: the ring has depth + 1 slots
  std::vector<TierRule> rules;  // first match wins; overrides the automatic placement
  int64_t kv_reserve_bytes = 0;  // device memory the KV cache will take (charged to the budget)
  DiskIo disk_io = DiskIo::kAuto;
  std::string report_path;       // when set, metrics are written there as JSON at teardown
  int64_t fill_log_capacity = 4096;  // fills recorded for tests (preallocated: no per-token allocation)
  // Mixture-of-experts models (offload.experts): routed experts of each layer kept on the device in a
  // per-layer cache, the others fetched from pinned host memory when the router picks them. -1: as many
  // as the device budget holds after the other weights (which all stay on the device).
  int64_t experts_resident_per_layer = -1;
  ExpertEviction expert_eviction = ExpertEviction::kLru;

  // The device budget in bytes on a device of `device_memory` bytes: device_budget when set, else
  // the share, else -1 (no limit).
  int64_t device_budget_bytes(int64_t device_memory) const;
};

// What a budget given as a share ("40%": percent in (0, 100]) of `capacity` bytes comes to: the one
// place a percentage becomes bytes (plan budgets, --device-budget, serve's kv_budget).
int64_t share_bytes(int64_t capacity, double percent);

// One weight shard of a rank, as placement sees it.
enum class TensorGroup : uint8_t { kGlobal, kNorm, kAttention, kMlp };
struct TensorItem {
  std::string name;     // canonical name, e.g. "blk.3.ffn_up.weight"
  int64_t layer = -1;   // -1 for token_embd / output_norm / output
  int64_t bytes = 0;    // this rank's slice
  TensorGroup group = TensorGroup::kMlp;
  int64_t expert = -1;  // routed experts: the expert's global index
};
// The group of a tensor slot (per-layer norms and biases count as kNorm; the embedding, final norm
// and head as kGlobal).
TensorGroup tensor_group(const TensorSlot& slot);

// Bytes a streamed tensor may take in a ring slot, padding for aligned direct reads included.
int64_t slot_cost(int64_t bytes);

struct Placement {
  std::vector<Tier> tiers;        // parallel to the items
  std::string strategy;           // "all resident", "whole layers", "attention resident", "rules"
  int64_t pinned_bytes = 0;       // globals, norms, biases and device-ruled tensors
  int64_t resident_bytes = 0;     // every device-tier weight (pinned included)
  int64_t kv_reserve_bytes = 0;
  int64_t host_bytes = 0;         // streamed from pinned host memory, per pass over the layers
  int64_t disk_bytes = 0;         // streamed from the checkpoint, per pass
  int64_t slot_bytes = 0;         // one ring slot: the largest streamed part of one layer, padded
  int slots = 0;                  // ring slots: prefetch_depth + 1, fewer when fewer layers stream
  int64_t streamed_layers = 0;
  int64_t min_device_bytes = 0;   // smallest budget that can run this rank at all
  int64_t device_budget = -1;
  // The expert cache (strategy "experts cached"): the routed experts live on the host tier (pinned) and
  // expert_slots of each layer's stay on the device; everything else is resident.
  int expert_slots = 0;            // per layer; 0 = experts are not cached (resident, or no experts)
  int64_t expert_layers = 0;       // layers with routed experts on this rank
  int64_t experts_held = 0;        // routed experts per layer on this rank
  int64_t expert_slot_bytes = 0;   // one expert's gate, up and down (256-byte aligned each)
  int64_t expert_bytes = 0;        // every routed expert of this rank (all of them off the device too)
  ExpertEviction expert_eviction = ExpertEviction::kLru;
  Tier expert_tier = Tier::kHost;  // where cold experts are read from: pinned host copies or the mapped file
  bool streams() const { return slots > 0 || expert_slots > 0; }
  int64_t ring_bytes() const { return slot_bytes * slots; }
  int64_t expert_cache_bytes() const { return expert_slot_bytes * expert_slots * expert_layers; }
  // Expert bytes the cache keeps on the device at a time, and those that live on the host only.
  int64_t expert_resident_bytes() const {
    return experts_held > 0 ? expert_bytes / experts_held * expert_slots : 0;
  }
  int64_t expert_streamed_bytes() const { return expert_slots > 0 ? expert_bytes - expert_resident_bytes() : 0; }
  // Device memory the placement uses: resident weights + KV reserve + ring + expert cache.
  int64_t device_bytes() const { return resident_bytes + kv_reserve_bytes + ring_bytes() + expert_cache_bytes(); }
};

// Places the items (one rank's shards, any order). Rules first; then, under a budget, globals,
// norms and biases stay resident, the KV reserve is set aside, and what remains goes to whichever
// of two layouts streams fewer bytes per token: whole layers (a resident prefix of layers) or
// attention resident in every layer with the MLPs streaming (smaller slots, so a smaller ring).
// Throws strata::Error (kConfig) when the budget cannot hold the pinned bytes, the KV reserve and
// the ring of (prefetch_depth + 1) slots; the message says the minimum.
// Items with routed experts (TensorItem::expert) take the expert cache instead when the budget cannot
// hold everything or experts_resident_per_layer is set: every other tensor on the device, the experts
// on the host tier, and per layer as many device slots as fit (at least `experts_per_token`, the
// model's top-k, since a token's experts run together; at most the experts held).
Placement place(const std::vector<TensorItem>& items, const ResidencyConfig& config, int64_t experts_per_token = 0);

// "1.50 GiB"-style sizes for messages and reports; `ceil` rounds up so a minimum is always enough.
std::string format_size(int64_t bytes, bool ceil = false);
// Shell-style glob: '*' any run of characters, '?' one character.
bool glob_match(const std::string& pattern, const std::string& name);

// Decode rate the placement allows, from measured ceilings (GB/s = 1e9 bytes/s). Memory-bound
// model: each step reads every weight once from device memory, and streamed bytes cross the
// host link (disk bytes also pass the disk) while compute runs, so a step takes the longest of
// the three; batch B shares one step's weight traffic among B tokens.
struct Ceilings {
  double device_gbs = 0;  // compute device memory read rate (HBM, or host DRAM for the CPU backend)
  double link_gbs = 0;    // pinned host -> device copy rate (CPU backend: memcpy rate)
  double disk_gbs = 0;    // sequential read rate of the checkpoint's disk
};
struct DecodeEstimate {
  double tokens_per_s = 0;
  double step_s = 0;
  std::string bound;  // "device memory", "host link", "disk"
};
DecodeEstimate estimate_decode(const Placement& placement, const Ceilings& ceilings, int64_t batch);

}  // namespace strata::offload
