// runtime/cuda/cuda_backend.cpp: CudaBackend, the Backend of one CUDA device. Every op is enqueued on the
// backend's one compute stream, so ops are ordered without events; copies into host memory synchronise.
// Activations and the KV cache are bf16 (f32's exponent range, so no overflow in the residual stream
// as f16 risks; half the bytes of f32), and every kernel accumulates in f32. The class is in
// cuda_backend_impl.h; the fused decode ops are in cuda_backend_fused.cpp.
#include "runtime/cuda/cuda_backend_impl.h"
#include "runtime/cuda/fp8_kernels.h"
#include "runtime/quant_blocks.h"

namespace strata {
namespace cuda_backend_detail {

void CudaBackend::matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) {
  check_on_device(x, "x", "matmul");
  check_on_device(w, "w", "matmul");
  check_on_device(out, "out", "matmul");
  check_float(x, "x", "matmul");
  check_float(out, "out", "matmul");
  STRATA_CHECK(w.rank() == 2, "matmul: w must be [N, K], got ", shape_str(w.shape()));
  const int64_t n = w.dim(0), k = w.dim(1);
  STRATA_CHECK(x.numel() % k == 0 && x.dim(-1) == k, "matmul: x ", shape_str(x.shape()), " does not end in K = ", k,
               " of w ", shape_str(w.shape()));
  const int64_t m = x.numel() / k;
  STRATA_CHECK(out.numel() == m * n, "matmul: out ", shape_str(out.shape()), " is not [", m, ", ", n, "]");
  const DType w_dt = w.dtype();
  STRATA_CHECK(is_float_type(w_dt) || dtype_is_quantized(w_dt), "matmul: weight dtype ", dtype_name(w_dt),
               " is not supported on CUDA");
  const void* bias_ptr = nullptr;
  DType bias_dt = DType::kF32;
  if (bias != nullptr && bias->defined()) {
    check_on_device(*bias, "bias", "matmul");
    check_float(*bias, "bias", "matmul");
    STRATA_CHECK(bias->numel() == n, "matmul: bias ", shape_str(bias->shape()), " is not [", n, "]");
    bias_ptr = bias->raw();
    bias_dt = bias->dtype();
  }
  if (m == 0 || n == 0) return;
  set_device();
  const cuda::Launch s = launch();
  const bool quant = dtype_is_quantized(w_dt);
  // GGUF block types take gemv_quant.cu; f8_e4m3_b128 (FP8 checkpoints) has its own GEMV (fp8_kernels.cu),
  // reached through launch_gemv like the float types, up to 8 rows.
  const bool packed = quant && w_dt != DType::kF8_B128;
  const int64_t gemv_rows = std::min<int64_t>(options_.gemv_max_rows, 8);
  // Packed weights up to 32 rows take the GEMV, 8 rows a pass: the dequantize-then-cuBLAS path moves
  // about 4.6 bytes per weight (packed in, bf16 out and back in), four passes of 4.5-bit weights about 2.3.
  const int64_t gemv_limit = packed && gemv_rows > 0 ? 32 : quant && gemv_rows > 0 ? 8 : gemv_rows;
  // Decode batches with the legacy and K-quant weights quant_mma_supports takes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
  // Q4_K, Q5_K, Q6_K): the tensor-core quantized GEMM (options' row range).
  const bool quant_mma = packed && options_.quant_mma_max_rows > 0 && m >= options_.quant_mma_min_rows &&
                         m <= options_.quant_mma_max_rows && cuda::quant_mma_supports(w_dt, m, n, k) &&
                         reinterpret_cast<uintptr_t>(w.raw()) % 16 == 0;
  // FP8 weights above the GEMV's rows: the e4m3 tensor cores (matmul_fp8_lt) for the rows up to the last
  // multiple of 8 (cuBLASLt's block-scaled operands need it), the FP8 GEMV for the rest.
  const int64_t lt_rows = m - m % 8;
  const bool fp8_lt = w_dt == DType::kF8_B128 && options_.fp8_cublaslt > 0 && m > gemv_limit && lt_rows >= 8 &&
                      k % kF8Block == 0 && n % 8 == 0 && reinterpret_cast<uintptr_t>(w.raw()) % 4 == 0 &&
                      reinterpret_cast<uintptr_t>(out.raw()) % 16 == 0 &&
                      (x.dtype() != DType::kBF16 || reinterpret_cast<uintptr_t>(x.raw()) % 8 == 0) &&
                      !lt_gemm().fp8_refused(out.dtype(), lt_rows, n, k);
  auto scope = profile([&] {
    return cat("matmul ", quant_mma ? "qmma" : fp8_lt ? "fp8lt" : m <= gemv_limit ? "gemv" : "cublas", " M",
               m <= 8 ? cat(m) : m <= 32 ? "9-32" : m <= 64 ? "33-64" : ">64", " ", n, "x", k, " ", dtype_name(w_dt));
  });

  if (quant_mma) {
    const void* xp = x.raw();
    if (x.dtype() != DType::kBF16 || reinterpret_cast<uintptr_t>(xp) % 16 != 0) {
      void* conv = scratch_a_.get(static_cast<size_t>(m * k * 2), s);
      cuda::launch_convert(x.raw(), x.dtype(), conv, DType::kBF16, m * k, s);
      xp = conv;
    }
    const cuda::QuantMmaPlan plan = cuda::quant_mma_plan(w_dt, m, n, k, sm_count_);
    void* partial = plan.scratch_bytes > 0 ? scratch_b_.get(plan.scratch_bytes, s) : nullptr;
    STRATA_CHECK(cuda::launch_quant_mma(xp, w.raw(), w_dt, bias_ptr, bias_dt, out.raw(), out.dtype(), m, n, k, plan,
                                        partial, s),
                 "matmul: the quantized tensor-core GEMM refused ", dtype_name(w_dt), " [", n, ", ", k, "] at M ", m);
    return;
  }
  // Few rows: the weight-streaming GEMV. Quantized weights: x goes to 8 bits per 32 elements in scratch, then
  // the GEMV reads the weight blocks (gemv_quant.cu); a weight off a 16-byte boundary takes cuBLAS below.
  if (packed && m <= gemv_limit && reinterpret_cast<uintptr_t>(w.raw()) % 16 == 0) {
    void* scratch = scratch_a_.get(cuda::quant_gemv_scratch_bytes(std::min<int64_t>(m, 8), k), s);
    for (int64_t m0 = 0; m0 < m; m0 += 8) {
      const int64_t rows = std::min<int64_t>(8, m - m0);
      const bool ok = cuda::launch_gemv_quant(static_cast<const uint8_t*>(x.raw()) + dtype_bytes(x.dtype(), m0 * k),
                                              x.dtype(), scratch, w.raw(), w_dt, bias_ptr, bias_dt,
                                              static_cast<uint8_t*>(out.raw()) + dtype_bytes(out.dtype(), m0 * n),
                                              out.dtype(), rows, n, k, s);
      STRATA_CHECK(ok, "matmul: the quantized GEMV refused ", dtype_name(w_dt), " [", n, ", ", k, "]");
    }
    return;
  }
  if (!packed && m <= gemv_limit) {
    const void* xp = x.raw();
    DType x_dt = x.dtype();
    if (x_dt == DType::kF16) {  // the GEMV reads bf16 or f32 activations
      xp = scratch_a_.get(static_cast<size_t>(m * k * 4), s);
      cuda::launch_convert(x.raw(), x_dt, const_cast<void*>(xp), DType::kF32, m * k, s);
      x_dt = DType::kF32;
    }
    const int64_t elem = x_dt == DType::kF32 ? 4 : 2;
    for (int64_t m0 = 0; m0 < m; m0 += gemv_limit) {
      const int64_t rows = std::min(gemv_limit, m - m0);
      cuda::launch_gemv(static_cast<const uint8_t*>(xp) + m0 * k * elem, x_dt, w.raw(), w_dt, bias_ptr, bias_dt,
                        static_cast<uint8_t*>(out.raw()) + dtype_bytes(out.dtype(), m0 * n), out.dtype(), rows, n, k,
                        s);
    }
    return;
  }

  if (fp8_lt && matmul_fp8_lt(x, w, lt_rows, out)) {
    if (bias_ptr != nullptr) cuda::launch_add_bias(out.raw(), out.dtype(), bias_ptr, bias_dt, lt_rows, n, s);
    if (lt_rows < m) {  // at most 7 rows: the FP8 GEMV (the dequantize path when the GEMV is off)
      Tensor out_tail = out.reshape({m, n}).rows(lt_rows, m - lt_rows);
      matmul(x.reshape({m, k}).rows(lt_rows, m - lt_rows), w, bias, out_tail);
    }
    return;
  }

  // cuBLAS: operands share one type (bf16 for quantized weights, dequantized in row chunks).
  const DType in_dt = quant ? DType::kBF16 : w_dt;
  const void* xp = x.raw();
  if (x.dtype() != in_dt) {
    void* conv = scratch_a_.get(static_cast<size_t>(dtype_bytes(in_dt, m * k)), s);
    cuda::launch_convert(x.raw(), x.dtype(), conv, in_dt, m * k, s);
    xp = conv;
  }
  const bool direct_out = out.dtype() == in_dt || out.dtype() == DType::kF32;
  const DType gemm_out_dt = direct_out ? out.dtype() : DType::kF32;
  int64_t chunk_rows = n;
  if (quant) chunk_rows = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{32} << 20) / (k * 2)));  // <= 64 MiB
  const size_t dequant_bytes = quant ? static_cast<size_t>(chunk_rows * k * 2) : 0;
  const size_t out_f32_bytes = direct_out ? 0 : static_cast<size_t>(m * n * 4);
  uint8_t* b = static_cast<uint8_t*>(scratch_b_.get(dequant_bytes + out_f32_bytes + 256, s));
  void* wtmp = b;
  void* gemm_out = direct_out ? out.raw() : b + (dequant_bytes + 255) / 256 * 256;
  for (int64_t n0 = 0; n0 < n; n0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, n - n0);
    const void* wp = static_cast<const uint8_t*>(w.raw()) + dtype_bytes(w_dt, n0 * k);
    if (quant) {
      cuda::launch_convert(wp, w_dt, wtmp, DType::kBF16, rows * k, s);
      wp = wtmp;
    }
    void* o = static_cast<uint8_t*>(gemm_out) + dtype_bytes(gemm_out_dt, n0);
    const bool mixed = gemm_out_dt == DType::kF32 && in_dt != DType::kF32;  // 16-bit in, f32 out: cuBLASLt
    if (!(mixed && options_.cublaslt && lt_gemm().run(xp, wp, in_dt, o, gemm_out_dt, m, rows, k, n)))
      cuda::cublas_gemm(cublas(), xp, wp, in_dt, o, gemm_out_dt, m, rows, k, n);
  }
  if (bias_ptr != nullptr) cuda::launch_add_bias(gemm_out, gemm_out_dt, bias_ptr, bias_dt, m, n, s);
  if (!direct_out) cuda::launch_convert(gemm_out, DType::kF32, out.raw(), out.dtype(), m * n, s);
}

