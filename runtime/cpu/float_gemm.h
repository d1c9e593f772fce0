// runtime/cpu/float_gemm.h: the CPU matmul for f32, f16 and bf16 weights when several activation rows share
// each weight (prefill, speculative verification). Weight rows are taken 16 at a time (a panel, 16 output
// columns) and converted to f32 once per block of K into a k-major copy that stays in L1; activation rows are
// packed once per matmul into k-major tiles of 6. A (6 rows x 16 columns) register tile then does 12 FMAs per
// 2 panel loads and 6 broadcasts, where a dot product per output does one FMA per two loads. Decode (one
// row) keeps the fused dot products of cpu_kernels.h: it reads each weight once either way. AVX2/FMA/F16C
// builds only (float_gemm_available()); others keep the backend's row loops.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace strata::cpu {

constexpr int64_t kGemmTileRows = 6;     // activation rows per register tile
constexpr int64_t kGemmPanelCols = 16;   // weight rows (output columns) per panel
constexpr int64_t kGemmMinRows = 3;      // fewer rows go through the dot products (see cpu_backend.cpp)

// Floats that pack_activations writes for m rows of k: ceil(m / 6) tiles of [k][6].
int64_t packed_activation_floats(int64_t m, int64_t k);
// Packs tile `tile` (rows 6 tile .. 6 tile + 5, zero past m) of x[m, k] into its place in `packed`.
void pack_activation_tile(const float* x, int64_t m, int64_t k, int64_t tile, float* packed);

int64_t gemm_panels(int64_t n);  // panels of a weight with n rows
bool float_gemm_available();     // whether this build has the tiled kernel

// out[i, j] = x_i . w_j + bias[j] (bias may be null) for every activation row i < m and the output columns
// j of panels [p_begin, p_end), out being [m, n] row-major. `packed` is all the activation tiles; `w` is
// [n, k] row-major in f32, f16 or bf16.
void gemm_float_panels(const float* packed, int64_t m, int64_t k, const void* w, DType dtype, int64_t n,
                       int64_t p_begin, int64_t p_end, const float* bias, float* out);

}  // namespace strata::cpu
