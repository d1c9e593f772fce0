// runtime/models/llama.cpp: one stage of the Llama-family decoder (see llama.h).
#include "runtime/models/llama.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata {

LlamaModel::LlamaModel(const ModelConfig& config, const ShardSpec& spec, Backend& backend, WeightSource& weights,
                       Collective& tp, KvCache& kv_cache)
    : config_(config), spec_(spec), backend_(backend), weights_(weights), tp_(tp), expert_group_(&tp), kv_(kv_cache) {
  rope_.theta = config.rope_theta;
  rope_.scaling = config.rope_scaling;
  rope_.style = config.rope_style;
  rope_.rot_dim = config.head_dim;
  STRATA_CHECK_KIND(ErrorKind::kInternal, tp.size() == spec.tp_size, "TP group of ", tp.size(),
                    " ranks for a shard of ", spec.tp_size);
  expert_load_.tokens.assign(static_cast<size_t>(config.moe.n_experts), 0);
}

void LlamaModel::set_expert_group(Collective& group) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, group.size() == spec_.expert_group_size(), "expert group of ", group.size(),
                    " ranks for a shard of tensor x expert = ", spec_.tp_size, " x ", spec_.ep_size);
  expert_group_ = &group;
}

LlamaModel::DeviceStep LlamaModel::upload_step(const StepBatch& step, int64_t n_tok, int64_t n_seq, int64_t width,
                                               const Tensor* into) {
  const int64_t T = step.n_tokens(), S = step.n_seqs, bs = kv_.shape().block_size;
  STRATA_CHECK_KIND(ErrorKind::kInternal, T <= n_tok && S <= n_seq && step.max_blocks <= width,
                    "step of ", T, " tokens, ", S, " sequences, ", step.max_blocks, " blocks in a ", n_tok, "x", n_seq,
                    "x", width, " layout");
  // One i32 buffer, one upload: ids, positions, KV slots, sequence of each token [n_tok each], then the
  // block tables [n_seq, width]. Rows past the step's pad a recorded shape: they write no KV (slot -1)
  // and attend to position 0 of block 0, and nobody reads their outputs.
  const int64_t words = 4 * n_tok + n_seq * width;
  Tensor host = Tensor::empty({words}, DType::kI32);
  int32_t* w = host.data<int32_t>();
  std::fill(w, w + words, 0);
  int32_t *ids = w, *pos = w + n_tok, *slots = w + 2 * n_tok, *seq = w + 3 * n_tok, *tables = w + 4 * n_tok;
  int64_t max_pos = 0;
  for (int64_t t = 0; t < n_tok; ++t) {
    if (t >= T) {
      slots[t] = -1;
      seq[t] = static_cast<int32_t>(std::min(t, n_seq - 1));
      continue;
    }
    const size_t i = static_cast<size_t>(t);
    const int64_t p = step.positions[i];
    const int64_t block = step.block_tables[static_cast<size_t>(step.token_seq[i] * step.max_blocks + p / bs)];
    STRATA_CHECK_KIND(ErrorKind::kInternal, block >= 0, "no KV block for position ", p);
    ids[t] = step.tokens[i];
    pos[t] = static_cast<int32_t>(p);
    slots[t] = static_cast<int32_t>(block * bs + p % bs);
    seq[t] = step.token_seq[i];
    max_pos = std::max(max_pos, p + 1);
  }
  // Each of the n_seq sequences (padding included) exactly once: the backend may then fold the cache write
  // into the attention (Backend::rope_kv_attention).
  std::vector<int32_t> seen(static_cast<size_t>(n_seq), 0);
  bool one_token_per_seq = n_tok == n_seq;
  for (int64_t t = 0; t < n_tok && one_token_per_seq; ++t)
    one_token_per_seq = seq[t] >= 0 && seq[t] < n_seq && seen[static_cast<size_t>(seq[t])]++ == 0;
  for (int64_t r = 0; r < n_seq; ++r) {
    for (int64_t c = 0; c < width; ++c) {
      int32_t v = -1;
      if (r < S && c < step.max_blocks) v = step.block_tables[static_cast<size_t>(r * step.max_blocks + c)];
      else if (r >= S && c == 0) v = 0;
      tables[r * width + c] = v;
    }
  }
  Tensor dev = host;
  if (into != nullptr) {
    dev = part(*into, 0, {words});
    backend_.copy(host, dev);
  } else if (backend_.device() != Device::kCpu) {
    dev = backend_.alloc({words}, DType::kI32);
    backend_.copy(host, dev);
  }
  DeviceStep d;
  d.ids = part(dev, 0, {n_tok});
  AttentionBatch& b = d.batch;
  b.positions = part(dev, n_tok, {n_tok});
  b.slots = part(dev, 2 * n_tok, {n_tok});
  b.token_seq = part(dev, 3 * n_tok, {n_tok});
  b.block_tables = part(dev, 4 * n_tok, {n_seq, width});
  b.n_tokens = n_tok;
  b.n_seqs = n_seq;
  b.max_blocks = width;
  b.block_size = bs;
  b.max_position = max_pos;
  b.one_token_per_seq = one_token_per_seq;
  d.real_tokens = T;
  return d;
}

