// runtime/shard_spec.cpp: Megatron-style split of heads, FFN and vocabulary over a TP group.
#include "runtime/shard_spec.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace strata {

namespace {
// "1, 2, 4 or 8": the divisors of n, for messages.
std::string divisors_of(int64_t n) {
  std::string out;
  std::vector<int64_t> ds;
  for (int64_t d = 1; d <= n; ++d)
    if (n % d == 0) ds.push_back(d);
  for (size_t i = 0; i < ds.size(); ++i) out += cat(i == 0 ? "" : i + 1 == ds.size() ? " or " : ", ", ds[i]);
  return out;
}
}  // namespace

int64_t expert_group_check(const ModelConfig& c, int tp_size, int ep_size) {
  const int64_t group = int64_t{tp_size} * ep_size;
  if (!c.moe.enabled()) {
    STRATA_CHECK_KIND(ErrorKind::kConfig, ep_size == 1, "expert parallel size ", ep_size, " for ", c.arch,
                      ", a model without experts; set parallel.expert to 1");
    return group;
  }
  STRATA_CHECK_KIND(ErrorKind::kConfig, c.moe.n_experts % group == 0, "the ", c.moe.n_experts,
                    " experts of each layer do not split evenly over tensor x expert = ", tp_size, " x ", ep_size,
                    " = ", group, " ranks; choose tensor x expert among ", divisors_of(c.moe.n_experts));
  STRATA_CHECK_KIND(ErrorKind::kConfig, c.moe.shared_ffn % group == 0, "the shared expert's ", c.moe.shared_ffn,
                    " columns do not split over tensor x expert = ", group, " ranks; choose tensor x expert among ",
                    divisors_of(std::gcd(c.moe.n_experts, c.moe.shared_ffn)));
  return group;
}

ShardSpec ShardSpec::make(const ModelConfig& c, int tp_rank, int tp_size, int64_t layer_begin, int64_t layer_end,
                          int ep_rank, int ep_size) {
  STRATA_CHECK_KIND(ErrorKind::kConfig, ep_size >= 1 && ep_rank >= 0 && ep_rank < ep_size, "expert rank ", ep_rank,
                    " outside a group of ", ep_size);
  const int64_t group = expert_group_check(c, tp_size, ep_size);
  STRATA_CHECK_KIND(ErrorKind::kConfig, tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "tensor rank ", tp_rank,
                    " outside a group of ", tp_size);
  STRATA_CHECK_KIND(ErrorKind::kConfig, c.n_heads % tp_size == 0, "tensor parallel size ", tp_size,
                    " does not divide the ", c.n_heads, " attention heads; choose a divisor of ", c.n_heads);
  STRATA_CHECK_KIND(ErrorKind::kConfig,
                    tp_size <= c.n_kv_heads ? c.n_kv_heads % tp_size == 0 : tp_size % c.n_kv_heads == 0,
                    "tensor parallel size ", tp_size, " does not fit the ", c.n_kv_heads,
                    " KV heads: TP must divide the KV heads, or (when TP exceeds them) be a multiple of them so "
                    "each KV head is replicated on TP / n_kv_heads ranks");
  STRATA_CHECK_KIND(ErrorKind::kConfig, c.ffn % tp_size == 0, "tensor parallel size ", tp_size,
                    " does not divide the FFN size ", c.ffn);
  STRATA_CHECK_KIND(ErrorKind::kConfig, 0 <= layer_begin && layer_begin < layer_end && layer_end <= c.n_layers,
                    "layers [", layer_begin, ", ", layer_end, ") are not a range inside the model's ", c.n_layers,
                    " layers");
  ShardSpec s;
  s.tp_rank = tp_rank;
  s.tp_size = tp_size;
  s.layer_begin = layer_begin;
  s.layer_end = layer_end;
  s.first_stage = layer_begin == 0;
  s.last_stage = layer_end == c.n_layers;
  s.q_heads = c.n_heads / tp_size;
  s.q_head_begin = tp_rank * s.q_heads;
  if (tp_size <= c.n_kv_heads) {
    s.kv_heads = c.n_kv_heads / tp_size;
    s.kv_head_begin = tp_rank * s.kv_heads;
  } else {
    s.kv_heads = 1;
    s.kv_head_begin = tp_rank / (tp_size / c.n_kv_heads);
  }
  s.ffn_count = c.ffn / tp_size;
  s.ffn_begin = tp_rank * s.ffn_count;
  s.vocab_shard = (c.vocab_size + tp_size - 1) / tp_size;
  s.vocab_begin = std::min<int64_t>(c.vocab_size, tp_rank * s.vocab_shard);
  s.vocab_count = std::min<int64_t>(c.vocab_size, s.vocab_begin + s.vocab_shard) - s.vocab_begin;
  s.ep_rank = ep_rank;
  s.ep_size = ep_size;
  if (c.moe.enabled()) {
    s.expert_count = c.moe.n_experts / group;
    s.expert_begin = s.expert_group_rank() * s.expert_count;
    s.shared_count = c.moe.shared_ffn / group;
    s.shared_begin = s.expert_group_rank() * s.shared_count;
  }
  return s;
}

}  // namespace strata
