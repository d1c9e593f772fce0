// comm/communicator_collective.h: runtime's Collective (what a model step needs from its TP group)
// on top of a Communicator, so model code stays unaware of the transport. Does not own the group.
#pragma once
#include "comm/communicator.h"
#include "runtime/collective.h"

namespace strata::comm {

class CommunicatorCollective final : public Collective {
 public:
  explicit CommunicatorCollective(Communicator& comm) : comm_(comm) {}
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  void all_reduce_sum(Tensor& t) override { comm_.all_reduce(t, ReduceOp::kSum); }
  void all_gather(const Tensor& in, Tensor& out) override { comm_.all_gather(in, out); }
  Communicator& communicator() const { return comm_; }

 private:
  Communicator& comm_;
};

}  // namespace strata::comm
