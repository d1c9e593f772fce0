// tests/runtime/backend_fusion_test.cpp: how the model uses the fusions a backend may offer, checked on the
// CPU through a forwarding backend (the CUDA backend's fused kernels are tested against the CPU ops in
// tests/gpu/cuda_backend_gpu_test.cpp).
// - The folded rope + cache write + attention (Backend::rope_kv_attention) is only sound when every sequence
//   has exactly one token in the step, so AttentionBatch::one_token_per_seq must be set for decode steps and
//   clear for prompt steps. The probe records what the model offered and declines.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "launcher/model_session.h"
#include "runtime/forwarding_backend.h"
#include "test_util.h"

namespace strata {
namespace {

// Every op goes to `inner`; rope_kv_attention is recorded and declined.
class FoldProbe final : public ForwardingBackend {
 public:
  struct Offer {
    int64_t n_tokens, n_seqs;
    bool one_token_per_seq;
  };
  explicit FoldProbe(std::unique_ptr<Backend> inner) : ForwardingBackend(std::move(inner)) {}
  const std::vector<Offer>& offers() const { return offers_; }

  std::string name() const override { return "probe(" + ForwardingBackend::name() + ")"; }
  void rope_kv_write(Tensor& q, Tensor& k, const Tensor& v, const Tensor& positions, const RopeParams& params,
                     const Tensor& slots, Tensor& k_cache, Tensor& v_cache) override {
    inner().rope_kv_write(q, k, v, positions, params, slots, k_cache, v_cache);
  }
  bool rope_kv_attention(Tensor& q, Tensor&, const Tensor&, const AttentionBatch& batch, const RopeParams&, Tensor&,
                         Tensor&, float, Tensor&) override {
    offers_.push_back({q.dim(0), batch.n_seqs, batch.one_token_per_seq});
    return false;
  }

 private:
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
  void run() {
    const std::string model = test::shared_model("stories260K/stories260K.bin");
    if (model.empty()) GTEST_SKIP() << "../shared/models is absent";
    launcher::SessionOptions options;
    options.model_path = model;
    plain_ = std::make_unique<launcher::ModelSession>(options);
    plain_->prepare(64);
    const auto want = plain_->generator().generate(two_requests());
    auto probe_owner = std::make_unique<FoldProbe>(make_cpu_backend());
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
  run();
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

}  // namespace
}  // namespace strata
