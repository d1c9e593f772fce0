// tests/launcher/remote_replicas_mpi_test.cpp: world rank 0's side of data-parallel serving
// (RemoteReplicas + ReplicaRouter) against a scripted replica driver on rank 1, over real MPI: a
// request routed to the remote replica gets the driver's tokens back in order, a cancellation
// reaches the driver, and a driver's failure or its silence past comm.timeout_s reaches on_failure
// (which `strata serve` uses to answer every client) instead of hanging.
// mpi-np: 2
#include <gtest/gtest.h>

#include <condition_variable>

#include "launcher/http/remote_replicas.h"
#include "mpi_world.h"
#include "parallel/dp_link.h"
#include "runtime/error.h"

namespace strata::launcher::http {
namespace {

using parallel::DpKind;
using parallel::DpMessage;

class IdleLocal : public RequestEngine {  // replica 0; reports itself busy so requests go remote
 public:
  bool submit(EngineRequest) override { return false; }
  void cancel(uint64_t) override {}
  EngineStats stats() const override { return {}; }
};

// What rank 0 saw: events from the router and the failure, with a wait for either.
struct Seen {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<TokenEvent> events;
  std::string failure;
  template <typename F>
  bool wait_for(F done, double seconds = 20) {
    std::unique_lock<std::mutex> lock(mutex);
    return cv.wait_for(lock, std::chrono::duration<double>(seconds), done);
  }
};

TokenEvent token(uint64_t id, int32_t t, const char* finish = "") {
  TokenEvent e;
  e.request_id = id;
  e.token = t;
  e.finished = *finish != 0;
  e.finish_reason = finish;
  return e;
}

DpMessage next(parallel::DpLink& link) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(20)) {
    if (std::optional<DpMessage> m = link.poll()) {
      if (m->kind != DpKind::kPing) return *m;
      continue;
    }
    link.flushed();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  throw Error(ErrorKind::kTimeout, "the scripted driver got no message");
}

TEST(RemoteReplicas, TokensCancellationAndFailureCrossTheLink) {
  comm::Communicator& world = *test::world_slot();
  const auto group = world.split(0, world.rank(), "dp test");
  if (group->rank() == 1) {  // the scripted driver of replica 1
    parallel::DpLink router(*group, 0, 20, "the router");
    router.send(parallel::dp_report({{}, 0, {}, {{5, 6}, {}}}));  // ready, with its two ranks' telemetry
    DpMessage m = next(router);
    ASSERT_EQ(m.kind, DpKind::kSubmit);
    ASSERT_EQ(m.request.id, 7u);
    EXPECT_EQ(m.request.prompt, (std::vector<int32_t>{1, 2, 3}));
    router.send(parallel::dp_report({{}, 1, {token(7, 100)}, {}}));  // no new telemetry: the last stays
    router.send(parallel::dp_report({{}, 1, {token(7, 101, "length")}, {}}));
    m = next(router);
    ASSERT_EQ(m.kind, DpKind::kSubmit);
    EXPECT_EQ(m.request.id, 8u);
    m = next(router);
    ASSERT_EQ(m.kind, DpKind::kCancel);
    EXPECT_EQ(m.request_id, 8u);
    router.send(parallel::dp_report({{}, 2, {token(8, -1, "cancelled")}, {}}));
    router.send(parallel::dp_failed("boom"));
    while (!router.flushed()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  } else {
    IdleLocal local;
    Seen seen;
    RemoteReplicas remotes(*group, 20);
    ReplicaRouter router({{&local, 0}, {&remotes.replica(1), 4}}, [&](const std::vector<TokenEvent>& e) {
      std::lock_guard<std::mutex> lock(seen.mutex);
      seen.events.insert(seen.events.end(), e.begin(), e.end());
      seen.cv.notify_all();
    });
    EngineStats busy;
    busy.outstanding_tokens = 1000;
    router.report(0, busy, 0);
    remotes.start(router, [&](const std::string& why) {
      std::lock_guard<std::mutex> lock(seen.mutex);
      seen.failure = why;
      seen.cv.notify_all();
    });
    for (int i = 0; i < 2000 && !router.all_ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(router.all_ready());
    EngineRequest r;
    r.id = 7;
    r.prompt = {1, 2, 3};
    r.max_new_tokens = 2;
    ASSERT_TRUE(router.submit(r));
    ASSERT_TRUE(seen.wait_for([&] { return seen.events.size() == 2; }));
    r.id = 8;
    ASSERT_TRUE(router.submit(r));
    router.cancel(8);
    ASSERT_TRUE(seen.wait_for([&] { return !seen.failure.empty(); }));
    std::lock_guard<std::mutex> lock(seen.mutex);
    ASSERT_EQ(seen.events.size(), 3u);  // everything before the failure arrived, in order
    EXPECT_EQ(seen.events[0].token, 100);
    EXPECT_EQ(seen.events[1].token, 101);
    EXPECT_EQ(seen.events[1].finish_reason, "length");
    EXPECT_EQ(seen.events[2].request_id, 8u);
    EXPECT_EQ(seen.events[2].finish_reason, "cancelled");
    EXPECT_NE(seen.failure.find("replica 1 failed: boom"), std::string::npos) << seen.failure;
    const auto status = router.replicas();
    EXPECT_EQ(status[1].routed, 2);
    EXPECT_EQ(status[1].in_flight, 0);
    EXPECT_EQ(status[1].cancelled, 1);
    EXPECT_EQ(remotes.rank_telemetry(), (std::vector<std::vector<int32_t>>{{5, 6}, {}}));
  }
  group->barrier();
}

TEST(RemoteReplicas, ASilentDriverIsAFailureAfterTheTimeout) {
  comm::Communicator& world = *test::world_slot();
  const auto group = world.split(0, world.rank(), "dp silent");
  if (group->rank() == 0) {
    IdleLocal local;
    Seen seen;
    RemoteReplicas remotes(*group, 0.5);
    ReplicaRouter router({{&local, 0}, {&remotes.replica(1), 4}}, nullptr);
    const auto start = std::chrono::steady_clock::now();
    remotes.start(router, [&](const std::string& why) {
      std::lock_guard<std::mutex> lock(seen.mutex);
      seen.failure = why;
      seen.cv.notify_all();
    });
    ASSERT_TRUE(seen.wait_for([&] { return !seen.failure.empty(); }, 10));
    EXPECT_GE(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 0.5);
    EXPECT_NE(seen.failure.find("no message from the driver of replica 1"), std::string::npos) << seen.failure;
    EXPECT_FALSE(remotes.wait_closed(0.1));
  }
  group->barrier();  // rank 1 said nothing until here
}

}  // namespace
}  // namespace strata::launcher::http
