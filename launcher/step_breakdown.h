// launcher/step_breakdown.h: where one rank's decode steps spent their time, measured (not predicted):
// compute, communication the step waited for and the part overlap hid, waits on streamed weights,
// sampling and scheduling; plus the rank's memory per tier. Built from cumulative counters read
// after every step, so prefill steps can be left out. bench decode prints it; bench scaling keeps it.
#pragma once
#include <cstdint>
#include <optional>

#include <boost/json.hpp>

#include "runtime/collective.h"

namespace strata::launcher {

class ModelSession;

// One rank's cumulative counters at one instant (engine step phases, TP collective, weight stream).
struct StepCounters {
  int64_t steps = 0;
  double prefill_s = 0, decode_s = 0, forward_s = 0, sample_s = 0;
  CollectiveStats comm;
  double stream_wait_s = 0;  // compute blocked on a streamed layer (offload::PrefetchStats::acquire_wait_s)
  double stream_busy_s = 0;  // the stream's worker filling slots
  int64_t stream_bytes = 0;  // bytes streamed from the host and disk tiers
};
StepCounters read_counters(ModelSession& session);

// Average time of one decode step, in seconds, split so that compute + comm_exposed + stream_wait +
// sample + schedule == step. comm_hidden and stream_hidden ran under compute; they are not added.
struct StepParts {
  int64_t steps = 0;
  double step = 0, compute = 0, comm_exposed = 0, stream_wait = 0, sample = 0, schedule = 0;
  double comm_total = 0, comm_hidden = 0;
  double stream_total = 0, stream_hidden = 0;
  int64_t comm_ops = 0, comm_bytes = 0, stream_bytes = 0;  // per step
  // NCCL: waits are GPU-side, so comm_total is GPU-timed, compute includes the exposed part, and the
  // exposed/hidden split comes from comparing with a --skip-all-reduces run (bench scaling does).
  bool comm_stream_ordered = false;
  // hidden / total; none when nothing moved (a group of one, nothing streamed).
  std::optional<double> comm_hidden_fraction, stream_hidden_fraction;
};

class StepBreakdown {
 public:
  explicit StepBreakdown(const StepCounters& start) : last_(start) {}
  // Counters after a step (or several): the interval since the last call counts when it ran decodes
  // only (no prompt tokens), so prefill never skews the decode split.
  void observe(const StepCounters& now);
  StepParts parts() const;

 private:
  StepCounters last_, sum_;  // sum_: decode intervals only
};

// {"steps", "step_ms", "compute_ms", ... , "comm_hidden_fraction": x | null, ...}
boost::json::object parts_json(const StepParts& parts);
// A stream-ordered breakdown (comm_stream_ordered) split by the same point run without communication
// (bench decode --skip-all-reduces), whose step took `no_comm_step_ms`: exposed = step - that, hidden = the
// GPU-timed total - exposed; compute loses the exposed part, so the parts still add up to the step.
void split_by_no_comm_run(boost::json::object& breakdown, double no_comm_step_ms);
// This rank's memory per tier: weights on the compute device, in (pinned) host memory and left on
// disk, the streaming ring, and the KV cache. Without offload every weight counts as device-resident.
boost::json::object memory_json(ModelSession& session);

}  // namespace strata::launcher
