// runtime/collective.h: what a model step needs from its tensor-parallel group. runtime/ declares it;
// parallel/ implements it over a comm::Communicator. A single rank uses LocalCollective.
#pragma once
#include <memory>

#include "runtime/tensor.h"

namespace strata {

// Handle of an all-reduce in flight; wait() returns when later work on the compute device may read
// the result (and throws strata::Error on failure or timeout).
class CollectiveWork {
 public:
  virtual ~CollectiveWork() = default;
  virtual void wait() = 0;
};

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place sum over the group (row-parallel outputs, vocab-parallel embedding).
  virtual void all_reduce_sum(Tensor& t) = 0;
  // The same, started now and finished by the handle's wait(), so the caller can compute the next
  // chunk meanwhile. The default runs it at once.
  virtual std::unique_ptr<CollectiveWork> all_reduce_sum_async(Tensor& t);
  // out[size * n] = concatenation of every rank's in[n] in rank order (vocab-parallel logits).
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
};

// The group of one: every operation is the identity.
class LocalCollective final : public Collective {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(Tensor&) override {}
  void all_gather(const Tensor& in, Tensor& out) override;
};

}  // namespace strata
