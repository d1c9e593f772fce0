// tests/parallel/dp_wire_test.cpp: the router <-> replica-driver messages decode to exactly the values
// they were built from (floats bit for bit, 64-bit ids beyond 32 bits, UTF-8 error text), and words
// that are not such a message are refused with a comm error instead of being misread.
#include <gtest/gtest.h>

#include "parallel/dp_wire.h"
#include "runtime/error.h"

namespace strata::parallel {
namespace {

TEST(DpWire, SubmitCarriesEveryRequestField) {
  EngineRequest r;
  r.id = (uint64_t{7} << 40) + 3;
  r.prompt = {1, 500, 31999};
  r.max_new_tokens = 321;
  r.sampling.temperature = 0.7f;
  r.sampling.top_k = 40;
  r.sampling.top_p = 0.9f;
  r.sampling.min_p = 0.05f;
  r.sampling.repetition_penalty = 1.1f;
  r.sampling.seed = (uint64_t{1} << 63) + 5;
  r.stop_ids = {2, 13};
  r.logprobs = 3;
  const DpMessage m = DpMessage::unpack(dp_submit(r).pack());
  ASSERT_EQ(m.kind, DpKind::kSubmit);
  EXPECT_EQ(m.request.id, r.id);
  EXPECT_EQ(m.request.prompt, r.prompt);
  EXPECT_EQ(m.request.max_new_tokens, 321);
  EXPECT_EQ(m.request.sampling.temperature, 0.7f);
  EXPECT_EQ(m.request.sampling.top_k, 40);
  EXPECT_EQ(m.request.sampling.top_p, 0.9f);
  EXPECT_EQ(m.request.sampling.min_p, 0.05f);
  EXPECT_EQ(m.request.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(m.request.sampling.seed, r.sampling.seed);
  EXPECT_EQ(m.request.stop_ids, r.stop_ids);
  EXPECT_EQ(m.request.logprobs, 3);
}

TEST(DpWire, ReportCarriesStatsAndEvents) {
  DpReport report;
  report.stats.waiting = 2;
  report.stats.running = 5;
  report.stats.kv_blocks_used = 17;
  report.stats.kv_blocks_total = 256;
  report.stats.steps = int64_t{1} << 35;
  report.stats.outstanding_tokens = 1234;
  report.stats.decode_seconds = 0.125;
  report.reflected = 99;
  TokenEvent token;
  token.request_id = 41;
  token.token = 77;
  token.logprob = -0.3f;
  token.top_logprobs = {{77, -0.3f}, {12, -2.5f}};
  TokenEvent failed;
  failed.request_id = 42;
  failed.finished = true;
  failed.finish_reason = "error";
  failed.error = "out of KV blocks \xc3\xa9";  // odd length, non-ASCII
  report.events = {token, failed};
  report.telemetry = {{1, 2, 3}, {}, {-5}};  // a rank without a GPU sends no words

  const DpMessage m = DpMessage::unpack(dp_report(report).pack());
  ASSERT_EQ(m.kind, DpKind::kReport);
  EXPECT_EQ(m.report.stats.waiting, 2);
  EXPECT_EQ(m.report.stats.running, 5);
  EXPECT_EQ(m.report.stats.kv_blocks_used, 17);
  EXPECT_EQ(m.report.stats.kv_blocks_total, 256);
  EXPECT_EQ(m.report.stats.steps, int64_t{1} << 35);
  EXPECT_EQ(m.report.stats.outstanding_tokens, 1234);
  EXPECT_EQ(m.report.stats.decode_seconds, 0.125);
  EXPECT_EQ(m.report.reflected, 99u);
  ASSERT_EQ(m.report.events.size(), 2u);
  const TokenEvent& a = m.report.events[0];
  EXPECT_EQ(a.request_id, 41u);
  EXPECT_EQ(a.token, 77);
  EXPECT_EQ(a.logprob, -0.3f);
  ASSERT_EQ(a.top_logprobs.size(), 2u);
  EXPECT_EQ(a.top_logprobs[1].token, 12);
  EXPECT_EQ(a.top_logprobs[1].logprob, -2.5f);
  EXPECT_FALSE(a.finished);
  const TokenEvent& b = m.report.events[1];
  EXPECT_TRUE(b.finished);
  EXPECT_EQ(b.token, -1);
  EXPECT_EQ(b.finish_reason, "error");
  EXPECT_EQ(b.error, failed.error);
  EXPECT_EQ(m.report.telemetry, report.telemetry);
}

TEST(DpWire, SmallMessages) {
  EXPECT_EQ(DpMessage::unpack(dp_cancel(uint64_t{1} << 50).pack()).request_id, uint64_t{1} << 50);
  EXPECT_EQ(DpMessage::unpack(dp_failed("boom").pack()).error, "boom");
  for (DpKind k : {DpKind::kShutdown, DpKind::kPing, DpKind::kBye}) EXPECT_EQ(DpMessage::unpack(dp_signal(k).pack()).kind, k);
  EXPECT_THROW(dp_signal(DpKind::kSubmit), Error);
}

TEST(DpWire, ForeignOrDamagedWordsAreRefused) {
  auto kind_of_error = [](const std::vector<int32_t>& words) {
    try {
      DpMessage::unpack(words);
    } catch (const Error& e) {
      return e.kind();
    }
    return ErrorKind::kInternal;  // decoded: not what these tests want
  };
  std::vector<int32_t> words = dp_submit(EngineRequest{}).pack();
  EXPECT_EQ(kind_of_error({}), ErrorKind::kComm);
  EXPECT_EQ(kind_of_error({0x12345678, 1}), ErrorKind::kComm);  // wrong magic
  std::vector<int32_t> truncated(words.begin(), words.end() - 1);
  EXPECT_EQ(kind_of_error(truncated), ErrorKind::kComm);
  std::vector<int32_t> longer = words;
  longer.push_back(0);
  EXPECT_EQ(kind_of_error(longer), ErrorKind::kComm);
  std::vector<int32_t> bad_kind = words;
  bad_kind[1] = 99;
  EXPECT_EQ(kind_of_error(bad_kind), ErrorKind::kComm);
}

}  // namespace
}  // namespace strata::parallel
