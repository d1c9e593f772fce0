// comm/op_checks.cpp: argument checks shared by the MPI, TCP and self communicators.
#include "comm/op_checks.h"

#include "runtime/error.h"

namespace strata::comm {

const char* reduce_op_name(ReduceOp op) { return op == ReduceOp::kSum ? "sum" : "max"; }

std::string op_where(const char* op, const Communicator& comm) {
  return cat(op, " on '", comm.name(), "' (rank ", comm.rank(), " of ", comm.size(), ")");
}

void check_host_tensor(const Tensor& t, const char* op, const Communicator& comm, const char* backend) {
  STRATA_CHECK(t.device() == Device::kCpu, op_where(op, comm), ": the ", backend,
               " communicator moves host tensors; this one is on CUDA. Use the NCCL communicator for device "
               "tensors or copy to host first");
  STRATA_CHECK(t.raw() != nullptr || t.nbytes() == 0, op_where(op, comm), ": tensor ", shape_str(t.shape()),
               " has no storage");
}

void check_reducible(DType dtype, const char* op, const Communicator& comm) {
  STRATA_CHECK(dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16 || dtype == DType::kI32,
               op_where(op, comm), ": cannot reduce ", dtype_name(dtype),
               " tensors; reductions take f32, f16, bf16 or i32 (dequantize first)");
}

void check_all_gather(const Tensor& in, const Tensor& out, const Communicator& comm) {
  STRATA_CHECK(in.dtype() == out.dtype(), op_where("all_gather", comm), ": input is ", dtype_name(in.dtype()),
               " but output is ", dtype_name(out.dtype()));
  STRATA_CHECK(out.nbytes() == in.nbytes() * comm.size(), op_where("all_gather", comm), ": output ",
               shape_str(out.shape()), " must hold ", comm.size(), " x input ", shape_str(in.shape()));
}

void check_reduce_scatter(const Tensor& in, const Tensor& out, const Communicator& comm) {
  STRATA_CHECK(in.dtype() == out.dtype(), op_where("reduce_scatter", comm), ": input is ",
               dtype_name(in.dtype()), " but output is ", dtype_name(out.dtype()));
  STRATA_CHECK(in.numel() == out.numel() * comm.size(), op_where("reduce_scatter", comm), ": input ",
               shape_str(in.shape()), " must hold ", comm.size(), " x output ", shape_str(out.shape()));
}

void check_rank_arg(int r, const char* what, const char* op, const Communicator& comm) {
  STRATA_CHECK(r >= 0 && r < comm.size(), op_where(op, comm), ": ", what, " ", r, " is not a rank of a group of ",
               comm.size());
}

void check_tag(int tag, const char* op, const Communicator& comm) {
  STRATA_CHECK(tag >= 0 && tag <= kMaxTag, op_where(op, comm), ": tag ", tag, " is outside [0, ", kMaxTag, "]");
}

}  // namespace strata::comm
