// comm/mpi/check_mpi.h: CHECK_MPI(call) turns an MPI error code into strata::Error(kComm) carrying
// the call text, file:line and MPI_Error_string. Private to comm/mpi/ (it includes mpi.h).
#pragma once
#include <mpi.h>

#include <string>

namespace strata::comm::detail {
std::string mpi_error_string(int code);
[[noreturn]] void throw_mpi_error(const char* call, const char* file, int line, int code, const std::string& context);
}  // namespace strata::comm::detail

#define CHECK_MPI(call)                                                                \
  do {                                                                                 \
    const int status_ = (call);                                                        \
    if (status_ != MPI_SUCCESS)                                                        \
      ::strata::comm::detail::throw_mpi_error(#call, __FILE__, __LINE__, status_, ""); \
  } while (0)

// Same, with what we were doing ("all_reduce on 'tp[dp0 pp0]' (rank 1 of 2)") in the message.
#define CHECK_MPI_CTX(call, context)                                                        \
  do {                                                                                      \
    const int status_ = (call);                                                             \
    if (status_ != MPI_SUCCESS)                                                             \
      ::strata::comm::detail::throw_mpi_error(#call, __FILE__, __LINE__, status_, (context)); \
  } while (0)
