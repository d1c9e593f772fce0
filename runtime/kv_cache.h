// runtime/kv_cache.h: the paged KV cache. Fixed-size blocks of `block_size` token slots per local
// layer on the compute device; sequences own lists of blocks (block tables) handed out by a free
// list, so memory is never fragmented and finished sequences return their blocks at once.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
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
  // Bytes of one block across all local layers, K and V, in the cache dtype `dtype` (kv_row_bytes).
  int64_t block_bytes(DType dtype) const;
};

// The dtypes a KV cache may take: f32, f16, bf16, or f8_e4m3 (rows of e4m3 codes + an f32 scale,
// runtime/fp8_kv.h).
bool kv_cache_dtype_supported(DType dtype);
// Bytes of one cache row (one token, one KV head) of head_dim elements in `dtype`.
int64_t kv_row_bytes(DType dtype, int64_t head_dim);
// The cache tensor's shape for a shape's layer: [blocks, block_size, Hkv, head_dim], in bytes
// [blocks, block_size, Hkv, head_dim + 4] for f8_e4m3 (codes then the row's scale).
Shape kv_cache_tensor_shape(const KvCacheShape& shape, DType dtype);
// The head_dim of a cache tensor (its last dimension less the fp8 row's scale bytes).
int64_t kv_cache_head_dim(const Tensor& cache);
// Parses a --kv-cache-dtype / kv_cache_dtype value: "auto" (nullopt: the backend's activation dtype),
// "f32", "f16", "bf16", "fp8" (also "f8_e4m3", "fp8_e4m3"); `what` names the flag or plan key in the error.
std::optional<DType> parse_kv_cache_dtype(const std::string& text, const std::string& what);
// The name a user gives for a cache dtype ("fp8" for f8_e4m3).
std::string kv_cache_dtype_name(DType dtype);

class KvCache {
 public:
  // The cache in the backend's activation dtype, or in `dtype` (kv_cache_dtype_supported).
  KvCache(Backend& backend, const KvCacheShape& shape);
  KvCache(Backend& backend, const KvCacheShape& shape, DType dtype);
  const KvCacheShape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  Tensor& k(int64_t local_layer) { return k_[static_cast<size_t>(local_layer)]; }
  Tensor& v(int64_t local_layer) { return v_[static_cast<size_t>(local_layer)]; }
  BlockAllocator& blocks() { return blocks_; }
  // Blocks needed to hold `tokens` token slots.
  int64_t blocks_for(int64_t tokens) const { return (tokens + shape_.block_size - 1) / shape_.block_size; }

 private:
  KvCacheShape shape_;
  DType dtype_;
  std::vector<Tensor> k_, v_;
  BlockAllocator blocks_;
};

}  // namespace strata
