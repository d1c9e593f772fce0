// runtime/cuda/cuda_backend_fused.cpp: CudaBackend's fused decode ops: the SwiGLU GEMV, and rope +
// KV-cache write folded into the decode attention. Each declines where its fused kernel does not apply.
#include "runtime/cuda/cuda_backend_impl.h"

namespace strata::cuda_backend_detail {

bool CudaBackend::matmul_swiglu(const Tensor& x, const Tensor& w_gate_up, Tensor& out) {
  // The GEMV's rows (decode batches) only: at more rows cuBLAS's product plus the SwiGLU kernel is faster
  // than a GEMV re-reading the weights per 8 rows.
  if (!options_.fuse_swiglu || w_gate_up.rank() != 2 || !is_float_type(w_gate_up.dtype()) ||
      x.dtype() == DType::kF16 || !is_float_type(x.dtype()) || x.device() != Device::kCuda ||
      w_gate_up.device() != Device::kCuda || out.device() != Device::kCuda || !is_float_type(out.dtype()))
    return false;
  const int64_t n = w_gate_up.dim(0), k = w_gate_up.dim(1), f = n / 2;
  if (n % 2 != 0 || k == 0 || x.dim(-1) != k || x.numel() % k != 0) return false;
  const int64_t m = x.numel() / k;
  if (m < 1 || m > fused_gemv_rows()) return false;
  STRATA_CHECK(out.numel() == m * f, "matmul_swiglu: out ", shape_str(out.shape()), " is not [", m, ", ", f,
               "] for w ", shape_str(w_gate_up.shape()));
  set_device();
  auto scope = profile([&] { return cat("matmul_swiglu gemv M", m, " ", n, "x", k, " ", dtype_name(w_gate_up.dtype())); });
  return cuda::launch_gemv_swiglu(x.raw(), x.dtype(), w_gate_up.raw(), w_gate_up.dtype(), out.raw(), out.dtype(), m, f,
                                  k, launch());
}

bool CudaBackend::rope_kv_attention(Tensor& q, Tensor& k, const Tensor& v, const AttentionBatch& batch,
                                    const RopeParams& params, Tensor& k_cache, Tensor& v_cache, float scale,
                                    Tensor& out) {
  using Path = CudaBackendOptions::AttentionPath;
  // One token per sequence: no token's attention reads a key that another block of the launch writes.
  const int64_t T = q.rank() == 3 ? q.dim(0) : 0;
  if (!options_.fuse_rope_attention || T == 0 || !batch.one_token_per_seq || T != batch.n_seqs ||
      (options_.attention_path != Path::kAuto && options_.attention_path != Path::kDecode))
    return false;
  const char* op = "rope_kv_attention";
  const RopeParams p = checked_rope(q, batch.positions, params, op);
  checked_rope(k, batch.positions, params, op);
  check_kv_write(k, v, batch.slots, k_cache, v_cache, op);
  cuda::AttentionArgs a = attention_args(q, k_cache, v_cache, batch, scale, out);
  if (!a.decode_warps || !cuda::attention_decode_warps_supports(a) || p.style != RopeStyle::kHalf ||
      p.rot_dim != a.head_dim || k.dtype() != k_cache.dtype() || v.dtype() != k_cache.dtype())
    return false;
  set_device();
  auto scope = profile([op] { return std::string(op); });
  a.new_k = k.raw();
  a.new_v = v.raw();
  a.inv_freq = inv_freq_for(p);
  a.slots = batch.slots.data<int32_t>();
  a.cache_rows = k_cache.dim(0) * k_cache.dim(1);
  launch_decode_attention(a);
  return true;
}

}  // namespace strata::cuda_backend_detail
