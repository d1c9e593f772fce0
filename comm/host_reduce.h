// comm/host_reduce.h: element-wise reductions on host buffers for transports that reduce in software
// (TCP) or need f16/bf16 widened first (MPI has no half types). Halves accumulate in f32 and are
// rounded once at the end, so every backend gives the same bits.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/communicator.h"

namespace strata::comm {

// The dtype reductions run in: f32 for f32/f16/bf16, i32 for i32.
DType accum_dtype(DType dtype);
// Copies n elements of `src` (dtype) into an accumulator buffer of accum_dtype(dtype).
std::vector<uint8_t> widen(const void* src, int64_t n, DType dtype);
// Writes n accumulator elements back as `dtype` (rounding halves to nearest even).
void narrow(const void* acc, int64_t n, DType dtype, void* dst);
// acc[i] = op(acc[i], in[i]) with both buffers in accum dtype `acc_dtype` (f32 or i32).
void reduce_into(void* acc, const void* in, int64_t n, DType acc_dtype, ReduceOp op);

}  // namespace strata::comm
