// comm/mpi/mpi_runtime.h: the process's MPI lifetime. MPI_Init_thread when the first MPI communicator
// is made, MPI_Finalize when the last one (world and every split) is gone. No mpi.h here.
#pragma once
#include <memory>

#include "comm/communicator.h"

namespace strata::comm {

// Containers: Open MPI 4.1 runs cleanly with OMPI_MCA_btl_vader_single_copy_mechanism=none (CMA needs
// ptrace rights many containers drop) and OMPI_MCA_pml=ob1 where UCX finds no usable device; under
// mpirun, a rank that exits non-zero makes mpirun kill the job (orte_abort_on_non_zero_status).
class MpiRuntime {
 public:
  // Initialises MPI once per process (or reuses the live runtime). Asks for MPI_THREAD_MULTIPLE when
  // config.mpi_thread_multiple, else FUNNELED; throws if MPI was already finalised (MPI cannot restart).
  static std::shared_ptr<MpiRuntime> acquire(const CommConfig& config);
  ~MpiRuntime();  // MPI_Finalize if we initialised it; logs on failure, never throws
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // MPI_THREAD_* level granted (0 single .. 3 multiple).
  int thread_level() const { return thread_level_; }

 private:
  MpiRuntime() = default;
  bool owns_ = false;  // false when someone else (a host program) initialised MPI
  int thread_level_ = 0;
};

// True between MPI_Init and MPI_Finalize.
bool mpi_active();
// MPI_Abort(MPI_COMM_WORLD, code): the launcher kills every rank of the job.
[[noreturn]] void mpi_abort_world(int code);

}  // namespace strata::comm
