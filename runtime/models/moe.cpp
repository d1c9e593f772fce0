// runtime/models/moe.cpp: routing and the expert FFN (see moe.h).
#include "runtime/models/moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "runtime/error.h"
#include "runtime/expert_source.h"

namespace strata {

Routing route_tokens(const MoeConfig& config, const float* logits, int64_t tokens) {
  const int64_t E = config.n_experts, k = config.n_used;
  Routing r;
  r.n_used = k;
  r.expert.resize(static_cast<size_t>(tokens * k));
  r.weight.resize(static_cast<size_t>(tokens * k));
  const auto route_one = [&](int64_t t, std::vector<float>& prob, std::vector<int32_t>& order) {
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
  };
  // Tokens in parallel (a 2048-token prefill over 128 experts is 262k exps a layer, on the host between two
  // GPU launches); each writes only its own entries, so the result does not depend on the threads.
#pragma omp parallel if (tokens >= 64)
  {
    std::vector<float> prob(static_cast<size_t>(E));
    std::vector<int32_t> order(static_cast<size_t>(E));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tokens; ++t) route_one(t, prob, order);
  }
  return r;
}

void ExpertLoad::add(const Routing& routing) {
  size_t n = routing.expert.size();
  if (real_tokens >= 0) n = std::min(n, static_cast<size_t>(real_tokens * routing.n_used));
  for (size_t i = 0; i < n; ++i) {
    const auto e = static_cast<size_t>(routing.expert[i]);
    if (e >= tokens.size()) tokens.resize(e + 1, 0);
    ++tokens[e];
  }
}

ExpertLoad ExpertLoad::read(Backend& backend) const {
  ExpertLoad out;
  out.tokens = tokens;
  out.expert_bytes = expert_bytes;
  out.host_routed = host_routed;
  out.device_routed = device_routed;
  if (!device.defined()) return out;
  Tensor counts = Tensor::empty(device.shape(), DType::kI64);
  backend.copy(device, counts);
  const int64_t n = counts.numel() - 1;
  if (out.tokens.size() < static_cast<size_t>(n)) out.tokens.resize(static_cast<size_t>(n), 0);
  for (int64_t e = 0; e < n; ++e) out.tokens[static_cast<size_t>(e)] += counts.data<int64_t>()[e];
  out.expert_bytes += counts.data<int64_t>()[n];
  return out;
}

namespace {

Tensor to_host(Backend& backend, const Tensor& t) {
  if (t.device() == Device::kCpu) return t;
  Tensor host = Tensor::empty(t.shape(), t.dtype());
  backend.copy(t, host);
  return host;
}

// The step's index arrays, packed into one host buffer so a device backend takes them in one upload.
class IndexPack {
 public:
  // Reserves n i32 (or f32) slots; returns their offset.
  int64_t add(int64_t n) {
    const int64_t at = static_cast<int64_t>(words_.size());
    words_.resize(words_.size() + static_cast<size_t>(n), 0);
    return at;
  }
  int32_t* i32(int64_t at) { return words_.data() + at; }
  float* f32(int64_t at) { return reinterpret_cast<float*>(words_.data() + at); }
  void upload(Backend& backend) {
    host_ = Tensor::empty({static_cast<int64_t>(words_.size())}, DType::kI32);
    std::memcpy(host_.raw(), words_.data(), words_.size() * 4);
    if (backend.device() == Device::kCpu) {
      dev_ = host_;
      return;
    }
    dev_ = backend.alloc(host_.shape(), DType::kI32);
    backend.copy(host_, dev_);
  }
  Tensor view(int64_t at, int64_t n, DType dtype) const {
    auto* base = static_cast<uint8_t*>(const_cast<void*>(dev_.raw())) + at * 4;
    return Tensor::view(base, {n}, dtype, dev_.device(), dev_.keepalive());
  }

 private:
  std::vector<int32_t> words_;
  Tensor host_, dev_;
};

}  // namespace