void LlamaModel::forward(const StepBatch& step, Tensor& hidden) {
  step_splice_ = spec_.first_stage ? splice_runs(step) : std::vector<SpliceRun>{};
  forward_device(upload_step(step, step.n_tokens(), step.n_seqs, step.max_blocks, nullptr), hidden);
  step_splice_.clear();
}

std::vector<LlamaModel::SpliceRun> LlamaModel::splice_runs(const StepBatch& step) const {
  std::vector<SpliceRun> runs;
  if (splice_ == nullptr && (seq_splices_ == nullptr || seq_splices_->empty())) return runs;
  for (int64_t t = 0; t < step.n_tokens(); ++t) {
    const EmbeddingSplice* splice = splice_;
    if (splice == nullptr) {
      const int32_t seq = step.seq_ids[static_cast<size_t>(step.token_seq[static_cast<size_t>(t)])];
      const auto found = seq_splices_->find(seq);
      if (found == seq_splices_->end()) continue;
      splice = &found->second;
    }
    const std::vector<int32_t>& at = splice->positions;
    const int32_t pos = step.positions[static_cast<size_t>(t)];
    const auto it = std::lower_bound(at.begin(), at.end(), pos);
    if (it == at.end() || *it != pos) continue;
    STRATA_CHECK(splice != splice_ || step.n_seqs == 1, "an embedding splice (image features) needs a step of one "
                 "sequence; this one has ", step.n_seqs);
    const int64_t row = it - at.begin();
    SpliceRun* last = runs.empty() ? nullptr : &runs.back();
    if (last != nullptr && last->source == &splice->rows && last->row + last->count == t &&
        last->from + last->count == row)
      ++last->count;
    else
      runs.push_back({t, &splice->rows, row, 1});
  }
  return runs;
}

