// runtime/cuda/cuda_backend_moe.cpp: CudaBackend's mixture-of-experts ops: the combine, and the routed
// experts (expert_ffn) as grouped launches: a decode step's few rows per expert through the grouped GEMV
// (moe_gemv.cu: gate, up and the SwiGLU in one launch, down in another), larger steps through cuBLAS's
// grouped GEMM (gate and up in one call, silu_mul, down in one call) or, for many experts with many rows
// each (CudaBackendOptions::moe_gemm), the tensor-core kernel of moe_gemm_mma.cu (two launches, the SwiGLU
// in the first). Quantized and f32 experts, and
// shapes the grouped paths do not take, run Backend's per-expert matmuls (GEMVs, the tensor-core quantized
// GEMM, cuBLAS, each by its rows). And moe_routed: a decode step of resident 16-bit experts routed on the
// device (moe_kernels.cu's routing kernel writes the grouped GEMVs' table), no host round trip.
#include "runtime/cuda/cuda_backend_impl.h"
#include "runtime/cuda/moe_kernels.h"
#include "runtime/log.h"

namespace strata {
namespace cuda_backend_detail {

void CudaBackend::combine_rows(const Tensor& src, const Tensor& index, const Tensor& weight, bool accumulate,
                               Tensor& out) {
  check_on_device(src, "src", "combine_rows");
  check_on_device(index, "index", "combine_rows");
  check_on_device(weight, "weight", "combine_rows");
  check_on_device(out, "out", "combine_rows");
  check_float(src, "src", "combine_rows");
  check_float(out, "out", "combine_rows");
  STRATA_CHECK(index.dtype() == DType::kI32 && weight.dtype() == DType::kF32,
               "combine_rows: index must be i32 and weight f32");
  const int64_t D = out.dim(-1), T = out.numel() / D, n = index.numel();
  STRATA_CHECK(T > 0 && n % T == 0 && weight.numel() == n && src.dim(-1) == D, "combine_rows: ", n,
               " indices and ", weight.numel(), " weights for ", T, " output rows; src ", shape_str(src.shape()),
               ", out ", shape_str(out.shape()));
  set_device();
  auto scope = profile([&] { return cat("moe combine k", n / T); });
  cuda::launch_combine_rows(src.raw(), src.dtype(), src.numel() / D, index.data<int32_t>(), weight.data<float>(),
                            n / T, T, D, accumulate, out.raw(), out.dtype(), launch());
}

namespace {
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
}  // namespace

void CudaBackend::expert_ffn(const Tensor& x, const std::vector<ExpertRows>& experts, Tensor& y) {
  if (!options_.moe_grouped || experts.empty()) return Backend::expert_ffn(x, experts, y);
  check_on_device(x, "x", "expert_ffn");
  check_on_device(y, "y", "expert_ffn");
  const int64_t N = x.dim(0), D = x.dim(-1), F = experts.front().gate.dim(0);
  const DType w_dt = experts.front().gate.dtype();
  // The grouped paths take bf16 activations and one 16-bit weight dtype with aligned rows; anything else (and
  // every operand check) goes to the per-expert default.
  bool grouped = x.dtype() == DType::kBF16 && y.dtype() == DType::kBF16 && y.numel() == N * D && D % 8 == 0 &&
                 F % 8 == 0 && aligned16(x.raw()) && aligned16(y.raw()) &&
                 (w_dt == DType::kBF16 || w_dt == DType::kF16);
  int64_t lo = N, hi = 0, max_rows = 0, active = 0;
  for (const ExpertRows& e : experts) {
    for (const Tensor* t : {&e.gate, &e.up, &e.down})
      grouped = grouped && t->device() == Device::kCuda && t->dtype() == w_dt && aligned16(t->raw());
    grouped = grouped && e.gate.rank() == 2 && e.gate.dim(0) == F && e.gate.dim(1) == D &&
              e.up.shape() == e.gate.shape() && e.down.rank() == 2 && e.down.dim(0) == D && e.down.dim(1) == F &&
              e.begin >= 0 && e.rows >= 0 && e.begin + e.rows <= N;
    if (e.rows == 0) continue;
    lo = std::min(lo, e.begin), hi = std::max(hi, e.begin + e.rows);
    max_rows = std::max(max_rows, e.rows);
    ++active;
  }
  const bool gemv = max_rows <= options_.moe_gemv_max_rows &&
                    cuda::grouped_gemv_supports(DType::kBF16, w_dt, D, static_cast<int>(max_rows)) &&
                    cuda::grouped_gemv_supports(DType::kBF16, w_dt, F, static_cast<int>(max_rows));
  // The tensor-core kernel for many experts with many rows each, cuBLAS's grouped GEMM otherwise (the measured
  // split, CudaBackendOptions::moe_gemm); the kernel also where cuBLAS has no grouped GEMM.
  int64_t total_rows = 0;
  for (const ExpertRows& e : experts) total_rows += e.rows;
  const bool many = active >= CudaBackendOptions::kMoeMmaMinExperts &&
                    total_rows >= CudaBackendOptions::kMoeMmaMinRows * active;
  const bool mma = w_dt == DType::kBF16 && cuda::grouped_mma_supports(w_dt, F, D) &&
                   cuda::grouped_mma_supports(w_dt, D, F) &&
                   (options_.moe_gemm == 1 || (options_.moe_gemm == 2 && (many || !moe_grouped_gemm_)));
  const bool gemm = mma || (w_dt == DType::kBF16 && options_.moe_gemm != 1 && moe_grouped_gemm_);
  if (!grouped || !(gemv || gemm)) return Backend::expert_ffn(x, experts, y);
  if (active == 0) return;
  set_device();
  const cuda::Launch s = launch();
  const int64_t span = hi - lo;  // the rows the experts cover; h holds them from row lo

  if (gemv) {
    auto scope = profile([&] {
      return cat("moe experts gemv M", max_rows <= 2 ? cat(max_rows) : "3-8", " ", F, "x", D);
    });
    // Entries [0, active): gate and up from x into h; [active, 2 active): down from h into y.
    std::vector<cuda::ExpertSlice> table(static_cast<size_t>(2 * active));
    size_t i = 0;
    for (const ExpertRows& e : experts) {
      if (e.rows == 0) continue;
      const auto rows = static_cast<int32_t>(e.rows);
      table[i] = {e.gate.raw(), e.up.raw(), e.begin, e.begin - lo, rows, 0};
      table[i + static_cast<size_t>(active)] = {e.down.raw(), nullptr, e.begin - lo, e.begin, rows, 0};
      ++i;
    }
    const size_t bytes = table.size() * sizeof(cuda::ExpertSlice);
    auto* dev = static_cast<cuda::ExpertSlice*>(moe_table_.get(bytes, s));
    // From pageable memory: staged before the call returns, so the vector may go.
    CHECK_CUDA(cudaMemcpyAsync(dev, table.data(), bytes, cudaMemcpyHostToDevice, s));
    Tensor h = alloc({span, F}, DType::kBF16);
    const int rows = static_cast<int>(max_rows);
    cuda::launch_grouped_gemv(x.raw(), dev, active, rows, w_dt, /*swiglu=*/true, h.raw(), DType::kBF16, F, D, s);
    cuda::launch_grouped_gemv(h.raw(), dev + active, active, rows, w_dt, /*swiglu=*/false, y.raw(), DType::kBF16, D,
                              F, s);
    return;
  }

  if (mma) {
    auto scope = profile([&] { return cat("moe experts mma ", F, "x", D); });
    // Each expert's rows in slices of kGroupedMmaRows: first the gate/up slices (x into h), then the down ones.
    std::vector<cuda::ExpertSlice> table;
    for (int pass = 0; pass < 2; ++pass)
      for (const ExpertRows& e : experts)
        for (int64_t r0 = 0; r0 < e.rows; r0 += cuda::kGroupedMmaRows) {
          const auto rows = static_cast<int32_t>(std::min<int64_t>(cuda::kGroupedMmaRows, e.rows - r0));
          if (pass == 0) table.push_back({e.gate.raw(), e.up.raw(), e.begin + r0, e.begin - lo + r0, rows, 0});
          else table.push_back({e.down.raw(), nullptr, e.begin - lo + r0, e.begin + r0, rows, 0});
        }
    const auto slices = static_cast<int64_t>(table.size() / 2);
    const size_t bytes = table.size() * sizeof(cuda::ExpertSlice);
    auto* dev = static_cast<cuda::ExpertSlice*>(moe_table_.get(bytes, s));
    CHECK_CUDA(cudaMemcpyAsync(dev, table.data(), bytes, cudaMemcpyHostToDevice, s));
    Tensor h = alloc({span, F}, w_dt);
    cuda::launch_grouped_mma(x.raw(), dev, slices, w_dt, /*swiglu=*/true, h.raw(), F, D, s);
    cuda::launch_grouped_mma(h.raw(), dev + slices, slices, w_dt, /*swiglu=*/false, y.raw(), D, F, s);
    return;
  }

  auto scope = profile([&] { return cat("moe experts grouped gemm ", F, "x", D); });
  // Pointer arrays: gate then up problems (w, x, out: 2 active each), then down (active each).
  const auto A = static_cast<size_t>(active);
  std::vector<const void*> ptrs(9 * A);
  std::vector<int> m2(2 * A), m1(A);
  Tensor gu = alloc({2 * span, F}, DType::kBF16);  // g rows [0, span), u rows [span, 2 span)
  auto* g = static_cast<uint16_t*>(gu.raw());  // bf16 elements
  auto* u = g + span * F;
  const auto* xb = static_cast<const uint16_t*>(x.raw());
  auto* yb = static_cast<uint16_t*>(y.raw());
  size_t i = 0;
  for (const ExpertRows& e : experts) {
    if (e.rows == 0) continue;
    const int64_t r = e.begin - lo;
    ptrs[i] = e.gate.raw();  // w, x, out of the gate problem, of the up problem, of the down problem
    ptrs[A + i] = e.up.raw();
    ptrs[2 * A + i] = ptrs[3 * A + i] = xb + e.begin * D;
    ptrs[4 * A + i] = g + r * F;
    ptrs[5 * A + i] = u + r * F;
    ptrs[6 * A + i] = e.down.raw();
    ptrs[7 * A + i] = g + r * F;
    ptrs[8 * A + i] = yb + e.begin * D;
    m2[i] = m2[A + i] = m1[i] = static_cast<int>(e.rows);
    ++i;
  }
  const size_t bytes = ptrs.size() * sizeof(void*);
  auto* dev = static_cast<const void**>(moe_table_.get(bytes, s));
  CHECK_CUDA(cudaMemcpyAsync(dev, ptrs.data(), bytes, cudaMemcpyHostToDevice, s));
  auto* outs = const_cast<void**>(dev);
  if (!cuda::cublas_gemm_grouped(cublas(), DType::kBF16, F, D, m2, dev, dev + 2 * A, outs + 4 * A)) {
    moe_grouped_gemm_ = false;
    LOG_WARN("cuBLAS on ", name(), " has no grouped bf16 GEMM; mixture-of-experts prefill runs each expert's matmuls");
    return Backend::expert_ffn(x, experts, y);
  }
  cuda::launch_silu_mul(g, DType::kBF16, u, DType::kBF16, g, DType::kBF16, span * F, s);
  STRATA_CHECK(cuda::cublas_gemm_grouped(cublas(), DType::kBF16, D, F, m1, dev + 6 * A, dev + 7 * A, outs + 8 * A),
               "expert_ffn: cuBLAS took the grouped gate/up GEMM but refused the grouped down GEMM");
}


const CudaBackend::MoeWeightTable& CudaBackend::moe_weight_table(const MoeLayer& layer, int64_t hidden) {
  const std::vector<Tensor>&gate = *layer.gate, &up = *layer.up, &down = *layer.down;
  const size_t held = gate.size();
  std::vector<const void*> ptrs(3 * held);
  for (size_t i = 0; i < held; ++i) {
    ptrs[3 * i] = gate[i].raw();
    ptrs[3 * i + 1] = i < up.size() ? up[i].raw() : nullptr;
    ptrs[3 * i + 2] = i < down.size() ? down[i].raw() : nullptr;
  }
  MoeWeightTable& t = moe_weight_tables_[ptrs.front()];
  if (t.ptrs == ptrs) return t;
  t = MoeWeightTable{};
  t.ptrs = std::move(ptrs);
  const Tensor& g0 = gate.front();
  t.dtype = g0.dtype();
  t.ffn = g0.rank() == 2 ? g0.dim(0) : 0;
  bool ok = up.size() == held && down.size() == held && (t.dtype == DType::kBF16 || t.dtype == DType::kF16) &&
            g0.rank() == 2 && g0.dim(1) == hidden && t.ffn % 8 == 0 && hidden % 8 == 0;
  for (size_t i = 0; ok && i < held; ++i)
    for (const Tensor* w : {&gate[i], &up[i], &down[i]})
      ok = ok && w->device() == Device::kCuda && w->dtype() == t.dtype && w->rank() == 2 && aligned16(w->raw()) &&
           (w == &down[i] ? w->dim(0) == hidden && w->dim(1) == t.ffn : w->dim(0) == t.ffn && w->dim(1) == hidden);
  t.usable = ok;
  if (!ok) return t;
  t.expert_bytes = g0.nbytes() + up.front().nbytes() + down.front().nbytes();
  const size_t bytes = t.ptrs.size() * sizeof(void*);
  t.dev = DeviceBuffer(bytes, device_);
  CHECK_CUDA(cudaMemcpy(t.dev.get(), t.ptrs.data(), bytes, cudaMemcpyHostToDevice));
  return t;
}

bool CudaBackend::moe_routed(const Tensor& x, const Tensor& logits, const MoeLayer& layer, Tensor& out) {
  // A declined step routes on the host, which also keeps decode steps from being recorded as graphs: say why
  // (debug log; the reason logged when it changes).
  const auto decline = [&](const char* why) {
    if (moe_route_declined_ != why)
      LOG_DEBUG("moe_routed: host routing for ", x.rank() > 0 ? x.dim(0) : 0, " rows: ", why);
    moe_route_declined_ = why;
    return false;
  };
  if (!options_.moe_device_route || !options_.moe_grouped) return decline("moe_device_route or moe_grouped is off");
  if (layer.config == nullptr || layer.gate == nullptr || layer.up == nullptr || layer.down == nullptr ||
      layer.gate->empty() || x.rank() != 2)
    return decline("no resident experts");
  const MoeConfig& c = *layer.config;
  const int64_t T = x.dim(0), D = x.dim(1), E = c.n_experts, k = c.n_used;
  const auto held = static_cast<int64_t>(layer.gate->size());
  const bool shared = layer.shared_out.defined();
  // Steps the grouped GEMV takes whatever the routing (an expert gets at most T rows), on the device, bf16.
  if (T < 1 || T > std::min<int64_t>(options_.moe_gemv_max_rows, cuda::kMoeRouteMaxTokens))
    return decline("more rows than moe_gemv_max_rows");
  if (E < 1 || E > cuda::kMoeRouteMaxExperts || k < 1 || k > std::min<int64_t>(E, cuda::kMoeRouteMaxTopK) ||
      layer.first < 0 || layer.first + held > E)
    return decline("expert count or top-k outside the routing kernel's");
  if (x.device() != Device::kCuda || x.dtype() != DType::kBF16 || out.device() != Device::kCuda ||
      out.dtype() != DType::kBF16 || out.numel() != T * D || !aligned16(x.raw()))
    return decline("activations not bf16 on the device, or unaligned");
  if (logits.device() != Device::kCuda || logits.dtype() != DType::kF32 || logits.numel() != T * E)
    return decline("router logits not f32 [rows, experts] on the device");
  if (shared && (layer.shared_out.device() != Device::kCuda || layer.shared_out.dtype() != DType::kBF16 ||
                 layer.shared_out.numel() != T * D || !layer.shared_logit.defined() ||
                 layer.shared_logit.device() != Device::kCuda || layer.shared_logit.dtype() != DType::kF32 ||
                 layer.shared_logit.numel() != T))
    return decline("shared expert output or gate logit not bf16 / f32 on the device");
  const bool masked = layer.counts != nullptr && layer.count_mask.defined();
  if (masked && (layer.count_mask.device() != Device::kCuda || layer.count_mask.dtype() != DType::kI32 ||
                 layer.count_mask.numel() != T))
    return decline("load-count mask not i32 [rows] on the device");
  const MoeWeightTable& w = moe_weight_table(layer, D);
  const int rows = static_cast<int>(T);
  if (!w.usable) return decline("expert weights not 16-bit [ffn, hidden] / [hidden, ffn] matrices on the device");
  if (!cuda::grouped_gemv_supports(DType::kBF16, w.dtype, D, rows) ||
      !cuda::grouped_gemv_supports(DType::kBF16, w.dtype, w.ffn, rows))
    return decline("hidden or expert FFN size outside the grouped GEMV's");
  set_device();
  const cuda::Launch s = launch();
  if (layer.counts != nullptr && !layer.counts->defined()) {
    *layer.counts = alloc({E + 1}, DType::kI64);
    CHECK_CUDA(cudaMemsetAsync(layer.counts->raw(), 0, static_cast<size_t>(layer.counts->nbytes()), s));
  }
  STRATA_CHECK(layer.counts == nullptr || (layer.counts->device() == Device::kCuda &&
                                           layer.counts->dtype() == DType::kI64 && layer.counts->numel() == E + 1),
               "moe_routed: the load counters ", shape_str(layer.counts->shape()), " are not i64 [", E + 1, "]");
  auto scope = profile([&] { return cat("moe routed M", T, " ", w.ffn, "x", D); });

  // One scratch buffer: the GEMVs' table (2 entries of 32 bytes), then the slots' rows, positions and weights,
  // then the shared expert's ids and gates.
  const int64_t S = T * k, entries = std::min(S, held);
  const int64_t table_words = 2 * entries * static_cast<int64_t>(sizeof(cuda::ExpertSlice) / 4);
  Tensor scratch = alloc({table_words + 3 * S + 2 * T}, DType::kI32);
  auto* words = static_cast<int32_t*>(scratch.raw());
  cuda::MoeRouteArgs a;
  a.logits = logits.data<float>();
  a.tokens = static_cast<int32_t>(T), a.experts = static_cast<int32_t>(E), a.top_k = static_cast<int32_t>(k);
  a.norm_topk = c.norm_topk;
  a.weights = static_cast<const void* const*>(w.dev.get());
  a.first = static_cast<int32_t>(layer.first), a.held = static_cast<int32_t>(held);
  a.entries = static_cast<int32_t>(entries);
  a.shared_logit = shared ? layer.shared_logit.data<float>() : nullptr;
  a.count_mask = masked ? layer.count_mask.data<int32_t>() : nullptr;
  a.counts = layer.counts != nullptr ? static_cast<unsigned long long*>(layer.counts->raw()) : nullptr;
  a.expert_bytes = w.expert_bytes;
  a.table = reinterpret_cast<cuda::ExpertSlice*>(words);
  a.x_rows = words + table_words;
  a.pos = a.x_rows + S;
  a.weight = reinterpret_cast<float*>(a.pos + S);
  a.shared_ids = reinterpret_cast<int32_t*>(a.weight + S);
  a.shared_gate = reinterpret_cast<float*>(a.shared_ids + T);
  cuda::launch_moe_route(a, s);
  Tensor h = alloc({S, w.ffn}, DType::kBF16), y = alloc({S, D}, DType::kBF16);
  cuda::launch_grouped_gemv(x.raw(), a.table, entries, rows, w.dtype, /*swiglu=*/true, h.raw(), DType::kBF16, w.ffn,
                            D, s, a.x_rows);
  cuda::launch_grouped_gemv(h.raw(), a.table + entries, entries, rows, w.dtype, /*swiglu=*/false, y.raw(),
                            DType::kBF16, D, w.ffn, s);
  cuda::launch_combine_rows(y.raw(), DType::kBF16, S, a.pos, a.weight, k, T, D, /*accumulate=*/false, out.raw(),
                            DType::kBF16, s);
  if (shared)
    cuda::launch_combine_rows(layer.shared_out.raw(), DType::kBF16, T, a.shared_ids, a.shared_gate, 1, T, D,
                              /*accumulate=*/true, out.raw(), DType::kBF16, s);
  return true;
}

}  // namespace cuda_backend_detail
}  // namespace strata
