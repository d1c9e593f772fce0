// comm/bootstrap.cpp: launch detection from the environment and the choice of world transport.
#include "comm/bootstrap.h"

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_runtime.h"
#include "comm/tcp/tcp_communicator.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::comm {

const char* launcher_name(Launcher launcher) {
  switch (launcher) {
    case Launcher::kNone: return "none";
    case Launcher::kOpenMpi: return "openmpi";
    case Launcher::kSlurm: return "slurm";
    case Launcher::kPmix: return "pmix";
    case Launcher::kEnv: return "env";
  }
  return "?";
}

namespace {

using Getenv = std::function<std::optional<std::string>(const char*)>;

int parse_int(const Getenv& getenv, const char* var, int fallback) {
  const auto value = getenv(var);
  if (!value) return fallback;
  int out = 0;
  const char* end = value->data() + value->size();
  const auto [ptr, ec] = std::from_chars(value->data(), end, out);
  STRATA_CHECK_KIND(ErrorKind::kConfig, ec == std::errc() && ptr == end && out >= 0, "environment variable ", var,
                    "='", *value, "' is not a non-negative integer");
  return out;
}

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown-host";
  return buf;
}

// Slurm writes tasks per node as "2(x3),1": the count for node `node` of the step.
int slurm_tasks_on_node(const std::string& spec, int node) {
  int seen = 0;
  size_t pos = 0;
  while (pos < spec.size()) {
    const size_t comma = spec.find(',', pos);
    const std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const int count = std::atoi(item.c_str());
    int repeat = 1;
    const size_t x = item.find("(x");
    if (x != std::string::npos) repeat = std::atoi(item.c_str() + x + 2);
    if (node < seen + repeat) return count;
    seen += repeat;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return -1;
}

// STRATA_STORE_SECRET, else the first line of the file STRATA_STORE_SECRET_FILE names; "" when neither.
std::string store_secret(const Getenv& getenv) {
  if (const auto secret = getenv("STRATA_STORE_SECRET"); secret && !secret->empty()) return *secret;
  const auto file = getenv("STRATA_STORE_SECRET_FILE");
  if (!file || file->empty()) return "";
  std::ifstream in(*file);
  STRATA_CHECK_KIND(ErrorKind::kConfig, in.good(), "cannot read STRATA_STORE_SECRET_FILE=", *file);
  std::string secret;
  std::getline(in, secret);
  while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
  STRATA_CHECK_KIND(ErrorKind::kConfig, !secret.empty(), "STRATA_STORE_SECRET_FILE=", *file, " is empty");
  return secret;
}

}  // namespace

