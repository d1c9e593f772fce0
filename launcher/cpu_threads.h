// launcher/cpu_threads.h: how many CPU threads a rank computes with when --threads is not given: the
// cores this process may run on that are not already busy, shared by the ranks on the host. OpenMP's
// default (every core) collapses when other work holds some of them: a barrier waits on the thread
// whose core is taken.
#pragma once

namespace strata::launcher {

struct CpuShare {
  int threads = 1;     // threads for one rank
  int cores = 1;       // cores this process may run on (its affinity mask)
  double busy = 0;     // cores other work keeps busy (the 1-minute load average, rounded)
};

// The share from the numbers (pure, for tests): free cores = cores - busy (at least one per rank),
// split evenly over `ranks_on_host`.
CpuShare cpu_share(int cores, double load, int ranks_on_host);
// The share on this host now: sched_getaffinity and /proc/loadavg.
CpuShare host_cpu_share(int ranks_on_host);
// Threads for a CPU rank without --threads: 0 when OMP_NUM_THREADS is set (OpenMP follows it), else
// host_cpu_share's, with an INFO line when busy cores lowered it.
int default_cpu_threads(int ranks_on_host);

}  // namespace strata::launcher