void LlamaModel::forward_device(const DeviceStep& d, Tensor& hidden) {
  const AttentionBatch& batch = d.batch;
  const int64_t T = batch.n_tokens, D = config_.hidden, hd = config_.head_dim;
  const int64_t qh = spec_.q_heads, kvh = spec_.kv_heads, F = spec_.ffn_count;
  const DType act = backend_.activation_dtype();
  if (spec_.first_stage) {
    hidden = backend_.alloc({T, D}, act);
    backend_.embed(weights_.globals().embed, d.ids, spec_.vocab_begin, hidden);
    if (tp_.size() > 1) tp_.all_reduce_sum(hidden);
    for (const SpliceRun& run : step_splice_) {
      Tensor dst = hidden.rows(run.row, run.count);
      backend_.copy(run.source->rows(run.from, run.count), dst);
    }
  }
  STRATA_CHECK_KIND(ErrorKind::kInternal, hidden.numel() == T * D, "stage input ", shape_str(hidden.shape()),
                    " is not [", T, ", ", D, "]");
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));

  Tensor h = backend_.alloc({T, D}, act);
  // q, k, v (and gate, up) are consecutive regions of one buffer: with one token a fused weight
  // stack fills all of them in one matmul, with more each gets its own.
  const int64_t nq = qh * hd, nk = kvh * hd;
  Tensor qkv = backend_.alloc({T * (nq + 2 * nk)}, act);
  Tensor q = part(qkv, 0, {T, qh, hd}), k = part(qkv, T * nq, {T, kvh, hd}), v = part(qkv, T * (nq + nk), {T, kvh, hd});
  Tensor qkv_rows;  // the fused QKV product of a multi-token step, allocated on first use
  Tensor gate_up = backend_.alloc({2 * T * F}, act);
  Tensor ffn_act;  // SwiGLU output of fused gate/up projections, allocated on first use
  Tensor att = backend_.alloc({T, qh, hd}, act);
  Tensor proj = backend_.alloc({T, D}, act);
  Tensor proj2 = backend_.alloc({T, D}, act);
  Tensor q2 = q.reshape({T, nq}), k2 = k.reshape({T, nk}), v2 = v.reshape({T, nk});
  Tensor att2 = att.reshape({T, nq});
  const bool one_token = T == 1;

  // Without TP the MLP output's residual add waits for the next layer, whose norm then adds it (one
  // fused kernel instead of two launches).
  bool mlp_pending = false;
  expert_load_.mask = batch.slots;  // device-routed layers count real tokens only (padding has slot -1)
  expert_load_.real_tokens = d.real_tokens;  // and host-routed ones the rows before the padding
  for (int64_t l = spec_.layer_begin; l < spec_.layer_end; ++l) {
    const LayerWeights& w = weights_.acquire(l);
    const int64_t local = l - spec_.layer_begin;
    if (mlp_pending) backend_.add_rmsnorm(hidden, proj2, w.attn_norm, config_.rms_eps, h);
    else backend_.rmsnorm(hidden, w.attn_norm, config_.rms_eps, h);
    const auto project = [&](const Tensor& wt, const Tensor& bias, Tensor& out) {
      backend_.matmul(h, wt, bias.defined() ? &bias : nullptr, out);
    };
    if (one_token && w.wqkv.defined()) {
      Tensor all = qkv.reshape({1, nq + 2 * nk});
      project(w.wqkv, w.bqkv, all);
    } else if (T <= kFusedQkvMaxTokens && w.wqkv.defined()) {
      // Rows of the fused product interleave each token's q, k and v: one matmul, then one split.
      if (!qkv_rows.defined()) qkv_rows = backend_.alloc({T, nq + 2 * nk}, act);
      project(w.wqkv, w.bqkv, qkv_rows);
      backend_.split_columns(qkv_rows, {&q2, &k2, &v2});
    } else {
      project(w.wq, w.bq, q2);
      project(w.wk, w.bk, k2);
      project(w.wv, w.bv, v2);
    }
    if (w.q_norm.defined()) {  // Qwen3: RMSNorm over each head, in place (rows are read before written)
      Tensor qh_rows = q.reshape({T * qh, hd}), kh_rows = k.reshape({T * kvh, hd});
      backend_.rmsnorm(qh_rows, w.q_norm, config_.rms_eps, qh_rows);
      backend_.rmsnorm(kh_rows, w.k_norm, config_.rms_eps, kh_rows);
    }
    if (!backend_.rope_kv_attention(q, k, v, batch, rope_, kv_.k(local), kv_.v(local), scale, att)) {
      backend_.rope_kv_write(q, k, v, batch.positions, rope_, batch.slots, kv_.k(local), kv_.v(local));
      backend_.attention(q, kv_.k(local), kv_.v(local), batch, scale, att);
    }
    mlp_pending = project_and_mlp(w, hidden, att2, h, proj, proj2, gate_up, ffn_act, /*may_defer_add=*/true);
    weights_.release(l);
  }
  if (mlp_pending) backend_.add(hidden, proj2);
  expert_load_.mask = Tensor();
  expert_load_.real_tokens = -1;
}

Tensor LlamaModel::part(const Tensor& buffer, int64_t offset, const Shape& shape) {
  auto* base = static_cast<uint8_t*>(const_cast<void*>(buffer.raw()));
  return Tensor::view(base + dtype_bytes(buffer.dtype(), offset), shape, buffer.dtype(), buffer.device(),
                      buffer.keepalive());
}