RankInfo detect_launch(const Getenv& getenv) {
  RankInfo info;
  info.hostname = host_name();
  if (getenv("OMPI_COMM_WORLD_RANK")) {
    info.launcher = Launcher::kOpenMpi;
    info.world_rank = parse_int(getenv, "OMPI_COMM_WORLD_RANK", 0);
    info.world_size = parse_int(getenv, "OMPI_COMM_WORLD_SIZE", -1);
    info.local_rank = parse_int(getenv, "OMPI_COMM_WORLD_LOCAL_RANK", -1);
    info.local_size = parse_int(getenv, "OMPI_COMM_WORLD_LOCAL_SIZE", -1);
  } else if (getenv("SLURM_PROCID") && getenv("SLURM_STEP_ID")) {
    // Without SLURM_STEP_ID we are the batch script itself (SLURM_PROCID=0), not a task of srun.
    info.launcher = Launcher::kSlurm;
    info.world_rank = parse_int(getenv, "SLURM_PROCID", 0);
    info.world_size = parse_int(getenv, "SLURM_NTASKS", parse_int(getenv, "SLURM_NPROCS", -1));
    info.local_rank = parse_int(getenv, "SLURM_LOCALID", -1);
    const auto per_node = getenv("SLURM_STEP_TASKS_PER_NODE") ? getenv("SLURM_STEP_TASKS_PER_NODE")
                                                               : getenv("SLURM_TASKS_PER_NODE");
    info.local_size = per_node ? slurm_tasks_on_node(*per_node, parse_int(getenv, "SLURM_NODEID", 0)) : -1;
  } else if (getenv("PMIX_RANK")) {
    info.launcher = Launcher::kPmix;
    info.world_rank = parse_int(getenv, "PMIX_RANK", 0);
    info.world_size = -1;
    info.local_rank = -1;
    info.local_size = -1;
  } else if (getenv("RANK") || getenv("WORLD_SIZE")) {
    info.launcher = Launcher::kEnv;
    STRATA_CHECK_KIND(ErrorKind::kConfig, getenv("RANK") && getenv("WORLD_SIZE"),
                      "set both RANK and WORLD_SIZE (found only one) to launch without mpirun");
    info.world_rank = parse_int(getenv, "RANK", 0);
    info.world_size = parse_int(getenv, "WORLD_SIZE", 1);
    info.local_rank = parse_int(getenv, "LOCAL_RANK", -1);
    info.local_size = parse_int(getenv, "LOCAL_WORLD_SIZE", -1);
    const auto addr = getenv("MASTER_ADDR");
    info.master_addr = addr ? *addr : "";
    info.master_port = parse_int(getenv, "MASTER_PORT", 0);
    STRATA_CHECK_KIND(ErrorKind::kConfig, info.world_size == 1 || (!info.master_addr.empty() && info.master_port > 0),
                      "RANK/WORLD_SIZE launch of ", info.world_size,
                      " ranks needs MASTER_ADDR and MASTER_PORT (where rank 0 hosts the rendezvous store), e.g. "
                      "MASTER_ADDR=node01 MASTER_PORT=29500");
    STRATA_CHECK_KIND(ErrorKind::kConfig, info.master_port < 65536, "MASTER_PORT=", info.master_port,
                      " is not a TCP port");
    info.store_secret = store_secret(getenv);
    STRATA_CHECK_KIND(ErrorKind::kConfig, info.world_size == 1 || !info.store_secret.empty(),
                      "RANK/WORLD_SIZE launch of ", info.world_size, " ranks needs the job's secret for the TCP store, "
                      "the same on every rank: export STRATA_STORE_SECRET=$(openssl rand -hex 16) before starting the "
                      "ranks, or set STRATA_STORE_SECRET_FILE to a file only the job can read");
  }
  STRATA_CHECK_KIND(ErrorKind::kConfig, info.world_size != 0, "world size 0 from the ", launcher_name(info.launcher),
                    " environment");
  STRATA_CHECK_KIND(ErrorKind::kConfig, info.world_size < 0 || info.world_rank < info.world_size, "rank ",
                    info.world_rank, " is outside a world of ", info.world_size, " (", launcher_name(info.launcher),
                    " environment)");
  return info;
}

RankInfo detect_launch() {
  return detect_launch([](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
  });
}

std::unique_ptr<Communicator> make_world_communicator(const CommConfig& config) {
  return make_world_communicator(config, detect_launch());
}

std::unique_ptr<Communicator> make_world_communicator(const CommConfig& config, const RankInfo& info) {
  Backend backend = config.backend;
  if (backend == Backend::kAuto) {
    switch (info.launcher) {
      case Launcher::kOpenMpi:
      case Launcher::kSlurm:
      case Launcher::kPmix: backend = Backend::kMpi; break;
      case Launcher::kEnv: backend = info.world_size == 1 ? Backend::kSelf : Backend::kTcp; break;
      case Launcher::kNone: backend = Backend::kSelf; break;
    }
  }
  switch (backend) {
    case Backend::kMpi: return MpiCommunicator::world(config, "world");
    case Backend::kTcp: {
      STRATA_CHECK_KIND(ErrorKind::kConfig, !info.master_addr.empty() && info.master_port > 0,
                        "the TCP backend needs MASTER_ADDR and MASTER_PORT (rank 0 hosts the rendezvous store)");
      TcpOptions options{info.master_addr, static_cast<uint16_t>(info.master_port), info.world_rank,
                         info.world_size, info.store_secret};
      return make_tcp_world(config, options);
    }
    case Backend::kSelf:
      STRATA_CHECK_KIND(ErrorKind::kConfig, info.world_size <= 1, "the self communicator is a group of one, but the ",
                        launcher_name(info.launcher), " launch has ", info.world_size, " ranks");
      return make_self_communicator(config, "world");
    case Backend::kAuto: break;
  }
  STRATA_THROW(ErrorKind::kInternal, "no backend chosen");
}

void abort_world(int code) {
  if (mpi_active()) mpi_abort_world(code);
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

}  // namespace strata::comm
