// runtime/cuda/gemm.cpp: cublasGemmEx for the CUDA matmul. cuBLAS is column-major: the row-major product
// out[M, N] = x[M, K] w[N, K]^T is computed as out^T[N, M] = w[N, K] x^T[K, M], i.e. op(A) = A^T with
// A = w seen as a K x N column-major matrix, B = x seen as K x M.
#include "runtime/cuda/gemm.h"

#include "runtime/cuda/check_cuda.h"
#include "runtime/log.h"

namespace strata::cuda {
namespace {
cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    case DType::kF32: return CUDA_R_32F;
    default: STRATA_THROW(ErrorKind::kInternal, "no cuBLAS type for ", dtype_name(dt));
  }
}
}  // namespace

void cublas_gemm(cublasHandle_t handle, const void* x, const void* w, DType in_dt, void* out, DType out_dt, int64_t m,
                 int64_t n, int64_t k, int64_t ldo) {
  STRATA_CHECK(out_dt == in_dt || out_dt == DType::kF32, "internal: cuBLAS output ", dtype_name(out_dt), " for ",
               dtype_name(in_dt), " inputs");
  const float alpha = 1.f, beta = 0.f;
  // f32 weights keep full f32 arithmetic (no TF32): they are only used where precision was asked for.
  CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                            static_cast<int>(k), &alpha, w, cuda_type(in_dt), static_cast<int>(k), x, cuda_type(in_dt),
                            static_cast<int>(k), &beta, out, cuda_type(out_dt), static_cast<int>(ldo),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

bool cublas_gemm_grouped(cublasHandle_t handle, DType dt, int64_t n, int64_t k, const std::vector<int>& m,
                         const void* const* w_dev, const void* const* x_dev, void* const* out_dev) {
  STRATA_CHECK(dt == DType::kBF16 || dt == DType::kF16, "internal: grouped cuBLAS GEMM of ", dtype_name(dt));
  const size_t P = m.size();
  if (P == 0) return true;
  // Column-major, as cublas_gemm: problem p is out_p^T[n, m_p] = w_p^T (w_p seen as k x n) times x_p^T (k x m_p).
  const std::vector<cublasOperation_t> ta(P, CUBLAS_OP_T), tb(P, CUBLAS_OP_N);
  const std::vector<int> rows(P, static_cast<int>(n)), depth(P, static_cast<int>(k)), ldo(P, static_cast<int>(n));
  const std::vector<int> ones(P, 1);
  const std::vector<float> alpha(P, 1.f), beta(P, 0.f);
  const cublasStatus_t st = cublasGemmGroupedBatchedEx(
      handle, ta.data(), tb.data(), rows.data(), m.data(), depth.data(), alpha.data(), w_dev, cuda_type(dt),
      depth.data(), x_dev, cuda_type(dt), depth.data(), beta.data(), out_dev, cuda_type(dt), ldo.data(),
      static_cast<int>(P), ones.data(), CUBLAS_COMPUTE_32F);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) return false;
  CHECK_CUBLAS(st);
  return true;
}

LtGemm::LtGemm(cudaStream_t stream, void* workspace, size_t workspace_bytes)
    : stream_(stream), workspace_(workspace), workspace_bytes_(workspace_bytes) {
  CHECK_CUBLAS(cublasLtCreate(&handle_));
}

LtGemm::~LtGemm() {
  auto destroy = [](Plan& p) {
    if (p.a != nullptr) (void)cublasLtMatrixLayoutDestroy(p.a);
    if (p.b != nullptr) (void)cublasLtMatrixLayoutDestroy(p.b);
    if (p.c != nullptr) (void)cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc != nullptr) (void)cublasLtMatmulDescDestroy(p.desc);
  };
  for (auto& [key, p] : plans_) destroy(p);
  for (auto& [key, p] : fp8_plans_) destroy(p);
  if (handle_ != nullptr) (void)cublasLtDestroy(handle_);
}

cublasStatus_t LtGemm::choose_algo(Plan& p, uint32_t min_align) {
  cublasLtMatmulPreference_t pref = nullptr;
  CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  if (min_align > 0)
    for (const auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, attr, &min_align, sizeof min_align));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  (void)cublasLtMatmulPreferenceDestroy(pref);
  p.ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
  if (p.ok) p.algo = result.algo;
  return st;
}

