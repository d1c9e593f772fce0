// offload/expert_cache_policy.h: which routed experts of each layer sit in that layer's device slots,
// decided step by step from the router's choices. Pure bookkeeping (no memory, no device, no copies):
// expert_cache.h moves the bytes the plans ask for, so this is tested on its own with hand-made traces.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace strata::offload {

// Which resident expert a miss replaces: the one used longest ago, or the one routed the fewest tokens
// so far in its layer (ties: the one used longest ago).
enum class ExpertEviction : uint8_t { kLru, kFrequency };
const char* eviction_name(ExpertEviction eviction);

// One round of a layer's step: at most `slots` experts that are on the device together. The misses are
// copied into their slots before the round computes; a round never evicts an expert it uses.
struct ExpertRound {
  std::vector<int64_t> experts;  // local expert indices, ascending
  std::vector<int> slots;        // the layer slot of each
  std::vector<bool> fetch;       // per expert: a miss, to copy into its slot first
};

class ExpertCachePolicy {
 public:
  // `layers` x `experts` local experts, `slots` device slots per layer (1 <= slots <= experts). Slot s
  // of every layer starts with expert s (the loader fills them), so the first steps do not all miss.
  ExpertCachePolicy(int64_t layers, int64_t experts, int slots, ExpertEviction eviction);

  // Plans layer `layer`'s step: tokens[e] = the step's tokens routed to local expert e (0: not
  // selected). Rounds in execution order: the first holds every selected expert already resident and
  // as many misses as fit, later rounds the remaining misses. A selected expert is looked up once per
  // routed token: its first token in the step is a miss when it was not resident, every other a hit
  // (they read the copy the miss brought), so hits + misses = routed tokens and misses = copies.
  std::vector<ExpertRound> plan(int64_t layer, const std::vector<int64_t>& tokens);

  int slots() const { return slots_; }
  int64_t layers() const { return layers_; }
  int64_t experts() const { return experts_; }
  // The expert in `slot` of `layer` (-1: empty); the slot of an expert (-1: not resident).
  int64_t expert_in(int64_t layer, int slot) const;
  int slot_of(int64_t layer, int64_t expert) const;

  // Counters since construction, indexed [layer * experts() + expert].
  const std::vector<int64_t>& hits() const { return hits_; }
  const std::vector<int64_t>& misses() const { return misses_; }
  int64_t total_hits() const { return total_hits_; }
  int64_t total_misses() const { return total_misses_; }

 private:
  int pick_victim(int64_t layer, const std::vector<bool>& protected_slot) const;
  size_t at(int64_t layer, int64_t expert) const { return static_cast<size_t>(layer * experts_ + expert); }

  int64_t layers_, experts_;
  int slots_;
  ExpertEviction eviction_;
  std::vector<int64_t> slot_expert_;  // [layer * slots + slot]
  std::vector<int> expert_slot_;      // [layer * experts + expert]
  std::vector<int64_t> last_use_;     // [layer * experts + expert]: the tick of its last round
  std::vector<int64_t> hits_, misses_;
  int64_t total_hits_ = 0, total_misses_ = 0;
  int64_t tick_ = 0;
};

}  // namespace strata::offload
