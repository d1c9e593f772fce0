// tests/comm/bootstrap_test.cpp: launch detection from each launcher's environment (and its errors),
// the lone-process world without mpirun, and a RANK/WORLD_SIZE launch over TCP end to end.
#include "comm/bootstrap.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <thread>

#include "tests/comm/comm_checks.h"
#include "tests/comm/tcp_test_ranks.h"
#include "test_util.h"

namespace strata::comm {
namespace {

RankInfo detect(const std::map<std::string, std::string>& env) {
  return detect_launch([&](const char* name) -> std::optional<std::string> {
    auto it = env.find(name);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  });
}

void expect_config_error(const std::map<std::string, std::string>& env, const std::string& needle) {
  try {
    detect(env);
    ADD_FAILURE() << "expected a config error mentioning " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConfig) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(DetectLaunch, NoLauncherIsOneProcess) {
  const RankInfo info = detect({});
  EXPECT_EQ(info.launcher, Launcher::kNone);
  EXPECT_EQ(info.world_rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.local_rank, 0);
  EXPECT_FALSE(info.hostname.empty());
}

TEST(DetectLaunch, OpenMpiWinsInsideASlurmAllocation) {
  const RankInfo info = detect({{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "8"},
                                {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                                {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"PMIX_RANK", "5"}});
  EXPECT_EQ(info.launcher, Launcher::kOpenMpi);
  EXPECT_EQ(info.world_rank, 5);
  EXPECT_EQ(info.world_size, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_size, 4);
}

TEST(DetectLaunch, SlurmStep) {
  std::map<std::string, std::string> env{{"SLURM_PROCID", "6"}, {"SLURM_NTASKS", "7"}, {"SLURM_LOCALID", "0"},
                                         {"SLURM_STEP_ID", "0"}, {"SLURM_NODEID", "3"},
                                         {"SLURM_STEP_TASKS_PER_NODE", "2(x3),1"}};
  RankInfo info = detect(env);
  EXPECT_EQ(info.launcher, Launcher::kSlurm);
  EXPECT_EQ(info.world_rank, 6);
  EXPECT_EQ(info.world_size, 7);
  EXPECT_EQ(info.local_rank, 0);
  EXPECT_EQ(info.local_size, 1);  // the fourth node holds the one leftover task
  env["SLURM_NODEID"] = "1";
  EXPECT_EQ(detect(env).local_size, 2);
}

TEST(DetectLaunch, SlurmBatchScriptIsNotAStep) {
  // sbatch sets SLURM_PROCID=0 for the script itself; without SLURM_STEP_ID we are not a task.
  EXPECT_EQ(detect({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}}).launcher, Launcher::kNone);
}

TEST(DetectLaunch, BarePmix) {
  const RankInfo info = detect({{"PMIX_RANK", "3"}});
  EXPECT_EQ(info.launcher, Launcher::kPmix);
  EXPECT_EQ(info.world_rank, 3);
  EXPECT_EQ(info.world_size, -1);  // PMIx does not export the size; the communicator knows it
}

TEST(DetectLaunch, TorchrunStyleEnv) {
  const RankInfo info = detect({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                                {"MASTER_ADDR", "node01"}, {"MASTER_PORT", "29500"}, {"STRATA_STORE_SECRET", "job7"}});
  EXPECT_EQ(info.launcher, Launcher::kEnv);
  EXPECT_EQ(info.store_secret, "job7");
  EXPECT_EQ(info.world_rank, 1);
  EXPECT_EQ(info.world_size, 2);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.master_addr, "node01");
  EXPECT_EQ(info.master_port, 29500);
}

TEST(DetectLaunch, BadEnvironmentsSayWhatToFix) {
  expect_config_error({{"RANK", "1"}, {"WORLD_SIZE", "2"}}, "MASTER_ADDR and MASTER_PORT");
  expect_config_error({{"RANK", "1"}}, "set both RANK and WORLD_SIZE");
  expect_config_error({{"RANK", "x"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}, "RANK='x'");
  expect_config_error({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"},
                       {"STRATA_STORE_SECRET", "s"}},
                      "rank 2 is outside a world of 2");
  // Without the job's secret the store would admit anyone who reaches MASTER_PORT.
  expect_config_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}},
                      "STRATA_STORE_SECRET");
  expect_config_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"},
                       {"STRATA_STORE_SECRET_FILE", "/nonexistent/secret"}},
                      "cannot read STRATA_STORE_SECRET_FILE=/nonexistent/secret");
  expect_config_error({{"OMPI_COMM_WORLD_RANK", "-1"}}, "OMPI_COMM_WORLD_RANK='-1'");
  expect_config_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}},
                      "is not a TCP port");
}

