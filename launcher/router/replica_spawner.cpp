// launcher/router/replica_spawner.cpp: child processes in their own process groups (so mpirun and
// its ranks go together), their output relayed line by line to ours, restarts with backoff.
#include "launcher/router/replica_spawner.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher::router {

struct ReplicaSpawner::Child {
  int index = -1;  // in the ReplicaSet
  pid_t pid = -1;
  std::thread reader;
  std::chrono::steady_clock::time_point started;
  double backoff_s = 1.0;
  std::chrono::steady_clock::time_point next_start;
};

ReplicaSpawner::ReplicaSpawner(ReplicaSet& replicas, std::string command, int count)
    : replicas_(replicas), command_(std::move(command)) {
  STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, count >= 1, "--spawn needs at least 1 replica, got ", count);
  for (int i = 0; i < count; ++i) {
    auto child = std::make_unique<Child>();
    // Port 0 stands for "not started yet": health checks fail until the replica reports its port.
    child->index = replicas_.add(ReplicaSpec{"", Endpoint{"127.0.0.1", 0}});
    children_.push_back(std::move(child));
  }
}

ReplicaSpawner::~ReplicaSpawner() { stop(); }

void ReplicaSpawner::launch(Child& child) {
  int fds[2];
  STRATA_CHECK_KIND(ErrorKind::kIo, pipe(fds) == 0, "router: pipe() failed for a replica");
  const std::string cmd = "exec " + command_ + " --port 0";
  const pid_t pid = fork();
  STRATA_CHECK_KIND(ErrorKind::kIo, pid >= 0, "router: fork() failed for a replica");
  if (pid == 0) {
    setpgid(0, 0);
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  if (child.reader.joinable()) child.reader.join();
  child.pid = pid;
  child.started = std::chrono::steady_clock::now();
  LOG_INFO("router: started replica ", child.index, " (pid ", pid, "): ", cmd);
  // Relays the replica's output and registers the port from its "listening on http://HOST:PORT" line.
  child.reader = std::thread([this, fd = fds[0], index = child.index] {
    FILE* in = fdopen(fd, "r");
    char line[4096];
    while (in != nullptr && std::fgets(line, sizeof(line), in) != nullptr) {
      std::fprintf(stderr, "[replica %d] %s", index, line);
      const char* at = std::strstr(line, "listening on http://");
      if (at == nullptr) continue;
      std::string url(at + std::strlen("listening on "));
      url = url.substr(0, url.find_first_of(" \n"));
      try {
        replicas_.set_endpoint(index, parse_endpoint(url));
      } catch (const Error& e) {
        LOG_WARN("router: replica ", index, " reported an address the router cannot use: ", e.what());
      }
    }
    if (in != nullptr) std::fclose(in);
  });
}

void ReplicaSpawner::start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& child : children_) launch(*child);
  }
  monitor_ = std::thread([this] { monitor(); });
}

void ReplicaSpawner::monitor() {
  using clock = std::chrono::steady_clock;
  while (!stopping_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& child : children_) {
        if (stopping_) break;
        if (child->pid > 0) {
          int status = 0;
          if (waitpid(child->pid, &status, WNOHANG) != child->pid) continue;
          const double lived = std::chrono::duration<double>(clock::now() - child->started).count();
          LOG_WARN("router: replica ", child->index, " (pid ", child->pid, ") ",
                   WIFEXITED(status) ? cat("exited with ", WEXITSTATUS(status)) : cat("died of signal ", WTERMSIG(status)),
                   " after ", static_cast<int64_t>(lived), " s; restarting");
          kill(-child->pid, SIGKILL);  // anything left of its process group
          child->pid = -1;
          replicas_.set_endpoint(child->index, Endpoint{"127.0.0.1", 0});
          // One that dies soon after starting waits longer each time, up to 30 s.
          child->backoff_s = lived < 30 ? std::min(child->backoff_s * 2, 30.0) : 1.0;
          child->next_start = clock::now() + std::chrono::duration_cast<clock::duration>(
                                                 std::chrono::duration<double>(child->backoff_s));
        } else if (clock::now() >= child->next_start) {
          ++restarts_;
          launch(*child);
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void ReplicaSpawner::stop(double grace_s) {
  if (stopping_.exchange(true)) return;
  if (monitor_.joinable()) monitor_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& child : children_)
    if (child->pid > 0) kill(-child->pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                               std::chrono::duration<double>(grace_s));
  for (auto& child : children_) {
    while (child->pid > 0) {
      if (waitpid(child->pid, nullptr, WNOHANG) == child->pid) {
        child->pid = -1;
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        kill(-child->pid, SIGKILL);
        waitpid(child->pid, nullptr, 0);
        child->pid = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (child->reader.joinable()) child->reader.join();
  }
}

}  // namespace strata::launcher::router
