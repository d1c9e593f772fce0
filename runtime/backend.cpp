// runtime/backend.cpp: the default (host) implementation of Backend::sample.
#include "runtime/backend.h"

#include <algorithm>
#include <vector>

#include "runtime/error.h"
#include "runtime/sampler.h"

namespace strata {

void Backend::sample(const Tensor& logits, const SampleRow* rows, int32_t* tokens, float* logprobs) {
  STRATA_CHECK(logits.device() == Device::kCpu && logits.dtype() == DType::kF32 && logits.rank() == 2,
               "sample: logits must be a host f32 [rows, vocab] tensor on ", name(), ", got ",
               shape_str(logits.shape()), " ", dtype_name(logits.dtype()));
  const int64_t R = logits.dim(0), V = logits.dim(1);
  for (int64_t r = 0; r < R; ++r)
    STRATA_CHECK(rows[r].params.repetition_penalty == 1.f, "sample: the repetition penalty needs the history; use Sampler");
#pragma omp parallel for schedule(dynamic) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    const std::span<const float> row(logits.data<float>() + r * V, static_cast<size_t>(V));
    const int32_t token = Sampler::sample(row, rows[r].params, {}, rows[r].step);
    tokens[r] = token;
    logprobs[r] = static_cast<float>(Sampler::log_prob(row, token));
  }
}

void Backend::rope_kv_write(Tensor& q, Tensor& k, const Tensor& v, const Tensor& positions, const RopeParams& params,
                            const Tensor& slots, Tensor& k_cache, Tensor& v_cache) {
  rope(q, positions, params);
  rope(k, positions, params);
  kv_write(k, v, slots, k_cache, v_cache);
}

void Backend::combine_rows(const Tensor& src, const Tensor& index, const Tensor& weight, bool accumulate,
                           Tensor& out) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&src, &index, &weight, &out})
    STRATA_CHECK(t->device() == Device::kCpu, "combine_rows (the mixture-of-experts combine) is not implemented "
                 "on the ", name(), " backend; run mixture-of-experts models with --device cpu");
  STRATA_CHECK(src.dtype() == DType::kF32 && out.dtype() == DType::kF32 && index.dtype() == DType::kI32 &&
                   weight.dtype() == DType::kF32,
               "combine_rows: src/out/weight must be f32 and index i32");
  const int64_t D = out.dim(-1), T = out.numel() / D, n = index.numel(), rows = src.numel() / D;
  STRATA_CHECK(T > 0 && n % T == 0 && weight.numel() == n && src.dim(-1) == D, "combine_rows: ", n,
               " indices and ", weight.numel(), " weights for ", T, " output rows; src ", shape_str(src.shape()),
               ", out ", shape_str(out.shape()));
  const int64_t k = n / T;
  const int32_t* idx = index.data<int32_t>();
  const float* w = weight.data<float>();
  const float* in = src.data<float>();
  float* o = out.data<float>();
  for (int64_t i = 0; i < n; ++i)
    STRATA_CHECK(idx[i] < rows, "combine_rows: index ", idx[i], " outside the ", rows, " rows of src");
  std::vector<float> acc(static_cast<size_t>(D));
  for (int64_t t = 0; t < T; ++t) {
    float* dst = o + t * D;
    for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] = accumulate ? dst[d] : 0.f;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t r = idx[t * k + j];
      if (r < 0) continue;
      const float* row = in + int64_t{r} * D;
      for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += w[t * k + j] * row[d];
    }
    std::copy(acc.begin(), acc.end(), dst);
  }
}

bool Backend::matmul_swiglu(const Tensor&, const Tensor&, Tensor&) { return false; }

bool Backend::moe_routed(const Tensor&, const Tensor&, const MoeLayer&, Tensor&) { return false; }

