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

CpuShare cpu_share(int cores, double load, int ranks_on_host) {
  CpuShare s;
  s.cores = std::max(1, cores);
  ranks_on_host = std::max(1, ranks_on_host);
  // Load counts runnable threads; a fraction of a core still busy rounds to nothing.
  s.busy = std::clamp(std::floor(load + 0.5), 0.0, static_cast<double>(s.cores));
  const int free_cores = std::max(s.cores - static_cast<int>(s.busy), ranks_on_host);
  s.threads = std::max(1, free_cores / ranks_on_host);
  return s;
}

CpuShare host_cpu_share(int ranks_on_host) {
  int cores = static_cast<int>(std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  double load = 0;
  std::ifstream loadavg("/proc/loadavg");
  if (!(loadavg >> load)) load = 0;  // no /proc: assume the cores are free
  // The job's own ranks start together; what the load shows is mostly other work (a rank that
  // started a moment ago has hardly moved the 1-minute average).
  return cpu_share(cores, load, ranks_on_host);
}

int default_cpu_threads(int ranks_on_host) {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return 0;  // the user chose: OpenMP reads it
  const CpuShare s = host_cpu_share(ranks_on_host);
  if (s.busy > 0)
    LOG_INFO("CPU threads: ", s.threads, " per rank (", s.cores, " cores, about ", s.busy,
             " busy with other work by the load average, ", std::max(1, ranks_on_host),
             " rank(s) on this host); --threads N sets it");
  return s.threads;
}

}  // namespace strata::launcher
