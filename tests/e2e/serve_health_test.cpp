// tests/e2e/serve_health_test.cpp: /health follows the engine's progress. Under `mpirun -np 2 strata serve`
// (tensor 2), a stopped rank (SIGSTOP: hung, as a wedged GPU or a paused VM) blocks every step in a
// collective; with a request waiting, /health turns 503 "stalled" after --stall-timeout instead of
// answering "ready" until the communication timeout, and turns 200 again once the rank resumes.
#include <gtest/gtest.h>

#include <dirent.h>

#include <fstream>
#include <future>
#include <map>

#include "e2e/serve_client.h"
#include "e2e/serve_helpers.h"

namespace strata {
namespace {
using test::HttpResponse;

std::string tiny_model() { return test::tiny_model("serve_health"); }

// Processes below `root` (children, grandchildren, ...) whose command name is `name`.
std::vector<pid_t> descendants_named(pid_t root, const std::string& name) {
  std::map<pid_t, pid_t> parent;
  std::map<pid_t, std::string> comm;
  DIR* proc = opendir("/proc");
  for (dirent* e = proc != nullptr ? readdir(proc) : nullptr; e != nullptr; e = readdir(proc)) {
    const pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    const auto open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    comm[pid] = line.substr(open + 1, close - open - 1);
    parent[pid] = std::atoi(line.c_str() + close + 4);  // ") S PPID"
  }
  if (proc != nullptr) closedir(proc);
  std::vector<pid_t> out;
  for (const auto& [pid, ppid] : parent) {
    for (pid_t p = ppid; p > 1 && parent.count(p) > 0; p = parent[p])
      if (p == root) {
        if (comm[pid] == name) out.push_back(pid);
        break;
      }
  }
  return out;
}

int health_status(int port, std::string* body = nullptr) {
  const HttpResponse r = test::http(port, "GET", "/health");
  if (body != nullptr) *body = r.body;
  return r.status;
}

TEST(ServeHealth, AHungRankTurnsHealthTo503WhileWorkWaits) {
  const std::string plan = test::temp_dir("serve_health") + "/tp2.yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  tensor: 2\n", tiny_model().c_str());
  std::fclose(f);
  test::ServerProcess server("tp2-stall", test::mpirun(2), "serve --plan " + plan + " --stall-timeout 2");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  ASSERT_GT(server.server_pid(), 0) << server.log();
  std::vector<pid_t> ranks = descendants_named(server.pid(), "strata");
  std::erase(ranks, server.server_pid());
  ASSERT_EQ(ranks.size(), 1u) << "expected one other rank below pid " << server.pid();
  const pid_t other = ranks[0];
  // Idle, the engine takes no steps worth noting: healthy.
  EXPECT_EQ(health_status(server.port()), 200);

  kill(other, SIGSTOP);
  auto waiting = std::async(std::launch::async, [&] {
    return test::http(server.port(), "POST", "/v1/completions", test::completion_body({1, 5, 9}, 8, false));
  });
  std::string body;
  int status = 200;
  for (int i = 0; i < 600 && status == 200; ++i) {  // well past the 2 s stall timeout
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    status = health_status(server.port(), &body);
  }
  EXPECT_EQ(status, 503) << body;
  EXPECT_NE(body.find("stalled"), std::string::npos) << body;

  kill(other, SIGCONT);
  const HttpResponse r = waiting.get();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(test::completion_text(r, false), test::expected_text(tiny_model(), {1, 5, 9}, 8));
  EXPECT_EQ(health_status(server.port()), 200);
}

}  // namespace
}  // namespace strata