namespace {
// Bytes of an FP8 operand's split form: codes [rows, k], then its scale table at a 256-byte boundary.
int64_t fp8_codes_bytes(int64_t rows, int64_t k) { return (rows * k + 255) / 256 * 256; }
int64_t fp8_split_bytes(int64_t rows, int64_t k) { return fp8_codes_bytes(rows, k) + rows * (k / kF8Block) * 4; }
}  // namespace

bool CudaBackend::matmul_fp8_lt(const Tensor& x, const Tensor& w, int64_t rows, Tensor& out) {
  const int64_t n = w.dim(0), k = w.dim(1);
  const cuda::Launch s = launch();
  uint8_t* xq = static_cast<uint8_t*>(scratch_a_.get(static_cast<size_t>(fp8_split_bytes(rows, k)), s));
  float* x_scales = reinterpret_cast<float*>(xq + fp8_codes_bytes(rows, k));
  cuda::launch_quantize_e4m3_b128(x.raw(), x.dtype(), xq, x_scales, rows, k, s);
  const uint8_t* wq = nullptr;
  if (const auto it = fp8_splits_.find(w.raw()); it != fp8_splits_.end()) {
    // The same owner (not merely the same address: a freed weight's address can come back) and shape.
    const std::weak_ptr<void>& owner = it->second.owner;
    const bool same = !owner.owner_before(w.keepalive()) && !w.keepalive().owner_before(owner) &&
                      it->second.split.numel() == fp8_split_bytes(n, k);
    if (same) wq = static_cast<const uint8_t*>(it->second.split.raw());
  }
  if (wq == nullptr) {
    uint8_t* split = static_cast<uint8_t*>(scratch_b_.get(static_cast<size_t>(fp8_split_bytes(n, k)), s));
    cuda::launch_repack_f8_b128(w.raw(), split, reinterpret_cast<float*>(split + fp8_codes_bytes(n, k)), n, k, s);
    wq = split;
  }
  const auto* w_scales = reinterpret_cast<const float*>(wq + fp8_codes_bytes(n, k));
  return lt_gemm().run_fp8(xq, x_scales, wq, w_scales, out.raw(), out.dtype(), rows, n, k);
}