void LlamaModel::wait_reduce(CollectiveWork& work) {
  const auto t0 = std::chrono::steady_clock::now();
  work.wait();
  timings_.comm_wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::unique_ptr<CollectiveWork>> LlamaModel::project_attention(const LayerWeights& w, const Tensor& att,
                                                                          Tensor& attn_out, const RowGroups& groups) {
  std::vector<std::unique_ptr<CollectiveWork>> work(static_cast<size_t>(groups.size()));
  for (int64_t c = 0; c < groups.size(); ++c) {
    Tensor out = groups.of(attn_out, c);
    backend_.matmul(groups.of(att, c), w.wo, nullptr, out);
    if (tp_.size() > 1) {
      work[static_cast<size_t>(c)] = tp_.all_reduce_sum_async(out);
      ++timings_.all_reduces;
    }
  }
  return work;
}

bool LlamaModel::project_and_mlp(const LayerWeights& w, Tensor& hidden, const Tensor& att, Tensor& h,
                                 Tensor& attn_out, Tensor& mlp_out, Tensor& gate_up, Tensor& ffn_act,
                                 bool may_defer_add) {
  if (w.has_experts()) {
    project_and_experts(w, hidden, att, h, attn_out, mlp_out);
    return false;
  }
  const int64_t T = hidden.dim(0), F = spec_.ffn_count;
  Tensor gate = part(gate_up, 0, {T, F}), up = part(gate_up, T * F, {T, F});
  const bool reduce = tp_.size() > 1;
  const RowGroups groups(T, reduce ? overlap_row_groups(T, overlap_chunks_, overlap_min_tokens_) : 1);
  const int64_t chunks = groups.size();
  const auto rows = [&](const Tensor& t, int64_t c) { return groups.of(t, c); };
  std::vector<std::unique_ptr<CollectiveWork>> attn_work = project_attention(w, att, attn_out, groups);
  std::vector<std::unique_ptr<CollectiveWork>> mlp_work(static_cast<size_t>(chunks));
  for (int64_t c = 0; c < chunks; ++c) {
    if (reduce) wait_reduce(*attn_work[static_cast<size_t>(c)]);
    Tensor hid = rows(hidden, c), hc = rows(h, c), out = rows(mlp_out, c);
    backend_.add_rmsnorm(hid, rows(attn_out, c), w.ffn_norm, config_.rms_eps, hc);
    Tensor ffn_in;  // what the down projection reads
    if (w.w_gate_up.defined()) {
      // One GEMM over [w_gate; w_up] (a wider N streams and tiles better than two), its rows holding the
      // token's gate then its up; the SwiGLU reads that layout. Backends may form the SwiGLU in the
      // product's epilogue (the decode GEMV) and never store the [n, 2F] product.
      if (!ffn_act.defined()) ffn_act = backend_.alloc({T, F}, backend_.activation_dtype());
      ffn_in = rows(ffn_act, c);
      if (!backend_.matmul_swiglu(hc, w.w_gate_up, ffn_in)) {
        const int64_t b = groups.first(c), n = groups.count(c);
        Tensor gu = part(gate_up, b * 2 * F, {n, 2 * F});
        backend_.matmul(hc, w.w_gate_up, nullptr, gu);
        backend_.swiglu(gu, ffn_in);
      }
    } else {
      Tensor g = rows(gate, c), u = rows(up, c);
      backend_.matmul(hc, w.w_gate, nullptr, g);
      backend_.matmul(hc, w.w_up, nullptr, u);
      backend_.silu_mul(g, u, g);
      ffn_in = g;
    }
    backend_.matmul(ffn_in, w.w_down, nullptr, out);
    if (reduce) {
      mlp_work[static_cast<size_t>(c)] = tp_.all_reduce_sum_async(out);
      ++timings_.all_reduces;
    }
  }
  if (!reduce && may_defer_add) return true;  // the caller adds mlp_out into hidden
  for (int64_t c = 0; c < chunks; ++c) {
    if (reduce) wait_reduce(*mlp_work[static_cast<size_t>(c)]);
    Tensor hid = rows(hidden, c);
    backend_.add(hid, rows(mlp_out, c));
  }
  return false;
}

void LlamaModel::project_and_experts(const LayerWeights& w, Tensor& hidden, const Tensor& att, Tensor& h,
                                     Tensor& attn_out, Tensor& mlp_out) {
  const int64_t T = hidden.dim(0);
  const bool tp_reduce = tp_.size() > 1, expert_reduce = expert_group_->size() > 1;
  // Row groups, as project_and_mlp's: chunk c's expert combine (the all-reduce over the expert group) runs
  // while chunk c+1 routes and runs its experts (and Qwen2-MoE's shared expert).
  const RowGroups groups(T, tp_reduce || expert_reduce ? overlap_row_groups(T, overlap_chunks_, overlap_min_tokens_) : 1);
  const int64_t chunks = groups.size();
  const auto rows = [&](const Tensor& t, int64_t c) { return groups.of(t, c); };
  std::vector<std::unique_ptr<CollectiveWork>> attn_work = project_attention(w, att, attn_out, groups);
  // A chunk counts its own rows: the step's count mask and real rows, cut to the chunk.
  const Tensor step_mask = expert_load_.mask;
  const int64_t step_real = expert_load_.real_tokens;
  std::vector<std::unique_ptr<CollectiveWork>> expert_work(static_cast<size_t>(chunks));
  for (int64_t c = 0; c < chunks; ++c) {
    if (tp_reduce) wait_reduce(*attn_work[static_cast<size_t>(c)]);
    Tensor hid = rows(hidden, c), hc = rows(h, c), out = rows(mlp_out, c);
    backend_.add_rmsnorm(hid, rows(attn_out, c), w.ffn_norm, config_.rms_eps, hc);
    if (chunks > 1) {
      expert_load_.mask = step_mask.defined() ? rows(step_mask, c) : Tensor();
      expert_load_.real_tokens =
          step_real < 0 ? -1 : std::clamp<int64_t>(step_real - groups.first(c), 0, groups.count(c));
    }
    moe_ffn(backend_, config_.moe, w, hc, out, &expert_load_);
    if (expert_reduce) {
      expert_work[static_cast<size_t>(c)] = expert_group_->all_reduce_sum_async(out);
      ++timings_.all_reduces;
    }
  }
  expert_load_.mask = step_mask;
  expert_load_.real_tokens = step_real;
  for (int64_t c = 0; c < chunks; ++c) {
    if (expert_reduce) wait_reduce(*expert_work[static_cast<size_t>(c)]);
    Tensor hid = rows(hidden, c);
    backend_.add(hid, rows(mlp_out, c));
  }
}

Tensor LlamaModel::local_logits(const StepBatch& step, const Tensor& hidden) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, spec_.last_stage, "logits requested from a stage without the LM head");
  const int64_t R = static_cast<int64_t>(step.logit_rows.size()), D = config_.hidden;
  const DType act = backend_.activation_dtype();
  Tensor rows;
  // Decode steps want every row's logits: use the hidden states as they are instead of gathering rows.
  bool all_rows = R == hidden.dim(0);
  for (int64_t r = 0; all_rows && r < R; ++r) all_rows = step.logit_rows[static_cast<size_t>(r)] == r;
  if (all_rows) {
    rows = hidden;
  } else {
    rows = backend_.alloc({R, D}, act);
    for (int64_t r = 0; r < R; ++r) {
      Tensor dst = rows.rows(r, 1);
      backend_.copy(hidden.rows(step.logit_rows[static_cast<size_t>(r)], 1), dst);
    }
  }
  Tensor normed = backend_.alloc({R, D}, act);
  backend_.rmsnorm(rows, weights_.globals().output_norm, config_.rms_eps, normed);
  Tensor out = backend_.alloc({R, spec_.vocab_count}, DType::kF32);
  if (spec_.vocab_count > 0) backend_.matmul(normed, weights_.globals().output, nullptr, out);
  return out;
}

