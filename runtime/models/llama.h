// runtime/models/llama.h: the Llama-family decoder (llama, mistral, qwen2) for one pipeline stage and
// one tensor-parallel rank: RMSNorm, RoPE, GQA attention over the paged KV cache, SwiGLU MLP,
// column-parallel QKV/gate/up, row-parallel output/down with one all-reduce each, vocab-parallel
// embedding and LM head. Backend-agnostic: it only calls Backend and Collective.
#pragma once
#include <array>
#include <map>
#include <memory>
#include <span>
#include <unordered_map>
#include <utility>

#include "runtime/backend.h"
#include "runtime/collective.h"
#include "runtime/kv_cache.h"
#include "runtime/models/moe.h"
#include "runtime/shard_spec.h"
#include "runtime/step.h"
#include "runtime/weights.h"

namespace strata {

// Rows that replace the token embeddings at given prompt positions: a LLaVA image's features at its
// placeholder tokens. The first stage applies it after the embedding (and its TP all-reduce) to the
// tokens of a one-sequence step whose positions it lists.
struct EmbeddingSplice {
  Tensor rows;                     // [N, hidden] on the backend, in the activation dtype
  std::vector<int32_t> positions;  // [N] ascending prompt positions the rows replace, in row order
};

class LlamaModel {
 public:
  LlamaModel(const ModelConfig& config, const ShardSpec& spec, Backend& backend, WeightSource& weights,
             Collective& tp, KvCache& kv_cache);

  // Time this stage spent blocked on tensor-parallel all-reduces (the communication compute did not
  // hide), and how many it ran; for benchmark reports.
  struct Timings {
    double comm_wait_seconds = 0;
    int64_t all_reduces = 0;
    double graph_device_seconds = 0;  // device time of recorded decode steps (forward and LM head)
    int64_t graph_replays = 0;
  };

  const ModelConfig& config() const { return config_; }
  // With TP, the row groups of each step (overlap_row_groups in runtime/collective.h).
  void set_overlap_chunks(int chunks, int min_tokens) {
    overlap_chunks_ = chunks < 1 ? 1 : chunks;
    overlap_min_tokens_ = min_tokens < 1 ? 1 : min_tokens;
  }
  const Timings& timings() const { return timings_; }
  // Mixture-of-experts layers sum their partial outputs over the stage's expert group (tp x ep ranks,
  // ShardSpec); without expert parallelism that is the TP group, the default.
  void set_expert_group(Collective& group);
  // Tokens routed to each expert so far, over this stage's layers (device-routed layers' counts read back
  // now: call it between steps, not per layer).
  ExpertLoad expert_load() const { return expert_load_.read(backend_); }
  bool expert_load_on_device() const { return expert_load_.device.defined(); }
  // The expert cache's hits and misses when this stage's experts are offloaded (WeightSource).
  ExpertCacheStats expert_cache_stats() const { return weights_.expert_cache_stats(); }
  const ShardSpec& spec() const { return spec_; }

  // Until cleared (null), steps splice `splice` into the embeddings of the positions it lists; the caller
  // keeps it alive. Steps that reach those positions must hold one sequence.
  void set_embedding_splice(const EmbeddingSplice* splice) { splice_ = splice; }
  // Splices by sequence (StepBatch::seq_ids): the serving Engine's image features of each request, in
  // steps of any number of sequences. The caller keeps the map alive and unchanged while a step runs.
  void set_sequence_splices(const std::unordered_map<int32_t, EmbeddingSplice>* by_seq) { seq_splices_ = by_seq; }

  // Runs this stage's layers over the step. On the first stage `hidden` is produced from the tokens;
  // on later stages it holds the previous stage's output [T, hidden] (backend tensor) on entry.
  // On exit it holds this stage's output.
  void forward(const StepBatch& step, Tensor& hidden);
  // Last stage: logits [logit_rows, vocab] (f32, host), gathered over the TP group.
  Tensor logits(const StepBatch& step, const Tensor& hidden);
  // Whether steps sample where the logits are (Backend::sample) instead of on the host: the same on every
  // rank of the replica. Under tensor parallelism the vocabulary shards are gathered on the backend,
  // which needs equal shards (a vocabulary that the TP size divides).
  bool samples_on_backend() const { return tp_.size() == 1 || config_.vocab_size % tp_.size() == 0; }
  bool can_sample() const { return spec_.last_stage && samples_on_backend(); }
  // Last stage with can_sample(): one token per logit row, drawn on the backend (every TP rank draws
  // the same tokens from the same gathered logits).
  void sample(const StepBatch& step, const Tensor& hidden, std::span<const SampleRow> rows, std::span<int32_t> tokens,
              std::span<float> logprobs);
  // The whole step (forward, LM head, sampling) from a recorded graph (Backend::capture) when it is a
  // plain decode step (one token per sequence, every row sampled) on a single-stage, single-rank replica
  // with resident weights (MoE layers: where Backend::moe_routed took every layer of the warm-up); returns
  // false, having done nothing, otherwise. The step is padded to a batch bucket and its block tables to a
  // power-of-two width; each (bucket, width) runs once uncaptured, is recorded the second time, and replays
  // from then on.
  bool sample_recorded(const StepBatch& step, std::span<const SampleRow> rows, std::span<int32_t> tokens,
                       std::span<float> logprobs);