bool LtGemm::run(const void* x, const void* w, DType in_dt, void* out, DType out_dt, int64_t m, int64_t n, int64_t k,
                 int64_t ldo) {
  const auto key = std::make_tuple(static_cast<int>(in_dt), static_cast<int>(out_dt), m, n, k, ldo);
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    Plan p;
    // Column-major view, as cublas_gemm: D[N, M] = op(W)[N, K] * X[K, M], W stored K x N (transposed).
    CHECK_CUBLAS(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof transa));
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof transb));
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p.a, cuda_type(in_dt), static_cast<uint64_t>(k), static_cast<uint64_t>(n), k));
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p.b, cuda_type(in_dt), static_cast<uint64_t>(k), static_cast<uint64_t>(m), k));
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p.c, cuda_type(out_dt), static_cast<uint64_t>(n), static_cast<uint64_t>(m), ldo));
    choose_algo(p, 0);
    it = plans_.emplace(key, p).first;
  }
  const Plan& p = it->second;
  if (!p.ok) return false;
  const float alpha = 1.f, beta = 0.f;
  CHECK_CUBLAS(cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c, &p.algo, workspace_,
                              workspace_bytes_, stream_));
  return true;
}

// The FP8 product. What it relies on (cuBLAS 12.9+ block scaling on Hopper; the cuBLAS page itself was not at
// hand, so the layout is the one two users of these modes feed cuBLASLt directly):
// - FP8 on Hopper takes only the "TN" form: A transposed, B not, both K-innermost with ld a multiple of 16
//   (bytes) - here A = w seen as k x n column-major, B = x as k x m, as in LtGemm::run.
// - VEC128_32F on both A and B (one f32 scale per 128 consecutive K elements of each row) is one of the
//   Hopper block-scaling pairs (1D x 1D; also 1D x 2D, never 2D x 2D: Transformer Engine's cublaslt_gemm.cu
//   checks exactly that). The weights' scales are per row and 128 columns, which BLK128x128 cannot hold in
//   general (per-channel checkpoints), so both operands take VEC128.
// - The scale table of a VEC128 operand with `rows` rows (its non-K dimension) is f32 [k / 128][rows] with
//   rows innermost: PyTorch's _scaled_mm (is_blockwise_1x128_scaling) wants the [rows, k/128] scale tensor
//   with strides (1, rows), and Transformer Engine's GEMM-ready 1D scales are [k/128][round_up(rows, 4)];
//   m % 8 == 0 and n % 8 == 0 (Transformer Engine's checks on the block-scaled operands) make the padding moot.
// - No fast accumulation with block scales (PyTorch refuses it), f32 compute and scale type, bf16/f16/f32 D
//   with C of the same type.
bool LtGemm::run_fp8(const uint8_t* x_codes, const float* x_scales, const uint8_t* w_codes, const float* w_scales,
                     void* out, DType out_dt, int64_t m, int64_t n, int64_t k) {
  const auto key = std::make_tuple(static_cast<int>(out_dt), m, n, k);
  auto it = fp8_plans_.find(key);
  auto set_scales = [&](cublasLtMatmulDesc_t desc) {
    CHECK_CUBLAS(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scales, sizeof w_scales));
    CHECK_CUBLAS(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scales, sizeof x_scales));
  };
  if (it == fp8_plans_.end()) {
    Plan p;
    CHECK_CUBLAS(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof transa));
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof transb));
    const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
    set_scales(p.desc);
    const auto k64 = static_cast<uint64_t>(k);
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, k64, static_cast<uint64_t>(n), k));
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, k64, static_cast<uint64_t>(m), k));
    CHECK_CUBLAS(
        cublasLtMatrixLayoutCreate(&p.c, cuda_type(out_dt), static_cast<uint64_t>(n), static_cast<uint64_t>(m), n));
    // The pointers are only promised 16-byte aligned (scratch offsets, views of outputs).
    const cublasStatus_t st = choose_algo(p, 16);
    if (!p.ok)
      LOG_WARN("cuBLASLt has no FP8 block-scaled algorithm for M ", m, ", N ", n, ", K ", k, " (",
               cublas_status_string(st), "); the dequantize-then-cuBLAS path takes it");
    it = fp8_plans_.emplace(key, p).first;
  }
  Plan& p = it->second;
  if (!p.ok) return false;
  set_scales(p.desc);
  const float alpha = 1.f, beta = 0.f;
  const cublasStatus_t st = cublasLtMatmul(handle_, p.desc, &alpha, w_codes, p.a, x_codes, p.b, &beta, out, p.c, out,
                                           p.c, &p.algo, workspace_, workspace_bytes_, stream_);
  if (!p.ran && (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE)) {
    LOG_WARN("cuBLASLt turned down its FP8 block-scaled algorithm for M ", m, ", N ", n, ", K ", k, " (",
             cublas_status_string(st), "); the dequantize-then-cuBLAS path takes it");
    p.ok = false;
    return false;
  }
  CHECK_CUBLAS(st);
  p.ran = true;
  return true;
}

bool LtGemm::fp8_refused(DType out_dt, int64_t m, int64_t n, int64_t k) const {
  const auto it = fp8_plans_.find(std::make_tuple(static_cast<int>(out_dt), m, n, k));
  return it != fp8_plans_.end() && !it->second.ok;
}

}  // namespace strata::cuda
