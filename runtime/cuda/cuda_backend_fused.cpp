// runtime/cuda/cuda_backend_fused.cpp: CudaBackend's fused decode ops: pending RMSNorms (the GEMV
// epilogues that form a norm and the ones that scale by it), the SwiGLU GEMV, and rope + KV-cache write
// folded into the decode attention. Each falls back to separate kernels, or declines, where its fused
// kernel does not apply.
#include "runtime/cuda/cuda_backend_impl.h"

namespace strata::cuda_backend_detail {

CudaBackend::MatmulShape CudaBackend::matmul_shape(const Tensor& x, const Tensor& w, const char* op) {
  STRATA_CHECK(w.rank() == 2 && x.dim(-1) == w.dim(1), op, ": x ", shape_str(x.shape()), " against w ",
               shape_str(w.shape()));
  return {x.numel() / std::max<int64_t>(w.dim(1), 1), w.dim(0), w.dim(1)};
}

double* CudaBackend::norm_sum(int slot, int64_t rows, const char* op) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, slot >= 0 && slot < norm_slots_ && rows <= norm_rows_, op, ": norm slot ",
                    slot, " for ", rows, " rows, but reset_norm_sums made ", norm_slots_, " slots of ", norm_rows_,
                    " rows");
  return static_cast<double*>(norm_sums_.get()) + slot * cuda::kNormSlotDoubles;
}

cuda::GemvEpilogue CudaBackend::scale_epilogue(const NormScale& scale, int64_t rows, const char* op) {
  STRATA_CHECK(scale.dim > 0, op, ": the norm's dim must be positive, got ", scale.dim);
  cuda::GemvEpilogue e;
  e.scale_sums = norm_sum(scale.slot, rows, op);
  e.inv_dim = 1.f / static_cast<float>(scale.dim);
  e.eps = scale.eps;
  return e;
}

void CudaBackend::reset_norm_sums(int slots, int64_t rows) {
  STRATA_CHECK(slots >= 0 && slots <= kMaxNormSlots && rows >= 0 && rows <= kNormRows, "reset_norm_sums: ", slots,
               " slots of ", rows, " rows; at most ", kMaxNormSlots, " slots of ", kNormRows, " rows");
  set_device();
  if (norm_sums_.get() == nullptr)
    norm_sums_ = DeviceBuffer(sizeof(double) * kMaxNormSlots * cuda::kNormSlotDoubles, device_);
  norm_slots_ = slots;
  norm_rows_ = rows;
  CHECK_CUDA(cudaMemsetAsync(norm_sums_.get(), 0, sizeof(double) * static_cast<size_t>(slots * cuda::kNormSlotDoubles),
                             stream_.get()));
}

void CudaBackend::pending_rmsnorm(const Tensor& x, const Tensor& weight, Tensor& scaled, int slot) {
  check_on_device(x, "x", "pending_rmsnorm");
  check_on_device(scaled, "scaled", "pending_rmsnorm");
  check_float(x, "x", "pending_rmsnorm");
  const int64_t d = x.dim(-1), rows = x.numel() / std::max<int64_t>(d, 1);
  STRATA_CHECK(weight.numel() == d && scaled.numel() == x.numel(), "pending_rmsnorm: x ", shape_str(x.shape()),
               ", weight ", shape_str(weight.shape()), ", scaled ", shape_str(scaled.shape()));
  double* sums = norm_sum(slot, rows, "pending_rmsnorm");
  set_device();
  auto scope = profile([] { return std::string("pending_rmsnorm"); });
  cuda::launch_pending_norm(const_cast<void*>(x.raw()), x.dtype(), nullptr, DType::kF32, weight.raw(), weight.dtype(),
                            rows, d, scaled.raw(), scaled.dtype(), sums, /*accumulate=*/false, stream_.get());
}

