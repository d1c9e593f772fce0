// offload/expert_cache.h: the routed experts of a rank's MoE layers on two tiers: every expert's bytes
// in one host block (pinned under CUDA), and per layer a few device slots holding the experts the
// ExpertCachePolicy keeps resident. Each layer is an ExpertSource (runtime/expert_source.h) that
// moe_ffn asks after routing: a miss is one copy of the expert's packed gate, up and down through the
// CopyEngine (the CUDA copy stream, memcpy on the CPU, where the slots are a separate buffer too), and
// per-slot events order the copies against the compute that reads or last read the slot.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "offload/copy_engine.h"
#include "offload/expert_cache_policy.h"
#include "offload/residency.h"
#include "runtime/expert_source.h"

namespace strata::offload {

// One expert's three tensors packed in a slot (and in its host copy): gate at 0, up and down after it,
// each 256-byte aligned (the CUDA kernels' vector loads).
struct ExpertLayout {
  Shape gate_shape, up_shape, down_shape;
  DType gate_dtype = DType::kF32, up_dtype = DType::kF32, down_dtype = DType::kF32;
  int64_t up_offset = 0, down_offset = 0;
  int64_t gate_bytes = 0, up_bytes = 0, down_bytes = 0;
  int64_t bytes = 0;  // up to the end of down
};

// Where a cold expert's bytes are: its gate, up and down. Packed as ExpertLayout says (the host tier: one
// copy per fetch) or anywhere (the memory-mapped checkpoint: one copy per tensor).
using ExpertBytes = std::array<const uint8_t*, 3>;

class ExpertCache {
 public:
  // `layouts[l][e]` and `host[l][e]`: each local expert layer's experts (held per layer) and where their
  // bytes are off the device. `device` holds layers x slots x slot_bytes. `layer_index`: the global
  // layer of each local expert layer.
  ExpertCache(CopyEngine& engine, std::vector<std::vector<ExpertLayout>> layouts,
              std::vector<std::vector<ExpertBytes>> host, uint8_t* device, int64_t slot_bytes, int slots,
              ExpertEviction eviction, std::vector<int64_t> layer_index, int64_t expert_first);
  ~ExpertCache();
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;

  // The source of local expert layer `l` (the model sees it through LayerWeights::expert_source).
  ExpertSource* layer(int64_t l);
  ExpertCacheStats stats() const;
  const ExpertCachePolicy& policy() const { return policy_; }
  // Device bytes of `slot` of local expert layer `l` (tests check what the model read is a fetched copy).
  const uint8_t* slot_data(int64_t l, int slot) const;

 private:
  class Layer;
  friend class Layer;
  uint8_t* slot_ptr(int64_t l, int slot) const;
  // Copies expert e of layer l into `slot` (the engine's fill calls around it are the caller's).
  void copy_in(int64_t l, int64_t e, int slot);
  int engine_slot(int64_t l, int slot) const { return static_cast<int>(l) * policy_.slots() + slot; }

  CopyEngine& engine_;
  std::vector<std::vector<ExpertLayout>> layouts_;
  std::vector<std::vector<ExpertBytes>> host_;
  uint8_t* device_;
  int64_t slot_bytes_;
  ExpertCachePolicy policy_;
  std::vector<int64_t> layer_index_;
  int64_t expert_first_;
  std::vector<std::unique_ptr<Layer>> layers_;
  int64_t bytes_streamed_ = 0;
};

// The expert cache's part of a report (one JSON object): slots, bytes, hits and misses in total, per
// layer and per expert (global indices) with their hit rates; "null" when experts are not cached.
std::string expert_cache_json(const Placement& placement, const ExpertCacheStats& stats);

}  // namespace strata::offload
