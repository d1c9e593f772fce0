// runtime/cpu/cpu_backend.cpp: the CPU implementation of Backend. f32 activations, a KV cache of f32 (the
// default), f16, bf16 or fp8, weights of any dtype converted on the fly, OpenMP across cores. It is also the
// reference every CUDA kernel is tested against, so clarity wins over tricks outside the matmul inner loops.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime/backend.h"
#include "runtime/cpu/cpu_kernels.h"
#include "runtime/cpu/float_gemm.h"
#include "runtime/cpu/quant_dot.h"
#include "runtime/cpu/quant_repack.h"
#include "runtime/error.h"
#include "runtime/fp8_kv.h"
#include "runtime/kv_cache.h"
#include "runtime/rope.h"

namespace strata {
namespace {

void expect_f32(const Tensor& t, const char* what) {
  STRATA_CHECK(t.device() == Device::kCpu && t.dtype() == DType::kF32, "CPU backend: ", what,
               " must be an f32 host tensor, got ", dtype_name(t.dtype()));
}

constexpr int64_t kParallelWork = 1 << 16;

int64_t row_len(const Tensor& t) { return t.rank() == 0 ? 1 : t.numel() / t.dim(0); }

// One KV cache row (a token's head) from f32, in any cache dtype (kv_cache.h).
void store_kv_row(const float* x, int64_t hd, DType dt, uint8_t* row) {
  switch (dt) {
    case DType::kF32: std::memcpy(row, x, static_cast<size_t>(hd) * 4); break;
    case DType::kF8_E4M3: fp8_kv_encode_row(x, hd, row); break;
    default: {
      auto* r = reinterpret_cast<uint16_t*>(row);
      for (int64_t i = 0; i < hd; ++i) r[i] = dt == DType::kBF16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
    }
  }
}

// One KV cache row as f32: the row itself for an f32 cache, else dequantized into buf.
const float* load_kv_row(const uint8_t* row, int64_t hd, DType dt, float* buf) {
  if (dt == DType::kF32) return reinterpret_cast<const float*>(row);
  if (dt == DType::kF8_E4M3) {
    fp8_kv_decode_row(row, hd, buf);
  } else {
    const auto* r = reinterpret_cast<const uint16_t*>(row);
    for (int64_t i = 0; i < hd; ++i) buf[i] = dt == DType::kBF16 ? bf16_to_f32(r[i]) : f16_to_f32(r[i]);
  }
  return buf;
}

// Attention weights from scores whose largest is `max`: exp(s - max) / sum, in place.
void softmax_in_place(float* s, int64_t n, float max) {
  float denom = 0.f;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - max);
    denom += s[j];
  }
  for (int64_t j = 0; j < n; ++j) s[j] /= denom;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int threads, bool repack_weights) : repack_weights_(repack_weights) {
    if (threads > 0) omp_set_num_threads(threads);
  }
  Device device() const override { return Device::kCpu; }
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::kF32; }
  Tensor alloc(const Shape& shape, DType dtype) override { return Tensor::empty(shape, dtype); }
  void copy(const Tensor& src, Tensor& dst) override {
    STRATA_CHECK(src.numel() == dst.numel(), "copy of ", src.numel(), " elements into ", dst.numel());
    if (src.dtype() == dst.dtype()) {
      if (src.raw() != dst.raw()) std::memcpy(dst.raw(), src.raw(), static_cast<size_t>(src.nbytes()));
      return;
    }
    STRATA_CHECK(dst.dtype() == DType::kF32 || src.dtype() == DType::kF32, "copy converts between f32 and f16/bf16, not ",
                 dtype_name(src.dtype()), " -> ", dtype_name(dst.dtype()));
    const int64_t n = src.numel();
    if (dst.dtype() == DType::kF32) {
      cpu::row_to_f32(src.raw(), src.dtype(), n, dst.data<float>());
      return;
    }
    const float* in = src.data<float>();
    auto* out = dst.data<uint16_t>();
    if (dst.dtype() == DType::kF16) {
      for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16(in[i]);
    } else {
      STRATA_CHECK(dst.dtype() == DType::kBF16, "copy cannot convert f32 to ", dtype_name(dst.dtype()));
      for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
    }
  }
  // Weights stay where they are (usually the read-only memory map). Block-quantized matrices (q4_0..q8_0, the
  // K-quants, iq4) get an interleaved copy (quant_repack.h) that matmul uses when handed the same tensor again.
  Tensor upload_weight(const Tensor& host) override {
    if (repack_weights_ && host.rank() == 2 && host.device() == Device::kCpu && host.keepalive() != nullptr &&
        cpu::RepackedWeight::supports(host.dtype()) &&
        host.dim(1) % cpu::RepackedWeight::block_elems(host.dtype()) == 0) {
      auto packed =
          std::make_shared<const cpu::RepackedWeight>(host.raw(), host.dtype(), host.dim(0), host.dim(1), &arena_);
      const std::lock_guard<std::mutex> lock(repacked_mutex_);
      std::erase_if(repacked_, [](const auto& entry) { return entry.second.owner.expired(); });
      repacked_[host.raw()] = {host.keepalive(), std::move(packed)};
    }
    return host;
  }
  // A repacked matrix is returned as a view of its interleaved copy (holding it, not `host`): matmul finds the
  // copy by that address and reads nothing else, so the source (a transcoded layer) can be handed back.
  Tensor upload_matmul_weight(const Tensor& host) override {
    if (!(repack_weights_ && host.rank() == 2 && host.device() == Device::kCpu &&
          cpu::RepackedWeight::supports(host.dtype()) && host.dim(1) % 32 == 0))
      return upload_weight(host);
    auto packed =
        std::make_shared<const cpu::RepackedWeight>(host.raw(), host.dtype(), host.dim(0), host.dim(1), &arena_);
    void* key = const_cast<uint8_t*>(packed->data());
    Tensor out = Tensor::view(key, host.shape(), host.dtype(), Device::kCpu, std::shared_ptr<void>(packed, key));
    const std::lock_guard<std::mutex> lock(repacked_mutex_);
    std::erase_if(repacked_, [](const auto& entry) { return entry.second.owner.expired(); });
    repacked_[key] = {out.keepalive(), std::move(packed)};
    return out;
  }
  void synchronize() override {}

  void embed(const Tensor& table, const Tensor& ids, int64_t vocab_offset, Tensor& out) override {
    expect_f32(out, "embedding output");
    const int64_t n = ids.numel();
    const int64_t d = table.dim(1);
    const int64_t rows = table.dim(0);
    const int64_t row_bytes = dtype_bytes(table.dtype(), d);
    const int32_t* id = ids.data<int32_t>();
    float* o = out.data<float>();
    for (int64_t t = 0; t < n; ++t) {
      const int64_t local = static_cast<int64_t>(id[t]) - vocab_offset;
      if (local < 0 || local >= rows) {
        std::fill(o + t * d, o + (t + 1) * d, 0.f);
        continue;
      }
      cpu::row_to_f32(static_cast<const uint8_t*>(table.raw()) + local * row_bytes, table.dtype(), d, o + t * d);
    }
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    expect_f32(x, "rmsnorm input");
    const int64_t d = row_len(x), n = x.numel() / d;
    std::vector<float> w(static_cast<size_t>(d));
    cpu::row_to_f32(weight.raw(), weight.dtype(), d, w.data());
    const float* in = x.data<float>();
    float* o = out.data<float>();
#pragma omp parallel for if (n * d >= kParallelWork)
    for (int64_t r = 0; r < n; ++r) norm_row(in + r * d, w.data(), d, eps, o + r * d);
  }

  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    expect_f32(residual, "residual");
    const int64_t d = row_len(residual), n = residual.numel() / d;
    std::vector<float> w(static_cast<size_t>(d));
    cpu::row_to_f32(weight.raw(), weight.dtype(), d, w.data());
    float* res = residual.data<float>();
    const float* in = x.data<float>();
    float* o = out.data<float>();
