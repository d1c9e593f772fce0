# comm/ sources, one a line, sorted (CMakeLists.txt: files under cuda/ or nccl/ build only with CUDA).
# A new source file goes here; configuring fails while a file on disk is missing from the list.
set(STRATA_COMM_SOURCES
  bootstrap.cpp
  communicator_collective.cpp
  host_reduce.cpp
  host_staged_communicator.cpp
  mpi/mpi_communicator.cpp
  mpi/mpi_runtime.cpp
  nccl/nccl_communicator.cpp
  op_checks.cpp
  self_communicator.cpp
  tcp/tcp_communicator.cpp
  tcp/tcp_mesh.cpp
  tcp_store.cpp
)
