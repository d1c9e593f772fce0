// runtime/models/moe.h: the mixture-of-experts FFN of Mixtral, Qwen2-MoE and Qwen3-MoE layers, for one
// rank of the stage's expert group (ShardSpec): route every token in f32 (on the host, or on the device where
// Backend::moe_routed takes the step: small steps of resident experts), sort the routed tokens by held
// expert into one gathered buffer, run each selected expert once over its contiguous rows (no token is
// dropped; Backend::expert_ffn runs the selected experts together, as grouped GEMV or GEMM launches where
// the backend has them, and quantized experts stay quantized), and combine each token's weighted rows
// (Backend::combine_rows), plus Qwen2-MoE's sigmoid-gated shared expert. The result is this rank's partial
// sum; the caller all-reduces it over the expert group. Backend-agnostic: router, gathers, SwiGLU and
// combine are Backend ops.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/backend.h"
#include "runtime/model_config.h"
#include "runtime/weights.h"

namespace strata {

// Each token's chosen experts and their combine weights, n_used per token, best first.
struct Routing {
  int64_t n_used = 0;
  std::vector<int32_t> expert;  // [T * n_used], global expert indices
  std::vector<float> weight;    // [T * n_used]
};

// The routing of T tokens from router logits [T, n_experts] (f32, host): softmax over every expert in
// f32, the n_used most probable (ties to the lower index), renormalized to sum 1 when config.norm_topk.
Routing route_tokens(const MoeConfig& config, const float* logits, int64_t tokens);

// Tokens routed to each expert, summed over the steps a layer ran (per-expert load), and the expert weight
// bytes those steps read.
struct ExpertLoad {
  std::vector<int64_t> tokens;  // [n_experts]
  int64_t expert_bytes = 0;     // weight bytes of the routed experts run (each at most once per layer and row group)
  // Layer steps routed on the host and on the backend (Backend::moe_routed; a recorded step counts once, when
  // recorded, not per replay). The latter count into `device` (MoeLayer::counts: i64 [n_experts + 1] on the
  // backend, tokens then bytes), read back only by read(), and count token t only where mask[t] >= 0
  // (MoeLayer::count_mask: the step's KV slots, -1 on the padding rows of a recorded decode step); an
  // undefined mask counts every token.
  int64_t host_routed = 0, device_routed = 0;
  Tensor device, mask;
  // Host-routed layers count the first real_tokens rows (all when negative): a recorded decode shape's first
  // run, which may route on the host, pads the step after its real rows.
  int64_t real_tokens = -1;
  // Counts the routing's tokens (the first real_tokens of them).
  void add(const Routing& routing);
  // tokens and expert_bytes with the device counts added (one copy to the host where there are any).
  ExpertLoad read(Backend& backend) const;
};

// out [T, hidden] = this rank's share of the MoE FFN of x [T, hidden] (the normed residual): its held
// experts' weighted outputs and its column slice of the shared expert. Adds the step's routing to
// `load` when given (every rank routes every token, so every rank counts the same). Layers whose experts are
// all resident first offer the step to Backend::moe_routed (routing on the device, no host round trip), and
// route on the host where it declines.
void moe_ffn(Backend& backend, const MoeConfig& config, const LayerWeights& weights, const Tensor& x, Tensor& out,
             ExpertLoad* load = nullptr);

}  // namespace strata
