// comm/communicator_collective.h: runtime's Collective (what a model step needs from its TP group)
// on top of a Communicator, so model code stays unaware of the transport. Does not own the group.
// It also times every operation (CollectiveStats), which is how bench reports split communication
// into the part overlap hid and the part the step waited for.
#pragma once
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include "comm/communicator.h"
#include "runtime/collective.h"

namespace strata::comm {

class CommunicatorCollective final : public Collective {
 public:
  // skip_all_reduces: timing runs only (bench scaling's no-communication run): all-reduces return at once
  // leaving each rank's values (outputs are wrong), all-gathers still run.
  explicit CommunicatorCollective(Communicator& comm, bool skip_all_reduces = false);
  ~CommunicatorCollective() override;
  CommunicatorCollective(const CommunicatorCollective&) = delete;
  CommunicatorCollective& operator=(const CommunicatorCollective&) = delete;

  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  void all_reduce_sum(Tensor& t) override;
  std::unique_ptr<CollectiveWork> all_reduce_sum_async(Tensor& t) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void fence() override { comm_.fence(); }
  bool recordable() const override { return comm_.recordable(); }
  CollectiveStats stats() const override;
  Communicator& communicator() const { return comm_; }

 private:
  struct InFlight;  // one started op: its Work, when it was issued, when it finished once known
  class Handle;     // the CollectiveWork handed out
  // Issues through `issue` (timed as blocking time) and tracks the op until it is retired.
  std::unique_ptr<Handle> start(int64_t bytes, const std::function<std::unique_ptr<Work>()>& issue);
  void finish(InFlight& op);  // the caller's wait: blocks until done, records the time blocked
  // Stamps ops that finished since the last call. Every collective call polls, so an op that
  // completed while compute ran is stamped at the next call rather than at its own, later, wait()
  // (this also gives MPI, which progresses only inside its calls, a chance to progress).
  void poll();
  // Folds finished ops, oldest first, into the busy-time union and forgets them.
  void retire();

  Communicator& comm_;
  bool skip_all_reduce_ = false;  // the constructor's skip_all_reduces, with more than one rank
  std::deque<std::shared_ptr<InFlight>> in_flight_;  // issue order; touched by the stepping thread only
  double covered_until_ = 0;                          // end of the busy union so far (seconds)
  mutable std::mutex stats_mutex_;                    // stats() may be read from another thread
  CollectiveStats stats_;
};

}  // namespace strata::comm
