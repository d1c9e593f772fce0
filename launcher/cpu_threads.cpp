// launcher/cpu_threads.cpp: the default CPU thread count from the affinity mask and the load.
#include "launcher/cpu_threads.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "runtime/log.h"

namespace strata::launcher {

CpuShare cpu_share(int cores, double load, int ranks_on_host, int online) {
  CpuShare s;
  s.cores = std::max(1, cores);
  online = std::max(online, s.cores);
  ranks_on_host = std::max(1, ranks_on_host);
  s.bound = s.cores < online;
  // Load counts runnable threads host-wide; a bound rank sees its mask's part of it. A fraction of a
  // core still busy rounds to nothing.
  const double load_here = s.bound ? load * s.cores / online : load;
  s.busy = std::clamp(std::floor(load_here + 0.5), 0.0, static_cast<double>(s.cores));
  const int free_cores = s.cores - static_cast<int>(s.busy);
  s.threads = s.bound ? std::max(1, free_cores) : std::max(1, std::max(free_cores, ranks_on_host) / ranks_on_host);
  return s;
}

CpuShare host_cpu_share(int ranks_on_host) {
  const int online = static_cast<int>(std::thread::hardware_concurrency());
  int cores = online;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  double load = 0;
  std::ifstream loadavg("/proc/loadavg");
  if (!(loadavg >> load)) load = 0;  // no /proc: assume the cores are free
  // The job's own ranks start together; what the load shows is mostly other work (a rank that
  // started a moment ago has hardly moved the 1-minute average).
  return cpu_share(cores, load, ranks_on_host, online);
}

int default_cpu_threads(int ranks_on_host) {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return 0;  // the user chose: OpenMP reads it
  const CpuShare s = host_cpu_share(ranks_on_host);
  const int idle_share = s.bound ? s.cores : std::max(1, s.cores / std::max(1, ranks_on_host));
  if (s.threads < idle_share)  // the load lowered it: say so, it explains a slower run
    LOG_INFO("CPU threads: ", s.threads, " per rank, as about ", s.busy, " of the ", s.cores,
             s.bound ? " cores bound to this rank" : " cores of this host", " are busy with other work (load average)",
             s.bound || ranks_on_host <= 1 ? "" : cat(", shared by ", ranks_on_host, " ranks"),
             "; --threads N sets it");
  return s.threads;
}

}  // namespace strata::launcher
