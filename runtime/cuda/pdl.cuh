// runtime/cuda/pdl.cuh: programmatic dependent launch (Hopper, sm_90+). A kernel launched with it may start
// while the kernel before it on the stream is finishing; it must call pdl_wait() before it touches memory
// that earlier work writes or reads, and calls pdl_trigger() once it is far enough along that the next
// kernel may be scheduled (always after its own pdl_wait(), so "triggered" implies "everything before me
// has completed"). That rule is what lets a kernel read before its wait what no kernel writes (weights) and
// what was complete before its predecessor's wait (a step's inputs, copied in before the step's first
// kernel): those loads then overlap the predecessor's drain. Decode steps are chains of short kernels, so
// each boundary's launch latency and ramp-up otherwise costs microseconds of idle memory bus. On older GPUs
// both calls compile to nothing and launches are plain. The backend's Launch says whether to ask for it
// (CudaBackendOptions::pdl, on where the device has it).
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/launch.h"

namespace strata::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, launch.stream>>>(args...), with programmatic stream serialization when
// launch.pdl. Only for kernels that call pdl_wait() before their first dependent memory access.
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, const Launch& launch, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = launch.stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = launch.pdl ? 1 : 0;
  config.attrs = attribute;
  config.numAttrs = 1;
  CHECK_CUDA(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}
// A bare stream would launch without PDL whatever the backend chose: pass the launcher's Launch through.
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args&&... args) = delete;

}  // namespace strata::cuda
