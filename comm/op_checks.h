// comm/op_checks.h: argument checks every host-memory backend runs before starting an op, so the
// same mistake gets the same message whichever transport is underneath. Not for device tensors.
#pragma once
#include <string>

#include "comm/communicator.h"

namespace strata::comm {

// "all_reduce on 'tp[dp0 pp1]' (rank 0 of 2)": the prefix of every op error.
std::string op_where(const char* op, const Communicator& comm);

void check_host_tensor(const Tensor& t, const char* op, const Communicator& comm, const char* backend);
void check_reducible(DType dtype, const char* op, const Communicator& comm);
void check_all_gather(const Tensor& in, const Tensor& out, const Communicator& comm);
void check_reduce_scatter(const Tensor& in, const Tensor& out, const Communicator& comm);
void check_rank_arg(int r, const char* what, const char* op, const Communicator& comm);
void check_tag(int tag, const char* op, const Communicator& comm);

}  // namespace strata::comm
