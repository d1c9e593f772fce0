// comm/bootstrap.h: how this process was launched (mpirun, srun, RANK/WORLD_SIZE env, or alone) and
// the world communicator that follows from it. The launcher calls these once, early in main.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "comm/communicator.h"

namespace strata::comm {

enum class Launcher { kNone, kOpenMpi, kSlurm, kPmix, kEnv };
const char* launcher_name(Launcher launcher);

struct RankInfo {
  int world_rank = 0;
  int world_size = 1;  // -1: not in the environment (bare PMIx); the world communicator's size() knows
  int local_rank = 0;  // rank among the processes on this host (picks the GPU); -1 if unknown
  int local_size = 1;  // -1 if unknown
  std::string hostname;
  Launcher launcher = Launcher::kNone;
  std::string master_addr;  // kEnv only: where rank 0 hosts the TCP store
  int master_port = 0;
  std::string store_secret;  // kEnv only: STRATA_STORE_SECRET, or the contents of STRATA_STORE_SECRET_FILE
};

// Reads the launch from environment variables, first match wins:
//   Open MPI  OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE (mpirun, also inside a Slurm allocation)
//   Slurm     SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID inside a job step (SLURM_STEP_ID set)
//   PMIx      PMIX_RANK (other PMIx launchers)
//   env       RANK/WORLD_SIZE[/LOCAL_RANK/LOCAL_WORLD_SIZE], MASTER_ADDR, MASTER_PORT (torchrun style)
//             and the job's store secret: STRATA_STORE_SECRET or STRATA_STORE_SECRET_FILE (required
//             with more than one rank: the store admits only clients that know it)
//   none      a single process
// Throws Error(kConfig) on malformed values (non-numbers, rank outside the world, env without MASTER_*).
RankInfo detect_launch();
// Same, reading variables through `getenv` (tests).
RankInfo detect_launch(const std::function<std::optional<std::string>(const char*)>& getenv);

// The communicator over every rank of the job, named "world". Backend::kAuto picks MPI for
// mpirun/srun/PMIx launches (MPI_Init here; MPI_Finalize when this and every communicator split from
// it are destroyed), TCP for env launches, and the group of one for a lone process (no MPI singleton:
// it needs an orted that containers often lack).
std::unique_ptr<Communicator> make_world_communicator(const CommConfig& config);
std::unique_ptr<Communicator> make_world_communicator(const CommConfig& config, const RankInfo& info);

// Ends the whole job with `code`: MPI_Abort when MPI is up (mpirun then kills every rank), otherwise
// this process exits and TCP peers see the closed sockets and fail fast. For main's last catch.
[[noreturn]] void abort_world(int code);

}  // namespace strata::comm
