// tests/launcher/step_breakdown_test.cpp: the measured decode-step split from synthetic counters:
// prefill intervals are left out, the parts add up to the step, hidden shares are shares and are n/a
// when nothing moved, and a stream-ordered (NCCL) split is completed by a run without communication.
// Closed-form arithmetic on made-up seconds; nothing is timed.
#include <gtest/gtest.h>

#include "launcher/step_breakdown.h"

namespace strata::launcher {
namespace {

// Counters after one more step of the given phase seconds.
StepCounters advance(StepCounters c, bool prefill, double step, double forward, double sample, double comm_busy,
                     double comm_blocked, double stream_busy = 0, double stream_wait = 0, int64_t bytes = 0) {
  ++c.steps;
  (prefill ? c.prefill_s : c.decode_s) += step;
  c.forward_s += forward;
  c.sample_s += sample;
  c.comm.ops += 4;
  c.comm.bytes += 1024;
  c.comm.busy_seconds += comm_busy;
  c.comm.blocked_seconds += comm_blocked;
  c.stream_busy_s += stream_busy;
  c.stream_wait_s += stream_wait;
  c.stream_bytes += bytes;
  return c;
}

TEST(StepBreakdown, DecodeStepsOnlyAndPartsAddUpToTheStep) {
  StepCounters c;
  StepBreakdown b(c);
  c = advance(c, true, 1.0, 0.9, 0.05, 0.5, 0.4);  // prefill: must not count
  b.observe(c);
  c = advance(c, false, 0.010, 0.008, 0.001, 0.004, 0.001, 0.003, 0.002, 500);
  b.observe(c);
  c = advance(c, false, 0.012, 0.010, 0.001, 0.006, 0.003, 0.003, 0.002, 700);
  b.observe(c);
  const StepParts p = b.parts();
  EXPECT_EQ(p.steps, 2);
  EXPECT_NEAR(p.step, 0.011, 1e-12);
  EXPECT_NEAR(p.comm_exposed, 0.002, 1e-12);
  EXPECT_NEAR(p.stream_wait, 0.002, 1e-12);
  EXPECT_NEAR(p.compute, 0.009 - 0.002 - 0.002, 1e-12);
  EXPECT_NEAR(p.sample, 0.001, 1e-12);
  EXPECT_NEAR(p.compute + p.comm_exposed + p.stream_wait + p.sample + p.schedule, p.step, 1e-15);
  EXPECT_NEAR(p.comm_total, 0.005, 1e-12);
  EXPECT_NEAR(p.comm_hidden, 0.003, 1e-12);
  ASSERT_TRUE(p.comm_hidden_fraction.has_value());
  EXPECT_NEAR(*p.comm_hidden_fraction, 0.6, 1e-12);
  ASSERT_TRUE(p.stream_hidden_fraction.has_value());
  EXPECT_NEAR(*p.stream_hidden_fraction, 1.0 / 3.0, 1e-12);
  EXPECT_EQ(p.comm_ops, 4);
  EXPECT_EQ(p.comm_bytes, 1024);
  EXPECT_EQ(p.stream_bytes, 600);
}

TEST(StepBreakdown, NoCommunicationMeansNoHiddenShare) {
  StepCounters c;
  StepBreakdown b(c);
  c = advance(c, false, 0.010, 0.008, 0.001, 0, 0);
  c.comm = {};  // a group of one
  b.observe(c);
  const StepParts p = b.parts();
  EXPECT_EQ(p.comm_total, 0);
  EXPECT_FALSE(p.comm_hidden_fraction.has_value());
  EXPECT_FALSE(p.stream_hidden_fraction.has_value());
  const boost::json::object j = parts_json(p);
  EXPECT_TRUE(j.at("comm_hidden_fraction").is_null());
  EXPECT_DOUBLE_EQ(j.at("compute_ms").as_double(), 8.0);
}

TEST(StepBreakdown, WaitsLongerThanTheForwardPassAreClampedNotNegative) {
  // Clock granularity can make a wait look longer than the pass that contains it; the parts must
  // stay non-negative and still add up.
  StepCounters c;
  StepBreakdown b(c);
  c = advance(c, false, 0.010, 0.004, 0.001, 0.003, 0.005, 0, 0.002, 10);
  b.observe(c);
  const StepParts p = b.parts();
  EXPECT_GE(p.compute, 0);
  EXPECT_GE(p.stream_wait, 0);
  EXPECT_GE(p.comm_hidden, 0);
  EXPECT_NEAR(p.compute + p.comm_exposed + p.stream_wait + p.sample + p.schedule, p.step, 1e-15);
  ASSERT_TRUE(p.comm_hidden_fraction.has_value());
  EXPECT_GE(*p.comm_hidden_fraction, 0);
  EXPECT_LE(*p.comm_hidden_fraction, 1);
}

// NCCL: the host never blocks, so the GPU-timed total is the communication and compute holds the
// exposed part until a run without communication splits it off.
TEST(StepBreakdown, StreamOrderedCommunicationIsSplitByTheNoCommRun) {
  StepCounters c;
  c.comm.device_busy_seconds = 0;
  StepBreakdown b(c);
  c = advance(c, false, 0.010, 0.009, 0.001, 0.0, 0.0);
  c.comm.device_busy_seconds += 0.002;
  b.observe(c);
  const StepParts p = b.parts();
  EXPECT_TRUE(p.comm_stream_ordered);
  EXPECT_NEAR(p.comm_total, 0.002, 1e-12);
  EXPECT_EQ(p.comm_exposed, 0);
  EXPECT_NEAR(p.compute, 0.009, 1e-12);
  EXPECT_FALSE(p.comm_hidden_fraction.has_value());

  boost::json::object j = parts_json(p);
  split_by_no_comm_run(j, 9.5);  // the same step took 9.5 ms without its all-reduces
  EXPECT_NEAR(j.at("comm_exposed_ms").as_double(), 0.5, 1e-9);
  EXPECT_NEAR(j.at("comm_hidden_ms").as_double(), 1.5, 1e-9);
  EXPECT_NEAR(j.at("comm_hidden_fraction").as_double(), 0.75, 1e-9);
  EXPECT_NEAR(j.at("compute_ms").as_double(), 8.5, 1e-9);
  const double sum = j.at("compute_ms").as_double() + j.at("comm_exposed_ms").as_double() +
                     j.at("stream_wait_ms").as_double() + j.at("sample_ms").as_double() + j.at("schedule_ms").as_double();
  EXPECT_NEAR(sum, j.at("step_ms").as_double(), 1e-9);

  boost::json::object slower = parts_json(p);
  split_by_no_comm_run(slower, 11.0);  // noise: the run without communication was slower
  EXPECT_EQ(slower.at("comm_exposed_ms").as_double(), 0);
  EXPECT_NEAR(slower.at("comm_hidden_fraction").as_double(), 1.0, 1e-12);
}

TEST(StepBreakdown, NoDecodeStepsGivesZeros) {
  StepCounters c;
  StepBreakdown b(c);
  b.observe(advance(c, true, 1.0, 0.9, 0.05, 0.5, 0.4));
  EXPECT_EQ(b.parts().steps, 0);
  EXPECT_EQ(b.parts().step, 0);
}

}  // namespace
}  // namespace strata::launcher
