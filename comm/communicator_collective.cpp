// comm/communicator_collective.cpp: CommunicatorCollective, and the timing of its operations: each
// op's interval from issue to completion feeds a busy-time union, and every second the caller spends
// inside an issue or a wait counts as blocked.
#include "comm/communicator_collective.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include "runtime/log.h"

namespace strata::comm {
namespace {
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

class SkippedWork final : public CollectiveWork {
 public:
  void wait() override {}
};
}  // namespace

struct CommunicatorCollective::InFlight {
  std::unique_ptr<Work> work;
  double issued = 0;
  double completed = -1;     // < 0 while not known to be done
  bool abandoned = false;    // the handle went away unwaited: the op no longer counts
  std::exception_ptr error;  // a failure seen while polling, rethrown by the handle's wait()

  void stamp(double observed) {
    // The backend's own end of the op when it has one (a TCP worker finishing while compute ran);
    // else the moment a call saw it done.
    const double elapsed = work->elapsed_seconds();
    completed = elapsed >= 0 ? std::min(observed, issued + elapsed) : observed;
  }
  bool settled() const { return completed >= 0 || abandoned || error != nullptr; }
};

class CommunicatorCollective::Handle final : public CollectiveWork {
 public:
  Handle(CommunicatorCollective& owner, std::shared_ptr<InFlight> op) : owner_(owner), op_(std::move(op)) {}
  ~Handle() override {
    if (!waited_ && op_->completed < 0) op_->abandoned = true;
  }
  void wait() override {
    waited_ = true;
    owner_.finish(*op_);
  }

 private:
  CommunicatorCollective& owner_;
  std::shared_ptr<InFlight> op_;
  bool waited_ = false;
};

CommunicatorCollective::CommunicatorCollective(Communicator& comm, bool skip_all_reduces)
    : comm_(comm), skip_all_reduce_(skip_all_reduces && comm.size() > 1) {
  if (skip_all_reduce_)
    LOG_WARN("--skip-all-reduces: '", comm.name(), "' skips its all-reduces; outputs are wrong, only timings "
             "mean something (the step without communication, to measure how much of it is exposed)");
}
CommunicatorCollective::~CommunicatorCollective() = default;

std::unique_ptr<CommunicatorCollective::Handle> CommunicatorCollective::start(
    int64_t bytes, const std::function<std::unique_ptr<Work>()>& issue) {
  auto op = std::make_shared<InFlight>();
  op->issued = now_s();
  op->work = issue();
  const double issued_until = now_s();  // a transport that works inside the call blocked us this long
  in_flight_.push_back(op);
  {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    ++stats_.ops;
    stats_.bytes += bytes;
    stats_.blocked_seconds += issued_until - op->issued;
  }
  poll();
  return std::make_unique<Handle>(*this, std::move(op));
}

void CommunicatorCollective::finish(InFlight& op) {
  const double t0 = now_s();
  poll();
  if (op.error) {
    const std::exception_ptr error = op.error;
    op.error = nullptr;
    op.abandoned = true;
    retire();
    std::rethrow_exception(error);
  }
  if (op.completed < 0) {
    op.work->wait();  // throws on failure or timeout; the op then never counts
    op.stamp(now_s());
  }
  const double t1 = now_s();
  {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    stats_.blocked_seconds += t1 - t0;
  }
  retire();
}

void CommunicatorCollective::poll() {
  for (const auto& op : in_flight_) {
    if (op->settled()) continue;
    try {
      if (op->work->test()) op->stamp(now_s());
    } catch (...) {
      op->error = std::current_exception();  // reported by that op's wait(), not by this call
    }
  }
}

void CommunicatorCollective::retire() {
  double added = 0;
  while (!in_flight_.empty() && in_flight_.front()->settled()) {
    const InFlight& op = *in_flight_.front();
    if (op.completed >= 0) {
      // Issue order is start order, so the union grows by the part past what it already covers.
      added += std::max(0.0, op.completed - std::max(op.issued, covered_until_));
      covered_until_ = std::max(covered_until_, op.completed);
    }
    in_flight_.pop_front();
  }
  std::lock_guard<std::mutex> lock(stats_mutex_);
  stats_.busy_seconds += added;
}

void CommunicatorCollective::all_reduce_sum(Tensor& t) { all_reduce_sum_async(t)->wait(); }

std::unique_ptr<CollectiveWork> CommunicatorCollective::all_reduce_sum_async(Tensor& t) {
  if (skip_all_reduce_) return std::make_unique<SkippedWork>();
  return start(t.nbytes(), [&] { return comm_.all_reduce_async(t, ReduceOp::kSum); });
}

void CommunicatorCollective::all_gather(const Tensor& in, Tensor& out) {
  start(in.nbytes(), [&] { return comm_.all_gather_async(in, out); })->wait();
}

CollectiveStats CommunicatorCollective::stats() const {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  CollectiveStats s = stats_;
  s.device_busy_seconds = comm_.device_busy_seconds();
  return s;
}

}  // namespace strata::comm
