// runtime/shard_spec.h: which part of the model one rank holds: its pipeline stage's layers and its
// tensor-parallel slice of heads, FFN columns and vocabulary. parallel/ computes the same split for
// plans; the launcher turns a rank's partition into this struct.
#pragma once
#include <cstdint>

#include "runtime/model_config.h"

namespace strata {

// Checks that tensor x expert ranks split the experts (and the shared expert) evenly; returns the group size
// and throws kConfig naming the sizes that work. Models without experts need ep_size 1.
int64_t expert_group_check(const ModelConfig& config, int tp_size, int ep_size);

struct ShardSpec {
  int tp_rank = 0;
  int tp_size = 1;
  int64_t layer_begin = 0;  // this stage's layers [layer_begin, layer_end)
  int64_t layer_end = 0;
  bool first_stage = true;  // holds the embedding
  bool last_stage = true;   // holds the final norm and LM head
  int64_t q_head_begin = 0, q_heads = 0;
  int64_t kv_head_begin = 0, kv_heads = 0;  // with TP > n_kv_heads one KV head is replicated per rank
  int64_t ffn_begin = 0, ffn_count = 0;
  int64_t vocab_begin = 0, vocab_count = 0;  // rows held (the last rank may hold fewer)
  int64_t vocab_shard = 0;                   // padded rows per rank: ceil(vocab / tp)
  // Mixture-of-experts layers run over the stage's expert group, its tp x ep ranks (index
  // ep_rank * tp_size + tp_rank): each holds whole routed experts [expert_begin, +expert_count) and a
  // column slice of the shared expert, and their partial outputs are summed over the group.
  int ep_rank = 0;
  int ep_size = 1;
  int64_t expert_begin = 0, expert_count = 0;
  int64_t shared_begin = 0, shared_count = 0;

  int64_t n_layers() const { return layer_end - layer_begin; }
  // Tensor-parallel split of `config` for rank tp_rank of tp_size over layers [begin, end).
  // Throws kConfig when TP does not divide the heads (see the KV replication rule in the message).
  // With experts, ep_size expert-parallel copies of the TP group share the experts (see above); throws
  // kConfig naming the sizes that work when tp_size * ep_size does not divide them.
  static ShardSpec make(const ModelConfig& config, int tp_rank, int tp_size, int64_t layer_begin, int64_t layer_end,
                        int ep_rank = 0, int ep_size = 1);
  int expert_group_size() const { return tp_size * ep_size; }
  int expert_group_rank() const { return ep_rank * tp_size + tp_rank; }
};

}  // namespace strata
