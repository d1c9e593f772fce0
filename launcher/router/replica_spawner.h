// launcher/router/replica_spawner.h: `strata router --spawn N`: runs N `strata serve` replicas on this
// machine and restarts any that exits (backing off when one keeps dying), registering each at the port
// it reports. On a cluster the scheduler restarts replicas instead (examples/k8s, examples/slurm).
#pragma once
#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "launcher/router/replica_set.h"

namespace strata::launcher::router {

class ReplicaSpawner {
 public:
  // `command`: the shell command of one replica up to its flags, e.g. "/path/strata serve --model M"
  // or "mpirun -np 2 /path/strata serve --plan P"; " --port 0" is appended (each replica picks a free
  // port and prints it).
  ReplicaSpawner(ReplicaSet& replicas, std::string command, int count);
  ~ReplicaSpawner();  // stop()
  void start();
  // SIGTERM to every replica (they drain), SIGKILL after `grace_s`; no more restarts.
  void stop(double grace_s = 10.0);
  int64_t restarts() const { return restarts_.load(); }

 private:
  struct Child;
  void launch(Child& child);
  void monitor();

  ReplicaSet& replicas_;
  std::string command_;
  std::vector<std::unique_ptr<Child>> children_;
  std::mutex mu_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> restarts_{0};
  std::thread monitor_;
};

}  // namespace strata::launcher::router
