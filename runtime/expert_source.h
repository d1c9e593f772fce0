// runtime/expert_source.h: where a layer's routed experts come from when they do not all stay on the
// compute device. moe_ffn (runtime/models/moe.h) routes first, then asks for the step's selected experts
// in rounds that fit the layer's device slots; offload/ implements it (an expert cache filled from pinned
// host memory). Resident experts (LayerWeights::expert_gate & co.) need none of this.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace strata {

struct ExpertTensors {
  Tensor gate, up, down;  // [F, hidden], [F, hidden], [hidden, F] on the compute device
};

// One layer's experts. Calls come from the thread running the model, in the order
// rounds -> (acquire -> ready... -> release) per round.
class ExpertSource {
 public:
  virtual ~ExpertSource() = default;
  // Experts held (local indices 0..held-1 are global expert_first + i).
  virtual int64_t held() const = 0;
  // Plans a step: tokens[e] = the step's tokens routed to local expert e (0: not selected). Returns the
  // rounds to run, each a list of local experts (ascending) that fit on the device together.
  virtual std::vector<std::vector<int64_t>> plan(const std::vector<int64_t>& tokens) = 0;
  // Starts round `round` of the last plan: issues the copies of its missing experts (one per expert, all
  // before any compute waits, so later copies overlap earlier experts' compute) and returns each
  // expert's tensors in the round's order. Valid until release().
  virtual std::vector<ExpertTensors> acquire(size_t round) = 0;
  // Work issued after this sees the bytes of the current round's i-th expert.
  virtual void ready(size_t i) = 0;
  // Work issued before this is the last to read the current round's experts.
  virtual void release() = 0;
};

// Hits and misses of an expert cache, per (local layer, held expert): a routed token is a lookup; the
// first token of a step routed to a non-resident expert is a miss (one copy), every other a hit.
struct ExpertCacheStats {
  int64_t layers = 0, experts = 0;  // local expert layers x held experts per layer
  int64_t expert_first = 0;         // global index of local expert 0
  std::vector<int64_t> layer_index;  // [layers]: the global layer of each
  int64_t resident_per_layer = 0;   // device slots per layer
  int64_t expert_bytes = 0;         // bytes one miss copies
  std::vector<int64_t> hits, misses;  // [layer * experts + expert]
  int64_t bytes_streamed = 0;
  bool enabled() const { return layers > 0; }
};

}  // namespace strata
