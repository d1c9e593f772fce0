// runtime/speculative.cpp: prompt-lookup drafts and the rejection rule (see speculative.h).
#include "runtime/speculative.h"

#include <algorithm>

#include "runtime/error.h"

namespace strata {

std::vector<int32_t> ngram_draft(std::span<const int32_t> history, int min_n, int max_n, int64_t max_tokens) {
  const int64_t len = static_cast<int64_t>(history.size());
  if (max_tokens <= 0) return {};
  for (int64_t n = std::min<int64_t>(max_n, len - 1); n >= min_n; --n) {
    const std::span<const int32_t> key = history.subspan(static_cast<size_t>(len - n));
    // Latest earlier occurrence first: recent context predicts best. It must leave a token after it.
    for (int64_t start = len - n - 1; start >= 0; --start) {
      if (!std::equal(key.begin(), key.end(), history.begin() + start)) continue;
      const int64_t from = start + n, to = std::min(len, from + max_tokens);
      return {history.begin() + from, history.begin() + to};
    }
  }
  return {};
}

namespace {
class NgramProposer final : public Proposer {
 public:
  NgramProposer(int min_n, int max_n) : min_n_(min_n), max_n_(max_n) {}
  std::vector<Draft> propose(std::span<const DraftRequest> requests) override {
    std::vector<Draft> out(requests.size());
    for (size_t i = 0; i < requests.size(); ++i)
      out[i].tokens = ngram_draft(requests[i].history, min_n_, max_n_, requests[i].max_tokens);
    return out;
  }

 private:
  int min_n_, max_n_;
};
}  // namespace

std::unique_ptr<Proposer> make_ngram_proposer(int min_n, int max_n) {
  STRATA_CHECK(min_n >= 1 && max_n >= min_n, "n-gram sizes must satisfy 1 <= min <= max, got ", min_n, "..", max_n);
  return std::make_unique<NgramProposer>(min_n, max_n);
}

int32_t draw_from(std::span<const double> p, double u) {
  double cum = 0.0;
  int32_t last = -1;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0.0) continue;
    last = static_cast<int32_t>(i);
    cum += p[i];
    if (u < cum) return last;
  }
  STRATA_CHECK_KIND(ErrorKind::kInternal, last >= 0, "draw from a distribution with no mass");
  return last;
}

Verdict verify_draft(std::span<const double> p, std::span<const double> q, int32_t draft, double u_accept,
                     double u_draw) {
  const size_t d = static_cast<size_t>(draft);
  STRATA_CHECK_KIND(ErrorKind::kInternal, draft >= 0 && d < p.size() && (q.empty() || q.size() == p.size()),
                    "draft token ", draft, " outside the distribution of ", p.size());
  const double qd = q.empty() ? 1.0 : q[d];
  // q[d] == 0 cannot be drawn; were it, any mass p[d] > 0 accepts (the ratio is unbounded).
  const double ratio = qd > 0.0 ? p[d] / qd : (p[d] > 0.0 ? 1.0 : 0.0);
  if (u_accept < ratio) return {draft, true};
  std::vector<double> residual(p.size());
  double total = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double qi = q.empty() ? (i == d ? 1.0 : 0.0) : q[i];
    total += residual[i] = std::max(0.0, p[i] - qi);
  }
  // p == q leaves nothing (then the draft always accepts above, up to round-off): draw from p.
  if (total <= 0.0) return {draw_from(p, u_draw), false};
  for (double& r : residual) r /= total;
  return {draw_from(residual, u_draw), false};
}

}  // namespace strata