#pragma omp parallel for if (n * d >= kParallelWork)
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < d; ++i) res[r * d + i] += in[r * d + i];
      norm_row(res + r * d, w.data(), d, eps, o + r * d);
    }
  }

  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override {
    expect_f32(x, "matmul input");
    const int64_t k = x.dim(-1), m = x.numel() / k, n = w.dim(0);
    STRATA_CHECK(w.rank() == 2 && w.dim(1) == k, "matmul: input ", shape_str(x.shape()), " does not match weight ",
                 shape_str(w.shape()));
    STRATA_CHECK(out.numel() == m * n, "matmul: output ", shape_str(out.shape()), " is not [", m, ", ", n, "]");
    const int64_t row_bytes = dtype_bytes(w.dtype(), k);
    const auto* wb = static_cast<const uint8_t*>(w.raw());
    const float* xs = x.data<float>();
    float* o = out.data<float>();
    std::vector<float> b;
    if (bias != nullptr) {
      b.resize(static_cast<size_t>(n));
      cpu::row_to_f32(bias->raw(), bias->dtype(), n, b.data());
    }
    if (dtype_is_quantized(w.dtype())) {
      if (const auto packed = repacked(w)) {
        matmul_repacked(xs, m, *packed, b, o);
        return;
      }
      matmul_quantized(xs, m, k, wb, w.dtype(), row_bytes, b, o, n);
      return;
    }
    if (m >= cpu::kGemmMinRows && cpu::float_gemm_available()) {
      matmul_float_tiled(xs, m, k, wb, w.dtype(), n, b, o);
      return;
    }
    // One or two rows (decode): stream each weight row once through the fused dot. Builds without the
    // tiled GEMM, more rows: convert a weight row to f32 once and reuse it for every input row.
    const bool convert = m > 2 && w.dtype() != DType::kF32;
    // Below ~64K multiply-adds a fork/join costs more than it saves (and a thread that lost its
    // core to another process stalls the whole barrier).
#pragma omp parallel if (m * n * k >= kParallelWork)
    {
      std::vector<float> buf(convert ? static_cast<size_t>(k) : 0);
#pragma omp for schedule(static)
      for (int64_t j = 0; j < n; ++j) {
        const void* row = wb + j * row_bytes;
        const float bj = b.empty() ? 0.f : b[static_cast<size_t>(j)];
        if (convert) {
          cpu::row_to_f32(row, w.dtype(), k, buf.data());
          for (int64_t i = 0; i < m; ++i) o[i * n + j] = cpu::dot_f32(xs + i * k, buf.data(), k) + bj;
        } else {
          for (int64_t i = 0; i < m; ++i) o[i * n + j] = cpu::dot_row(xs + i * k, row, w.dtype(), k) + bj;
        }
      }
    }
  }

  // f32/f16/bf16 weights and several rows (prefill): the activation rows are packed once, then threads split
  // the 16-row weight panels of the register-tiled GEMM (runtime/cpu/float_gemm.h).
  static void matmul_float_tiled(const float* xs, int64_t m, int64_t k, const uint8_t* wb, DType dtype, int64_t n,
                                 const std::vector<float>& b, float* o) {
    std::vector<float> packed(static_cast<size_t>(cpu::packed_activation_floats(m, k)));
    const int64_t tiles = (m + cpu::kGemmTileRows - 1) / cpu::kGemmTileRows, panels = cpu::gemm_panels(n);
#pragma omp parallel for if (m * k >= kParallelWork)
    for (int64_t t = 0; t < tiles; ++t) cpu::pack_activation_tile(xs, m, k, t, packed.data());
    const float* bias = b.empty() ? nullptr : b.data();
#pragma omp parallel for schedule(static) if (m * n * k >= kParallelWork)
    for (int64_t p = 0; p < panels; ++p) cpu::gemm_float_panels(packed.data(), m, k, wb, dtype, n, p, p + 1, bias, o);
  }

  // Block-quantized weights (llama.cpp's scheme): each input row is quantized to 8-bit blocks once, then
  // every weight row's dot product is integer multiply-adds on the packed bytes (runtime/cpu/quant_dot.h).
  static void matmul_quantized(const float* xs, int64_t m, int64_t k, const uint8_t* wb, DType dtype,
                               int64_t row_bytes, const std::vector<float>& b, float* o, int64_t n) {
    const int64_t blocks = k / 32;
    std::vector<cpu::ActBlock> acts(static_cast<size_t>(m * blocks));
#pragma omp parallel for if (m * k >= kParallelWork)
    for (int64_t i = 0; i < m; ++i) cpu::quantize_activations(xs + i * k, k, acts.data() + i * blocks);
#pragma omp parallel for schedule(static) if (m * n * k >= kParallelWork)
    for (int64_t j = 0; j < n; ++j) {
      const void* row = wb + j * row_bytes;
      const float bj = b.empty() ? 0.f : b[static_cast<size_t>(j)];
      for (int64_t i = 0; i < m; i += cpu::kMaxDotTokens) {
        const int count = static_cast<int>(std::min<int64_t>(cpu::kMaxDotTokens, m - i));
        const cpu::ActBlock* x[cpu::kMaxDotTokens];
        float dots[cpu::kMaxDotTokens];
        for (int t = 0; t < count; ++t) x[t] = acts.data() + (i + t) * blocks;
        cpu::dot_quant_tokens(x, count, row, dtype, k, dots);
        for (int t = 0; t < count; ++t) o[(i + t) * n + j] = dots[t] + bj;
      }
    }
  }

  // The interleaved copy of `w` made by upload_weight, or null. An entry counts only while the memory it
  // was made from is alive (a freed tensor's address may be reused) and for the same shape and dtype (a
  // row slice starts at the same address).
  std::shared_ptr<const cpu::RepackedWeight> repacked(const Tensor& w) {
    if (!repack_weights_ || w.rank() != 2) return nullptr;
    const std::lock_guard<std::mutex> lock(repacked_mutex_);
    const auto it = repacked_.find(w.raw());
    if (it == repacked_.end() || it->second.owner.expired()) return nullptr;
    const cpu::RepackedWeight& p = *it->second.packed;
    if (p.dtype() != w.dtype() || p.rows() != w.dim(0) || p.cols() != w.dim(1)) return nullptr;
    return it->second.packed;
  }

  // Groups of 8 weight rows are split across threads; each multiplies its groups with every input row in
  // (8 rows x 4 inputs) register tiles while the group's bytes stay in L1.
  static void matmul_repacked(const float* xs, int64_t m, const cpu::RepackedWeight& w, const std::vector<float>& b,
                              float* o) {
    const int64_t k = w.cols(), n = w.rows(), blocks = k / 32, groups = w.groups();
    std::vector<cpu::ActBlock> acts(static_cast<size_t>(m * blocks));
    const auto quantize = w.wants_activations_256(m) ? cpu::quantize_activations_256 : cpu::quantize_activations;
#pragma omp parallel for if (m * k >= kParallelWork)
    for (int64_t i = 0; i < m; ++i) quantize(xs + i * k, k, acts.data() + i * blocks);
    const float* bias = b.empty() ? nullptr : b.data();
#pragma omp parallel for schedule(static) if (m * n * k >= kParallelWork)
    for (int64_t g = 0; g < groups; ++g) w.multiply(acts.data(), m, g, g + 1, bias, o, n);
  }

  void rope(Tensor& x, const Tensor& positions, const RopeParams& params) override {
    expect_f32(x, "rope input");
    const int64_t t_count = x.dim(0), heads = x.dim(1), hd = x.dim(2);
    const int64_t rot = params.rot_dim > 0 ? params.rot_dim : hd;
    const std::vector<float> inv_freq = rope_inv_freq(params, rot);
    const int32_t* pos = positions.data<int32_t>();
    float* data = x.data<float>();
    const int64_t half = rot / 2;
#pragma omp parallel for if (t_count * heads * hd >= kParallelWork)
    for (int64_t t = 0; t < t_count; ++t) {
      std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(pos[t]) * inv_freq[static_cast<size_t>(i)];
        cs[static_cast<size_t>(i)] = std::cos(angle);
        sn[static_cast<size_t>(i)] = std::sin(angle);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = data + (t * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const int64_t a = params.style == RopeStyle::kHalf ? i : 2 * i;
          const int64_t b = params.style == RopeStyle::kHalf ? i + half : 2 * i + 1;
          const float x0 = v[a], x1 = v[b];
          v[a] = x0 * cs[static_cast<size_t>(i)] - x1 * sn[static_cast<size_t>(i)];
          v[b] = x1 * cs[static_cast<size_t>(i)] + x0 * sn[static_cast<size_t>(i)];
        }
      }
    }
  }

  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    const int64_t n = gate.numel();
    const float* g = gate.data<float>();
    const float* u = up.data<float>();
    float* o = out.data<float>();
