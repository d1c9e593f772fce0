// runtime/models/moe.cpp: routing and the expert FFN (see moe.h).
#include "runtime/models/moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "runtime/error.h"

namespace strata {

Routing route_tokens(const MoeConfig& config, const float* logits, int64_t tokens) {
  const int64_t E = config.n_experts, k = config.n_used;
  Routing r;
  r.n_used = k;
  r.expert.resize(static_cast<size_t>(tokens * k));
  r.weight.resize(static_cast<size_t>(tokens * k));
  std::vector<float> prob(static_cast<size_t>(E));
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = logits + t * E;
    const float top = *std::max_element(row, row + E);
    float sum = 0.f;
    for (int64_t e = 0; e < E; ++e) sum += prob[static_cast<size_t>(e)] = std::exp(row[e] - top);
    for (float& p : prob) p /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      const float pa = prob[static_cast<size_t>(a)], pb = prob[static_cast<size_t>(b)];
      return pa > pb || (pa == pb && a < b);
    });
    float chosen = 0.f;
    for (int64_t j = 0; j < k; ++j) chosen += prob[static_cast<size_t>(order[static_cast<size_t>(j)])];
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = order[static_cast<size_t>(j)];
      r.expert[static_cast<size_t>(t * k + j)] = e;
      r.weight[static_cast<size_t>(t * k + j)] = config.norm_topk ? prob[static_cast<size_t>(e)] / chosen
                                                                  : prob[static_cast<size_t>(e)];
    }
  }
  return r;
}

void ExpertLoad::add(const Routing& routing) {
  for (int32_t e : routing.expert) {
    if (static_cast<size_t>(e) >= tokens.size()) tokens.resize(static_cast<size_t>(e) + 1, 0);
    ++tokens[static_cast<size_t>(e)];
  }
}

namespace {

// A host tensor's copy on the backend (the host tensor itself on the CPU backend).
Tensor to_backend(Backend& backend, const Tensor& host) {
  if (backend.device() == Device::kCpu) return host;
  Tensor dev = backend.alloc(host.shape(), host.dtype());
  backend.copy(host, dev);
  return dev;
}

Tensor to_host(Backend& backend, const Tensor& t) {
  if (t.device() == Device::kCpu) return t;
  Tensor host = Tensor::empty(t.shape(), t.dtype());
  backend.copy(t, host);
  return host;
}

// out[rows] += weight * SwiGLU MLP(x[rows]) for the token rows `ids` (i32, backend) of x.
void expert_mlp(Backend& backend, const Tensor& x, const Tensor& ids, const Tensor& weight, const Tensor& gate,
                const Tensor& up, const Tensor& down, Tensor& out) {
  const int64_t n = ids.numel(), D = x.dim(-1), F = gate.dim(0);
  const DType act = backend.activation_dtype();
  Tensor rows = backend.alloc({n, D}, act);
  backend.embed(x, ids, 0, rows);  // a row gather
  Tensor g = backend.alloc({n, F}, act), u = backend.alloc({n, F}, act);
  backend.matmul(rows, gate, nullptr, g);
  backend.matmul(rows, up, nullptr, u);
  backend.silu_mul(g, u, g);
  Tensor y = backend.alloc({n, D}, act);
  backend.matmul(g, down, nullptr, y);
  backend.scatter_add_rows(y, ids, weight, out);
}

}  // namespace

void moe_ffn(Backend& backend, const MoeConfig& config, const LayerWeights& w, const Tensor& x, Tensor& out,
             ExpertLoad* load) {
  const int64_t T = x.dim(0), D = x.dim(-1), E = config.n_experts, k = config.n_used;
  STRATA_CHECK_KIND(ErrorKind::kInternal, w.router.defined() && w.router.dim(0) == E && out.numel() == T * D,
                    "moe_ffn: router ", shape_str(w.router.shape()), " for ", E, " experts, output ",
                    shape_str(out.shape()));
  Tensor zeros = Tensor::empty({T, D}, out.dtype());
  std::memset(zeros.raw(), 0, static_cast<size_t>(zeros.nbytes()));
  backend.copy(zeros, out);

  // The router in f32, on the host: T x E numbers.
  Tensor logits = backend.alloc({T, E}, DType::kF32);
  backend.matmul(x, w.router, nullptr, logits);
  const Tensor host_logits = to_host(backend, logits);
  const Routing routing = route_tokens(config, host_logits.data<float>(), T);
  if (load != nullptr) {
    if (load->tokens.size() < static_cast<size_t>(E)) load->tokens.resize(static_cast<size_t>(E), 0);
    load->add(routing);
  }

  // Each held expert over the tokens routed to it, in token order.
  const int64_t held = static_cast<int64_t>(w.expert_gate.size());
  std::vector<std::vector<int32_t>> rows(static_cast<size_t>(held));
  std::vector<std::vector<float>> weights(static_cast<size_t>(held));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t local = routing.expert[static_cast<size_t>(t * k + j)] - w.expert_first;
      if (local < 0 || local >= held) continue;  // another rank of the expert group holds it
      rows[static_cast<size_t>(local)].push_back(static_cast<int32_t>(t));
      weights[static_cast<size_t>(local)].push_back(routing.weight[static_cast<size_t>(t * k + j)]);
    }
  }
  for (int64_t e = 0; e < held; ++e) {
    const auto& r = rows[static_cast<size_t>(e)];
    if (r.empty()) continue;
    const int64_t n = static_cast<int64_t>(r.size());
    Tensor ids = Tensor::empty({n}, DType::kI32), wt = Tensor::empty({n}, DType::kF32);
    std::memcpy(ids.raw(), r.data(), static_cast<size_t>(n) * 4);
    std::memcpy(wt.raw(), weights[static_cast<size_t>(e)].data(), static_cast<size_t>(n) * 4);
    const auto i = static_cast<size_t>(e);
    expert_mlp(backend, x, to_backend(backend, ids), to_backend(backend, wt), w.expert_gate[i], w.expert_up[i],
               w.expert_down[i], out);
  }

  // Qwen2-MoE's shared expert, every token, scaled by sigmoid(x . shared_router).
  if (!w.shared_gate.defined()) return;
  Tensor gate_logit = backend.alloc({T, 1}, DType::kF32);
  backend.matmul(x, w.shared_router, nullptr, gate_logit);
  const Tensor host_gate = to_host(backend, gate_logit);
  Tensor ids = Tensor::empty({T}, DType::kI32), wt = Tensor::empty({T}, DType::kF32);
  for (int64_t t = 0; t < T; ++t) {
    ids.data<int32_t>()[t] = static_cast<int32_t>(t);
    wt.data<float>()[t] = 1.f / (1.f + std::exp(-host_gate.data<float>()[t]));
  }
  expert_mlp(backend, x, to_backend(backend, ids), to_backend(backend, wt), w.shared_gate, w.shared_up,
             w.shared_down, out);
}

}  // namespace strata
