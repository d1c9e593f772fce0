// launcher/cpu_threads.h: how many CPU threads a rank computes with when --threads is not given: the
// cores this process may run on that are not already busy, shared by the ranks on the host. OpenMP's
// default (every core) collapses when other work holds some of them: a barrier waits on the thread
// whose core is taken.
#pragma once

namespace strata::launcher {

struct CpuShare {
  int threads = 1;     // threads for one rank
  int cores = 1;       // cores this process may run on (its affinity mask)
  double busy = 0;     // of those, the ones other work keeps busy (from the 1-minute load average)
  bool bound = false;  // the mask is narrower than the host: the launcher gave this rank its cores
};

// The share from the numbers (pure, for tests). `cores` is this process's affinity mask, `online` the
// host's CPUs (0: the same). A mask of the whole host: free cores = cores - load (at least one per
// rank), split evenly over `ranks_on_host`. A narrower mask (mpirun --bind-to core, srun, taskset) is
// this rank's own share already: its cores less its part of the load.
CpuShare cpu_share(int cores, double load, int ranks_on_host, int online = 0);
// The share on this host now: sched_getaffinity and /proc/loadavg.
CpuShare host_cpu_share(int ranks_on_host);
// Threads for a CPU rank without --threads: 0 when OMP_NUM_THREADS is set (OpenMP follows it), else
// host_cpu_share's, with an INFO line when busy cores lowered it.
int default_cpu_threads(int ranks_on_host);

}  // namespace strata::launcher
