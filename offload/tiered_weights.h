// offload/tiered_weights.h: the WeightSource of offload/: a rank's shards placed on tiers
// (residency.h), resident ones on the compute device, the rest streamed through the prefetcher's
// ring. Only launcher/ and tests name this type; the model sees WeightSource.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "offload/prefetcher.h"
#include "offload/residency.h"
#include "runtime/backend.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/shard_spec.h"
#include "runtime/weights.h"

namespace strata::offload {

struct OffloadMetrics {
  Placement placement;
  PrefetchStats stream;
  int64_t pool_used = 0, pool_peak = 0, pool_budget = -1;
  int64_t host_tier_bytes = 0;   // host copies of streamed tensors (pinned under CUDA)
  int64_t staging_bytes = 0;     // host staging ring for disk reads (CUDA only)
  std::string engine;
  bool direct_io = false;        // some disk reads use O_DIRECT
  ExpertCacheStats experts;      // the expert cache's hits, misses and bytes (when experts are cached)
  std::string json() const;      // one JSON object, for reports and bench scripts
};

class ExpertCache;

class TieredWeights final : public WeightSource {
 public:
  TieredWeights(const Checkpoint& checkpoint, const ShardSpec& spec, Backend& backend, const ResidencyConfig& config);
  ~TieredWeights() override;  // stops the prefetcher, waits for copies, writes report_path; never throws

  const GlobalWeights& globals() override;
  const LayerWeights& acquire(int64_t layer) override;
  void release(int64_t layer) override;

  const Placement& placement() const;
  OffloadMetrics metrics() const;
  // Layers in the order the prefetcher filled them (empty when nothing streams).
  std::vector<int64_t> fill_order() const;
  // Bytes of this rank's layer weights (what ModelSession reports), without streaming them.
  int64_t layer_bytes() const;
  ExpertCacheStats expert_cache_stats() const override;
  const ExpertCache* expert_cache() const;  // null unless experts are cached

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Shard items of one rank for place() (also what `strata plan --check` would place).
std::vector<TensorItem> shard_items(const Checkpoint& checkpoint, const ShardSpec& spec);

std::unique_ptr<TieredWeights> make_tiered_weights(const Checkpoint& checkpoint, const ShardSpec& spec,
                                                   Backend& backend, const ResidencyConfig& config);

}  // namespace strata::offload
