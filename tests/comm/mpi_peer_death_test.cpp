// tests/comm/mpi_peer_death_test.cpp: a rank that dies mid-run must end the whole mpirun job with a
// non-zero status, within the comm timeout, and the survivor's error must name the dead peer. The
// test binary re-launches itself under mpirun (STRATA_PEER_DEATH_CHILD selects the child program).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "comm/bootstrap.h"
#include "runtime/error.h"

namespace strata::comm {
namespace {

constexpr double kChildTimeout = 3.0;

// The program under mpirun: rank 1 exits abruptly after the first barrier; rank 0 then waits for it
// in `op` and, on the error, ends the job the way main does (abort_world).
int child_main(const std::string& op) {
  CommConfig config;
  config.timeout_s = kChildTimeout;
  auto world = make_world_communicator(config);
  world->barrier();
  if (world->rank() == 1) _exit(1);
  try {
    Tensor t = Tensor::zeros({4}, DType::kF32);
    if (op == "recv") {
      world->recv(t, 1, 5);
    } else {
      world->all_reduce(t);
    }
    std::fprintf(stderr, "rank %d: %s unexpectedly completed\n", world->rank(), op.c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "rank %d caught %s: %s\n", world->rank(), error_kind_name(e.kind()), e.what());
    abort_world(3);
  }
  return 0;
}

struct Outcome {
  int exit_code = -1;  // -1: killed by our wall-clock guard
  double seconds = 0;
  std::string output;
};

// Runs argv with stdout+stderr captured, killing its process group after `limit_s`.
Outcome run_with_deadline(const std::vector<std::string>& argv, const std::vector<std::string>& env, double limit_s) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    for (const auto& kv : env) putenv(const_cast<char*>(kv.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  Outcome out;
  bool killed = false;
  for (;;) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed > limit_s && !killed) {
      kill(-pid, SIGKILL);
      killed = true;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char buf[4096];
      const ssize_t n = read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      out.output.append(buf, static_cast<size_t>(n));
    }
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out.exit_code = killed ? -1 : (WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  return out;
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// Open MPI's default: mpirun notices the non-zero exit and kills the job at once.
TEST(MpiPeerDeath, MpirunEndsTheJobNonZero) {
  const Outcome out = run_with_deadline({"mpirun", "--oversubscribe", "-np", "2", self_exe()},
                                        {"STRATA_PEER_DEATH_CHILD=all_reduce"}, 60);
  EXPECT_NE(out.exit_code, -1) << "mpirun hung; output:\n" << out.output;
  EXPECT_NE(out.exit_code, 0) << out.output;
  EXPECT_LT(out.seconds, 30) << out.output;
}

// With orte_abort_on_non_zero_status=0 mpirun waits for the survivor, so our own timeout must fire,
// name the dead peer, and abort_world must end the job non-zero.
TEST(MpiPeerDeath, SurvivorTimesOutNamingThePeer) {
  const Outcome out = run_with_deadline(
      {"mpirun", "--oversubscribe", "--mca", "orte_abort_on_non_zero_status", "0", "-np", "2", self_exe()},
      {"STRATA_PEER_DEATH_CHILD=recv"}, 60);
  EXPECT_NE(out.exit_code, -1) << "mpirun hung; output:\n" << out.output;
  EXPECT_NE(out.exit_code, 0) << out.output;
  EXPECT_GE(out.seconds, kChildTimeout) << out.output;
  EXPECT_LT(out.seconds, 30) << out.output;
  EXPECT_NE(out.output.find("rank 0 caught"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("peer 1 (world rank 1)"), std::string::npos) << out.output;
}

TEST(MpiPeerDeath, CollectiveSurvivorNamesTheGroup) {
  const Outcome out = run_with_deadline(
      {"mpirun", "--oversubscribe", "--mca", "orte_abort_on_non_zero_status", "0", "-np", "2", self_exe()},
      {"STRATA_PEER_DEATH_CHILD=all_reduce"}, 60);
  EXPECT_NE(out.exit_code, -1) << "mpirun hung; output:\n" << out.output;
  EXPECT_NE(out.exit_code, 0) << out.output;
  EXPECT_LT(out.seconds, 30) << out.output;
  EXPECT_NE(out.output.find("all_reduce"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("world ranks 0,1"), std::string::npos) << out.output;
}

}  // namespace
}  // namespace strata::comm

int main(int argc, char** argv) {
  if (const char* op = std::getenv("STRATA_PEER_DEATH_CHILD")) return strata::comm::child_main(op);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
