// runtime/forwarding_backend.h: a Backend that hands every required op to another backend, for decorators
// that watch or change a few ops (calibration's activation recorder, tests' probes). The optional fusions
// (matmul_swiglu, rope_kv_write, rope_kv_attention, expert_ffn) keep Backend's unfused defaults unless a
// subclass forwards them, so every product still reaches matmul.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/backend.h"

namespace strata {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  Device device() const override { return inner_->device(); }
  std::string name() const override { return inner_->name(); }
  DType activation_dtype() const override { return inner_->activation_dtype(); }
  Tensor alloc(const Shape& shape, DType dtype) override { return inner_->alloc(shape, dtype); }
  void copy(const Tensor& src, Tensor& dst) override { inner_->copy(src, dst); }
  Tensor upload_weight(const Tensor& host) override { return inner_->upload_weight(host); }
  Tensor upload_matmul_weight(const Tensor& host) override { return inner_->upload_matmul_weight(host); }
  void synchronize() override { inner_->synchronize(); }
  void embed(const Tensor& table, const Tensor& ids, int64_t vocab_offset, Tensor& out) override {
    inner_->embed(table, ids, vocab_offset, out);
  }
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    inner_->rmsnorm(x, weight, eps, out);
  }
  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    inner_->add_rmsnorm(residual, x, weight, eps, out);
  }
  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override {
    inner_->matmul(x, w, bias, out);
  }
  void rope(Tensor& x, const Tensor& positions, const RopeParams& params) override {
    inner_->rope(x, positions, params);
  }
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override { inner_->silu_mul(gate, up, out); }
  void swiglu(const Tensor& gate_up, Tensor& out) override { inner_->swiglu(gate_up, out); }
  void add(Tensor& a, const Tensor& b) override { inner_->add(a, b); }
  void split_columns(const Tensor& x, const std::vector<Tensor*>& parts) override { inner_->split_columns(x, parts); }
  void kv_write(const Tensor& k, const Tensor& v, const Tensor& slots, Tensor& k_cache, Tensor& v_cache) override {
    inner_->kv_write(k, v, slots, k_cache, v_cache);
  }
  void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionBatch& batch,
                 float scale, Tensor& out) override {
    inner_->attention(q, k_cache, v_cache, batch, scale, out);
  }
  // Ops whose Backend default serves host memory only (MoE combine, the vision encoder's): forwarded so a
  // decorated device backend keeps its own.
  void combine_rows(const Tensor& src, const Tensor& index, const Tensor& weight, bool accumulate,
                    Tensor& out) override {
    inner_->combine_rows(src, index, weight, accumulate, out);
  }
  void layernorm(const Tensor& x, const Tensor& weight, const Tensor* bias, float eps, Tensor& out) override {
    inner_->layernorm(x, weight, bias, eps, out);
  }
  void activation(const Tensor& x, Activation act, Tensor& out) override { inner_->activation(x, act, out); }
  void attention_bidirectional(const Tensor& q, const Tensor& k, const Tensor& v, int64_t seq_len, float scale,
                               Tensor& out) override {
    inner_->attention_bidirectional(q, k, v, seq_len, scale, out);
  }
  void sample(const Tensor& logits, const SampleRow* rows, int32_t* tokens, float* logprobs) override {
    inner_->sample(logits, rows, tokens, logprobs);
  }

 protected:
  Backend& inner() { return *inner_; }

 private:
  std::unique_ptr<Backend> inner_;
};

}  // namespace strata
