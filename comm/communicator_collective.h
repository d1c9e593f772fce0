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
  std::unique_ptr<CollectiveWork> all_reduce_sum_async(Tensor& t) override {
    struct Pending final : CollectiveWork {
      std::unique_ptr<Work> work;
      void wait() override { work->wait(); }
    };
    auto p = std::make_unique<Pending>();
    p->work = comm_.all_reduce_async(t, ReduceOp::kSum);
    return p;
  }
  void all_gather(const Tensor& in, Tensor& out) override { comm_.all_gather(in, out); }
  Communicator& communicator() const { return comm_; }

 private:
  Communicator& comm_;
};

}  // namespace strata::comm
