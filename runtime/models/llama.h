// runtime/models/llama.h: the Llama-family decoder (llama, mistral, qwen2) for one pipeline stage and
// one tensor-parallel rank: RMSNorm, RoPE, GQA attention over the paged KV cache, SwiGLU MLP,
// column-parallel QKV/gate/up, row-parallel output/down with one all-reduce each, vocab-parallel
// embedding and LM head. Backend-agnostic: it only calls Backend and Collective.
#pragma once
#include "runtime/backend.h"
#include "runtime/collective.h"
#include "runtime/kv_cache.h"
#include "runtime/shard_spec.h"
#include "runtime/step.h"
#include "runtime/weights.h"

namespace strata {

class LlamaModel {
 public:
  LlamaModel(const ModelConfig& config, const ShardSpec& spec, Backend& backend, WeightSource& weights,
             Collective& tp, KvCache& kv_cache);

  // Time this stage spent blocked on tensor-parallel all-reduces (the communication compute did not
  // hide), and how many it ran; for benchmark reports.
  struct Timings {
    double comm_wait_seconds = 0;
    int64_t all_reduces = 0;
  };

  const ModelConfig& config() const { return config_; }
  // With TP, split each step's tokens into `chunks` row groups so one group's all-reduce runs while
  // the next group computes (comm.overlap_chunks in the plan); 1 turns overlap off.
  void set_overlap_chunks(int chunks) { overlap_chunks_ = chunks < 1 ? 1 : chunks; }
  const Timings& timings() const { return timings_; }
  const ShardSpec& spec() const { return spec_; }

  // Runs this stage's layers over the step. On the first stage `hidden` is produced from the tokens;
  // on later stages it holds the previous stage's output [T, hidden] (backend tensor) on entry.
  // On exit it holds this stage's output.
  void forward(const StepBatch& step, Tensor& hidden);
  // Last stage: logits [logit_rows, vocab] (f32, host), gathered over the TP group.
  Tensor logits(const StepBatch& step, const Tensor& hidden);

 private:
  Tensor upload_i32(const std::vector<int32_t>& values);
  // The attention output projection and MLP of one layer, chunked so all-reduces overlap compute.
  void project_and_mlp(const LayerWeights& w, Tensor& hidden, const Tensor& att, Tensor& h, Tensor& attn_out,
                       Tensor& mlp_out, Tensor& gate, Tensor& up);
  void wait_reduce(CollectiveWork& work);
  // A view of `shape` starting `offset` elements into `buffer`.
  static Tensor part(const Tensor& buffer, int64_t offset, const Shape& shape);
  AttentionBatch attention_batch(const StepBatch& step);

  ModelConfig config_;
  ShardSpec spec_;
  Backend& backend_;
  WeightSource& weights_;
  Collective& tp_;
  KvCache& kv_;
  RopeParams rope_;
  int overlap_chunks_ = 1;
  Timings timings_;
};

}  // namespace strata