void CudaBackend::matmul_add_pending_norm(const Tensor& x, const Tensor& w, Tensor& residual,
                                          const Tensor* norm_weight, Tensor& scaled, int slot) {
  check_on_device(residual, "residual", "matmul_add_pending_norm");
  check_float(residual, "residual", "matmul_add_pending_norm");
  const auto [m, n, k] = matmul_shape(x, w, "matmul_add_pending_norm");
  STRATA_CHECK(residual.numel() == m * n && (norm_weight == nullptr || (norm_weight->numel() == n &&
                                                                        scaled.numel() == m * n)),
               "matmul_add_pending_norm: residual ", shape_str(residual.shape()), " is not [", m, ", ", n, "]");
  double* sums = norm_weight != nullptr ? norm_sum(slot, m, "matmul_add_pending_norm") : nullptr;
  if (norm_weight != nullptr) check_on_device(scaled, "scaled", "matmul_add_pending_norm");
  set_device();
  if (fused_gemv_takes(x, m)) {
    cuda::GemvEpilogue e;
    e.accumulate = true;
    if (norm_weight != nullptr) {
      e.norm_weight = norm_weight->raw(), e.norm_dt = norm_weight->dtype();
      e.scaled = scaled.raw(), e.norm_sums = sums;
      STRATA_CHECK(scaled.dtype() == residual.dtype(), "matmul_add_pending_norm: scaled ", dtype_name(scaled.dtype()),
                   " and residual ", dtype_name(residual.dtype()), " differ");
    }
    auto scope = profile([&] { return cat("matmul_add_pending_norm gemv M", m, " ", n, "x", k); });
    if (cuda::launch_gemv_fused(x.raw(), x.dtype(), w.raw(), w.dtype(), nullptr, DType::kF32, residual.raw(),
                                residual.dtype(), m, n, k, /*swiglu=*/false, e, stream_.get()))
      return;
  }
  // Not a plain-weight GEMV shape: the product, then the add and the norm in one row kernel.
  Tensor product = alloc(residual.shape(), residual.dtype());
  matmul(x, w, nullptr, product);
  auto scope = profile([] { return std::string("add_pending_norm"); });
  cuda::launch_pending_norm(residual.raw(), residual.dtype(), product.raw(), product.dtype(),
                            norm_weight != nullptr ? norm_weight->raw() : nullptr,
                            norm_weight != nullptr ? norm_weight->dtype() : DType::kF32, m, n, scaled.raw(),
                            scaled.dtype(), sums, /*accumulate=*/true, stream_.get());
}

void CudaBackend::matmul_norm_scaled(const Tensor& x, const Tensor& w, const Tensor* bias, const NormScale& scale,
                                     Tensor& out) {
  check_on_device(out, "out", "matmul_norm_scaled");
  const auto [m, n, k] = matmul_shape(x, w, "matmul_norm_scaled");
  const cuda::GemvEpilogue e = scale_epilogue(scale, m, "matmul_norm_scaled");
  const void* bias_ptr = bias != nullptr && bias->defined() ? bias->raw() : nullptr;
  const DType bias_dt = bias_ptr != nullptr ? bias->dtype() : DType::kF32;
  set_device();
  if (fused_gemv_takes(x, m) && out.numel() == m * n) {
    auto scope = profile([&] { return cat("matmul_norm_scaled gemv M", m, " ", n, "x", k); });
    if (cuda::launch_gemv_fused(x.raw(), x.dtype(), w.raw(), w.dtype(), bias_ptr, bias_dt, out.raw(), out.dtype(), m, n,
                                k, /*swiglu=*/false, e, stream_.get()))
      return;
  }
  matmul(x, w, nullptr, out);
  auto scope = profile([] { return std::string("scale_rows"); });
  cuda::launch_scale_rows(out.raw(), out.dtype(), m, n, e.scale_sums, e.inv_dim, e.eps, bias_ptr, bias_dt,
                          stream_.get());
}

bool CudaBackend::matmul_swiglu(const Tensor& x, const Tensor& w_gate_up, Tensor& out, const NormScale* scale) {
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
  const cuda::GemvEpilogue e = scale != nullptr ? scale_epilogue(*scale, m, "matmul_swiglu") : cuda::GemvEpilogue{};
  set_device();
  auto scope = profile([&] { return cat("matmul_swiglu gemv M", m, " ", n, "x", k, " ", dtype_name(w_gate_up.dtype())); });
  return cuda::launch_gemv_fused(x.raw(), x.dtype(), w_gate_up.raw(), w_gate_up.dtype(), nullptr, DType::kF32,
                                 out.raw(), out.dtype(), m, f, k, /*swiglu=*/true, e, stream_.get());
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
