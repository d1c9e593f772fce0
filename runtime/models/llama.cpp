// runtime/models/llama.cpp: one stage of the Llama-family decoder (see llama.h).
#include "runtime/models/llama.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "runtime/error.h"

namespace strata {

LlamaModel::LlamaModel(const ModelConfig& config, const ShardSpec& spec, Backend& backend, WeightSource& weights,
                       Collective& tp, KvCache& kv_cache)
    : config_(config), spec_(spec), backend_(backend), weights_(weights), tp_(tp), kv_(kv_cache) {
  rope_.theta = config.rope_theta;
  rope_.scaling = config.rope_scaling;
  rope_.style = config.rope_style;
  rope_.rot_dim = config.head_dim;
  STRATA_CHECK_KIND(ErrorKind::kInternal, tp.size() == spec.tp_size, "TP group of ", tp.size(),
                    " ranks for a shard of ", spec.tp_size);
}

Tensor LlamaModel::upload_i32(const std::vector<int32_t>& values) {
  const Tensor host = Tensor::view(const_cast<int32_t*>(values.data()), {static_cast<int64_t>(values.size())},
                                   DType::kI32);
  if (backend_.device() == Device::kCpu) return host;
  Tensor dev = backend_.alloc(host.shape(), DType::kI32);
  backend_.copy(host, dev);
  return dev;
}

AttentionBatch LlamaModel::attention_batch(const StepBatch& step) {
  const int64_t bs = kv_.shape().block_size;
  std::vector<int32_t> slots(step.tokens.size());
  int64_t max_pos = 0;
  for (size_t t = 0; t < slots.size(); ++t) {
    const int64_t pos = step.positions[t];
    const int64_t block = step.block_tables[static_cast<size_t>(step.token_seq[t] * step.max_blocks + pos / bs)];
    STRATA_CHECK_KIND(ErrorKind::kInternal, block >= 0, "no KV block for position ", pos);
    slots[t] = static_cast<int32_t>(block * bs + pos % bs);
    max_pos = std::max(max_pos, pos + 1);
  }
  AttentionBatch b;
  b.positions = upload_i32(step.positions);
  b.token_seq = upload_i32(step.token_seq);
  b.block_tables = upload_i32(step.block_tables).reshape({step.n_seqs, step.max_blocks});
  // slots is a local vector: copy it into an owned tensor so the view does not dangle.
  Tensor host_slots = Tensor::empty({static_cast<int64_t>(slots.size())}, DType::kI32);
  std::memcpy(host_slots.raw(), slots.data(), slots.size() * 4);
  if (backend_.device() == Device::kCpu) {
    b.slots = host_slots;
  } else {
    b.slots = backend_.alloc(host_slots.shape(), DType::kI32);
    backend_.copy(host_slots, b.slots);
  }
  b.n_tokens = step.n_tokens();
  b.n_seqs = step.n_seqs;
  b.max_blocks = step.max_blocks;
  b.block_size = bs;
  b.max_position = max_pos;
  return b;
}

void LlamaModel::forward(const StepBatch& step, Tensor& hidden) {
  const int64_t T = step.n_tokens(), D = config_.hidden, hd = config_.head_dim;
  const int64_t qh = spec_.q_heads, kvh = spec_.kv_heads, F = spec_.ffn_count;
  const DType act = backend_.activation_dtype();
  if (spec_.first_stage) {
    hidden = backend_.alloc({T, D}, act);
    const Tensor ids = upload_i32(step.tokens);
    backend_.embed(weights_.globals().embed, ids, spec_.vocab_begin, hidden);
    if (tp_.size() > 1) tp_.all_reduce_sum(hidden);
  }
  STRATA_CHECK_KIND(ErrorKind::kInternal, hidden.numel() == T * D, "stage input ", shape_str(hidden.shape()),
                    " is not [", T, ", ", D, "]");
  const AttentionBatch batch = attention_batch(step);
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));

  Tensor h = backend_.alloc({T, D}, act);
  // q, k, v (and gate, up) are consecutive regions of one buffer: with one token a fused weight
  // stack fills all of them in one matmul, with more each gets its own.
  const int64_t nq = qh * hd, nk = kvh * hd;
  Tensor qkv = backend_.alloc({T * (nq + 2 * nk)}, act);
  Tensor q = part(qkv, 0, {T, qh, hd}), k = part(qkv, T * nq, {T, kvh, hd}), v = part(qkv, T * (nq + nk), {T, kvh, hd});
  Tensor gate_up = backend_.alloc({2 * T * F}, act);
  Tensor gate = part(gate_up, 0, {T, F}), up = part(gate_up, T * F, {T, F});
  Tensor att = backend_.alloc({T, qh, hd}, act);
  Tensor proj = backend_.alloc({T, D}, act);
  Tensor proj2 = backend_.alloc({T, D}, act);
  Tensor q2 = q.reshape({T, nq}), k2 = k.reshape({T, nk}), v2 = v.reshape({T, nk});
  Tensor att2 = att.reshape({T, nq});
  const bool one_token = T == 1;

  for (int64_t l = spec_.layer_begin; l < spec_.layer_end; ++l) {
    const LayerWeights& w = weights_.acquire(l);
    const int64_t local = l - spec_.layer_begin;
    backend_.rmsnorm(hidden, w.attn_norm, config_.rms_eps, h);
    if (one_token && w.wqkv.defined()) {
      Tensor all = qkv.reshape({1, nq + 2 * nk});
      backend_.matmul(h, w.wqkv, w.bqkv.defined() ? &w.bqkv : nullptr, all);
    } else {
      backend_.matmul(h, w.wq, w.bq.defined() ? &w.bq : nullptr, q2);
      backend_.matmul(h, w.wk, w.bk.defined() ? &w.bk : nullptr, k2);
      backend_.matmul(h, w.wv, w.bv.defined() ? &w.bv : nullptr, v2);
    }
    backend_.rope(q, batch.positions, rope_);
    backend_.rope(k, batch.positions, rope_);
    backend_.kv_write(k, v, batch.slots, kv_.k(local), kv_.v(local));
    backend_.attention(q, kv_.k(local), kv_.v(local), batch, scale, att);
    project_and_mlp(w, hidden, att2, h, proj, proj2, gate, up);
    weights_.release(l);
  }
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

