// comm/host_staged_communicator.h: lets a host transport (MPI, TCP) carry device tensors by staging
// them through host memory with the compute backend's copies. For CPU-only transports on GPU ranks
// (tests of multi-process logic on one GPU, clusters without NCCL); NCCL is the fast path.
#pragma once
#include <memory>

#include "comm/communicator.h"
#include "runtime/backend.h"

namespace strata::comm {

// Wraps `inner` (owned); host tensors pass straight through. Operations on device tensors are
// synchronous: copy to host, run, copy back.
std::unique_ptr<Communicator> make_host_staged_communicator(std::unique_ptr<Communicator> inner, ::strata::Backend& backend);

}  // namespace strata::comm