void moe_ffn(Backend& backend, const MoeConfig& config, const LayerWeights& w, const Tensor& x, Tensor& out,
             ExpertLoad* load) {
  const int64_t T = x.dim(0), D = x.dim(-1), E = config.n_experts, k = config.n_used;
  STRATA_CHECK_KIND(ErrorKind::kInternal, w.router.defined() && w.router.dim(0) == E && out.numel() == T * D,
                    "moe_ffn: router ", shape_str(w.router.shape()), " for ", E, " experts, output ",
                    shape_str(out.shape()));
  const bool shared = w.shared_gate.defined();
  const DType act = backend.activation_dtype();

  // The routers in f32, on the host: T x E numbers, then Qwen2-MoE's T shared-expert gates, in one buffer
  // so a device backend brings them over in one copy.
  Tensor logits = backend.alloc({T * E + (shared ? T : 0)}, DType::kF32);
  Tensor routed_logits = logits.rows(0, T * E).reshape({T, E});
  backend.matmul(x, w.router, nullptr, routed_logits);
  if (shared) {
    Tensor gate_logit = logits.rows(T * E, T).reshape({T, 1});
    backend.matmul(x, w.shared_router, nullptr, gate_logit);
  }
  // Qwen2-MoE's shared expert over every token, first: the device path folds it into its combine.
  Tensor ys;
  if (shared) {
    const int64_t Fs = w.shared_gate.dim(0);
    Tensor g = backend.alloc({T, Fs}, act), u = backend.alloc({T, Fs}, act);
    ys = backend.alloc({T, D}, act);
    backend.matmul(x, w.shared_gate, nullptr, g);
    backend.matmul(x, w.shared_up, nullptr, u);
    backend.silu_mul(g, u, g);
    backend.matmul(g, w.shared_down, nullptr, ys);
  }
  if (w.expert_source == nullptr && !w.expert_gate.empty()) {  // every held expert resident
    MoeLayer layer;
    layer.config = &config;
    layer.gate = &w.expert_gate, layer.up = &w.expert_up, layer.down = &w.expert_down;
    layer.first = w.expert_first;
    if (shared) layer.shared_out = ys, layer.shared_logit = logits.rows(T * E, T);
    if (load != nullptr) layer.counts = &load->device, layer.count_mask = load->mask;
    if (backend.moe_routed(x, routed_logits, layer, out)) {
      if (load != nullptr) ++load->device_routed;
      return;
    }
  }
  if (load != nullptr) ++load->host_routed;
  const Tensor host_logits = to_host(backend, logits);
  const Routing routing = route_tokens(config, host_logits.data<float>(), T);
  if (load != nullptr) {
    if (load->tokens.size() < static_cast<size_t>(E)) load->tokens.resize(static_cast<size_t>(E), 0);
    load->add(routing);
  }

  // Sort the routed (token, expert) pairs by held expert: expert e's tokens are rows [begin[e], begin[e] +
  // count[e]) of one gathered buffer, so each expert runs over contiguous rows (Backend::expert_ffn: all the
  // selected experts' GEMVs in a decode step, or GEMMs in prefill, as grouped launches where the backend
  // has them) and reads only its own weights. Offloaded experts run in the rounds their source plans (those
  // on the device together, a round one expert_ffn call), so the rows follow that order; each expert still
  // sees its tokens in ascending order, so the result does not depend on the rounds.
  ExpertSource* source = w.expert_source;
  const int64_t held = source != nullptr ? source->held() : static_cast<int64_t>(w.expert_gate.size());
  std::vector<int64_t> count(static_cast<size_t>(held), 0);
  for (int32_t e : routing.expert)
    if (const int64_t local = e - w.expert_first; local >= 0 && local < held) ++count[static_cast<size_t>(local)];
  std::vector<std::vector<int64_t>> rounds;
  if (source != nullptr) {
    rounds = source->plan(count);
  } else {
    rounds.emplace_back();
    for (int64_t e = 0; e < held; ++e)
      if (count[static_cast<size_t>(e)] > 0) rounds.back().push_back(e);
  }
  std::vector<int64_t> begin(static_cast<size_t>(held), 0);
  int64_t N = 0;
  for (const auto& round : rounds)
    for (int64_t e : round) begin[static_cast<size_t>(e)] = N, N += count[static_cast<size_t>(e)];
  IndexPack pack;
  const int64_t at_rows = pack.add(N), at_pos = pack.add(T * k), at_weight = pack.add(T * k);
  const int64_t at_ids = shared ? pack.add(T) : 0, at_gate = shared ? pack.add(T) : 0;
  std::vector<int64_t> fill = begin;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const auto r = static_cast<size_t>(t * k + j);
      const int64_t local = routing.expert[r] - w.expert_first;
      pack.f32(at_weight)[r] = routing.weight[r];
      if (local < 0 || local >= held) {  // another rank of the expert group holds it
        pack.i32(at_pos)[r] = -1;
        continue;
      }
      const int64_t row = fill[static_cast<size_t>(local)]++;
      pack.i32(at_rows)[row] = static_cast<int32_t>(t);
      pack.i32(at_pos)[r] = static_cast<int32_t>(row);
    }
  }
  if (shared) {  // every token through the shared expert, scaled by sigmoid(x . shared_router)
    const float* gate = host_logits.data<float>() + T * E;
    for (int64_t t = 0; t < T; ++t) {
      pack.i32(at_ids)[t] = static_cast<int32_t>(t);
      pack.f32(at_gate)[t] = 1.f / (1.f + std::exp(-gate[t]));
    }
  }
  pack.upload(backend);

  Tensor y = backend.alloc({std::max<int64_t>(N, 1), D}, act);
  if (N > 0) {
    Tensor xs = backend.alloc({N, D}, act);
    backend.embed(x, pack.view(at_rows, N, DType::kI32), 0, xs);  // a row gather
    // Each round's experts in one Backend::expert_ffn call (grouped launches where the backend has them).
    for (size_t r = 0; r < rounds.size(); ++r) {
      const std::vector<int64_t>& round = rounds[r];
      std::vector<ExpertTensors> tensors;
      if (source != nullptr) {
        tensors = source->acquire(r);
      } else {
        for (int64_t e : round) {
          const auto i = static_cast<size_t>(e);
          tensors.push_back({w.expert_gate[i], w.expert_up[i], w.expert_down[i]});
        }
      }
      std::vector<ExpertRows> experts;
      for (size_t i = 0; i < round.size(); ++i) {
        const auto e = static_cast<size_t>(round[i]);
        if (source != nullptr) source->ready(i);
        experts.push_back({tensors[i].gate, tensors[i].up, tensors[i].down, begin[e], count[e]});
        if (load != nullptr)
          load->expert_bytes += tensors[i].gate.nbytes() + tensors[i].up.nbytes() + tensors[i].down.nbytes();
      }
      if (!experts.empty()) backend.expert_ffn(xs, experts, y);
      if (source != nullptr) source->release();
    }
  }
  backend.combine_rows(y, pack.view(at_pos, T * k, DType::kI32), pack.view(at_weight, T * k, DType::kF32),
                       /*accumulate=*/false, out);
  if (!shared) return;
  backend.combine_rows(ys, pack.view(at_ids, T, DType::kI32), pack.view(at_gate, T, DType::kF32),
                       /*accumulate=*/true, out);
}

}  // namespace strata
