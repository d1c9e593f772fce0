# offload/ sources, one a line, sorted (CMakeLists.txt: files under cuda/ or nccl/ build only with CUDA).
# A new source file goes here; configuring fails while a file on disk is missing from the list.
set(STRATA_OFFLOAD_SOURCES
  compute_pool.cpp
  copy_engine.cpp
  cuda/cuda_copy_engine.cu
  disk_reader.cpp
  expert_cache.cpp
  expert_cache_policy.cpp
  prefetcher.cpp
  residency.cpp
  shard_layout.cpp
  tiered_weights.cpp
)
