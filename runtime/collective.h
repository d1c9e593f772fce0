// runtime/collective.h: what a model step needs from its tensor-parallel group. runtime/ declares it;
// parallel/ implements it over a comm::Communicator. A single rank uses LocalCollective.
#pragma once
#include <cstdint>
#include <memory>

#include "runtime/tensor.h"

namespace strata {

// Under tensor parallelism a step's tokens are split into up to `chunks` row groups of at least `min_tokens`
// each, so one group's all-reduce runs while the next group computes (comm.overlap_chunks and
// comm.overlap_min_tokens in the plan); chunks 1 turns overlap off. Steps too short to keep min_tokens per
// group are not split: they are bound by reading the weights, which each group reads again. The row groups
// a step of `tokens` tokens gets (>= 1); the model and the performance model both use it.
inline int64_t overlap_row_groups(int64_t tokens, int64_t chunks, int64_t min_tokens) {
  const int64_t groups = tokens / (min_tokens > 1 ? min_tokens : 1);
  const int64_t most = chunks > 1 ? chunks : 1;
  return groups < 1 ? 1 : groups > most ? most : groups;
}

// Handle of an all-reduce in flight; wait() returns when later work on the compute device may read
// the result (and throws strata::Error on failure or timeout).
class CollectiveWork {
 public:
  virtual ~CollectiveWork() = default;
  virtual void wait() = 0;
};

// What a rank's collectives have cost so far, for benchmark reports (bench decode, bench scaling).
// busy_seconds is the wall time during which at least one of this rank's collectives was in flight
// (issue to completion; ops in flight together count once), so it is the communication time a step
// would add if nothing overlapped. blocked_seconds is the part of it the caller spent inside a
// collective call or a handle's wait(): the communication compute did not hide.
struct CollectiveStats {
  int64_t ops = 0;
  int64_t bytes = 0;  // this rank's payload (the tensor it reduces, the slice it contributes)
  double busy_seconds = 0;
  double blocked_seconds = 0;
  // >= 0 where the transport's waits are stream-ordered (NCCL): the host neither blocks nor sees the
  // end of an op, so busy/blocked say nothing and this GPU-timed total is the communication time.
  double device_busy_seconds = -1;
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
  // After replaying recorded work (a CUDA graph) that contains this group's operations: they have no
  // handles, so a transport whose waits are stream-ordered puts its deadline on the replay instead.
  virtual void fence() {}
  // Whether this group's operations can be recorded into a CUDA graph (device-side, stream-ordered).
  virtual bool recordable() const { return false; }
  // Totals since construction; zero where nothing moves (a group of one).
  virtual CollectiveStats stats() const { return {}; }
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