void LlamaModel::sample(const StepBatch& step, const Tensor& hidden, std::span<const SampleRow> rows,
                        std::span<int32_t> tokens, std::span<float> logprobs) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, can_sample(), "sampling on a rank without the whole vocabulary");
  STRATA_CHECK_KIND(ErrorKind::kInternal, rows.size() == step.logit_rows.size() && tokens.size() == rows.size() &&
                        logprobs.size() == rows.size(),
                    "sample: ", step.logit_rows.size(), " logit rows but ", rows.size(), " sampling rows");
  Tensor logits = local_logits(step, hidden);
  if (tp_.size() > 1) logits = gather_vocab(logits);
  backend_.sample(logits, rows.data(), tokens.data(), logprobs.data());
}

const Tensor& LlamaModel::vocab_gather_order(int64_t R) {
  // Row r of the gathered logits is the blocks (p, r) side by side: viewed as [R * P, S] rows, row
  // r * P + p is block row p * R + r, a row gather (the embedding op) with these indices. Uploaded
  // once per row count, so neither a step nor a recording copies it again.
  Tensor& cached = vocab_order_[R];
  if (cached.defined()) return cached;
  const int64_t P = tp_.size();
  Tensor order = Tensor::empty({R * P}, DType::kI32);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t p = 0; p < P; ++p) order.data<int32_t>()[r * P + p] = static_cast<int32_t>(p * R + r);
  Tensor order_dev = backend_.alloc(order.shape(), DType::kI32);
  backend_.copy(order, order_dev);
  cached = order_dev;
  return cached;
}