#pragma omp parallel for if (n >= kParallelWork)
    for (int64_t i = 0; i < n; ++i) o[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
  }

  void swiglu(const Tensor& gate_up, Tensor& out) override {
    const int64_t F = out.dim(-1), T = out.numel() / F;
    STRATA_CHECK(gate_up.numel() == 2 * T * F, "swiglu: gate_up ", shape_str(gate_up.shape()), " is not [", T, ", ",
                 2 * F, "]");
    const float* gu = gate_up.data<float>();
    float* o = out.data<float>();
#pragma omp parallel for if (T * F >= kParallelWork)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < F; ++i) {
        const float g = gu[t * 2 * F + i];
        o[t * F + i] = g / (1.f + std::exp(-g)) * gu[t * 2 * F + F + i];
      }
  }

  void add(Tensor& a, const Tensor& b) override {
    const int64_t n = a.numel();
    float* x = a.data<float>();
    const float* y = b.data<float>();
    for (int64_t i = 0; i < n; ++i) x[i] += y[i];
  }

  void split_columns(const Tensor& x, const std::vector<Tensor*>& parts) override {
    const std::vector<int64_t> widths = split_column_widths(x, parts);
    const int64_t rows = x.dim(0), elem = dtype_bytes(x.dtype(), 1);
    const auto* src = static_cast<const uint8_t*>(x.raw());
    for (int64_t t = 0; t < rows; ++t)
      for (size_t i = 0; i < parts.size(); ++i) {
        const int64_t bytes = widths[i] * elem;
        std::memcpy(static_cast<uint8_t*>(parts[i]->raw()) + t * bytes, src, static_cast<size_t>(bytes));
        src += bytes;
      }
  }

  void kv_write(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache, Tensor& v_cache) override {
    expect_f32(k, "kv_write keys");
    expect_f32(v, "kv_write values");
    const int64_t t_count = k.dim(0);
    const int64_t row = k.numel() / t_count;  // Hkv * head_dim
    const int64_t hd = kv_cache_head_dim(k_cache), kv_heads = row / hd;
    STRATA_CHECK(row % hd == 0 && k_cache.dim(2) == kv_heads && v_cache.shape() == k_cache.shape() &&
                     v_cache.dtype() == k_cache.dtype(),
                 "kv_write: k ", shape_str(k.shape()), " into caches ", shape_str(k_cache.shape()), " / ",
                 shape_str(v_cache.shape()));
    const DType dt = k_cache.dtype();
    const int64_t row_bytes = kv_row_bytes(dt, hd);
    const int64_t capacity = k_cache.numel() / k_cache.dim(-1) / kv_heads;
    const int32_t* slot = slots.data<int32_t>();
    for (int64_t t = 0; t < t_count; ++t) {
      if (slot[t] < 0) continue;  // padding token
      STRATA_CHECK_KIND(ErrorKind::kInternal, slot[t] < capacity, "KV slot ", slot[t],
                        " outside the cache of ", capacity, " slots");
      for (int64_t h = 0; h < kv_heads; ++h) {
        const int64_t src = t * row + h * hd, dst = (slot[t] * kv_heads + h) * row_bytes;
        store_kv_row(k.data<float>() + src, hd, dt, k_cache.data<uint8_t>() + dst);
        store_kv_row(v.data<float>() + src, hd, dt, v_cache.data<uint8_t>() + dst);
      }
    }
  }

  // Caches of any KV dtype (kv_cache.h): f32 rows are read in place, others dequantized into a row buffer.
  void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionBatch& batch,
                 float scale, Tensor& out) override {
    const int64_t t_count = q.dim(0), heads = q.dim(1), hd = q.dim(2);
    const int64_t kv_heads = k_cache.dim(2);
    STRATA_CHECK(kv_cache_head_dim(k_cache) == hd && v_cache.shape() == k_cache.shape() &&
                     v_cache.dtype() == k_cache.dtype() && kv_heads > 0 && heads % kv_heads == 0,
                 "attention: q ", shape_str(q.shape()), " against caches ", shape_str(k_cache.shape()), " (",
                 dtype_name(k_cache.dtype()), ")");
    const int64_t group = heads / kv_heads;
    const int64_t bs = batch.block_size;
    const DType dt = k_cache.dtype();
    const int64_t row_bytes = kv_row_bytes(dt, hd);
    const int32_t* pos = batch.positions.data<int32_t>();
    const int32_t* seq = batch.token_seq.data<int32_t>();
    const int32_t* tables = batch.block_tables.data<int32_t>();
    const auto* kc = k_cache.data<uint8_t>();
    const auto* vc = v_cache.data<uint8_t>();
    const float* qs = q.data<float>();
    float* o = out.data<float>();
#pragma omp parallel if (t_count * heads * batch.max_position * hd >= kParallelWork)
    {
      std::vector<float> scores, row_buf(static_cast<size_t>(hd));
#pragma omp for collapse(2) schedule(dynamic, 1)
      for (int64_t t = 0; t < t_count; ++t) {
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t n = static_cast<int64_t>(pos[t]) + 1;
          const int32_t* table = tables + static_cast<int64_t>(seq[t]) * batch.max_blocks;
          const int64_t kvh = h / group;
          const float* qv = qs + (t * heads + h) * hd;
          auto row_at = [&](const uint8_t* cache, int64_t j) {
            const int64_t slot = static_cast<int64_t>(table[j / bs]) * bs + j % bs;
            return load_kv_row(cache + (slot * kv_heads + kvh) * row_bytes, hd, dt, row_buf.data());
          };
          scores.resize(static_cast<size_t>(n));
          float max_score = -INFINITY;
          for (int64_t j = 0; j < n; ++j) {
            const float s = cpu::dot_f32(qv, row_at(kc, j), hd) * scale;
            scores[static_cast<size_t>(j)] = s;
            max_score = std::max(max_score, s);
          }
          softmax_in_place(scores.data(), n, max_score);
          float* ov = o + (t * heads + h) * hd;
          std::fill(ov, ov + hd, 0.f);
          for (int64_t j = 0; j < n; ++j) {
            const float p = scores[static_cast<size_t>(j)];
            const float* vv = row_at(vc, j);
            for (int64_t i = 0; i < hd; ++i) ov[i] += p * vv[i];
          }
        }
      }
    }
  }

  void layernorm(const Tensor& x, const Tensor& weight, const Tensor* bias, float eps, Tensor& out) override {
    expect_f32(x, "layernorm input");
    expect_f32(out, "layernorm output");
    const int64_t d = x.dim(-1), n = x.numel() / d;
    STRATA_CHECK(weight.numel() == d && (bias == nullptr || bias->numel() == d) && out.numel() == x.numel(),
                 "layernorm: x ", shape_str(x.shape()), ", weight ", shape_str(weight.shape()), ", bias ",
                 bias != nullptr ? shape_str(bias->shape()) : std::string("none"), ", out ", shape_str(out.shape()));
    std::vector<float> w(static_cast<size_t>(d)), b(static_cast<size_t>(d), 0.f);
    cpu::row_to_f32(weight.raw(), weight.dtype(), d, w.data());
    if (bias != nullptr) cpu::row_to_f32(bias->raw(), bias->dtype(), d, b.data());
    const float* in = x.data<float>();
    float* o = out.data<float>();
#pragma omp parallel for if (n * d >= kParallelWork)
    for (int64_t r = 0; r < n; ++r) {
      const float* row = in + r * d;
      double sum = 0.0;
      for (int64_t i = 0; i < d; ++i) sum += row[i];
      const double mean = sum / static_cast<double>(d);
      double var = 0.0;  // two passes: no cancellation when the mean is large
      for (int64_t i = 0; i < d; ++i) var += (row[i] - mean) * (row[i] - mean);
      const auto inv = static_cast<float>(1.0 / std::sqrt(var / static_cast<double>(d) + eps));
      const auto m = static_cast<float>(mean);
      for (int64_t i = 0; i < d; ++i)
        o[r * d + i] = (row[i] - m) * inv * w[static_cast<size_t>(i)] + b[static_cast<size_t>(i)];
    }
  }

  void activation(const Tensor& x, Activation act, Tensor& out) override {
    expect_f32(x, "activation input");
    STRATA_CHECK(out.numel() == x.numel(), "activation: ", shape_str(x.shape()), " into ", shape_str(out.shape()));
    const int64_t n = x.numel();
    const float* in = x.data<float>();
    float* o = out.data<float>();
    switch (act) {
      case Activation::kGeluErf:
#pragma omp parallel for if (n >= kParallelWork)
        for (int64_t i = 0; i < n; ++i) o[i] = 0.5f * in[i] * (1.f + std::erf(in[i] * 0.70710678118654752f));
        break;
      case Activation::kGeluTanh:
#pragma omp parallel for if (n >= kParallelWork)
        for (int64_t i = 0; i < n; ++i) {
          const float v = in[i];
          o[i] = 0.5f * v * (1.f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        }
        break;
      case Activation::kQuickGelu:
#pragma omp parallel for if (n >= kParallelWork)
        for (int64_t i = 0; i < n; ++i) o[i] = in[i] / (1.f + std::exp(-1.702f * in[i]));
        break;
    }
  }

  void attention_bidirectional(const Tensor& q, const Tensor& k, const Tensor& v, int64_t seq_len, float scale,
                               Tensor& out) override {
    expect_f32(q, "attention query");
    STRATA_CHECK(q.rank() == 3 && k.shape() == q.shape() && v.shape() == q.shape() && out.shape() == q.shape(),
                 "attention_bidirectional: q ", shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ",
                 shape_str(v.shape()), ", out ", shape_str(out.shape()), " must all be the same [T, H, head_dim]");
    const int64_t t_count = q.dim(0), heads = q.dim(1), hd = q.dim(2);
    STRATA_CHECK(seq_len > 0 && t_count % seq_len == 0, "attention_bidirectional: ", t_count,
                 " tokens are not whole sequences of ", seq_len);
    const float* qs = q.data<float>();
    const float* ks = k.data<float>();
    const float* vs = v.data<float>();
    float* o = out.data<float>();
    const int64_t row = heads * hd;  // stride between consecutive tokens
#pragma omp parallel if (t_count * seq_len * row >= kParallelWork)
    {
      std::vector<float> scores(static_cast<size_t>(seq_len));
#pragma omp for collapse(2) schedule(static)
      for (int64_t t = 0; t < t_count; ++t)
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t first = t / seq_len * seq_len;  // the sequence's first token
          const float* qv = qs + t * row + h * hd;
          float max_score = -INFINITY;
          for (int64_t j = 0; j < seq_len; ++j) {
            const float s = cpu::dot_f32(qv, ks + (first + j) * row + h * hd, hd) * scale;
            scores[static_cast<size_t>(j)] = s;
            max_score = std::max(max_score, s);
          }
          softmax_in_place(scores.data(), seq_len, max_score);
          float* ov = o + t * row + h * hd;
          std::fill(ov, ov + hd, 0.f);
          for (int64_t j = 0; j < seq_len; ++j) {
            const float p = scores[static_cast<size_t>(j)];
            const float* vv = vs + (first + j) * row + h * hd;
            for (int64_t i = 0; i < hd; ++i) ov[i] += p * vv[i];
          }
        }
    }
  }

 private:
  static void norm_row(const float* x, const float* w, int64_t d, float eps, float* out) {
    double sum = 0.0;
    for (int64_t i = 0; i < d; ++i) sum += static_cast<double>(x[i]) * x[i];
    const float inv = 1.f / std::sqrt(static_cast<float>(sum / static_cast<double>(d)) + eps);
    for (int64_t i = 0; i < d; ++i) out[i] = x[i] * inv * w[i];
  }

  struct Repacked {
    std::weak_ptr<void> owner;  // the source tensor's memory
    std::shared_ptr<const cpu::RepackedWeight> packed;
  };
  bool repack_weights_;
  cpu::RepackArena arena_;  // declared before repacked_: the copies point into it
  std::mutex repacked_mutex_;
  std::unordered_map<const void*, Repacked> repacked_;  // by the source tensor's address
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads, bool repack_weights) {
  return std::make_unique<CpuBackend>(threads, repack_weights);
}

}  // namespace strata
