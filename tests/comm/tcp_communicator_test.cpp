// tests/comm/tcp_communicator_test.cpp: TcpCommunicator with 2-4 ranks as threads on 127.0.0.1 (the
// same closed-form checks as the MPI test), its timeouts, and a forked rank that dies.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <future>

#include "comm/communicator_collective.h"
#include "tests/comm/comm_checks.h"
#include "tests/comm/tcp_test_ranks.h"

namespace strata::comm {
namespace {

using testing::run_tcp_ranks;

CommConfig config_with_timeout(double s) {
  CommConfig c;
  c.timeout_s = s;
  return c;
}

class TcpOps : public ::testing::TestWithParam<int> {};

TEST_P(TcpOps, AllReduce) { run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) { testing::check_all_reduce(c); }); }
TEST_P(TcpOps, AllGather) { run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) { testing::check_all_gather(c); }); }
TEST_P(TcpOps, ReduceScatter) {
  run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) { testing::check_reduce_scatter(c); });
}
TEST_P(TcpOps, Broadcast) { run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) { testing::check_broadcast(c); }); }
TEST_P(TcpOps, SendRecv) { run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) { testing::check_send_recv(c); }); }
TEST_P(TcpOps, AsyncOverlap) {
  run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) { testing::check_async_overlap(c); });
}
TEST_P(TcpOps, SplitGrid) {
  if (GetParam() % 2) GTEST_SKIP() << "needs an even number of ranks";
  run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) { testing::check_split_grid(c); });
}
TEST_P(TcpOps, BadArguments) {
  run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) { testing::check_bad_arguments(c); });
}
TEST_P(TcpOps, CollectiveAdapterAndLargeTensor) {
  run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) {
    CommunicatorCollective coll(c);
    const int64_t n = 1 << 20;  // 4 MiB: larger than socket buffers, so writes and reads interleave
    Tensor t = Tensor::empty({n}, DType::kF32);
    for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = static_cast<float>(coll.rank() + (i & 255));
    coll.all_reduce_sum(t);
    const int s = coll.size();
    for (int64_t i = 0; i < n; i += 977) ASSERT_EQ(t.data<float>()[i], s * (s - 1) / 2.0f + s * (i & 255));
  });
}
// The adapter's own op timing (CollectiveStats): counts and bytes exactly, and that ops took some
// time; never how long (a woken waiter may even be blocked past the worker's end of the op).
TEST_P(TcpOps, CollectiveAdapterCountsAndTimesItsOps) {
  run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) {
    CommunicatorCollective coll(c);
    EXPECT_EQ(coll.stats().ops, 0);
    Tensor a = Tensor::zeros({256}, DType::kF32), b = Tensor::zeros({256}, DType::kF32);
    auto wa = coll.all_reduce_sum_async(a);
    auto wb = coll.all_reduce_sum_async(b);  // two in flight: their overlap counts once
    wa->wait();
    wb->wait();
    coll.all_reduce_sum(a);
    Tensor slab = Tensor::zeros({8}, DType::kF32), all = Tensor::zeros({8 * coll.size()}, DType::kF32);
    coll.all_gather(slab, all);
    const CollectiveStats s = coll.stats();
    EXPECT_EQ(s.ops, 4);
    EXPECT_EQ(s.bytes, 3 * 256 * 4 + 8 * 4);
    EXPECT_GT(s.busy_seconds, 0);
    EXPECT_GE(s.blocked_seconds, 0);
    // A handle dropped unwaited stops counting; the adapter keeps working.
    { auto dropped = coll.all_reduce_sum_async(a); }
    coll.all_reduce_sum(b);
    EXPECT_EQ(coll.stats().ops, 6);
  });
}
// skip_all_reduces (bench decode --skip-all-reduces, bench scaling's no-communication run) skips the
// all-reduces, only them: the tensor keeps this rank's values and nothing is counted, while the logits gather
// still works.
TEST_P(TcpOps, SkipModeLeavesAllReducesOutAndGathersStill) {
  run_tcp_ranks(GetParam(), config_with_timeout(30), [](int, Communicator& c) {
    CommunicatorCollective coll(c, /*skip_all_reduces=*/true);
    Tensor t = Tensor::empty({16}, DType::kF32);
    std::fill_n(t.data<float>(), 16, static_cast<float>(coll.rank() + 1));
    coll.all_reduce_sum_async(t)->wait();
    coll.all_reduce_sum(t);
    for (int64_t i = 0; i < 16; ++i) ASSERT_EQ(t.data<float>()[i], coll.rank() + 1);
    EXPECT_EQ(coll.stats().ops, 0);
    Tensor mine = Tensor::empty({2}, DType::kF32), all = Tensor::zeros({2 * coll.size()}, DType::kF32);
    std::fill_n(mine.data<float>(), 2, static_cast<float>(coll.rank()));
    coll.all_gather(mine, all);
    for (int r = 0; r < coll.size(); ++r) EXPECT_EQ(all.data<float>()[2 * r + 1], r);
    EXPECT_EQ(coll.stats().device_busy_seconds, -1);  // host-timed transport
  });
}
INSTANTIATE_TEST_SUITE_P(Ranks, TcpOps, ::testing::Values(2, 3, 4));

TEST(LocalCollective, MovesNothingAndReportsNothing) {
  LocalCollective local;
  Tensor t = Tensor::zeros({4}, DType::kF32);
  local.all_reduce_sum(t);
  local.all_reduce_sum_async(t)->wait();
  const CollectiveStats s = local.stats();
  EXPECT_EQ(s.ops, 0);
  EXPECT_EQ(s.busy_seconds, 0);
}

