// runtime/sampler.cpp: sampling, following the order of the Hugging Face logits processors:
// repetition penalty, temperature, top-k, top-p, min-p, then a draw from the renormalised rest.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/error.h"

namespace strata {
namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

void SamplingParams::validate() const {
  STRATA_CHECK(std::isfinite(temperature) && temperature >= 0.f, "temperature must be >= 0, got ", temperature);
  STRATA_CHECK(top_k >= 0, "top_k must be >= 0, got ", top_k);
  STRATA_CHECK(top_p > 0.f && top_p <= 1.f, "top_p must be in (0, 1], got ", top_p);
  STRATA_CHECK(min_p >= 0.f && min_p < 1.f, "min_p must be in [0, 1), got ", min_p);
  STRATA_CHECK(repetition_penalty > 0.f, "repetition_penalty must be > 0, got ", repetition_penalty);
}

int32_t Sampler::argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

double Sampler::log_prob(std::span<const float> logits, int32_t token) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v - max));
  return static_cast<double>(logits[static_cast<size_t>(token)] - max) - std::log(sum);
}

// The logits with the repetition penalty applied once to every token of `history` (CTRL's rule: positive
// logits divided, negative ones multiplied).
static std::vector<float> penalized(std::span<const float> logits, const SamplingParams& params,
                                    std::span<const int32_t> history) {
  std::vector<float> z(logits.begin(), logits.end());
  if (params.repetition_penalty == 1.f) return z;
  std::vector<uint8_t> seen(z.size(), 0);
  for (int32_t t : history) {
    if (t < 0 || static_cast<size_t>(t) >= z.size() || seen[static_cast<size_t>(t)]) continue;
    seen[static_cast<size_t>(t)] = 1;
    float& v = z[static_cast<size_t>(t)];
    v = v > 0.f ? v / params.repetition_penalty : v * params.repetition_penalty;
  }
  return z;
}

double Sampler::uniform(uint64_t seed, uint64_t step, uint64_t stream) {
  uint64_t x = splitmix64(seed * 0x100000001b3ull ^ splitmix64(step));
  if (stream != 0) x = splitmix64(x + stream * 0xd1b54a32d192ed03ull);
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

namespace {
// The tokens a sampled draw may take, most likely first, after the cuts in their order: top-k, temperature
// softmax, top-p, min-p. p holds their softmax probabilities before the cuts; total is p's sum over ids.
struct Candidates {
  std::vector<int32_t> ids;
  std::vector<double> p;
  double total = 0.0;
};

Candidates candidates(const std::vector<float>& z, const SamplingParams& params) {
  Candidates c;
  c.ids.resize(z.size());
  std::iota(c.ids.begin(), c.ids.end(), 0);
  size_t keep = z.size();
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < keep) keep = static_cast<size_t>(params.top_k);
  // Stable descending order (ties keep the lower id first) so results never depend on the sort.
  std::partial_sort(c.ids.begin(), c.ids.begin() + static_cast<std::ptrdiff_t>(keep), c.ids.end(),
                    [&](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
  c.ids.resize(keep);
  c.p.resize(keep);
  const double max = z[static_cast<size_t>(c.ids[0])] / params.temperature;
  double sum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    c.p[i] = std::exp(z[static_cast<size_t>(c.ids[i])] / params.temperature - max);
    sum += c.p[i];
  }
  for (double& v : c.p) v /= sum;
  if (params.top_p < 1.f) {
    double cum = 0.0;
    for (size_t i = 0; i < keep; ++i) {
      cum += c.p[i];
      if (cum >= params.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (params.min_p > 0.f) {
    const double floor = params.min_p * c.p[0];
    size_t cut = 1;
    while (cut < keep && c.p[cut] >= floor) ++cut;
    keep = cut;
  }
  c.ids.resize(keep);
  c.p.resize(keep);
  for (double v : c.p) c.total += v;
  return c;
}
}  // namespace

std::vector<double> Sampler::distribution(std::span<const float> logits, const SamplingParams& params,
                                          std::span<const int32_t> history) {
  const std::vector<float> z = penalized(logits, params, history);
  std::vector<double> out(z.size(), 0.0);
  if (params.greedy()) {
    out[static_cast<size_t>(argmax(z))] = 1.0;
    return out;
  }
  const Candidates c = candidates(z, params);  // the same cuts as sample()
  for (size_t i = 0; i < c.ids.size(); ++i) out[static_cast<size_t>(c.ids[i])] = c.p[i] / c.total;
  return out;
}

int32_t Sampler::sample(std::span<const float> logits, const SamplingParams& params, std::span<const int32_t> history,
                        uint64_t step) {
  if (params.greedy() && params.repetition_penalty == 1.f) return argmax(logits);  // no copy needed
  const std::vector<float> z = penalized(logits, params, history);
  if (params.greedy()) return argmax(z);
  const Candidates c = candidates(z, params);
  const double u = uniform(params.seed, step, 0);
  double cum = 0.0;
  for (size_t i = 0; i < c.ids.size(); ++i) {
    cum += c.p[i] / c.total;
    if (u < cum) return c.ids[i];
  }
  return c.ids.back();
}

}  // namespace strata
