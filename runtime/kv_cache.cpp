// runtime/kv_cache.cpp: block allocation and the per-layer cache tensors.
#include "runtime/kv_cache.h"

#include "runtime/error.h"
#include "runtime/fp8_kv.h"

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
  return 2 * n_layers * block_size * kv_heads * kv_row_bytes(dtype, head_dim);
}

bool kv_cache_dtype_supported(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16 || dtype == DType::kF8_E4M3;
}

int64_t kv_row_bytes(DType dtype, int64_t head_dim) {
  STRATA_CHECK(kv_cache_dtype_supported(dtype), "a KV cache cannot hold ", dtype_name(dtype),
               "; it takes f32, f16, bf16 or fp8");
  return dtype == DType::kF8_E4M3 ? fp8_kv_row_bytes(head_dim) : dtype_bytes(dtype, head_dim);
}

Shape kv_cache_tensor_shape(const KvCacheShape& shape, DType dtype) {
  const int64_t last = dtype == DType::kF8_E4M3 ? fp8_kv_row_bytes(shape.head_dim) : shape.head_dim;
  return {shape.num_blocks, shape.block_size, shape.kv_heads, last};
}

int64_t kv_cache_head_dim(const Tensor& cache) {
  return cache.dtype() == DType::kF8_E4M3 ? cache.dim(-1) - kFp8KvScaleBytes : cache.dim(-1);
}

std::optional<DType> parse_kv_cache_dtype(const std::string& text, const std::string& what) {
  if (text == "auto") return std::nullopt;
  if (text == "f32" || text == "float32") return DType::kF32;
  if (text == "f16" || text == "float16") return DType::kF16;
  if (text == "bf16" || text == "bfloat16") return DType::kBF16;
  if (text == "fp8" || text == "f8_e4m3" || text == "fp8_e4m3") return DType::kF8_E4M3;
  STRATA_THROW(ErrorKind::kInvalidArgument, what, " '", text,
               "' is not a KV cache dtype; use auto (the backend's: f32 on the CPU, bf16 on CUDA), f32, f16, bf16 or "
               "fp8 (e4m3 with a scale per row)");
}

std::string kv_cache_dtype_name(DType dtype) { return dtype == DType::kF8_E4M3 ? "fp8" : dtype_name(dtype); }

KvCache::KvCache(Backend& backend, const KvCacheShape& shape) : KvCache(backend, shape, backend.activation_dtype()) {}

KvCache::KvCache(Backend& backend, const KvCacheShape& shape, DType dtype)
    : shape_(shape), dtype_(dtype), blocks_(shape.num_blocks) {
  STRATA_CHECK(shape.num_blocks > 0 && shape.block_size > 0, "KV cache needs at least one block");
  STRATA_CHECK(kv_cache_dtype_supported(dtype), "a KV cache cannot hold ", dtype_name(dtype),
               "; it takes f32, f16, bf16 or fp8");
  // The fp8 row's f32 scale sits right after its codes: 4-byte aligned only when head_dim is.
  STRATA_CHECK(dtype != DType::kF8_E4M3 || shape.head_dim % 4 == 0, "an fp8 KV cache needs head_dim a multiple of 4, "
               "got ", shape.head_dim, "; use --kv-cache-dtype bf16 or f32 for this model");
  const Shape s = kv_cache_tensor_shape(shape, dtype);
  for (int64_t l = 0; l < shape.n_layers; ++l) {
    k_.push_back(backend.alloc(s, dtype));
    v_.push_back(backend.alloc(s, dtype));
  }
}

}  // namespace strata
