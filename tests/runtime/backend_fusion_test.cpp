// tests/runtime/backend_fusion_test.cpp: how the model uses the fusions a backend may offer, checked on the
// CPU through a forwarding backend (the CUDA backend's fused kernels are tested against the CPU ops in
// tests/gpu/cuda_backend_gpu_test.cpp).
// - The folded rope + cache write + attention (Backend::rope_kv_attention) is only sound when every sequence
//   has exactly one token in the step, so AttentionBatch::one_token_per_seq must be set for decode steps and
//   clear for prompt steps. The probe records what the model offered and declines.
// - Pending norms (Backend::defers_norms): the probe says yes and runs the CPU's reference versions of the
//   ops, so the model's chain of them (each projection forming the next norm, the readers scaling by it)
//   must give the tokens of a plain CPU session.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <vector>

#include "launcher/model_session.h"
#include "test_util.h"

namespace strata {
namespace {

// Every op goes to `inner`; rope_kv_attention is recorded and declined.
class FoldProbe final : public Backend {
 public:
  struct Offer {
    int64_t n_tokens, n_seqs;
    bool one_token_per_seq;
  };

  // pending_norms: defers_norms says yes for steps needing at most max_norm_slots sum slots.
  FoldProbe(std::unique_ptr<Backend> inner, bool pending_norms = false, int max_norm_slots = 1 << 20)
      : inner_(std::move(inner)), pending_norms_(pending_norms), max_norm_slots_(max_norm_slots) {}
  const std::vector<Offer>& offers() const { return offers_; }
  int resets = 0, pending_norms = 0, adds_with_norm = 0, adds_without_norm = 0, scaled_matmuls = 0, plain_norms = 0;

  Device device() const override { return inner_->device(); }
  std::string name() const override { return "probe(" + inner_->name() + ")"; }
  DType activation_dtype() const override { return inner_->activation_dtype(); }
  Tensor alloc(const Shape& shape, DType dtype) override { return inner_->alloc(shape, dtype); }
  void copy(const Tensor& src, Tensor& dst) override { inner_->copy(src, dst); }
  Tensor upload_weight(const Tensor& host) override { return inner_->upload_weight(host); }
  void synchronize() override { inner_->synchronize(); }
  void embed(const Tensor& table, const Tensor& ids, int64_t vocab_offset, Tensor& out) override {
    inner_->embed(table, ids, vocab_offset, out);
  }
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    ++plain_norms;
    inner_->rmsnorm(x, weight, eps, out);
  }
  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    ++plain_norms;
    inner_->add_rmsnorm(residual, x, weight, eps, out);
  }
  bool defers_norms(int64_t, int slots) const override { return pending_norms_ && slots <= max_norm_slots_; }
  void reset_norm_sums(int slots, int64_t rows) override {
    ++resets;
    inner_->reset_norm_sums(slots, rows);
  }
  void pending_rmsnorm(const Tensor& x, const Tensor& weight, Tensor& scaled, int slot) override {
    ++pending_norms;
    inner_->pending_rmsnorm(x, weight, scaled, slot);
  }
  void matmul_add_pending_norm(const Tensor& x, const Tensor& w, Tensor& residual, const Tensor* norm_weight,
                               Tensor& scaled, int slot) override {
    ++(norm_weight != nullptr ? adds_with_norm : adds_without_norm);
    inner_->matmul_add_pending_norm(x, w, residual, norm_weight, scaled, slot);
  }
  void matmul_norm_scaled(const Tensor& x, const Tensor& w, const Tensor* bias, const NormScale& scale,
                          Tensor& out) override {
    ++scaled_matmuls;
    inner_->matmul_norm_scaled(x, w, bias, scale, out);
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
  void rope_kv_write(Tensor& q, Tensor& k, const Tensor& v, const Tensor& positions, const RopeParams& params,
                     const Tensor& slots, Tensor& k_cache, Tensor& v_cache) override {
    inner_->rope_kv_write(q, k, v, positions, params, slots, k_cache, v_cache);
  }
  bool rope_kv_attention(Tensor& q, Tensor&, const Tensor&, const AttentionBatch& batch, const RopeParams&, Tensor&,
                         Tensor&, float, Tensor&) override {
    offers_.push_back({q.dim(0), batch.n_seqs, batch.one_token_per_seq});
    return false;
  }
  void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const AttentionBatch& batch,
                 float scale, Tensor& out) override {
    inner_->attention(q, k_cache, v_cache, batch, scale, out);
  }
  void sample(const Tensor& logits, const SampleRow* rows, int32_t* tokens, float* logprobs) override {
    inner_->sample(logits, rows, tokens, logprobs);
  }

 private:
  std::unique_ptr<Backend> inner_;
  bool pending_norms_;
  int max_norm_slots_;
  std::vector<Offer> offers_;
};

std::vector<GenerationRequest> two_requests() {
  // Two sequences: a 5-token prompt and a 1-token one, then decode steps of one token each.
  std::vector<GenerationRequest> requests(2);
  requests[0].prompt = {1, 403, 407, 261, 300};
  requests[1].prompt = {1};
  for (GenerationRequest& r : requests) r.max_new_tokens = 6;
  return requests;
}