void Backend::expert_ffn(const Tensor& x, const std::vector<ExpertRows>& experts, Tensor& y) {
  const int64_t N = x.dim(0), D = x.dim(-1);
  STRATA_CHECK(y.numel() == N * D, "expert_ffn: x ", shape_str(x.shape()), " and y ", shape_str(y.shape()), " differ");
  int64_t lo = N, hi = 0, next = experts.empty() ? 0 : experts.front().begin;
  bool consecutive = true;
  for (const ExpertRows& e : experts) {
    STRATA_CHECK(e.begin >= 0 && e.rows >= 0 && e.begin + e.rows <= N, "expert_ffn: rows [", e.begin, ", ",
                 e.begin + e.rows, ") outside the ", N, " rows of x");
    STRATA_CHECK(e.gate.rank() == 2 && e.gate.dim(1) == D && e.up.shape() == e.gate.shape() && e.down.rank() == 2 &&
                     e.down.dim(0) == D && e.down.dim(1) == e.gate.dim(0) &&
                     e.gate.dim(0) == experts.front().gate.dim(0),
                 "expert_ffn: expert weights gate ", shape_str(e.gate.shape()), ", up ", shape_str(e.up.shape()),
                 ", down ", shape_str(e.down.shape()), " do not fit x ", shape_str(x.shape()),
                 " (every expert [F, D], [F, D], [D, F] with one F)");
    if (e.rows == 0) continue;
    consecutive = consecutive && e.begin == next;
    next = e.begin + e.rows;
    lo = std::min(lo, e.begin), hi = std::max(hi, e.begin + e.rows);
  }
  if (hi <= lo) return;
  const int64_t F = experts.front().gate.dim(0);
  // gate and up outputs for the span of rows the experts cover, indexed from its first row
  Tensor g = alloc({hi - lo, F}, activation_dtype()), u = alloc({hi - lo, F}, activation_dtype());
  for (const ExpertRows& e : experts) {
    if (e.rows == 0) continue;
    Tensor ge = g.rows(e.begin - lo, e.rows), ue = u.rows(e.begin - lo, e.rows);
    const Tensor xe = x.rows(e.begin, e.rows);
    matmul(xe, e.gate, nullptr, ge);
    matmul(xe, e.up, nullptr, ue);
  }
  if (consecutive) {
    silu_mul(g, u, g);
  } else {
    for (const ExpertRows& e : experts) {
      if (e.rows == 0) continue;
      Tensor ge = g.rows(e.begin - lo, e.rows);
      silu_mul(ge, u.rows(e.begin - lo, e.rows), ge);
    }
  }
  Tensor y2 = y.reshape({N, D});
  for (const ExpertRows& e : experts) {
    if (e.rows == 0) continue;
    Tensor ye = y2.rows(e.begin, e.rows);
    matmul(g.rows(e.begin - lo, e.rows), e.down, nullptr, ye);
  }
}

bool Backend::rope_kv_attention(Tensor&, Tensor&, const Tensor&, const AttentionBatch&, const RopeParams&, Tensor&,
                                Tensor&, float, Tensor&) {
  return false;
}

namespace {
[[noreturn]] void no_encoder_op(const Backend& b, const char* op) {
  STRATA_THROW(ErrorKind::kInvalidArgument, op, " (a vision-encoder op) is not implemented on the ", b.name(),
               " backend yet; run the vision tower on the CPU backend (--device cpu)");
}
}  // namespace

void Backend::layernorm(const Tensor&, const Tensor&, const Tensor*, float, Tensor&) {
  no_encoder_op(*this, "layernorm");
}
void Backend::activation(const Tensor&, Activation, Tensor&) { no_encoder_op(*this, "activation"); }
void Backend::attention_bidirectional(const Tensor&, const Tensor&, const Tensor&, int64_t, float, Tensor&) {
  no_encoder_op(*this, "attention_bidirectional");
}

std::vector<int64_t> split_column_widths(const Tensor& x, const std::vector<Tensor*>& parts) {
  STRATA_CHECK(x.rank() >= 1 && !parts.empty() && parts.size() <= 4, "split_columns: x ", shape_str(x.shape()),
               " into ", parts.size(), " parts; want a tensor with leading rows and 1..4 parts");
  STRATA_CHECK(!dtype_is_quantized(x.dtype()), "split_columns: x is ", dtype_name(x.dtype()),
               "; only unquantized tensors split by columns");
  const int64_t rows = x.dim(0), cols = rows > 0 ? x.numel() / rows : 0;
  std::vector<int64_t> widths;
  int64_t sum = 0;
  for (const Tensor* p : parts) {
    STRATA_CHECK(p != nullptr && p->dtype() == x.dtype() && p->device() == x.device() &&
                     (rows == 0 || p->numel() % rows == 0),
                 "split_columns: every part must be a ", dtype_name(x.dtype()), " tensor of ", rows,
                 " rows on x's device; got ", p ? shape_str(p->shape()) : std::string("null"));
    widths.push_back(rows > 0 ? p->numel() / rows : 0);
    sum += widths.back();
  }
  STRATA_CHECK(sum == cols, "split_columns: the parts hold ", sum, " columns, x ", shape_str(x.shape()), " has ", cols);
  return widths;
}

std::unique_ptr<OpGraph> Backend::capture(const std::function<void()>&) {
  STRATA_THROW(ErrorKind::kInternal, name(), " cannot capture op graphs (check supports_capture())");
}

}  // namespace strata
