// runtime/stage_link.h: how one rank of a model replica talks to the rest during a step: the driver
// broadcasts each step, pipeline stages pass activations, the sampling rank shares the new tokens.
// runtime/ declares it; parallel/ implements it over communicators. One rank uses LocalStageLink.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace strata {

class StageLink {
 public:
  virtual ~StageLink() = default;
  virtual bool is_driver() const = 0;   // schedules steps and collects tokens (dp replica's rank 0)
  virtual bool is_sampler() const = 0;  // last stage, TP rank 0: turns logits into tokens
  // Driver -> every rank of the replica; `message` is replaced in place on the receivers.
  virtual void broadcast_step(std::vector<int32_t>& message) = 0;
  // Activations between adjacent pipeline stages ([T, hidden] backend tensors). `tag` separates
  // micro-batches in flight. recv fills a tensor the caller allocated.
  virtual void recv_hidden(Tensor& hidden, int tag) = 0;
  virtual void send_hidden(const Tensor& hidden, int tag) = 0;
  // Sampling rank -> every rank of the replica.
  virtual void broadcast_tokens(std::vector<int32_t>& tokens) = 0;
  // Sampling rank -> every rank of the replica: logits [rows, vocab] f32 host tensor, allocated by
  // the receivers with the same shape.
  virtual void broadcast_logits(Tensor& logits) = 0;
  // Every rank -> the driver: each rank's `words` (any length, empty allowed) in replica rank order on
  // the driver; the other ranks get an empty list.
  virtual std::vector<std::vector<int32_t>> gather_to_driver(const std::vector<int32_t>& words) = 0;
};

class LocalStageLink final : public StageLink {
 public:
  bool is_driver() const override { return true; }
  bool is_sampler() const override { return true; }
  void broadcast_step(std::vector<int32_t>&) override {}
  void recv_hidden(Tensor&, int) override {}
  void send_hidden(const Tensor&, int) override {}
  void broadcast_tokens(std::vector<int32_t>&) override {}
  void broadcast_logits(Tensor&) override {}
  std::vector<std::vector<int32_t>> gather_to_driver(const std::vector<int32_t>& words) override { return {words}; }
};

}  // namespace strata
