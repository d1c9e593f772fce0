// runtime/kv_cache.h: the paged KV cache. Fixed-size blocks of `block_size` token slots per local
// layer on the compute device; sequences own lists of blocks (block tables) handed out by a free
// list, so memory is never fragmented and finished sequences return their blocks at once.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/backend.h"

namespace strata {

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);
  // Returns a free block id, or -1 when none is left.
  int32_t allocate();
  void free(int32_t block);
  int64_t free_count() const { return static_cast<int64_t>(free_.size()); }
  int64_t total() const { return total_; }
  int64_t used() const { return total_ - free_count(); }

 private:
  int64_t total_;
  std::vector<int32_t> free_;
  std::vector<uint8_t> in_use_;
};

struct KvCacheShape {
  int64_t n_layers = 0;  // local layers of this stage
  int64_t num_blocks = 0;
  int64_t block_size = 16;
  int64_t kv_heads = 0;  // local KV heads of this TP rank
  int64_t head_dim = 0;
  // Bytes of one block across all local layers, K and V, in `dtype`.
  int64_t block_bytes(DType dtype) const;
};

class KvCache {
 public:
  KvCache(Backend& backend, const KvCacheShape& shape);
  const KvCacheShape& shape() const { return shape_; }
  Tensor& k(int64_t local_layer) { return k_[static_cast<size_t>(local_layer)]; }
  Tensor& v(int64_t local_layer) { return v_[static_cast<size_t>(local_layer)]; }
  BlockAllocator& blocks() { return blocks_; }
  // Blocks needed to hold `tokens` token slots.
  int64_t blocks_for(int64_t tokens) const { return (tokens + shape_.block_size - 1) / shape_.block_size; }

 private:
  KvCacheShape shape_;
  std::vector<Tensor> k_, v_;
  BlockAllocator blocks_;
};

}  // namespace strata
