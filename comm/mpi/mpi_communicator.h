// comm/mpi/mpi_communicator.h: Communicator over MPI for host tensors (CPU runs, CI). Every op is
// nonblocking MPI; waits poll MPI_Test against CommConfig::timeout_s. MPI types stay in the .cpp.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace strata::comm {

struct MpiGroupState;  // MPI_Comm, runtime guard, broken flag; shared with in-flight works

class MpiCommunicator final : public Communicator {
 public:
  // A duplicate of MPI_COMM_WORLD named `name`; initialises MPI (MpiRuntime) on first use.
  static std::unique_ptr<MpiCommunicator> world(const CommConfig& config, const std::string& name = "world");
  explicit MpiCommunicator(std::shared_ptr<MpiGroupState> state);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  const std::string& name() const override;
  // World rank of each member, in group order (used in error messages).
  const std::vector<int>& world_ranks() const;

  std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override;
  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override;
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override;
  std::unique_ptr<Work> broadcast_async(Tensor& t, int root) override;
  std::unique_ptr<Work> send_async(const Tensor& t, int peer, int tag) override;
  std::unique_ptr<Work> recv_async(Tensor& t, int peer, int tag) override;
  std::unique_ptr<Work> barrier_async() override;
  // Checks that every member arrives (all-gather of color/key, with the timeout) before MPI_Comm_split,
  // which itself cannot time out.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

 private:
  std::shared_ptr<MpiGroupState> state_;
};

}  // namespace strata::comm
