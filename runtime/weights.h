// runtime/weights.h: a rank's weights as the model sees them, and WeightSource, the interface that
// hides where they live. The resident source keeps everything on the compute device; offload/
// implements the same interface with streaming (acquire prefetches, release frees the slot).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/expert_source.h"
#include "runtime/shard_spec.h"
#include "runtime/tensor.h"

namespace strata {

class Checkpoint;
struct TensorRef;

struct LayerWeights {
  Tensor attn_norm, wq, wk, wv, bq, bk, bv, wo;  // biases undefined unless qkv_bias
  Tensor q_norm, k_norm;                          // [head_dim], undefined unless qk_norm
  Tensor ffn_norm, w_gate, w_up, w_down;          // the dense MLP; undefined on expert layers
  // A mixture-of-experts layer's FFN (runtime/models/moe.h): the router, this rank's routed experts
  // [expert_first, + expert_gate.size()) and its column slice of the shared expert.
  Tensor router;                                      // [n_experts, hidden]; defined on expert layers only
  int64_t expert_first = 0;                           // global index of expert_gate[0]
  std::vector<Tensor> expert_gate, expert_up, expert_down;  // [F, hidden], [F, hidden], [hidden, F]
  Tensor shared_gate, shared_up, shared_down;         // undefined without a shared expert
  Tensor shared_router;                               // [1, hidden]: the shared expert's sigmoid gate
  // Offloaded experts: when set, expert_gate/up/down are empty and moe_ffn fetches the selected experts
  // from here (the weight source owns it).
  ExpertSource* expert_source = nullptr;
  bool has_experts() const { return router.defined(); }
  // Optional fused forms on accelerators: [wq; wk; wv] and [w_gate; w_up] stacked by rows (wq/wk/wv and
  // w_gate/w_up are then row views of them). One GEMV over the stack streams the bytes of three (two)
  // small ones at a better share of the bandwidth; used when a step has one token.
  Tensor wqkv, bqkv, w_gate_up;
  int64_t nbytes() const;
  int64_t routed_expert_nbytes() const;  // of expert_gate/up/down (a step reads only the selected experts')
};

struct GlobalWeights {
  Tensor embed;        // [vocab_count, hidden] (first stage; also the last stage when tied)
  Tensor output_norm;  // [hidden] (last stage)
  Tensor output;       // [vocab_count, hidden] (last stage)
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const GlobalWeights& globals() = 0;
  // The weights of global layer index `layer`, ready on the compute device until release(layer).
  virtual const LayerWeights& acquire(int64_t layer) = 0;
  virtual void release(int64_t layer) = 0;
  // True when every layer stays where acquire() returns it and acquire/release enqueue no work, so a
  // recorded step (Backend::capture) can be replayed on the same weights.
  virtual bool stays_resident() const { return false; }
  // Hits, misses and bytes streamed of an expert cache; empty (enabled() false) when experts stay resident.
  virtual ExpertCacheStats expert_cache_stats() const { return {}; }
};

// Reads this rank's slices (runtime/models/model_description.h says which) from the checkpoint's
// memory map: row slices are views (zero copy), column slices (row-parallel weights) are gathered into
// host memory.
class ShardReader {
 public:
  ShardReader(const Checkpoint& checkpoint, const ShardSpec& spec);
  LayerWeights layer(int64_t layer) const;  // host tensors
  GlobalWeights globals() const;            // host tensors

 private:
  Tensor slice(const TensorRef& tensor) const;
  Tensor rows(const std::string& name, int64_t begin, int64_t count) const;
  Tensor cols(const std::string& name, int64_t begin, int64_t count) const;
  const Checkpoint& checkpoint_;
  ShardSpec spec_;
};

// Every weight of the shard resident on the backend's device (uploaded once).
std::unique_ptr<WeightSource> make_resident_weights(const Checkpoint& checkpoint, const ShardSpec& spec,
                                                    Backend& backend);

}  // namespace strata
