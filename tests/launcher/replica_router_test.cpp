// tests/launcher/replica_router_test.cpp: data-parallel routing against fake replicas: the least
// outstanding tokens wins (reported plus routed since the report, ties to the lowest index), only
// ready replicas get requests, a replica at its in-flight limit or refusing passes the request on,
// cancellations reach the replica holding the request, and finished events free its accounting.
#include <gtest/gtest.h>

#include <set>

#include "launcher/http/replica_router.h"
#include "runtime/error.h"

namespace strata::launcher::http {
namespace {

class FakeReplica : public RequestEngine {
 public:
  bool submit(EngineRequest r) override {
    if (refuse) return false;
    submitted.push_back(r.id);
    return true;
  }
  void cancel(uint64_t id) override { cancelled.insert(id); }
  EngineStats stats() const override { return {}; }
  std::vector<uint64_t> submitted;
  std::set<uint64_t> cancelled;
  bool refuse = false;
};

EngineRequest request(uint64_t id, int prompt, int64_t max_new) {
  EngineRequest r;
  r.id = id;
  r.prompt.assign(static_cast<size_t>(prompt), 1);
  r.max_new_tokens = max_new;
  return r;
}

EngineStats outstanding(int64_t tokens) {
  EngineStats s;
  s.outstanding_tokens = tokens;
  return s;
}

TokenEvent finished(uint64_t id, const char* reason) {
  TokenEvent e;
  e.request_id = id;
  e.finished = true;
  e.finish_reason = reason;
  return e;
}

struct Fixture {
  FakeReplica a, b, c;
  std::vector<TokenEvent> sunk;
  ReplicaRouter router{{{&a, 0}, {&b, 0}, {&c, 2}}, [this](const std::vector<TokenEvent>& e) {
                         sunk.insert(sunk.end(), e.begin(), e.end());
                       }};
  void all_ready() {
    for (int i = 0; i < 3; ++i) router.report(i, {}, 0);
  }
};

TEST(ReplicaRouter, NothingIsRoutedUntilAReplicaReports) {
  Fixture f;
  EXPECT_FALSE(f.router.all_ready());
  EXPECT_FALSE(f.router.submit(request(1, 4, 4)));
  f.router.report(1, {}, 0);
  EXPECT_TRUE(f.router.submit(request(2, 4, 4)));
  EXPECT_EQ(f.b.submitted, std::vector<uint64_t>{2});
  f.router.report(0, {}, 0);
  f.router.report(2, {}, 0);
  EXPECT_TRUE(f.router.all_ready());
}

TEST(ReplicaRouter, LeastOutstandingTokensWinsAndTiesGoLow) {
  Fixture f;
  f.all_ready();
  // Idle: ties go to replica 0; each routed request counts (prompt + max_new) until reported.
  EXPECT_TRUE(f.router.submit(request(1, 10, 90)));  // a: 100
  EXPECT_TRUE(f.router.submit(request(2, 10, 40)));  // b: 50
  EXPECT_TRUE(f.router.submit(request(3, 10, 20)));  // c: 30
  EXPECT_TRUE(f.router.submit(request(4, 5, 5)));    // c: 40 (least was c at 30)
  EXPECT_EQ(f.a.submitted, std::vector<uint64_t>{1});
  EXPECT_EQ(f.b.submitted, std::vector<uint64_t>{2});
  EXPECT_EQ(f.c.submitted, (std::vector<uint64_t>{3, 4}));
  // Replica 0 reports its one request nearly done: 5 tokens left, request 1 now reflected.
  f.router.report(0, outstanding(5), f.router.routed(0));
  EXPECT_TRUE(f.router.submit(request(5, 1, 1)));
  EXPECT_EQ(f.a.submitted.back(), 5u);
  // A report that predates request 5 keeps counting it: a is 5 + 2 = 7, b reports 7 -> tie -> a.
  f.router.report(0, outstanding(5), f.router.routed(0) - 1);
  f.router.report(1, outstanding(7), f.router.routed(1));
  EXPECT_TRUE(f.router.submit(request(6, 1, 1)));
  EXPECT_EQ(f.a.submitted.back(), 6u);
  const auto status = f.router.replicas();
  ASSERT_EQ(status.size(), 3u);
  EXPECT_EQ(status[0].load_tokens, 5 + 2 + 2);
  EXPECT_EQ(status[0].routed, 3);
  EXPECT_EQ(status[2].in_flight, 2);
}

TEST(ReplicaRouter, LimitsAndRefusalsPassRequestsOn) {
  Fixture f;
  f.all_ready();
  f.router.report(0, outstanding(1000), 0);
  f.router.report(1, outstanding(1000), 0);
  // c is the least loaded but takes two in flight at most.
  EXPECT_TRUE(f.router.submit(request(1, 1, 1)));
  EXPECT_TRUE(f.router.submit(request(2, 1, 1)));
  EXPECT_TRUE(f.router.submit(request(3, 1, 1)));
  EXPECT_EQ(f.c.submitted, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(f.a.submitted, std::vector<uint64_t>{3});
  // a refuses (queue full): b gets it; a refused request leaves no trace on a.
  f.a.refuse = true;
  EXPECT_TRUE(f.router.submit(request(4, 1, 1)));
  EXPECT_EQ(f.b.submitted, std::vector<uint64_t>{4});
  EXPECT_EQ(f.router.replicas()[0].in_flight, 1);
  f.b.refuse = true;
  EXPECT_FALSE(f.router.submit(request(5, 1, 1)));
  // A finished request frees its slot on c.
  f.router.deliver(2, {finished(1, "length")});
  EXPECT_TRUE(f.router.submit(request(6, 1, 1)));
  EXPECT_EQ(f.c.submitted.back(), 6u);
}

TEST(ReplicaRouter, CancelGoesWhereTheRequestIsAndFinishingForgetsIt) {
  Fixture f;
  f.all_ready();
  EXPECT_TRUE(f.router.submit(request(1, 4, 4)));  // a
  EXPECT_TRUE(f.router.submit(request(2, 4, 4)));  // b
  f.router.cancel(2);
  EXPECT_TRUE(f.a.cancelled.empty());
  EXPECT_EQ(f.b.cancelled, std::set<uint64_t>{2});
  TokenEvent token;
  token.request_id = 2;
  token.token = 9;
  f.router.deliver(1, {token, finished(2, "cancelled")});
  ASSERT_EQ(f.sunk.size(), 2u);  // every event reaches the frontend, in order
  EXPECT_EQ(f.sunk[0].token, 9);
  EXPECT_TRUE(f.sunk[1].finished);
  const auto status = f.router.replicas();
  EXPECT_EQ(status[1].cancelled, 1);
  EXPECT_EQ(status[1].in_flight, 0);
  EXPECT_EQ(status[1].load_tokens, 0);
  // Cancelling a finished request goes nowhere.
  f.router.cancel(2);
  EXPECT_EQ(f.b.cancelled.size(), 1u);
  EXPECT_THROW(f.router.submit(request(1, 4, 4)), strata::Error);  // id 1 is still in flight
}

TEST(ReplicaRouter, StatsSumTheReplicasAndBatchesAreObservedOncePerStep) {
  Fixture f;
  std::vector<double> batches;
  f.router.on_batch([&](double n) { batches.push_back(n); });
  EngineStats s;
  s.running = 3;
  s.kv_blocks_used = 4;
  s.steps = 1;
  s.last_batch_size = 3;
  f.router.report(0, s, 0);
  f.router.report(0, s, 0);  // same step reported again
  s.steps = 2;
  f.router.report(2, s, 0);
  EXPECT_EQ(batches, (std::vector<double>{3, 3}));
  EXPECT_EQ(f.router.stats().running, 6);
  EXPECT_EQ(f.router.stats().kv_blocks_used, 8);
}

}  // namespace
}  // namespace strata::launcher::http
