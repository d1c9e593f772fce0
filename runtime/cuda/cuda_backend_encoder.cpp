// runtime/cuda/cuda_backend_encoder.cpp: the CUDA backend's encoder ops (vision towers): LayerNorm,
// GELU-family activations and bidirectional attention. With encoder_flash_attention, bf16 operands and head_dim
// 64 or 128 the attention is the tensor-core prefill kernel (attention_prefill_mma.cu: no score matrix in
// memory), each sequence one block of its own keys and every query at the last position. Otherwise it runs as
// two cuBLAS batched GEMMs per chunk of sequences, one (sequence, head) pair per batch entry addressed in place
// through pointer tables (no transposes): scores = scale * q k^T into f32, a row softmax that writes the
// probabilities over the scores in the input dtype, then probs v straight into out. A CLIP-L/336 image is 16 heads of 577 x 577
// scores (21 MB of f32): chunks hold up to 256 MiB of them.
#include <limits>

#include "runtime/cuda/cuda_backend_impl.h"
#include "runtime/cuda/encoder_kernels.h"

namespace strata {
namespace cuda_backend_detail {
namespace {

constexpr int64_t kScoreChunkBytes = int64_t{256} << 20;

cudaDataType_t cublas_type(DType dt) {
  switch (dt) {
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

cuda::EncoderActivation encoder_activation(Activation act) {
  switch (act) {
    case Activation::kGeluErf: return cuda::EncoderActivation::kGeluErf;
    case Activation::kGeluTanh: return cuda::EncoderActivation::kGeluTanh;
    case Activation::kQuickGelu: return cuda::EncoderActivation::kQuickGelu;
  }
  STRATA_THROW(ErrorKind::kInternal, "activation: unknown kind ", static_cast<int>(act));
}

}  // namespace

void CudaBackend::layernorm(const Tensor& x, const Tensor& weight, const Tensor* bias, float eps, Tensor& out) {
  const char* op = "layernorm";
  check_on_device(x, "x", op);
  check_on_device(weight, "weight", op);
  check_on_device(out, "out", op);
  check_float(x, "x", op);
  check_float(weight, "weight", op);
  check_float(out, "out", op);
  const bool has_bias = bias != nullptr && bias->defined();
  if (has_bias) {
    check_on_device(*bias, "bias", op);
    check_float(*bias, "bias", op);
  }
  const int64_t d = x.rank() == 0 ? 1 : x.dim(-1);
  STRATA_CHECK(d > 0 && weight.numel() == d && (!has_bias || bias->numel() == d) && out.numel() == x.numel(),
               "layernorm: x ", shape_str(x.shape()), ", weight ", shape_str(weight.shape()), ", bias ",
               has_bias ? shape_str(bias->shape()) : std::string("none"), ", out ", shape_str(out.shape()));
  set_device();
  auto scope = profile([] { return std::string("layernorm"); });
  cuda::launch_layernorm(x.raw(), x.dtype(), weight.raw(), weight.dtype(), has_bias ? bias->raw() : nullptr,
                         has_bias ? bias->dtype() : DType::kF32, eps, x.numel() / d, d, out.raw(), out.dtype(),
                         launch());
}

void CudaBackend::activation(const Tensor& x, Activation act, Tensor& out) {
  check_on_device(x, "x", "activation");
  check_on_device(out, "out", "activation");
  check_float(x, "x", "activation");
  check_float(out, "out", "activation");
  STRATA_CHECK(x.numel() == out.numel(), "activation: x ", shape_str(x.shape()), " and out ", shape_str(out.shape()),
               " differ in size");
  set_device();
  auto scope = profile([] { return std::string("activation"); });
  cuda::launch_activation(x.raw(), x.dtype(), encoder_activation(act), out.raw(), out.dtype(), x.numel(), launch());
}

bool CudaBackend::flash_bidirectional(const Tensor& q, const Tensor& k, const Tensor& v, int64_t seq_len, float scale,
                                      Tensor& out) {
  const int64_t T = q.dim(0), seqs = T / seq_len;
  cuda::AttentionArgs a;
  a.q = q.raw(), a.k_cache = k.raw(), a.v_cache = v.raw(), a.out = out.raw();
  a.q_dt = q.dtype(), a.kv_dt = k.dtype(), a.out_dt = out.dtype();
  a.n_tokens = T, a.n_seqs = seqs, a.max_blocks = 1, a.block_size = seq_len, a.max_position = seq_len;
  a.n_heads = q.dim(1), a.n_kv_heads = q.dim(1), a.head_dim = q.dim(2), a.n_cache_blocks = seqs;
  a.scale = scale;
  a.sm_count = sm_count_;
  constexpr int64_t kI32Max = std::numeric_limits<int32_t>::max();  // positions and tables are i32
  if (!options_.encoder_flash_attention || T > kI32Max || !cuda::attention_prefill_mma_supports(a)) return false;
  auto scope = profile([] { return std::string("attention bidirectional (tensor cores)"); });
  const int64_t meta_words = 2 * T + seqs;
  auto* meta = static_cast<int32_t*>(encoder_scratch_.get(static_cast<size_t>(meta_words) * 4, stream_.get()));
  cuda::launch_encoder_attention_meta(meta, meta + T, meta + 2 * T, seqs, seq_len, launch());
  a.positions = meta, a.token_seq = meta + T, a.block_tables = meta + 2 * T;
  cuda::launch_attention_prefill_mma(a, launch());
  return true;
}

void CudaBackend::attention_bidirectional(const Tensor& q, const Tensor& k, const Tensor& v, int64_t seq_len,
                                          float scale, Tensor& out) {
  const char* op = "attention_bidirectional";
  for (const Tensor* t : {&q, &k, &v, static_cast<const Tensor*>(&out)}) {
    check_on_device(*t, "operand", op);
    check_float(*t, "operand", op);
  }
  STRATA_CHECK(q.rank() == 3 && k.shape() == q.shape() && v.shape() == q.shape() && out.shape() == q.shape(), op,
               ": q, k, v and out must be one [T, H, head_dim] shape; got q ", shape_str(q.shape()), ", k ",
               shape_str(k.shape()), ", v ", shape_str(v.shape()), ", out ", shape_str(out.shape()));
  const DType in_dt = q.dtype();
  STRATA_CHECK(k.dtype() == in_dt && v.dtype() == in_dt, op, ": q, k and v must share a dtype; got ",
               dtype_name(in_dt), ", ", dtype_name(k.dtype()), ", ", dtype_name(v.dtype()));
  STRATA_CHECK(out.dtype() == in_dt || out.dtype() == DType::kF32, op, ": out must be ", dtype_name(in_dt),
               " (as q) or f32, got ", dtype_name(out.dtype()));
  const int64_t T = q.dim(0), H = q.dim(1), hd = q.dim(2);
  STRATA_CHECK(seq_len > 0 && T % seq_len == 0, op, ": ", T, " tokens are not whole sequences of ", seq_len);
  STRATA_CHECK(seq_len <= cuda::softmax_rows_max_len(), op, ": sequences of ", seq_len, " tokens; the CUDA backend ",
               "takes at most ", cuda::softmax_rows_max_len());
  const int64_t seqs = T / seq_len;
  if (T == 0 || H == 0 || hd == 0) return;
  set_device();
  if (flash_bidirectional(q, k, v, seq_len, scale, out)) return;
  auto scope = profile([] { return std::string("attention bidirectional"); });

  // Chunks of sequences whose scores fit kScoreChunkBytes (one sequence at least), and their pointer tables.
  // Score rows are padded to 8 elements: every block, f32 row and 16-bit probability row then starts 16-byte
  // aligned, as cuBLAS's vectorised tensor-core kernels want (577 keys would leave them 4-byte aligned).
  const int64_t score_ld = (seq_len + 7) / 8 * 8;
  const int64_t seq_score_bytes = H * seq_len * score_ld * 4;
  const int64_t chunk = std::clamp<int64_t>(kScoreChunkBytes / seq_score_bytes, 1, seqs);
  const int64_t entries = chunk * H;
  const int64_t score_bytes = (chunk * seq_score_bytes + 255) / 256 * 256;
  const int64_t table_bytes = entries * static_cast<int64_t>(sizeof(void*));
  auto* base = static_cast<uint8_t*>(encoder_scratch_.get(static_cast<size_t>(score_bytes + 6 * table_bytes),
                                                          stream_.get()));
  cuda::AttentionTables tables;
  uint8_t* t = base + score_bytes;
  tables.q = reinterpret_cast<const void**>(t);
  tables.k = reinterpret_cast<const void**>(t + table_bytes);
  tables.v = reinterpret_cast<const void**>(t + 2 * table_bytes);
  tables.out = reinterpret_cast<void**>(t + 3 * table_bytes);
  tables.scores = reinterpret_cast<void**>(t + 4 * table_bytes);
  tables.probs = reinterpret_cast<const void**>(t + 5 * table_bytes);

  // The probabilities take the inputs' dtype (what the second GEMM multiplies with v); 16-bit ones sit in the
  // first half of each f32 score row, so their row stride is twice the row's length.
  const DType probs_dt = in_dt;
  const int64_t probs_ld = in_dt == DType::kF32 ? score_ld : 2 * score_ld;
  const int64_t row_stride = H * hd;  // elements between a head's consecutive tokens
  const int64_t elem = dtype_bytes(in_dt, 1), out_elem = dtype_bytes(out.dtype(), 1);
  const cudaDataType_t in_type = cublas_type(in_dt), out_type = cublas_type(out.dtype());
  const float one = 1.f, zero = 0.f;
  cublasHandle_t handle = cublas();
  for (int64_t s0 = 0; s0 < seqs; s0 += chunk) {
    const int64_t n_seqs = std::min(chunk, seqs - s0);
    const int64_t first = s0 * seq_len * row_stride;
    cuda::launch_attention_tables(static_cast<const uint8_t*>(q.raw()) + first * elem,
                                  static_cast<const uint8_t*>(k.raw()) + first * elem,
                                  static_cast<const uint8_t*>(v.raw()) + first * elem,
                                  static_cast<uint8_t*>(out.raw()) + first * out_elem, elem, out_elem, base, score_ld,
                                  n_seqs, seq_len, H, hd, tables, launch());
    const int batch = static_cast<int>(n_seqs * H);
    // Column-major view (cuBLAS): scores^T[j, i] = sum_d k[j, d] q[i, d], i.e. row i of the row-major scores
    // holds query i's scores over the keys j.
    CHECK_CUBLAS(cublasGemmBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(seq_len),
                                     static_cast<int>(seq_len), static_cast<int>(hd), &scale, tables.k, in_type,
                                     static_cast<int>(row_stride), tables.q, in_type, static_cast<int>(row_stride),
                                     &zero, tables.scores, CUDA_R_32F, static_cast<int>(score_ld), batch,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    cuda::launch_softmax_rows(base, n_seqs * H * seq_len, seq_len, score_ld, probs_dt, launch());
    // out^T[d, i] = sum_j v^T[d, j] probs^T[j, i]: out row i, head h, written in place.
    CHECK_CUBLAS(cublasGemmBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(hd), static_cast<int>(seq_len),
                                     static_cast<int>(seq_len), &one, tables.v, in_type, static_cast<int>(row_stride),
                                     tables.probs, in_type, static_cast<int>(probs_ld), &zero, tables.out, out_type,
                                     static_cast<int>(row_stride), batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace cuda_backend_detail
}  // namespace strata