void CudaBackend::keep_fp8_split(const Tensor& w) {
  const int64_t n = w.dim(0), k = w.dim(1);
  if (k % kF8Block != 0 || n % 8 != 0) return;  // shapes the FP8 GEMM does not take
  std::erase_if(fp8_splits_, [](const auto& e) { return e.second.owner.expired(); });
  Tensor split = alloc({fp8_split_bytes(n, k)}, DType::kI8);
  auto* p = static_cast<uint8_t*>(split.raw());
  cuda::launch_repack_f8_b128(w.raw(), p, reinterpret_cast<float*>(p + fp8_codes_bytes(n, k)), n, k, launch());
  fp8_splits_[w.raw()] = Fp8Split{w.keepalive(), std::move(split)};
}

cuda::AttentionArgs CudaBackend::attention_args(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                                const AttentionBatch& batch, float scale, Tensor& out) {
  const char* op = "attention";
  for (const Tensor* t : {&q, &k_cache, &v_cache, static_cast<const Tensor*>(&out), &batch.positions, &batch.token_seq,
                          &batch.block_tables})
    check_on_device(*t, "operand", op);
  STRATA_CHECK(q.rank() == 3 && out.shape() == q.shape(), "attention: q must be [T, H, hd] and out the same; got q ",
               shape_str(q.shape()), ", out ", shape_str(out.shape()));
  STRATA_CHECK(k_cache.rank() == 4 && k_cache.shape() == v_cache.shape() && k_cache.dtype() == v_cache.dtype(),
               "attention: caches must be [blocks, block_size, Hkv, hd] and alike");
  const int64_t T = q.dim(0), H = q.dim(1), hd = q.dim(2), hkv = k_cache.dim(2);
  STRATA_CHECK(kv_cache_head_dim(k_cache) == hd && hkv > 0 && H % hkv == 0, "attention: q ", shape_str(q.shape()),
               " does not fit the cache ", shape_str(k_cache.shape()));
  STRATA_CHECK(batch.n_tokens == T && batch.block_size == k_cache.dim(1), "attention: batch has ", batch.n_tokens,
               " tokens and block_size ", batch.block_size, "; q has ", T, " tokens, the cache block_size ",
               k_cache.dim(1));
  STRATA_CHECK(batch.positions.dtype() == DType::kI32 && batch.token_seq.dtype() == DType::kI32 &&
                   batch.block_tables.dtype() == DType::kI32 && batch.positions.numel() >= T &&
                   batch.token_seq.numel() >= T && batch.block_tables.numel() >= batch.n_seqs * batch.max_blocks,
               "attention: batch metadata must be i32 device tensors of the stated sizes");
  check_float(q, "q", op);
  check_float(out, "out", op);
  STRATA_CHECK(T == 0 || batch.max_position > 0, "attention: batch.max_position must be the largest position + 1");
  cuda::AttentionArgs a;
  a.q = q.raw();
  a.q_dt = q.dtype();
  a.k_cache = k_cache.raw();
  a.v_cache = v_cache.raw();
  a.kv_dt = k_cache.dtype();
  a.out = out.raw();
  a.out_dt = out.dtype();
  a.positions = batch.positions.data<int32_t>();
  a.token_seq = batch.token_seq.data<int32_t>();
  a.block_tables = batch.block_tables.data<int32_t>();
  a.n_tokens = T;
  a.n_seqs = batch.n_seqs;
  a.max_blocks = batch.max_blocks;
  a.block_size = batch.block_size;
  a.max_position = batch.max_position;
  a.n_heads = H;
  a.n_kv_heads = hkv;
  a.head_dim = hd;
  a.n_cache_blocks = k_cache.dim(0);
  a.scale = scale;
  a.sm_count = sm_count_;
  a.decode_warps = options_.decode_attention_warps;
  a.prefill_mma_fp8 = options_.prefill_mma_fp8_kv;
  a.split_grain = options_.decode_split_grain;
  a.split_max_keys = options_.decode_split_max_keys;
  a.split_by_length = options_.decode_split_by_length;
  a.whole_blocks = options_.decode_whole_blocks;
  a.head_split = options_.decode_head_split;
  a.kv_ring = options_.decode_kv_ring;
  return a;
}

