// tests/comm/mpi_communicator_mpi_test.cpp: MpiCommunicator under mpirun: every op against closed
// forms, async overlap, split grids, the Collective adapter, and timeouts that leave the job able to
// finish cleanly.
// mpi-np: 2 4
#include <gtest/gtest.h>

#include <chrono>

#include "comm/bootstrap.h"
#include "comm/communicator_collective.h"
#include "comm/mpi/mpi_communicator.h"
#include "tests/comm/comm_checks.h"

namespace strata::comm {
namespace {

Communicator* g_world = nullptr;  // made in main: MPI lives for the whole test binary

TEST(MpiCommunicator, WorldMatchesLaunch) {
  const RankInfo info = detect_launch();
  EXPECT_EQ(info.launcher, Launcher::kOpenMpi);
  EXPECT_EQ(info.world_rank, g_world->rank());
  EXPECT_EQ(info.world_size, g_world->size());
  EXPECT_EQ(info.local_size, g_world->size());  // one host
  EXPECT_EQ(g_world->name(), "world");
}

TEST(MpiCommunicator, AllReduce) { testing::check_all_reduce(*g_world); }
TEST(MpiCommunicator, AllGather) { testing::check_all_gather(*g_world); }
TEST(MpiCommunicator, ReduceScatter) { testing::check_reduce_scatter(*g_world); }
TEST(MpiCommunicator, Broadcast) { testing::check_broadcast(*g_world); }
TEST(MpiCommunicator, SendRecv) { testing::check_send_recv(*g_world); }
TEST(MpiCommunicator, AsyncOverlap) { testing::check_async_overlap(*g_world); }
TEST(MpiCommunicator, SplitGrid) { testing::check_split_grid(*g_world); }
TEST(MpiCommunicator, BadArguments) { testing::check_bad_arguments(*g_world); }

TEST(MpiCommunicator, LargeTensor) {
  // 16 MiB: beyond eager limits, so rendezvous and (with vader) the single-copy path are exercised.
  const int64_t n = 4 << 20;
  Tensor t = Tensor::empty({n}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = static_cast<float>(g_world->rank() + (i & 1023));
  g_world->all_reduce(t);
  const int s = g_world->size();
  for (int64_t i = 0; i < n; i += 4099) ASSERT_EQ(t.data<float>()[i], s * (s - 1) / 2.0f + s * (i & 1023));
}

TEST(MpiCommunicator, CollectiveAdapter) {
  auto tp = g_world->split(0, g_world->rank(), "tp[dp0 pp0]");
  CommunicatorCollective coll(*tp);
  EXPECT_EQ(coll.size(), g_world->size());
  Tensor t = Tensor::empty({2}, DType::kF32);
  t.data<float>()[0] = 1.0f;
  t.data<float>()[1] = static_cast<float>(coll.rank());
  coll.all_reduce_sum(t);
  EXPECT_EQ(t.data<float>()[0], static_cast<float>(coll.size()));
  Tensor out = Tensor::zeros({coll.size()}, DType::kF32);
  Tensor in = t.rows(0, 1);
  coll.all_gather(in, out);
  for (int k = 0; k < coll.size(); ++k) EXPECT_EQ(out.data<float>()[k], static_cast<float>(coll.size()));
}

// Rank 1 skips a collective: everyone else gets kTimeout naming the op and group within the short
// timeout. Then rank 1 joins late (so the abandoned MPI requests complete) and all finish normally.
TEST(MpiCommunicator, CollectiveTimeoutNamesOpAndGroup) {
  CommConfig impatient_config;
  impatient_config.timeout_s = 2.0;
  auto impatient = MpiCommunicator::world(impatient_config, "tp[dp0 pp1]");
  const int n = g_world->size();
  Tensor t = Tensor::empty({4}, DType::kF32);
  for (int i = 0; i < 4; ++i) t.data<float>()[i] = 1.0f;
  if (g_world->rank() != 1) {
    const auto start = std::chrono::steady_clock::now();
    try {
      impatient->all_reduce(t);
      ADD_FAILURE() << "all_reduce without rank 1 must time out";
    } catch (const Error& e) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const std::string msg = e.what();
      EXPECT_EQ(e.kind(), ErrorKind::kTimeout) << msg;
      EXPECT_NE(msg.find("all_reduce"), std::string::npos) << msg;
      EXPECT_NE(msg.find("'tp[dp0 pp1]'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("timed out after 2."), std::string::npos) << msg;
      EXPECT_NE(msg.find("world ranks 0,1"), std::string::npos) << msg;
      EXPECT_GE(elapsed, 2.0);
      EXPECT_LT(elapsed, 10.0);
    }
    // The abandoned collective is still posted inside MPI, so the group refuses further ops.
    try {
      impatient->barrier();
      ADD_FAILURE() << "a group with an abandoned collective must refuse new ops";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kComm);
      EXPECT_NE(std::string(e.what()).find("unusable"), std::string::npos) << e.what();
    }
    g_world->barrier();  // 1: rank 1 may now join
    g_world->barrier();  // 2: rank 1 has joined; our abandoned requests complete while we poll here
  } else {
    g_world->barrier();
    impatient->all_reduce(t);  // late, but the others' contributions are still posted
    for (int i = 0; i < 4; ++i) EXPECT_EQ(t.data<float>()[i], static_cast<float>(n));
    g_world->barrier();
  }
  impatient.reset();  // drains the abandoned requests and frees the communicator on every rank
  g_world->barrier();
}

// A receive that never matches times out naming the peer, is withdrawn, and leaves the group usable.
TEST(MpiCommunicator, RecvTimeoutNamesPeer) {
  CommConfig config;
  config.timeout_s = 1.0;
  auto impatient = MpiCommunicator::world(config, "pp[dp0 tp0]");
  if (impatient->rank() == 0) {
    Tensor t = Tensor::zeros({2}, DType::kF32);
    try {
      impatient->recv(t, 1, 99);
      ADD_FAILURE() << "recv with no sender must time out";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(e.kind(), ErrorKind::kTimeout) << msg;
      EXPECT_NE(msg.find("recv"), std::string::npos) << msg;
      EXPECT_NE(msg.find("peer 1 (world rank 1)"), std::string::npos) << msg;
      EXPECT_NE(msg.find("tag 99"), std::string::npos) << msg;
    }
  }
  g_world->barrier();    // the others wait here while rank 0 times out
  impatient->barrier();  // the withdrawn receive left the group usable
}

}  // namespace
}  // namespace strata::comm

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  strata::comm::CommConfig config;
  config.timeout_s = 60;  // a broken test fails in a minute instead of hanging mpirun
  auto world = strata::comm::make_world_communicator(config);
  strata::comm::g_world = world.get();
  int failed = RUN_ALL_TESTS();
  // Every rank exits with the job's verdict, so mpirun reports a failure on any rank.
  strata::Tensor verdict = strata::Tensor::empty({1}, strata::DType::kI32);
  verdict.data<int32_t>()[0] = failed;
  world->all_reduce(verdict, strata::comm::ReduceOp::kMax);
  world.reset();  // MPI_Finalize
  return verdict.data<int32_t>()[0];
}
