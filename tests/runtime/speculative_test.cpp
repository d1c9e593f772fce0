// tests/runtime/speculative_test.cpp: the parts of speculative decoding that need no model: prompt-lookup
// drafts on hand-made histories, the sampler's distribution against hand-computed softmaxes, and the
// rejection rule as a statistical test: whatever the proposer's q, the tokens it lets through follow
// the target's p (200k draws from fixed seeds, chi-square at p < 1e-9), and a rule that skips the
// rejection step fails the same test.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "runtime/engine_control.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"

namespace strata {
namespace {

TEST(NgramDraft, ContinuesTheLatestEarlierOccurrenceOfTheLongestSuffix) {
  // The suffix "3 4" occurred at 2..3 and at 6..7; the latest one is followed by 9 5.
  const std::vector<int32_t> h = {1, 2, 3, 4, 5, 6, 3, 4, 9, 5, 7, 3, 4};
  EXPECT_EQ(ngram_draft(h, 1, 3, 2), (std::vector<int32_t>{9, 5}));
  EXPECT_EQ(ngram_draft(h, 1, 3, 8), (std::vector<int32_t>{9, 5, 7, 3, 4}));  // up to the history's end
  // "7 3 4" (n = 3) occurred nowhere else; n = 2 answers.
  EXPECT_EQ(ngram_draft(h, 3, 3, 4), std::vector<int32_t>{});
  EXPECT_EQ(ngram_draft(h, 1, 3, 0), std::vector<int32_t>{});
  // Only unigrams: the last token 8 never occurred before.
  EXPECT_EQ(ngram_draft(std::vector<int32_t>{5, 6, 7, 8}, 1, 2, 3), std::vector<int32_t>{});
  // A longer match wins over a more recent shorter one: "1 2" at 0 continues with 3; "2" alone at 4 with 9.
  EXPECT_EQ(ngram_draft(std::vector<int32_t>{1, 2, 3, 7, 2, 9, 1, 2}, 1, 2, 1), std::vector<int32_t>{3});
}

TEST(SamplerDistribution, MatchesTheSoftmaxAfterEachCut) {
  const std::vector<float> logits = {2.f, 1.f, 0.f, -1.f};
  SamplingParams greedy;
  EXPECT_EQ(Sampler::distribution(logits, greedy, {}), (std::vector<double>{1, 0, 0, 0}));
  SamplingParams p;
  p.temperature = 1.f;
  const std::vector<double> full = Sampler::distribution(logits, p, {});
  const double z = std::exp(2.0) + std::exp(1.0) + 1.0 + std::exp(-1.0);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(full[i], std::exp(logits[i]) / z, 1e-6);
  p.top_k = 2;
  p.temperature = 0.5f;
  const std::vector<double> top2 = Sampler::distribution(logits, p, {});
  EXPECT_NEAR(top2[0], std::exp(4.0) / (std::exp(4.0) + std::exp(2.0)), 1e-6);
  EXPECT_NEAR(top2[1], std::exp(2.0) / (std::exp(4.0) + std::exp(2.0)), 1e-6);
  EXPECT_EQ(top2[2], 0.0);
  EXPECT_EQ(top2[3], 0.0);
  // The repetition penalty divides a seen token's positive logit: token 0 drops to 1.0, ties token 1,
  // and the lower id wins greedy ties.
  SamplingParams penalty;
  penalty.repetition_penalty = 2.f;
  EXPECT_EQ(Sampler::distribution(logits, penalty, std::vector<int32_t>{0})[0], 1.0);
  penalty.repetition_penalty = 4.f;
  EXPECT_EQ(Sampler::distribution(logits, penalty, std::vector<int32_t>{0})[1], 1.0);
}

// Chi-square statistic of `counts` against probabilities `p` (cells with p = 0 must be empty).
double chi_square(const std::vector<int64_t>& counts, const std::vector<double>& p, int64_t n) {
  double x2 = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has no probability under the target";
      continue;
    }
    const double expected = p[i] * static_cast<double>(n);
    x2 += (static_cast<double>(counts[i]) - expected) * (static_cast<double>(counts[i]) - expected) / expected;
  }
  return x2;
}

// 5 degrees of freedom (6 cells): P(chi2 > 60) < 1e-10, so a correct rule never fails here, while any
// systematic bias of a few percent in one cell at n = 200k does.
constexpr double kChiSquare5 = 60.0;
constexpr int64_t kDraws = 200000;