void CudaBackend::attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionBatch& batch,
                            float scale, Tensor& out) {
  cuda::AttentionArgs a = attention_args(q, k_cache, v_cache, batch, scale, out);
  if (a.n_tokens == 0) return;
  set_device();
  const int64_t T = a.n_tokens;

  using Path = CudaBackendOptions::AttentionPath;
  Path path = options_.attention_path;
  if (path == Path::kAuto) path = T <= 4 * std::max<int64_t>(batch.n_seqs, 1) ? Path::kDecode : Path::kPrefill;
  if (path == Path::kPrefill && !cuda::attention_prefill_supports(a)) path = Path::kDecode;
  if (path == Path::kPrefillSimt && !cuda::attention_prefill_simt_supports(a)) path = Path::kDecode;
  auto scope = profile([&] {
    if (path == Path::kDecode)
      return std::string(a.decode_warps && cuda::attention_decode_warps_supports(a) ? "attention decode (warps)"
                                                                                     : "attention decode");
    const bool mma = path == Path::kPrefill && cuda::attention_prefill_mma_supports(a);
    return std::string(mma ? "attention prefill" : "attention prefill (simt)");
  });
  if (path == Path::kPrefill) {
    cuda::launch_attention_prefill(a, launch());
    return;
  }
  if (path == Path::kPrefillSimt) {
    cuda::launch_attention_prefill_simt(a, launch());
    return;
  }
  launch_decode_attention(a);
}

