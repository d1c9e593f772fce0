// runtime/prefix_cache.h: the driver's view of the KV blocks: reference-counted blocks on top of the
// BlockAllocator, and the prefix cache that maps a chain hash of full blocks (tokens of block i plus
// the hash of block i-1) to a block whose KV can be shared. Unreferenced cached blocks stay
// resident and are evicted least-recently-used when the allocator runs dry. It never touches KV data.
#pragma once
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

#include "runtime/kv_cache.h"

namespace strata {

class BlockPool {
 public:
  // `caching` off: lookup() never hits and publish() does nothing (plain ref-counted blocks).
  BlockPool(BlockAllocator& allocator, int64_t block_size, bool caching);

  // A block with one reference, or -1 when none is free and none can be evicted.
  int32_t allocate();
  // Drops one reference; at zero a cached block becomes evictable, any other returns to the allocator.
  void release(int32_t block);

  // Hash of a full block: its tokens chained to the previous block's hash (`parent`, 0 for the first).
  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> tokens);
  // The cached block holding exactly `tokens` after `parent`, with one more reference; -1 on a miss.
  int32_t lookup(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  // Offers a block that now holds `tokens` (full) after `parent` to later requests. A hash that is
  // already cached keeps its block (this one stays private and is freed as usual).
  void publish(int32_t block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  // Returns every unreferenced cached block to the allocator (callers that allocate around the pool).
  void clear_cache();

  bool caching() const { return caching_; }
  // Blocks allocate() can still hand out: free ones plus evictable cached ones.
  int64_t available() const { return allocator_.free_count() + static_cast<int64_t>(lru_.size()); }
  // Blocks referenced by sequences (shared blocks count once).
  int64_t used() const { return allocator_.used() - static_cast<int64_t>(lru_.size()); }
  // Cached blocks nobody references (evictable).
  int64_t cached_idle() const { return static_cast<int64_t>(lru_.size()); }
  int64_t refs(int32_t block) const { return slots_[static_cast<size_t>(block)].refs; }

 private:
  struct Slot {
    int64_t refs = 0;
    bool cached = false;
    uint64_t hash = 0, parent = 0;
    std::vector<int32_t> tokens;  // kept to rule out hash collisions: a hit must match exactly
    std::list<int32_t>::iterator lru;
  };
  void uncache(int32_t block);

  BlockAllocator& allocator_;
  int64_t block_size_;
  bool caching_;
  std::vector<Slot> slots_;
  std::unordered_map<uint64_t, int32_t> by_hash_;
  std::list<int32_t> lru_;  // unreferenced cached blocks, least recently used first
};

}  // namespace strata