// two_requests() on a plain CPU session and on one through a FoldProbe (stories260K): the tokens must agree.
// Skips without ../shared/models.
class ProbedSession : public ::testing::Test {
 protected:
  void run(bool pending_norms, int max_norm_slots = 1 << 20) {
    const std::string model = test::shared_model("stories260K/stories260K.bin");
    if (model.empty()) GTEST_SKIP() << "../shared/models is absent";
    launcher::SessionOptions options;
    options.model_path = model;
    plain_ = std::make_unique<launcher::ModelSession>(options);
    plain_->prepare(64);
    const auto want = plain_->generator().generate(two_requests());
    auto probe_owner = std::make_unique<FoldProbe>(make_cpu_backend(), pending_norms, max_norm_slots);
    probe_ = probe_owner.get();
    session_ = std::make_unique<launcher::ModelSession>(options, launcher::RankPlacement{}, std::move(probe_owner));
    session_->prepare(64);
    const auto got = session_->generator().generate(two_requests());
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].tokens, want[i].tokens) << "sequence " << i;
  }
  std::unique_ptr<launcher::ModelSession> plain_, session_;
  const FoldProbe* probe_ = nullptr;
};

TEST_F(ProbedSession, RopeAttentionFoldOfferedAsFoldableForDecodeStepsOnly) {
  run(/*pending_norms=*/false);
  if (IsSkipped() || HasFatalFailure()) return;
  const FoldProbe& probe = *probe_;
  const int layers = static_cast<int>(session_->config().n_layers);
  int foldable = 0, not_foldable = 0;
  for (const FoldProbe::Offer& o : probe.offers()) {
    if (o.one_token_per_seq) {
      EXPECT_EQ(o.n_tokens, o.n_seqs);
      ++foldable;
    } else {
      EXPECT_GT(o.n_tokens, o.n_seqs) << "a step of one token per sequence not marked foldable";
      ++not_foldable;
    }
  }
  // Every layer of every step asks; the 5-token prompt's step cannot fold, the decode steps can.
  EXPECT_GT(not_foldable, 0);
  EXPECT_GE(foldable, layers);
  EXPECT_EQ((foldable + not_foldable) % layers, 0);
}

// Each request's tokens with their five best log-probabilities, the two_requests() batched on the engine.
std::map<uint64_t, std::vector<std::vector<TokenLogprob>>> top_logprobs(launcher::ModelSession& session) {
  Engine& engine = session.generator().engine();
  const std::vector<GenerationRequest> requests = two_requests();
  for (size_t i = 0; i < requests.size(); ++i) {
    EngineRequest r;
    r.id = i + 1;
    r.prompt = requests[i].prompt;
    r.max_new_tokens = requests[i].max_new_tokens;
    r.logprobs = 5;
    EXPECT_TRUE(engine.submit(r));
  }
  std::map<uint64_t, std::vector<std::vector<TokenLogprob>>> out;
  std::vector<TokenEvent> events;
  for (size_t ended = 0, steps = 0; ended < requests.size() && steps < 1000; ++steps) {
    events.clear();
    EXPECT_TRUE(engine.step(events, 0));
    for (const TokenEvent& e : events) {
      if (e.token >= 0) out[e.request_id].push_back(e.top_logprobs);
      if (e.finished) ++ended;
    }
  }
  return out;
}

TEST_F(ProbedSession, PendingNormsChainGivesThePlainLogits) {
  run(/*pending_norms=*/true);
  if (IsSkipped() || HasFatalFailure()) return;
  const FoldProbe& probe = *probe_;
  // The same steps again with each token's best five log-probabilities: the norms finished by the
  // matmuls give the plain norms' logits up to f32 rounding.
  const auto want_top = top_logprobs(*plain_), got_top = top_logprobs(*session_);
  ASSERT_EQ(got_top.size(), want_top.size());
  for (const auto& [id, tokens] : want_top) {
    ASSERT_EQ(got_top.at(id).size(), tokens.size()) << "request " << id;
    for (size_t t = 0; t < tokens.size(); ++t) {
      ASSERT_EQ(got_top.at(id)[t].size(), tokens[t].size());
      for (size_t k = 0; k < tokens[t].size(); ++k) {
        EXPECT_EQ(got_top.at(id)[t][k].token, tokens[t][k].token) << "request " << id << " token " << t;
        EXPECT_NEAR(got_top.at(id)[t][k].logprob, tokens[t][k].logprob, 1e-4) << "request " << id << " token " << t;
      }
    }
  }

  // Per step: one reset and one pending norm (the first layer's), two adds with a norm per layer but the last
  // layer's down (no LM-head norm pending on the eager path: the head's own rmsnorm is the only plain norm),
  // and the q, k, v, gate and up projections scaled.
  const int layers = static_cast<int>(session_->config().n_layers);
  const int steps = probe.resets;  // both runs
  EXPECT_GT(steps, 2);
  EXPECT_EQ(probe.pending_norms, steps);
  EXPECT_EQ(probe.adds_with_norm, steps * (2 * layers - 1));
  EXPECT_EQ(probe.adds_without_norm, steps);
  EXPECT_EQ(probe.scaled_matmuls, steps * layers * 5);
  EXPECT_EQ(probe.plain_norms, steps);
}

// A backend that finishes norms only for steps of few enough sum slots (the CUDA one caps them): with one
// slot fewer than the model needs (two a layer and the LM head's), every step runs plain norms and gives the
// plain tokens.
TEST_F(ProbedSession, PendingNormsDeclinedWhenTheStepNeedsTooManySlots) {
  const std::string model = test::shared_model("stories260K/stories260K.bin");
  if (model.empty()) GTEST_SKIP() << "../shared/models is absent";
  launcher::SessionOptions options;
  options.model_path = model;
  const int layers = static_cast<int>(launcher::ModelSession(options).config().n_layers);
  run(/*pending_norms=*/true, /*max_norm_slots=*/2 * layers);
  if (IsSkipped() || HasFatalFailure()) return;
  EXPECT_EQ(probe_->resets, 0);
  EXPECT_EQ(probe_->pending_norms, 0);
  EXPECT_EQ(probe_->scaled_matmuls, 0);
  EXPECT_GT(probe_->plain_norms, 0);
}

}  // namespace
}  // namespace strata
