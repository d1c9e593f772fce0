// parallel/replica_link.h: runtime's StageLink over a replica's communicator: the driver (replica
// rank 0) broadcasts steps, pipeline stages exchange activations with the same TP rank of the
// neighbouring stage, and the sampler (last stage, TP rank 0) broadcasts tokens and logits.
#pragma once
#include "comm/communicator.h"
#include "runtime/stage_link.h"

namespace strata::parallel {

class ReplicaLink final : public StageLink {
 public:
  // Ranks are positions inside `replica`; prev/next are -1 at the ends of the pipeline.
  ReplicaLink(comm::Communicator& replica, int sampler, int prev_stage, int next_stage);

  bool is_driver() const override { return replica_.rank() == 0; }
  bool is_sampler() const override { return replica_.rank() == sampler_; }
  void broadcast_step(std::vector<int32_t>& message) override;
  void recv_hidden(Tensor& hidden, int tag) override;
  void send_hidden(const Tensor& hidden, int tag) override;
  void broadcast_tokens(std::vector<int32_t>& tokens) override;
  void broadcast_logits(Tensor& logits) override;
  std::vector<std::vector<int32_t>> gather_to_driver(const std::vector<int32_t>& words) override;

 private:
  comm::Communicator& replica_;
  int sampler_, prev_, next_;
};

}  // namespace strata::parallel
