// runtime/cuda/cuda_backend_impl.h: the CudaBackend class and its helpers, shared by the files that define
// its ops (cuda_backend.cpp: construction, copies, matmul and attention; cuda_backend_fused.cpp: the fused
// decode ops). Internal to runtime/cuda/: everything else names the backend through cuda_backend.h.
#pragma once
#include "runtime/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <tuple>
#include <vector>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_handles.h"
#include "runtime/cuda/gemm.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/op_profiler.h"
#include "runtime/cuda/pdl.cuh"
#include "runtime/kv_cache.h"
#include "runtime/log.h"
#include "runtime/rope.h"

namespace strata::cuda_backend_detail {

using cuda::CublasHandle;
using cuda::CudaStream;
using cuda::DeviceBuffer;
using cuda::GrowableBuffer;

// The options' ranges (the launcher's --kernel-options checks the same; this guards other callers).
inline void check_options(const CudaBackendOptions& o) {
  STRATA_CHECK(o.gemv_max_rows >= 0 && o.gemv_max_rows <= 8, "CudaBackendOptions: gemv_max_rows must be 0..8, got ",
               o.gemv_max_rows);
  STRATA_CHECK(o.quant_mma_max_rows == 0 ||
                   (o.quant_mma_min_rows >= 1 && o.quant_mma_min_rows <= o.quant_mma_max_rows &&
                    o.quant_mma_max_rows <= cuda::kQuantMmaMaxRows),
               "CudaBackendOptions: quant_mma rows must satisfy 1 <= min <= max <= ", cuda::kQuantMmaMaxRows,
               " (max 0: off), got min ", o.quant_mma_min_rows, ", max ", o.quant_mma_max_rows);
  STRATA_CHECK(o.moe_gemv_max_rows >= 0 && o.moe_gemv_max_rows <= 8,
               "CudaBackendOptions: moe_gemv_max_rows must be 0..8, got ", o.moe_gemv_max_rows);
  STRATA_CHECK(o.moe_gemm >= 0 && o.moe_gemm <= 2, "CudaBackendOptions: moe_gemm must be 0 (cuBLAS), 1 (the "
               "tensor-core kernel) or 2 (by the experts' count and rows), got ", o.moe_gemm);
  STRATA_CHECK(o.gemv_rolling >= 0 && o.gemv_rolling <= 2,
               "CudaBackendOptions: gemv_rolling must be 0 (by grid), 1 (never) or 2 (always), got ", o.gemv_rolling);
  STRATA_CHECK(o.decode_split_grain == 16 || o.decode_split_grain == 32 || o.decode_split_grain == 64 ||
                   o.decode_split_grain == 128,
               "CudaBackendOptions: decode_split_grain must be 16, 32, 64 or 128 keys, got ", o.decode_split_grain);
  STRATA_CHECK(o.fp8_cublaslt >= 0 && o.fp8_cublaslt <= 2, "CudaBackendOptions: fp8_cublaslt must be 0 (off), 1 "
               "(weights split per call) or 2 (split copies kept from upload), got ", o.fp8_cublaslt);
  STRATA_CHECK(o.decode_head_split == 0 || o.decode_head_split == 1 || o.decode_head_split == 2 ||
                   o.decode_head_split == 4 || o.decode_head_split == 8,
               "CudaBackendOptions: decode_head_split must be 0 (the rule), 1, 2, 4 or 8, got ", o.decode_head_split);
}

inline bool is_float_type(DType dt) { return dt == DType::kF32 || dt == DType::kF16 || dt == DType::kBF16; }
inline void check_on_device(const Tensor& t, const char* what, const char* op) {
  STRATA_CHECK(t.device() == Device::kCuda, op, ": ", what, " ", shape_str(t.shape()),
               " is on the host; allocate it with the CUDA backend's alloc() or upload_weight()");
}

inline void check_float(const Tensor& t, const char* what, const char* op) {
  STRATA_CHECK(is_float_type(t.dtype()), op, ": ", what, " must be f32, f16 or bf16, got ", dtype_name(t.dtype()));
}

// Host-side conversion between float types (host-to-host copies of different dtypes).
inline float host_load(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::kF32: return static_cast<const float*>(p)[i];
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: STRATA_THROW(ErrorKind::kInvalidArgument, "cannot convert from ", dtype_name(dt), " on the host");
  }
}
inline void host_store(void* p, DType dt, int64_t i, float v) {
  switch (dt) {
    case DType::kF32: static_cast<float*>(p)[i] = v; break;
    case DType::kF16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
    case DType::kBF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    default: STRATA_THROW(ErrorKind::kInvalidArgument, "cannot convert to ", dtype_name(dt), " on the host");
  }
}
// One instantiated CUDA graph, launched on the backend's stream between two timing events.
class CudaGraph final : public OpGraph {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t stream, int device) : exec_(exec), stream_(stream), device_(device) {
    CHECK_CUDA(cudaEventCreate(&start_));
    CHECK_CUDA(cudaEventCreate(&end_));
  }
  ~CudaGraph() override {
    for (cudaEvent_t e : {start_, end_}) {
      const cudaError_t st = cudaEventDestroy(e);
      if (st != cudaSuccess) LOG_WARN("cudaEventDestroy: ", cudaGetErrorString(st));
    }
    const cudaError_t st = cudaGraphExecDestroy(exec_);
    if (st != cudaSuccess) LOG_WARN("cudaGraphExecDestroy: ", cudaGetErrorString(st));
  }
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  void replay() override {
    CHECK_CUDA(cudaSetDevice(device_));
    collect();  // the previous replay's events are reused
    CHECK_CUDA(cudaEventRecord(start_, stream_));
    CHECK_CUDA(cudaGraphLaunch(exec_, stream_));
    CHECK_CUDA(cudaEventRecord(end_, stream_));
    pending_ = true;
  }
  double take_device_seconds() override {
    collect();
    const double s = done_seconds_;
    done_seconds_ = 0;
    return s;
  }

 private:
  // Adds the last replay's time once its end event has completed; a replay still running is dropped
  // (only when the caller did not wait for it).
  void collect() {
    if (!pending_) return;
    pending_ = false;
    const cudaError_t cudaEventQuery_end = cudaEventQuery(end_);
    if (cudaEventQuery_end == cudaErrorNotReady) {
      (void)cudaGetLastError();  // not an error to keep
      return;
    }
    CHECK_CUDA(cudaEventQuery_end);
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start_, end_));
    done_seconds_ += ms * 1e-3;
  }

  cudaEvent_t start_ = nullptr, end_ = nullptr;
  bool pending_ = false;
  double done_seconds_ = 0;
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
  int device_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const CudaBackendOptions& options)
      : device_(device), options_(options), stream_(device), scratch_a_(device), scratch_b_(device),
        split_scratch_(device), encoder_scratch_(device), moe_table_(device) {
    cudaDeviceProp prop{};
    CHECK_CUDA(cudaGetDeviceProperties(&prop, device));
    sm_count_ = prop.multiProcessorCount;
    device_name_ = prop.name;
    check_options(options_);
    // Keep freed pool memory for reuse instead of handing it back at every synchronisation.
    cudaMemPool_t pool = nullptr;
    CHECK_CUDA(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = UINT64_MAX;
    CHECK_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    // Programmatic dependent launch needs Hopper; on older devices the option has no effect.
    pdl_ = options_.pdl && prop.major >= 9;
    if (options_.profile) profiler_ = std::make_unique<cuda::OpProfiler>();
  }
  ~CudaBackend() override {
    // Tensors that outlive the backend free synchronously (their stream is about to go away).
    (void)cudaStreamSynchronize(stream_.get());
    if (profiler_) {
      try {
        std::fputs(profiler_->report().c_str(), stderr);
      } catch (const std::exception& e) {
        LOG_WARN("the CUDA op profile's report failed: ", e.what());
      }
    }
    *alive_ = false;
  }

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return cat("cuda:", device_, " (", device_name_, ")"); }
  int device_index() const override { return device_; }
  DType activation_dtype() const override { return DType::kBF16; }
  cudaStream_t stream() const { return stream_.get(); }

  Tensor alloc(const Shape& shape, DType dtype) override {
    for (int64_t d : shape) STRATA_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
    const int64_t bytes = dtype_bytes(dtype, shape_numel(shape));
    // Stream-ordered allocation from the device's pool (kept, not returned to the driver): the
    // per-step activations of a forward pass cost no cudaMalloc and, unlike cudaFree, freeing them
    // does not wait for the device. The free is queued on the compute stream after the work that
    // used the memory; once the backend is gone, a plain synchronous cudaFree is used instead.
    void* ptr = nullptr;
    if (bytes > 0) {
      CHECK_CUDA(cudaSetDevice(device_));
      const cudaError_t status = cudaMallocAsync(&ptr, static_cast<size_t>(bytes), stream_.get());
      if (status != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_bytes = 0, total_bytes = 0;
        (void)cudaMemGetInfo(&free_bytes, &total_bytes);
        STRATA_THROW(ErrorKind::kOutOfMemory, "CUDA error in cudaMallocAsync(", bytes, " bytes) on device ", device_,
                     ": ", cudaGetErrorString(status), "; ", free_bytes >> 20, " MiB free of ", total_bytes >> 20,
                     " MiB. Lower the batch size, the KV cache size or the GPU weight budget.");
      }
    }
    std::shared_ptr<void> holder(ptr, [stream = stream_.get(), alive = alive_, device = device_](void* p) {
      if (p == nullptr) return;
      const cudaError_t st = *alive ? cudaFreeAsync(p, stream) : (cudaSetDevice(device), cudaFree(p));
      if (st != cudaSuccess) LOG_WARN("freeing ", p, " on device ", device, ": ", cudaGetErrorString(st));
    });
    return Tensor::view(ptr, shape, dtype, Device::kCuda, std::move(holder));
  }

  void copy(const Tensor& src, Tensor& dst) override {
    STRATA_CHECK(src.numel() == dst.numel(), "copy: ", shape_str(src.shape()), " and ", shape_str(dst.shape()),
                 " differ in size");
    set_device();
    const bool src_dev = src.device() == Device::kCuda, dst_dev = dst.device() == Device::kCuda;
    const int64_t n = src.numel();
    if (n == 0) return;
    auto scope = profile([&] { return std::string(src_dev ? (dst_dev ? "copy d2d" : "copy d2h") : "copy h2d"); });
    if (src.dtype() == dst.dtype()) {
      if (!src_dev && !dst_dev) {
        std::memcpy(dst.raw(), src.raw(), static_cast<size_t>(src.nbytes()));
        return;
      }
      CHECK_CUDA(cudaMemcpyAsync(dst.raw(), src.raw(), static_cast<size_t>(src.nbytes()), cudaMemcpyDefault,
                                 stream_.get()));
      if (!dst_dev) synchronize();  // the caller reads host memory next
      return;
    }
    STRATA_CHECK(is_float_type(dst.dtype()) && (is_float_type(src.dtype()) || dtype_is_quantized(src.dtype())),
                 "copy: cannot convert ", dtype_name(src.dtype()), " to ", dtype_name(dst.dtype()));
    if (!src_dev && !dst_dev) {
      for (int64_t i = 0; i < n; ++i) host_store(dst.raw(), dst.dtype(), i, host_load(src.raw(), src.dtype(), i));
      return;
    }
    if (src_dev && dst_dev) {
      cuda::launch_convert(src.raw(), src.dtype(), dst.raw(), dst.dtype(), n, launch());
    } else if (!src_dev) {  // stage the host bytes, convert on the device
      void* staged = scratch_a_.get(static_cast<size_t>(src.nbytes()), stream_.get());
      CHECK_CUDA(cudaMemcpyAsync(staged, src.raw(), static_cast<size_t>(src.nbytes()), cudaMemcpyHostToDevice,
                                 stream_.get()));
      cuda::launch_convert(staged, src.dtype(), dst.raw(), dst.dtype(), n, launch());
    } else {  // convert on the device, then bring the bytes over
      void* staged = scratch_a_.get(static_cast<size_t>(dst.nbytes()), stream_.get());
      cuda::launch_convert(src.raw(), src.dtype(), staged, dst.dtype(), n, launch());
      CHECK_CUDA(cudaMemcpyAsync(dst.raw(), staged, static_cast<size_t>(dst.nbytes()), cudaMemcpyDeviceToHost,
                                 stream_.get()));
      synchronize();
    }
  }

  Tensor upload_weight(const Tensor& host) override {
    if (host.device() == Device::kCuda) return host;
    set_device();
    const bool to_bf16 = options_.f32_weights_to_bf16 && host.dtype() == DType::kF32 && host.rank() >= 2;
    Tensor dev = alloc(host.shape(), to_bf16 ? DType::kBF16 : host.dtype());
    if (!to_bf16) {
      CHECK_CUDA(cudaMemcpyAsync(dev.raw(), host.raw(), static_cast<size_t>(host.nbytes()), cudaMemcpyHostToDevice,
                                 stream_.get()));
    } else {  // chunked through a staging buffer so a large f32 tensor never sits whole on the device
      constexpr int64_t kChunk = int64_t{16} << 20;  // elements
      const int64_t n = host.numel();
      void* staged = scratch_a_.get(static_cast<size_t>(std::min(n, kChunk) * 4), stream_.get());
      for (int64_t off = 0; off < n; off += kChunk) {
        const int64_t len = std::min(kChunk, n - off);
        CHECK_CUDA(cudaMemcpyAsync(staged, host.data<float>() + off, static_cast<size_t>(len * 4),
                                   cudaMemcpyHostToDevice, stream_.get()));
        cuda::launch_convert(staged, DType::kF32, static_cast<uint16_t*>(dev.raw()) + off, DType::kBF16, len,
                             launch());
      }
    }
    if (options_.fp8_cublaslt == 2 && dev.dtype() == DType::kF8_B128 && dev.rank() == 2) keep_fp8_split(dev);
    synchronize();  // the host view may be unmapped once this returns
    return dev;
  }

  void synchronize() override { CHECK_CUDA(cudaStreamSynchronize(stream_.get())); }

  void embed(const Tensor& table, const Tensor& ids, int64_t vocab_offset, Tensor& out) override {
    check_on_device(table, "table", "embed");
    check_on_device(ids, "ids", "embed");
    check_on_device(out, "out", "embed");
    STRATA_CHECK(table.rank() == 2 && ids.dtype() == DType::kI32, "embed: table must be [vocab, dim] and ids i32");
    const int64_t dim = table.dim(1);
    STRATA_CHECK(out.numel() == ids.numel() * dim, "embed: out ", shape_str(out.shape()), " is not [", ids.numel(),
                 ", ", dim, "]");
    check_float(out, "out", "embed");
    set_device();
    auto scope = profile([] { return std::string("embed"); });
    cuda::launch_embed(table.raw(), table.dtype(), table.dim(0), dim, ids.data<int32_t>(), ids.numel(), vocab_offset,
                       out.raw(), out.dtype(), launch());
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    norm("rmsnorm", nullptr, x, weight, eps, out);
  }

  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    STRATA_CHECK(residual.numel() == x.numel(), "add_rmsnorm: residual ", shape_str(residual.shape()), " and x ",
                 shape_str(x.shape()), " differ");
    check_on_device(residual, "residual", "add_rmsnorm");
    check_float(residual, "residual", "add_rmsnorm");
    norm("add_rmsnorm", &residual, x, weight, eps, out);
  }

  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override;
  // The e4m3 tensor-core product of an f8_e4m3_b128 weight for the first `rows` rows of x (fp8_cublaslt);
  // false (nothing changed) where cuBLASLt has no algorithm for the shape.
  bool matmul_fp8_lt(const Tensor& x, const Tensor& w, int64_t rows, Tensor& out);
  // fp8_cublaslt = 2: the split codes and scales of an uploaded f8_e4m3_b128 weight, kept beside it.
  void keep_fp8_split(const Tensor& w);
  bool matmul_swiglu(const Tensor& x, const Tensor& w_gate_up, Tensor& out) override;

  void rope(Tensor& x, const Tensor& positions, const RopeParams& params) override {
    const RopeParams p = checked_rope(x, positions, params, "rope");
    set_device();
    auto scope = profile([] { return std::string("rope"); });
    const float* inv_freq = inv_freq_for(p);
    cuda::launch_rope(x.raw(), x.dtype(), x.dim(0), x.dim(1), x.dim(2), positions.data<int32_t>(), inv_freq,
                      p.rot_dim, p.style, launch());
  }

  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    for (const Tensor* t : {&gate, &up, static_cast<const Tensor*>(&out)}) {
      check_on_device(*t, "operand", "silu_mul");
      check_float(*t, "operand", "silu_mul");
    }
    STRATA_CHECK(gate.numel() == up.numel() && up.numel() == out.numel(), "silu_mul: sizes differ: ",
                 shape_str(gate.shape()), ", ", shape_str(up.shape()), ", ", shape_str(out.shape()));
    set_device();
    auto scope = profile([] { return std::string("silu_mul"); });
    cuda::launch_silu_mul(gate.raw(), gate.dtype(), up.raw(), up.dtype(), out.raw(), out.dtype(), out.numel(),
                          launch());
  }

  void swiglu(const Tensor& gate_up, Tensor& out) override {
    check_on_device(gate_up, "gate_up", "swiglu");
    check_on_device(out, "out", "swiglu");
    check_float(gate_up, "gate_up", "swiglu");
    check_float(out, "out", "swiglu");
    const int64_t f = out.dim(-1), rows = out.numel() / std::max<int64_t>(f, 1);
    STRATA_CHECK(gate_up.numel() == 2 * rows * f, "swiglu: gate_up ", shape_str(gate_up.shape()), " is not [", rows,
                 ", ", 2 * f, "]");
    set_device();
    auto scope = profile([] { return std::string("swiglu"); });
    cuda::launch_swiglu(gate_up.raw(), gate_up.dtype(), out.raw(), out.dtype(), rows, f, launch());
  }

  void add(Tensor& a, const Tensor& b) override {
    check_on_device(a, "a", "add");
    check_on_device(b, "b", "add");
    check_float(a, "a", "add");
    check_float(b, "b", "add");
    STRATA_CHECK(a.numel() == b.numel(), "add: ", shape_str(a.shape()), " and ", shape_str(b.shape()), " differ");
    set_device();
    auto scope = profile([] { return std::string("add"); });
    cuda::launch_add(a.raw(), a.dtype(), b.raw(), b.dtype(), a.numel(), launch());
  }

  void combine_rows(const Tensor& src, const Tensor& index, const Tensor& weight, bool accumulate,
                    Tensor& out) override;  // cuda_backend_moe.cpp
  void expert_ffn(const Tensor& x, const std::vector<ExpertRows>& experts, Tensor& y) override;  // the same
  bool moe_routed(const Tensor& x, const Tensor& logits, const MoeLayer& layer, Tensor& out) override;  // the same

  void split_columns(const Tensor& x, const std::vector<Tensor*>& parts) override {
    check_on_device(x, "x", "split_columns");
    const std::vector<int64_t> widths = split_column_widths(x, parts);
    const int64_t rows = x.dim(0), elem = dtype_bytes(x.dtype(), 1);
    cuda::SplitColumns p;
    p.parts = static_cast<int>(parts.size());
    int64_t end = 0;
    for (int j = 0; j < p.parts; ++j) {
      p.dst[j] = parts[static_cast<size_t>(j)]->raw();
      p.end[j] = end += widths[static_cast<size_t>(j)] * elem;
    }
    set_device();
    auto scope = profile([] { return std::string("split_columns"); });
    cuda::launch_split_columns(x.raw(), rows, end, p, launch());
  }

  void kv_write(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache, Tensor& v_cache) override {
    check_kv_write(k, v, slots, k_cache, v_cache, "kv_write");
    set_device();
    auto scope = profile([] { return std::string("kv_write"); });
    if (k_cache.dtype() == DType::kF8_E4M3)
      return cuda::launch_kv_write_fp8(k.raw(), v.raw(), k.dtype(), slots.data<int32_t>(), k.dim(0), k.dim(1), k.dim(2),
                                       k_cache.raw(), v_cache.raw(), k_cache.dim(0) * k_cache.dim(1), launch());
    cuda::launch_kv_write(k.raw(), v.raw(), k.dtype(), slots.data<int32_t>(), k.dim(0), k.dim(1) * k.dim(2),
                          k_cache.raw(), v_cache.raw(), k_cache.dtype(), k_cache.dim(0) * k_cache.dim(1),
                          launch());
  }

  void rope_kv_write(Tensor& q, Tensor& k, const Tensor& v, const Tensor& positions, const RopeParams& params,
                     const Tensor& slots, Tensor& k_cache, Tensor& v_cache) override {
    const char* op = "rope_kv_write";
    const RopeParams p = checked_rope(q, positions, params, op);
    checked_rope(k, positions, params, op);
    check_kv_write(k, v, slots, k_cache, v_cache, op);
    STRATA_CHECK(q.dtype() == k.dtype() && q.dim(0) == k.dim(0) && q.dim(2) == k.dim(2), op, ": q ",
                 shape_str(q.shape()), " and k ", shape_str(k.shape()), " differ in dtype, tokens or head_dim");
    if (!options_.fuse_rope_kv_write || k_cache.dtype() == DType::kF8_E4M3)  // fp8 rows: rope, then kv_write
      return Backend::rope_kv_write(q, k, v, positions, params, slots, k_cache, v_cache);
    set_device();
    auto scope = profile([op] { return std::string(op); });
    cuda::RopeKvWrite a;
    a.q = q.raw();
    a.k = k.raw();
    a.v = v.raw();
    a.dt = q.dtype();
    a.q_heads = q.dim(1);
    a.kv_heads = k.dim(1);
    a.head_dim = q.dim(2);
    a.rot_dim = p.rot_dim;
    a.style = p.style;
    a.positions = positions.data<int32_t>();
    a.inv_freq = inv_freq_for(p);
    a.slots = slots.data<int32_t>();
    a.k_cache = k_cache.raw();
    a.v_cache = v_cache.raw();
    a.cache_dt = k_cache.dtype();
    a.cache_rows = k_cache.dim(0) * k_cache.dim(1);
    cuda::launch_rope_kv_write(a, q.dim(0), launch());
  }

  void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionBatch& batch,
                 float scale, Tensor& out) override;
  bool rope_kv_attention(Tensor& q, Tensor& k, const Tensor& v, const AttentionBatch& batch, const RopeParams& params,
                         Tensor& k_cache, Tensor& v_cache, float scale, Tensor& out) override;
  // The attention's operands checked and gathered for a kernel launch.
  cuda::AttentionArgs attention_args(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                     const AttentionBatch& batch, float scale, Tensor& out);
  void launch_decode_attention(const cuda::AttentionArgs& a);

  // Encoder ops (vision towers): cuda_backend_encoder.cpp.
  void layernorm(const Tensor& x, const Tensor& weight, const Tensor* bias, float eps, Tensor& out) override;
  void activation(const Tensor& x, Activation act, Tensor& out) override;
  void attention_bidirectional(const Tensor& q, const Tensor& k, const Tensor& v, int64_t seq_len, float scale,
                               Tensor& out) override;
  // attention_bidirectional on the tensor-core prefill kernel; false (nothing launched) where it does not apply.
  bool flash_bidirectional(const Tensor& q, const Tensor& k, const Tensor& v, int64_t seq_len, float scale,
                           Tensor& out);

  void sample(const Tensor& logits, const SampleRow* rows, int32_t* tokens, float* logprobs) override {
    if (logits.device() != Device::kCuda) return Backend::sample(logits, rows, tokens, logprobs);
    STRATA_CHECK(logits.dtype() == DType::kF32 && logits.rank() == 2, "sample: logits must be f32 [rows, vocab], got ",
                 shape_str(logits.shape()), " ", dtype_name(logits.dtype()));
    const int64_t R = logits.dim(0);
    if (R == 0) return;
    set_device();
    auto scope = profile([] { return std::string("sample"); });
    // One mapped pinned block: the kernel reads the parameters from it and writes the tokens and
    // log-probabilities into it over the bus, so a step pays one launch and one synchronisation, no copies.
    // The previous call synchronised, so no kernel still reads the block.
    const size_t param_bytes = sizeof(cuda::DeviceSampling) * static_cast<size_t>(R);
    const size_t out_bytes = 8 * static_cast<size_t>(R);
    auto* host = static_cast<uint8_t*>(sample_host_.get(param_bytes + out_bytes, stream_.get()));
    auto* params = reinterpret_cast<cuda::DeviceSampling*>(host);
    for (int64_t r = 0; r < R; ++r) {
      const SampleRow& row = rows[r];
      STRATA_CHECK(row.params.repetition_penalty == 1.f, "sample: the repetition penalty needs the history; use Sampler");
      params[r] = {row.params.temperature, row.params.top_k, row.params.top_p, row.params.min_p, row.params.seed,
                   row.step};
    }
    auto* dev = static_cast<uint8_t*>(sample_host_.device_view(host));
    auto* dev_tokens = reinterpret_cast<int32_t*>(dev + param_bytes);
    auto* dev_logprobs = reinterpret_cast<float*>(dev + param_bytes + 4 * static_cast<size_t>(R));
    cuda::launch_sample(logits.data<float>(), R, logits.dim(1), reinterpret_cast<const cuda::DeviceSampling*>(dev),
                        dev_tokens, dev_logprobs, launch());
    synchronize();
    std::memcpy(tokens, host + param_bytes, 4 * static_cast<size_t>(R));
    std::memcpy(logprobs, host + param_bytes + 4 * static_cast<size_t>(R), 4 * static_cast<size_t>(R));
  }

  bool supports_capture() const override { return options_.graphs && !profiler_; }

  std::unique_ptr<OpGraph> capture(const std::function<void()>& record) override {
    STRATA_CHECK(supports_capture(), "capture: CUDA graphs are turned off on ", name());
    set_device();
    // Thread-local mode: other threads' CUDA calls (the prefetcher, NCCL) are not this capture's business.
    CHECK_CUDA(cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
      record();
    } catch (...) {
      (void)cudaStreamEndCapture(stream_.get(), &graph);
      if (graph != nullptr) (void)cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      throw;
    }
    CHECK_CUDA(cudaStreamEndCapture(stream_.get(), &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t st = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    CHECK_CUDA(st);
    return std::make_unique<CudaGraph>(exec, stream_.get(), device_);
  }

 private:
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;

  void set_device() { CHECK_CUDA(cudaSetDevice(device_)); }

  // The stream and launch forms every kernel launcher takes.
  cuda::Launch launch() const {
    return cuda::Launch(stream_.get(), pdl_, static_cast<cuda::GemvRolling>(options_.gemv_rolling));
  }

  // Brackets one op for the profiler (CudaBackendOptions::profile); `name` runs only when profiling.
  template <typename NameFn>
  cuda::OpScope<NameFn> profile(NameFn name) {
    return cuda::OpScope<NameFn>(profiler_.get(), stream_.get(), std::move(name));
  }

  // cuBLAS is created on first use: decode-only and test backends never pay for it.
  cublasHandle_t cublas() {
    if (!cublas_) {
      cublas_.emplace(stream_.get());
      workspace_ = DeviceBuffer(kWorkspaceBytes, device_);
      CHECK_CUBLAS(cublasSetWorkspace(cublas_->get(), workspace_.get(), kWorkspaceBytes));
    }
    return cublas_->get();
  }

  cuda::LtGemm& lt_gemm() {
    if (!lt_) {
      cublas();  // the workspace
      lt_.emplace(stream_.get(), workspace_.get(), kWorkspaceBytes);
    }
    return *lt_;
  }

  void norm(const char* op, Tensor* residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
    check_on_device(x, "x", op);
    check_on_device(weight, "weight", op);
    check_on_device(out, "out", op);
    check_float(x, "x", op);
    check_float(weight, "weight", op);
    check_float(out, "out", op);
    const int64_t dim = weight.numel();
    STRATA_CHECK(dim > 0 && x.numel() % dim == 0 && out.numel() == x.numel(), op, ": x ", shape_str(x.shape()),
                 ", weight ", shape_str(weight.shape()), " and out ", shape_str(out.shape()), " do not match");
    set_device();
    auto scope = profile([op] { return std::string(op); });
    cuda::launch_rmsnorm(x.raw(), x.dtype(), residual ? residual->raw() : nullptr,
                         residual ? residual->dtype() : DType::kF32, weight.raw(), weight.dtype(), eps,
                         x.numel() / dim, dim, out.raw(), out.dtype(), launch());
  }

  // rope()'s operand checks; returns the parameters with rot_dim resolved.
  static RopeParams checked_rope(const Tensor& x, const Tensor& positions, const RopeParams& params, const char* op) {
    check_on_device(x, "x", op);
    check_on_device(positions, "positions", op);
    check_float(x, "x", op);
    STRATA_CHECK(x.rank() == 3 && positions.dtype() == DType::kI32 && positions.numel() == x.dim(0), op,
                 ": x must be [T, H, head_dim] and positions i32 [T]; got x ", shape_str(x.shape()), " and positions ",
                 shape_str(positions.shape()));
    RopeParams p = params;
    if (p.rot_dim == 0) p.rot_dim = x.dim(2);
    STRATA_CHECK(p.rot_dim % 2 == 0 && p.rot_dim <= x.dim(2), op, ": rot_dim ", p.rot_dim,
                 " must be even and at most head_dim ", x.dim(2));
    return p;
  }

  static void check_kv_write(const Tensor& k, const Tensor& v, const Tensor& slots, const Tensor& k_cache,
                             const Tensor& v_cache, const char* op) {
    for (const Tensor* t : {&k, &v, &slots, &k_cache, &v_cache}) check_on_device(*t, "operand", op);
    STRATA_CHECK(k.rank() == 3 && k.shape() == v.shape() && k_cache.rank() == 4 && k_cache.shape() == v_cache.shape(),
                 op, ": k, v must be [T, Hkv, hd] and caches [blocks, block_size, Hkv, hd]; got k ",
                 shape_str(k.shape()), ", cache ", shape_str(k_cache.shape()));
    STRATA_CHECK(k.dim(1) == k_cache.dim(2) && k.dim(2) == kv_cache_head_dim(k_cache), op, ": k ",
                 shape_str(k.shape()), " does not match the cache ", shape_str(k_cache.shape()));
    STRATA_CHECK(slots.dtype() == DType::kI32 && slots.numel() == k.dim(0), op, ": slots must be i32 [T]");
    STRATA_CHECK(k.dtype() == v.dtype() && k_cache.dtype() == v_cache.dtype(), op, ": k/v dtypes differ");
    check_float(k, "k", op);
    if (k_cache.dtype() != DType::kF8_E4M3) check_float(k_cache, "k_cache", op);
    STRATA_CHECK(k_cache.dtype() != DType::kF8_E4M3 || k.dim(2) % 4 == 0, op, ": fp8 KV rows need head_dim a multiple "
                 "of 4, got ", k.dim(2));
  }

  const float* inv_freq_for(const RopeParams& p) {
    const auto key = std::make_tuple(p.theta, p.scaling.factor, p.scaling.low_freq_factor, p.scaling.high_freq_factor,
                                     p.scaling.original_max_position, p.rot_dim);
    auto it = rope_tables_.find(key);
    if (it == rope_tables_.end()) {
      const std::vector<float> host = rope_inv_freq(p, p.rot_dim);  // shared with the CPU backend
      DeviceBuffer buf(host.size() * sizeof(float), device_);
      CHECK_CUDA(cudaMemcpy(buf.get(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
      it = rope_tables_.emplace(key, std::move(buf)).first;
    }
    return static_cast<const float*>(it->second.get());
  }

  int device_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  CudaBackendOptions options_;
  CudaStream stream_;
  DeviceBuffer workspace_;  // cuBLAS workspace; declared before cublas_ so the handle goes first
  std::optional<CublasHandle> cublas_;
  std::optional<cuda::LtGemm> lt_;  // shares workspace_ (same stream)
  GrowableBuffer scratch_a_;  // converted activations, staged host bytes
  GrowableBuffer scratch_b_;  // dequantized weight chunks, f32 GEMM outputs
  GrowableBuffer split_scratch_;  // split-K partials of decode attention
  GrowableBuffer encoder_scratch_;  // bidirectional attention's scores and pointer tables
  GrowableBuffer moe_table_;  // expert_ffn's grouped launches: GEMV entries or cuBLAS pointer arrays
  // fp8_cublaslt = 2: per weight address, its split copy (codes [n, k], then the scale table at an offset
  // rounded up to 256 bytes) and the weight's owner, whose identity tells a live weight from a later tensor
  // at the same address.
  struct Fp8Split {
    std::weak_ptr<void> owner;
    Tensor split;
  };
  std::map<const void*, Fp8Split> fp8_splits_;
  bool moe_grouped_gemm_ = true;  // false once cuBLAS refused the grouped GEMM (then each expert's matmuls)
  // moe_routed's per-layer device arrays of the held experts' weight pointers, keyed by the first gate's
  // address and checked against `ptrs` every step (built once per layer, not per step).
  struct MoeWeightTable {
    std::vector<const void*> ptrs;  // [held][3]: gate, up, down
    DeviceBuffer dev;               // the same on the device
    bool usable = false;            // 16-bit weights of one dtype and shape, aligned: the grouped GEMV's
    DType dtype = DType::kBF16;
    int64_t ffn = 0, expert_bytes = 0;
  };
  std::map<const void*, MoeWeightTable> moe_weight_tables_;
  std::string moe_route_declined_;  // the last reason moe_routed declined a step (logged when it changes)
  const MoeWeightTable& moe_weight_table(const MoeLayer& layer, int64_t hidden);
  cuda::PinnedBuffer sample_host_;  // sampling parameters and results, mapped (sample())
  int sm_count_ = 0;
  std::string device_name_;
  std::map<std::tuple<float, float, float, float, int64_t, int64_t>, DeviceBuffer> rope_tables_;
  bool pdl_ = false;  // options_.pdl where the device has it
  std::unique_ptr<cuda::OpProfiler> profiler_;  // options_.profile

  // Rows of x the fused SwiGLU GEMV takes (matmul_swiglu).
  int64_t fused_gemv_rows() const { return std::min<int64_t>(options_.gemv_max_rows, 8); }
};

}  // namespace strata::cuda_backend_detail
