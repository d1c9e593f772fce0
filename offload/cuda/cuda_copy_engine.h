// offload/cuda/cuda_copy_engine.h: the CUDA CopyEngine (built only with CUDA). No CUDA header here,
// so offload/copy_engine.cpp can name it behind STRATA_HAVE_CUDA.
#pragma once
#include <memory>

#include "offload/copy_engine.h"

namespace strata::offload {

// Copies on a dedicated non-blocking stream of the backend's device; one event pair per ring slot
// orders it with the backend's compute stream (runtime/cuda/cuda_backend.h cuda_backend_stream):
//   copy stream:    wait free[s] -> H2D copies of the layer -> record filled[s]
//   compute stream: wait filled[s] -> the layer's kernels   -> record free[s]
// Neither side blocks the host; only the disk tier's staging reuse waits on filled[s] on the host.
// Throws kInvalidArgument when `backend` is not the CUDA backend.
std::unique_ptr<CopyEngine> make_cuda_copy_engine(Backend& backend);

}  // namespace strata::offload
