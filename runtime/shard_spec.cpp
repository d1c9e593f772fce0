// runtime/shard_spec.cpp: Megatron-style split of heads, FFN and vocabulary over a TP group.
#include "runtime/shard_spec.h"

#include <algorithm>

#include "runtime/error.h"

namespace strata {

ShardSpec ShardSpec::make(const ModelConfig& c, int tp_rank, int tp_size, int64_t layer_begin, int64_t layer_end) {
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
  return s;
}

}  // namespace strata