TEST(TcpCommunicator, CollectiveTimeoutNamesOpGroupAndPeer) {
  std::promise<void> checked;
  auto checked_future = checked.get_future().share();
  run_tcp_ranks(2, config_with_timeout(1.5), [&](int rank, Communicator& c) {
    if (rank == 1) {  // skips the collective, stays alive until rank 0 has looked at its error
      checked_future.wait();
      return;
    }
    Tensor t = Tensor::zeros({4}, DType::kF32);
    const auto start = std::chrono::steady_clock::now();
    try {
      c.all_reduce(t);
      ADD_FAILURE() << "all_reduce without rank 1 must time out";
    } catch (const Error& e) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const std::string msg = e.what();
      EXPECT_EQ(e.kind(), ErrorKind::kTimeout) << msg;
      EXPECT_NE(msg.find("all_reduce (f32 [4]) on 'world'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("waiting for rank 1 (world rank 1, 127.0.0.1:"), std::string::npos) << msg;
      EXPECT_NE(msg.find("timed out after 1."), std::string::npos) << msg;
      EXPECT_GE(elapsed, 1.5);
      EXPECT_LT(elapsed, 6.0);
    }
    EXPECT_THROW(c.barrier(), Error);  // sequence numbers are out of step: the group refuses
    checked.set_value();
  });
}

TEST(TcpCommunicator, RecvTimeoutLeavesGroupUsable) {
  std::promise<void> checked;
  auto checked_future = checked.get_future().share();
  run_tcp_ranks(2, config_with_timeout(1.0), [&](int rank, Communicator& c) {
    if (rank == 0) {
      Tensor t = Tensor::zeros({2}, DType::kI32);
      try {
        c.recv(t, 1, 4);
        ADD_FAILURE() << "recv with no sender must time out";
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::kTimeout) << e.what();
        EXPECT_NE(std::string(e.what()).find("tag 4 from rank 1 (world rank 1"), std::string::npos) << e.what();
      }
      checked.set_value();
    } else {
      checked_future.wait();
    }
    // The withdrawn receive does not swallow the next message with that tag.
    Tensor t = Tensor::zeros({2}, DType::kI32);
    if (rank == 1) {
      t.data<int32_t>()[0] = 41;
      c.send(t, 0, 4);
    } else {
      c.recv(t, 1, 4);
      EXPECT_EQ(t.data<int32_t>()[0], 41);
    }
    c.barrier();
  });
}

// A real process dies: the survivor's wait fails fast (closed socket), long before the timeout, and
// the error names the peer and its address.
TEST(TcpCommunicator, DeadPeerFailsFastNamingIt) {
  const uint16_t port = testing::free_port();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // rank 1: never returns into the test framework
    try {
      auto comm = make_tcp_world(config_with_timeout(30), TcpOptions{"127.0.0.1", port, 1, 2, "job-secret"});
      comm->barrier();
    } catch (...) {
      _exit(2);
    }
    _exit(1);  // mid-run, without a goodbye
  }
  auto comm = make_tcp_world(config_with_timeout(30), TcpOptions{"127.0.0.1", port, 0, 2, "job-secret"});
  comm->barrier();
  const auto start = std::chrono::steady_clock::now();
  Tensor t = Tensor::zeros({4}, DType::kF32);
  try {
    comm->recv(t, 1, 0);
    ADD_FAILURE() << "recv from a dead peer must fail";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::kComm) << msg;
    EXPECT_NE(msg.find("connection to rank 1 (127.0.0.1:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("exited or crashed"), std::string::npos) << msg;
  }
  EXPECT_THROW(comm->all_reduce(t), Error);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << "child status " << status;
}

TEST(TcpStore, SetGetAddBarrier) {
  auto host = std::make_shared<TcpStore>("127.0.0.1", 0, true, 10, "s");
  TcpStore other("127.0.0.1", host->port(), false, 10, "s");
  // get blocks until another client sets the key.
  auto later = std::async(std::launch::async, [&] { return other.get("nccl/id"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  host->set("nccl/id", std::string("\0\x01\x02binary", 9));
  EXPECT_EQ(later.get(), std::string("\0\x01\x02binary", 9));
  EXPECT_EQ(host->add("counter", 2), 2);
  EXPECT_EQ(other.add("counter", 3), 5);
  host->set("empty", "");
  EXPECT_EQ(other.get("empty"), "");
  other.wait({"nccl/id", "empty"});
  auto b = std::async(std::launch::async, [&] { other.barrier("start", 2); });
  host->barrier("start", 2);
  b.get();
}

TEST(TcpStore, GetTimesOutNamingKeyAndAddress) {
  TcpStore host("127.0.0.1", 0, true, 0.5, "s");
  const auto start = std::chrono::steady_clock::now();
  try {
    host.get("never");
    FAIL() << "get of a key nobody sets must time out";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kTimeout);
    EXPECT_NE(std::string(e.what()).find(cat("get('never') on the TCP store at 127.0.0.1:", host.port())),
              std::string::npos)
        << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 3.0);
  host.set("after", "ok");  // the client reconnects after a timeout
  EXPECT_EQ(host.get("after"), "ok");
}

TEST(TcpStore, UnreachableStoreNamesAddressAndPort) {
  const uint16_t port = testing::free_port();
  const auto start = std::chrono::steady_clock::now();
  try {
    TcpStore client("127.0.0.1", port, false, 1.0, "s");
    FAIL() << "connecting to a port nobody listens on must fail";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kTimeout);
    EXPECT_NE(std::string(e.what()).find(cat("cannot reach the TCP store at 127.0.0.1:", port)), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("MASTER_ADDR/MASTER_PORT"), std::string::npos) << e.what();
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(elapsed, 0.5);  // it retried rather than giving up at the first refusal
  EXPECT_LT(elapsed, 4.0);
}

}  // namespace
}  // namespace strata::comm