void LlamaModel::gather_vocab_into(const Tensor& local, const Tensor& order, Tensor& out) {
  const int64_t R = local.dim(0), P = tp_.size(), S = spec_.vocab_shard;
  STRATA_CHECK_KIND(ErrorKind::kInternal, S * P == config_.vocab_size && local.dim(1) == S,
                    "gather_vocab: shards of ", local.dim(1), " do not tile the vocabulary of ", config_.vocab_size);
  Tensor blocks = backend_.alloc({P * R, S}, DType::kF32);
  tp_.all_gather(local, blocks);  // [rank][row][column]
  backend_.embed(blocks, order, 0, out);
}

Tensor LlamaModel::gather_vocab(const Tensor& local) {
  Tensor rows = backend_.alloc({local.dim(0), config_.vocab_size}, DType::kF32);
  gather_vocab_into(local, vocab_gather_order(local.dim(0)), rows);
  return rows;
}

namespace {
// Batch buckets of recorded decode steps: every size up to 8 would be too many graphs, so powers of two,
// then steps of 8, 16 and 32 (padding wastes at most 1/8 of a bucket's rows past 8).
int64_t decode_bucket(int64_t n) {
  if (n <= 8) {
    int64_t b = 1;
    while (b < n) b *= 2;
    return b;
  }
  const int64_t step = n <= 64 ? 8 : n <= 128 ? 16 : 32;
  return (n + step - 1) / step * step;
}
constexpr int64_t kMaxRecordedBatch = 256;
}  // namespace

bool LlamaModel::sample_recorded(const StepBatch& step, std::span<const SampleRow> rows, std::span<int32_t> tokens,
                                 std::span<float> logprobs) {
  // Tensor parallelism: the all-reduces and the vocabulary gather are recorded too, where the TP group
  // says its operations can be (Collective::recordable).
  // Mixture-of-experts layers are recordable where the backend routes them (Backend::moe_routed): a bucket
  // whose warm-up routed any on the host is not.
  const auto decline = [&](const char* why) {  // debug log, when the reason changes
    if (record_declined_ != why) LOG_DEBUG("decode steps not recorded as graphs: ", why);
    record_declined_ = why;
    return false;
  };
  if (!backend_.supports_capture()) return decline("the backend does not record");
  if (!spec_.first_stage || !spec_.last_stage) return decline("pipeline stages");
  if (!weights_.stays_resident()) return decline("weights are streamed (offload)");
  if (splice_ != nullptr || !splice_runs(step).empty()) return decline("image embeddings spliced in");
  if ((tp_.size() != 1 && !(samples_on_backend() && tp_.recordable())) ||
      (expert_group_ != &tp_ && expert_group_->size() > 1 && !expert_group_->recordable()))
    return decline("the tensor / expert group's collectives cannot be recorded");
  const int64_t T = step.n_tokens();
  if (T == 0 || T != step.n_seqs || T > kMaxRecordedBatch || static_cast<int64_t>(step.logit_rows.size()) != T ||
      static_cast<int64_t>(rows.size()) != T)
    return decline("not a decode step of one token per sequence (or past the largest bucket)");
  for (int64_t t = 0; t < T; ++t)
    if (step.token_seq[static_cast<size_t>(t)] != t || step.logit_rows[static_cast<size_t>(t)] != t)
      return decline("rows out of sequence order");

  const int64_t B = decode_bucket(T), V = config_.vocab_size, bs = kv_.shape().block_size;
  int64_t W = 4;
  while (W < step.max_blocks) W *= 2;
  if (const auto it = recorded_.find({B, W}); it != recorded_.end() && it->second.host_routed)
    return decline("a MoE layer routed on the host in the bucket's warm-up");
  const int64_t words = 4 * B + B * W;
  if (!recorded_inputs_.defined() || recorded_inputs_.numel() < words || recorded_logits_.dim(0) < B) {
    recorded_.clear();  // the graphs point into the buffers about to go
    recorded_inputs_ = Tensor();
    recorded_logits_ = Tensor();
    backend_.synchronize();
    recorded_inputs_ = backend_.alloc({std::max(words, 4 * 64 + 64 * int64_t{64})}, DType::kI32);
    recorded_logits_ = backend_.alloc({std::max<int64_t>(B, 8), V}, DType::kF32);
  }
  DeviceStep d = upload_step(step, B, B, W, &recorded_inputs_);
  d.batch.max_position = W * bs;  // the recorded split plan covers any context that fits the width
  Tensor logits = part(recorded_logits_, 0, {B, V});
  Tensor order;  // TP: the row order of the vocabulary gather, uploaded before any recording
  if (tp_.size() > 1) order = vocab_gather_order(B);
  const auto body = [&] {
    Tensor hidden;
    forward_device(d, hidden);
    Tensor normed = backend_.alloc(hidden.shape(), backend_.activation_dtype());
    backend_.rmsnorm(hidden, weights_.globals().output_norm, config_.rms_eps, normed);
    if (tp_.size() == 1) {
      backend_.matmul(normed, weights_.globals().output, nullptr, logits);
      return;
    }
    Tensor local = backend_.alloc({B, spec_.vocab_count}, DType::kF32);
    backend_.matmul(normed, weights_.globals().output, nullptr, local);
    gather_vocab_into(local, order, logits);
  };
  RecordedDecode& g = recorded_[{B, W}];
  if (!g.warmed) {
    const int64_t host_routed = expert_load_.host_routed;
    body();  // sizes scratch buffers and loads kernels, which a recording must not do
    g.warmed = true;
    g.host_routed = expert_load_.host_routed != host_routed;
    if (g.host_routed)
      LOG_INFO("decode steps of ", B, " rows route mixture-of-experts layers on the host: not recorded as CUDA graphs",
               " (STRATA_LOG_LEVEL=debug says why)");
  } else {
    if (!g.graph) g.graph = backend_.capture(body);
    g.graph->replay();
    tp_.fence();  // the replay's collectives have no handles: the transport's deadline covers it
  }
  backend_.sample(part(recorded_logits_, 0, {T, V}), rows.data(), tokens.data(), logprobs.data());
  if (g.graph) {  // sample() copied the tokens to the host, so the replay has finished
    timings_.graph_device_seconds += g.graph->take_device_seconds();
    ++timings_.graph_replays;
  }
  return true;
}