TEST(RejectionRule, TokensFollowTheTargetWhateverTheDraftDistribution) {
  const std::vector<double> p = {0.30, 0.05, 0.25, 0.0, 0.15, 0.25};
  const std::vector<double> q = {0.10, 0.40, 0.10, 0.20, 0.20, 0.00};
  std::mt19937_64 rng(20261207);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<int64_t> counts(p.size(), 0), naive(p.size(), 0);
  int64_t accepted = 0;
  for (int64_t i = 0; i < kDraws; ++i) {
    const int32_t draft = draw_from(q, u(rng));
    const Verdict v = verify_draft(p, q, draft, u(rng), u(rng));
    ++counts[static_cast<size_t>(v.token)];
    ++naive[static_cast<size_t>(draft)];  // accepting every draft: the tokens follow q
    accepted += v.accepted ? 1 : 0;
    if (v.accepted) {
      EXPECT_EQ(v.token, draft);
    }
  }
  EXPECT_LT(chi_square(counts, p, kDraws), kChiSquare5);
  double overlap = 0;  // P(accept) = sum_i min(p_i, q_i)
  for (size_t i = 0; i < p.size(); ++i) overlap += std::min(p[i], q[i]);
  EXPECT_NEAR(static_cast<double>(accepted) / kDraws, overlap, 0.01);  // ~10 binomial standard deviations
  // The test has teeth: the q-distributed drafts themselves are far from p.
  double x2 = 0;
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] > 0) x2 += std::pow(naive[i] - p[i] * kDraws, 2) / (p[i] * kDraws);
  EXPECT_GT(x2, 100 * kChiSquare5);
}

TEST(RejectionRule, PointMassDraftsKeepTheTargetDistribution) {
  // Prompt lookup proposes one token with certainty: it stands with probability p[draft], else the
  // target draws from p without it. Every draft token gives p back.
  const std::vector<double> p = {0.30, 0.05, 0.25, 0.0, 0.15, 0.25};
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int32_t draft : {0, 3, 5}) {
    std::vector<int64_t> counts(p.size(), 0);
    int64_t accepted = 0;
    for (int64_t i = 0; i < kDraws; ++i) {
      const Verdict v = verify_draft(p, {}, draft, u(rng), u(rng));
      ++counts[static_cast<size_t>(v.token)];
      accepted += v.accepted ? 1 : 0;
    }
    EXPECT_LT(chi_square(counts, p, kDraws), kChiSquare5) << "draft " << draft;
    EXPECT_NEAR(static_cast<double>(accepted) / kDraws, p[static_cast<size_t>(draft)], 0.01) << "draft " << draft;
  }
}

TEST(RejectionRule, GreedyTargetAcceptsOnlyItsArgmax) {
  const std::vector<double> onehot = {0, 0, 1, 0};
  for (double ua : {0.0, 0.5, 0.999}) {
    EXPECT_EQ(verify_draft(onehot, {}, 2, ua, 0.3).token, 2);
    EXPECT_TRUE(verify_draft(onehot, {}, 2, ua, 0.3).accepted);
    const Verdict v = verify_draft(onehot, {}, 1, ua, 0.7);
    EXPECT_FALSE(v.accepted);
    EXPECT_EQ(v.token, 2);
  }
}

TEST(ControlMessage, CarriesDraftDistributions) {
  ControlMessage m;
  m.step.tokens = {5, 6, 7};
  m.step.positions = {3, 4, 5};
  m.step.token_seq = {0, 0, 0};
  m.step.logit_rows = {0, 1, 2};
  m.step.block_tables = {0};
  m.step.seq_ids = {9};
  m.step.n_seqs = 1;
  m.step.max_blocks = 1;
  m.draft_q_rows = {0, 1};
  m.draft_q = {{{6, 8}, {0.75f, 0.25f}}, {{7}, {1.f}}};
  const ControlMessage back = ControlMessage::unpack(m.pack());
  EXPECT_EQ(back.draft_q_rows, m.draft_q_rows);
  ASSERT_EQ(back.draft_q.size(), 2u);
  EXPECT_EQ(back.draft_q[0].ids, (std::vector<int32_t>{6, 8}));
  EXPECT_EQ(back.draft_q[0].probs, (std::vector<float>{0.75f, 0.25f}));
  EXPECT_EQ(back.step.tokens, m.step.tokens);
}

}  // namespace
}  // namespace strata