 private:
  // A step's inputs on the backend: token ids and the attention metadata.
  struct DeviceStep {
    Tensor ids;
    AttentionBatch batch;
    int64_t real_tokens = 0;  // the step's own rows; the rest pad a recorded shape
  };
  // Uploads the step padded to n_tok tokens, n_seq sequences and block tables `width` wide (all at
  // least the step's own), into `into` (i32, large enough) or a new buffer when null.
  DeviceStep upload_step(const StepBatch& step, int64_t n_tok, int64_t n_seq, int64_t width, const Tensor* into);
  void forward_device(const DeviceStep& d, Tensor& hidden);
  // The attention output projection and MLP of one layer, chunked so all-reduces overlap compute.
  // Returns true when it left the residual add of mlp_out into hidden to the caller (allowed by
  // may_defer_add, done only without TP).
  // gate_up holds 2 x [T, F] (separate gate and up, or one [T, 2F] fused result); ffn_act is allocated on
  // first use for the fused form's SwiGLU output.
  bool project_and_mlp(const LayerWeights& w, Tensor& hidden, const Tensor& att, Tensor& h, Tensor& attn_out,
                       Tensor& mlp_out, Tensor& gate_up, Tensor& ffn_act, bool may_defer_add);
  // project_and_mlp for a layer of experts: output projection, FFN norm, moe_ffn, the expert group's sum.
  void project_and_experts(const LayerWeights& w, Tensor& hidden, const Tensor& att, Tensor& h, Tensor& attn_out,
                           Tensor& mlp_out);
  void wait_reduce(CollectiveWork& work);
  // Row groups of a step's tokens (overlap_row_groups): group c's all-reduce runs on the communication
  // stream while group c + 1 computes. Attention itself needs every token's K/V, so the groups start at the
  // output projection.
  struct RowGroups {
    RowGroups(int64_t tokens, int64_t groups) : begin(static_cast<size_t>(groups) + 1) {
      for (int64_t c = 0; c <= groups; ++c) begin[static_cast<size_t>(c)] = tokens * c / groups;
    }
    int64_t size() const { return static_cast<int64_t>(begin.size()) - 1; }
    int64_t first(int64_t c) const { return begin[static_cast<size_t>(c)]; }
    int64_t count(int64_t c) const { return begin[static_cast<size_t>(c) + 1] - begin[static_cast<size_t>(c)]; }
    Tensor of(const Tensor& t, int64_t c) const { return t.rows(first(c), count(c)); }
    std::vector<int64_t> begin;
  };
  // The output projection of each row group, its tensor-parallel all-reduce started (handles; none at tp 1).
  std::vector<std::unique_ptr<CollectiveWork>> project_attention(const LayerWeights& w, const Tensor& att,
                                                                 Tensor& attn_out, const RowGroups& groups);
  // A run of step rows whose embeddings come from consecutive rows of one splice.
  struct SpliceRun {
    int64_t row = 0;  // first step row
    const Tensor* source = nullptr;
    int64_t from = 0;  // first source row
    int64_t count = 0;
  };
  // The runs of the step's tokens at the positions of splice_ (one-sequence steps) or of their
  // sequence's splice in seq_splices_.
  std::vector<SpliceRun> splice_runs(const StepBatch& step) const;
  // A view of `shape` starting `offset` elements into `buffer`.
  static Tensor part(const Tensor& buffer, int64_t offset, const Shape& shape);
  // Logits of the step's logit rows for this rank's vocabulary shard [R, vocab_count], f32 on the backend.
  Tensor local_logits(const StepBatch& step, const Tensor& hidden);
  // The TP group's vocabulary shards [R, shard] gathered into whole rows [R, vocab] on the backend.
  Tensor gather_vocab(const Tensor& local);
  // The same into `out` with the row order of vocab_gather_order(R) already on the backend (recordable).
  void gather_vocab_into(const Tensor& local, const Tensor& order, Tensor& out);
  const Tensor& vocab_gather_order(int64_t rows);

  ModelConfig config_;
  ShardSpec spec_;
  const EmbeddingSplice* splice_ = nullptr;
  const std::unordered_map<int32_t, EmbeddingSplice>* seq_splices_ = nullptr;
  std::vector<SpliceRun> step_splice_;  // splice_runs of the step forward() is running
  Backend& backend_;
  WeightSource& weights_;
  Collective& tp_;
  Collective* expert_group_;
  ExpertLoad expert_load_;
  KvCache& kv_;
  RopeParams rope_;
  int overlap_chunks_ = 1;
  int overlap_min_tokens_ = 1;  // set with overlap_chunks_ (which starts at 1: no split)
  Timings timings_;
  // Steps of up to this many tokens run the fused QKV stack as one matmul and split its rows: they are
  // bound by streaming the weights, and one 12288-wide product streams faster than three 4096-wide ones
  // (cuBLAS on an H200 at 16 rows: 30 us against 3 x 16 us). Longer steps are compute-bound: no gain to pay
  // a copy for.
  static constexpr int64_t kFusedQkvMaxTokens = 64;

  // Recorded decode steps by (batch bucket, block-table width); they read their inputs from
  // recorded_inputs_ and write logits into recorded_logits_, so growing either drops them all.
  struct RecordedDecode {
    std::unique_ptr<OpGraph> graph;
    bool warmed = false;
    bool host_routed = false;  // its warm-up routed a MoE layer on the host (a sync): never recorded
  };
  std::map<std::pair<int64_t, int64_t>, RecordedDecode> recorded_;
  std::string record_declined_;  // the last reason a decode step was not recorded (logged when it changes)
  Tensor recorded_inputs_;
  Tensor recorded_logits_;
  std::map<int64_t, Tensor> vocab_order_;  // TP: the vocabulary gather's row order per row count
};

}  // namespace strata