Tensor LlamaModel::logits(const StepBatch& step, const Tensor& hidden) {
  const Tensor local_logits = this->local_logits(step, hidden);
  const int64_t R = local_logits.dim(0);
  const int64_t shard = spec_.vocab_shard, local = spec_.vocab_count, V = config_.vocab_size;
  Tensor host_local = Tensor::empty({R, local}, DType::kF32);
  backend_.copy(local_logits, host_local);
  Tensor out = Tensor::empty({R, V}, DType::kF32);
  if (tp_.size() == 1) {
    std::memcpy(out.raw(), host_local.raw(), static_cast<size_t>(out.nbytes()));
    return out;
  }
  // Vocab-parallel head: every rank contributes a [R, shard] slab (padded past the vocab), gathered
  // in rank order and stitched back into rows.
  Tensor slab = Tensor::empty({R, shard}, DType::kF32);
  for (int64_t r = 0; r < R; ++r) {
    float* dst = slab.data<float>() + r * shard;
    std::memcpy(dst, host_local.data<float>() + r * local, static_cast<size_t>(local) * 4);
    for (int64_t i = local; i < shard; ++i) dst[i] = -INFINITY;
  }
  Tensor gathered = Tensor::empty({tp_.size() * R * shard}, DType::kF32);
  if (backend_.device() == Device::kCpu) {
    tp_.all_gather(slab, gathered);
  } else {  // the TP group may be NCCL, which moves device memory only
    Tensor slab_dev = backend_.alloc(slab.shape(), DType::kF32);
    Tensor gathered_dev = backend_.alloc(gathered.shape(), DType::kF32);
    backend_.copy(slab, slab_dev);
    tp_.all_gather(slab_dev, gathered_dev);
    backend_.copy(gathered_dev, gathered);
  }
  for (int64_t r = 0; r < R; ++r) {
    for (int p = 0; p < tp_.size(); ++p) {
      const int64_t begin = p * shard;
      const int64_t count = std::min(shard, V - begin);
      if (count <= 0) continue;
      std::memcpy(out.data<float>() + r * V + begin, gathered.data<float>() + (p * R + r) * shard,
                  static_cast<size_t>(count) * 4);
    }
  }
  return out;
}

}  // namespace strata