void CudaBackend::launch_decode_attention(const cuda::AttentionArgs& a) {
  const int64_t splits = cuda::attention_decode_splits(a, sm_count_);
  void* scratch = nullptr;
  if (const int64_t bytes = cuda::attention_decode_scratch_bytes(a, splits); bytes > 0)
    scratch = split_scratch_.get(static_cast<size_t>(bytes), stream_.get());
  cuda::launch_attention_decode(a, splits, scratch, launch());
}

}  // namespace cuda_backend_detail

using cuda_backend_detail::CudaBackend;

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

int64_t cuda_free_bytes(int device) {
  CHECK_CUDA(cudaSetDevice(device));
  size_t free_bytes = 0, total_bytes = 0;
  CHECK_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<int64_t>(free_bytes);
}

std::string cuda_pci_bus_id(int device) {
  char id[32] = {};
  CHECK_CUDA(cudaDeviceGetPCIBusId(id, sizeof(id), device));
  return id;
}

std::unique_ptr<Backend> make_cuda_backend(int device, const CudaBackendOptions& options) {
  const int count = cuda_device_count();
  STRATA_CHECK_KIND(ErrorKind::kCuda, device >= 0 && device < count, "CUDA device ", device, " does not exist (",
                    count, " visible); check CUDA_VISIBLE_DEVICES and the driver (nvidia-smi)");
  return std::make_unique<CudaBackend>(device, options);
}

void* cuda_backend_stream(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  STRATA_CHECK(cuda != nullptr, "cuda_backend_stream: ", backend.name(), " is not a CUDA backend");
  return cuda->stream();
}

}  // namespace strata
