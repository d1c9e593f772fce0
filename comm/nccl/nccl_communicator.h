// comm/nccl/nccl_communicator.h: the NCCL transport for device tensors. Built only with CUDA and NCCL;
// this header includes neither, so launcher code can name the factory.
#pragma once
#include <memory>
#include <string>

#include "comm/communicator.h"

namespace strata::comm {

struct NcclOptions {
  int device = 0;
  // The compute stream (a cudaStream_t) whose work produces and consumes the tensors: every operation
  // runs on the communicator's own stream after an event recorded on this one, so compute and
  // communication overlap and stay ordered.
  void* compute_stream = nullptr;
  double timeout_s = 300.0;
  // Whether Communicator::recordable() says yes (CUDA graphs may capture the collectives). Capture of NCCL
  // ops has not yet run on a multi-GPU machine: the launcher opts in with STRATA_CUDA_GRAPHS_TP=1 until it
  // has. Groups split from this communicator inherit it.
  bool recordable = false;
};

// Builds a communicator over the same ranks as `bootstrap` (a host communicator: MPI or TCP), which
// carries the NCCL unique id from its rank 0. Collective over `bootstrap`.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, const NcclOptions& options,
                                                     const std::string& name);

}  // namespace strata::comm
