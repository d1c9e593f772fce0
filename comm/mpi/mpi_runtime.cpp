// comm/mpi/mpi_runtime.cpp: MPI init/finalize and MPI_Abort, plus the CHECK_MPI error formatter.
#include "comm/mpi/mpi_runtime.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "comm/mpi/check_mpi.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::comm {

namespace detail {
std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return cat("MPI error code ", code);
  return std::string(text, static_cast<size_t>(len));
}

void throw_mpi_error(const char* call, const char* file, int line, int code, const std::string& context) {
  std::string msg = cat("MPI error in ", call, ": ", mpi_error_string(code));
  if (!context.empty()) msg = context + ": " + msg;
  msg += ". A peer process may have died; see the other ranks' logs and mpirun's report";
  ::strata::detail::throw_error(ErrorKind::kComm, nullptr, file, line, msg);
}
}  // namespace detail

namespace {
// MPI is process-wide by nature: one runtime, shared by every MPI communicator while any is alive.
std::mutex g_mutex;
std::weak_ptr<MpiRuntime> g_runtime;
}  // namespace

std::shared_ptr<MpiRuntime> MpiRuntime::acquire(const CommConfig& config) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (auto live = g_runtime.lock()) return live;
  int finalized = 0;
  CHECK_MPI(MPI_Finalized(&finalized));
  STRATA_CHECK_KIND(ErrorKind::kComm, !finalized,
                    "MPI was already finalised in this process and cannot start again; keep the world "
                    "communicator alive for the whole run");
  std::shared_ptr<MpiRuntime> rt(new MpiRuntime());
  int initialized = 0;
  CHECK_MPI(MPI_Initialized(&initialized));
  if (initialized) {
    CHECK_MPI(MPI_Query_thread(&rt->thread_level_));
  } else {
    const int wanted = config.mpi_thread_multiple ? MPI_THREAD_MULTIPLE : MPI_THREAD_FUNNELED;
    CHECK_MPI(MPI_Init_thread(nullptr, nullptr, wanted, &rt->thread_level_));
    rt->owns_ = true;
    if (rt->thread_level_ < wanted)
      LOG_WARN("MPI granted thread level ", rt->thread_level_, " (asked ", wanted,
               "); only the thread that made the world communicator may call comm");
  }
  // A dead peer should surface as an error code we can report and act on, not an abort inside MPI.
  CHECK_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  g_runtime = rt;
  return rt;
}

MpiRuntime::~MpiRuntime() {
  if (!owns_) return;
  const int rc = MPI_Finalize();
  if (rc != MPI_SUCCESS) LOG_ERROR("MPI_Finalize failed: ", detail::mpi_error_string(rc));
}

bool mpi_active() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

void mpi_abort_world(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort should not return; make sure we never do either
}

}  // namespace strata::comm
