// runtime/kv_cache.cpp: block allocation and the per-layer cache tensors.
#include "runtime/kv_cache.h"

#include "runtime/error.h"

namespace strata {

BlockAllocator::BlockAllocator(int64_t num_blocks) : total_(num_blocks), in_use_(static_cast<size_t>(num_blocks), 0) {
  free_.reserve(static_cast<size_t>(num_blocks));
  // Hand out low ids first: pop_back takes the smallest.
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int32_t BlockAllocator::allocate() {
  if (free_.empty()) return -1;
  const int32_t b = free_.back();
  free_.pop_back();
  in_use_[static_cast<size_t>(b)] = 1;
  return b;
}

void BlockAllocator::free(int32_t block) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, block >= 0 && block < total_ && in_use_[static_cast<size_t>(block)],
                    "freeing KV block ", block, " that is not in use");
  in_use_[static_cast<size_t>(block)] = 0;
  free_.push_back(block);
}

int64_t KvCacheShape::block_bytes(DType dtype) const {
  return 2 * n_layers * dtype_bytes(dtype, block_size * kv_heads * head_dim);
}

KvCache::KvCache(Backend& backend, const KvCacheShape& shape) : shape_(shape), blocks_(shape.num_blocks) {
  STRATA_CHECK(shape.num_blocks > 0 && shape.block_size > 0, "KV cache needs at least one block");
  const Shape s = {shape.num_blocks, shape.block_size, shape.kv_heads, shape.head_dim};
  for (int64_t l = 0; l < shape.n_layers; ++l) {
    k_.push_back(backend.alloc(s, backend.activation_dtype()));
    v_.push_back(backend.alloc(s, backend.activation_dtype()));
  }
}

}  // namespace strata