void LlamaModel::project_and_mlp(const LayerWeights& w, Tensor& hidden, const Tensor& att, Tensor& h,
                                 Tensor& attn_out, Tensor& mlp_out, Tensor& gate, Tensor& up) {
  const int64_t T = hidden.dim(0);
  const bool reduce = tp_.size() > 1;
  // Row groups: chunk c's all-reduce runs on the communication stream while chunk c+1 computes.
  // Attention itself needs every token's K/V, so chunking starts at the output projection.
  const int64_t chunks = reduce ? std::min<int64_t>(overlap_chunks_, T) : 1;
  std::vector<int64_t> begin(static_cast<size_t>(chunks) + 1);
  for (int64_t c = 0; c <= chunks; ++c) begin[static_cast<size_t>(c)] = T * c / chunks;
  auto rows = [&](const Tensor& t, int64_t c) {
    return t.rows(begin[static_cast<size_t>(c)], begin[static_cast<size_t>(c) + 1] - begin[static_cast<size_t>(c)]);
  };
  std::vector<std::unique_ptr<CollectiveWork>> attn_work(static_cast<size_t>(chunks));
  for (int64_t c = 0; c < chunks; ++c) {
    Tensor out = rows(attn_out, c);
    backend_.matmul(rows(att, c), w.wo, nullptr, out);
    if (reduce) {
      attn_work[static_cast<size_t>(c)] = tp_.all_reduce_sum_async(out);
      ++timings_.all_reduces;
    }
  }
  std::vector<std::unique_ptr<CollectiveWork>> mlp_work(static_cast<size_t>(chunks));
  for (int64_t c = 0; c < chunks; ++c) {
    if (reduce) wait_reduce(*attn_work[static_cast<size_t>(c)]);
    Tensor hid = rows(hidden, c), hc = rows(h, c), g = rows(gate, c), u = rows(up, c), out = rows(mlp_out, c);
    backend_.add_rmsnorm(hid, rows(attn_out, c), w.ffn_norm, config_.rms_eps, hc);
    if (T == 1 && w.w_gate_up.defined()) {  // gate and up are adjacent: [1, 2F] in one pass
      Tensor both = Tensor::view(g.raw(), {1, 2 * g.dim(1)}, g.dtype(), g.device(), g.keepalive());
      backend_.matmul(hc, w.w_gate_up, nullptr, both);
    } else {
      backend_.matmul(hc, w.w_gate, nullptr, g);
      backend_.matmul(hc, w.w_up, nullptr, u);
    }
    backend_.silu_mul(g, u, g);
    backend_.matmul(g, w.w_down, nullptr, out);
    if (reduce) {
      mlp_work[static_cast<size_t>(c)] = tp_.all_reduce_sum_async(out);
      ++timings_.all_reduces;
    }
  }
  for (int64_t c = 0; c < chunks; ++c) {
    if (reduce) wait_reduce(*mlp_work[static_cast<size_t>(c)]);
    Tensor hid = rows(hidden, c);
    backend_.add(hid, rows(mlp_out, c));
  }
}

Tensor LlamaModel::logits(const StepBatch& step, const Tensor& hidden) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, spec_.last_stage, "logits requested from a stage without the LM head");
  const int64_t R = static_cast<int64_t>(step.logit_rows.size()), D = config_.hidden;
  const DType act = backend_.activation_dtype();
  Tensor rows = backend_.alloc({R, D}, act);
  for (int64_t r = 0; r < R; ++r) {
    Tensor dst = rows.rows(r, 1);
    backend_.copy(hidden.rows(step.logit_rows[static_cast<size_t>(r)], 1), dst);
  }
  Tensor normed = backend_.alloc({R, D}, act);
  backend_.rmsnorm(rows, weights_.globals().output_norm, config_.rms_eps, normed);
  const int64_t shard = spec_.vocab_shard, local = spec_.vocab_count, V = config_.vocab_size;
  Tensor local_logits = backend_.alloc({R, local}, DType::kF32);
  if (local > 0) backend_.matmul(normed, weights_.globals().output, nullptr, local_logits);
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
  tp_.all_gather(slab, gathered);
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