// This binary runs without mpirun: the world is the group of one, and every op still works.
TEST(WorldCommunicator, LoneProcessWithoutMpirun) {
  const RankInfo info = detect_launch();
  ASSERT_EQ(info.launcher, Launcher::kNone) << "run this test outside mpirun/srun/torchrun";
  auto world = make_world_communicator(CommConfig{});
  EXPECT_EQ(world->size(), 1);
  EXPECT_EQ(world->rank(), 0);
  EXPECT_EQ(world->name(), "world");
  Tensor t = Tensor::empty({3}, DType::kBF16);
  for (int i = 0; i < 3; ++i) t.data<uint16_t>()[i] = f32_to_bf16(1.5f * i);
  world->all_reduce(t);
  EXPECT_EQ(bf16_to_f32(t.data<uint16_t>()[2]), 3.0f);
  Tensor out = Tensor::zeros({3}, DType::kBF16);
  world->all_gather(t, out);
  EXPECT_EQ(out.data<uint16_t>()[2], t.data<uint16_t>()[2]);
  Tensor msg = Tensor::empty({2}, DType::kI32), got = Tensor::zeros({2}, DType::kI32);
  msg.data<int32_t>()[1] = 9;
  world->send(msg, 0, 3);
  world->recv(got, 0, 3);
  EXPECT_EQ(got.data<int32_t>()[1], 9);
  EXPECT_THROW(world->recv(got, 0, 3), Error);  // nothing pending: an error, not a hang
  world->barrier();
  auto sub = world->split(0, 0, "tp[dp0 pp0]");
  ASSERT_TRUE(sub);
  EXPECT_EQ(sub->name(), "tp[dp0 pp0]");
  EXPECT_EQ(world->split(-1, 0, "none"), nullptr);
  testing::check_bad_arguments(*world);
}

TEST(WorldCommunicator, SelfRejectsAMultiRankLaunch) {
  RankInfo info;
  info.launcher = Launcher::kEnv;
  info.world_size = 2;
  CommConfig config;
  config.backend = Backend::kSelf;
  EXPECT_THROW(make_world_communicator(config, info), Error);
}

// RANK/WORLD_SIZE/MASTER_* (what torchrun or a k8s job sets) picks the TCP backend on its own.
TEST(WorldCommunicator, EnvLaunchUsesTcp) {
  const uint16_t port = testing::free_port();
  const std::string secret_file = test::temp_dir("bootstrap") + "/store-secret";
  std::ofstream(secret_file) << "3f9c0a17e2b4\n";
  const int n = 3;
  std::vector<std::thread> ranks;
  std::vector<int32_t> sums(n, -1);
  for (int r = 0; r < n; ++r) {
    ranks.emplace_back([&, r] {
      const RankInfo info = detect({{"RANK", std::to_string(r)}, {"WORLD_SIZE", std::to_string(n)},
                                    {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", std::to_string(port)},
                                    {"STRATA_STORE_SECRET_FILE", secret_file}});
      CommConfig config;
      config.timeout_s = 30;
      auto world = make_world_communicator(config, info);
      Tensor t = Tensor::empty({1}, DType::kI32);
      t.data<int32_t>()[0] = world->rank() + 1;
      world->all_reduce(t);
      sums[static_cast<size_t>(r)] = t.data<int32_t>()[0];
      world->barrier();
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < n; ++r) EXPECT_EQ(sums[static_cast<size_t>(r)], 6);
}

}  // namespace
}  // namespace strata::comm
