// runtime/speculative.h: speculative decoding. A proposer guesses the next K tokens of a decoding
// sequence cheaply (prompt lookup: the tokens that followed the last n-gram's earlier occurrence; or a
// smaller draft model with the same vocabulary); the target model scores all K in one multi-token step
// over the sequence's KV (the chunked-prefill path), and verification keeps the longest prefix the
// target agrees with, plus one token of its own. Greedy requests accept a draft when it equals the
// target's choice; sampled ones use the rejection rule (accept with probability min(1, p/q), else draw
// from max(0, p - q) normalised), so outputs keep the target's distribution exactly.
//
// Proposers run on the replica's driver only; the drafts travel as ordinary step tokens, so every rank
// runs the same verification step and only the sampling rank decides what was accepted.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "runtime/sampling_params.h"

namespace strata {

// A draft token's probabilities under the proposer (sparse: the tokens it could have drawn). Empty
// ids: a point mass on the draft token (prompt lookup, or a greedy draft model).
struct DraftDistribution {
  std::vector<int32_t> ids;
  std::vector<float> probs;
};

// What the driver asks for one decoding sequence.
struct DraftRequest {
  int32_t handle = -1;               // the sequence (Proposer::forget ends its state)
  std::span<const int32_t> history;  // prompt and generated tokens so far
  int64_t max_tokens = 0;            // draft at most this many
  SamplingParams sampling;           // a draft model draws with the request's parameters
  uint64_t first_draw = 0;           // draw index of the first draft token (the sequence's generated count)
};

struct Draft {
  std::vector<int32_t> tokens;
  std::vector<DraftDistribution> q;  // per token; empty vector: point masses
};

class Proposer {
 public:
  virtual ~Proposer() = default;
  // One draft per request (possibly empty: no guess), in order.
  virtual std::vector<Draft> propose(std::span<const DraftRequest> requests) = 0;
  // The sequence ended: drop whatever the proposer keeps for it.
  virtual void forget(int32_t /*handle*/) {}
};

// Prompt lookup: for n from max_n down to min_n, the most recent earlier occurrence of the history's
// last n tokens; the draft is what followed it. Needs no model; helps repetitive text (code, quotes,
// summaries of the prompt), proposes nothing on text that never repeats.
std::unique_ptr<Proposer> make_ngram_proposer(int min_n, int max_n);
// The draft `ngram_draft` would make for one history (exposed for tests).
std::vector<int32_t> ngram_draft(std::span<const int32_t> history, int min_n, int max_n, int64_t max_tokens);

struct SpeculativeOptions {
  int tokens = 0;  // K, drafts per step and sequence; 0: off
  std::shared_ptr<Proposer> proposer;  // driver only (other ranks need neither)
  bool enabled() const { return tokens > 0 && proposer != nullptr; }
};

// The verdict for one draft token at one target row.
struct Verdict {
  int32_t token = -1;     // what the sequence emits at this row: the draft when accepted, else a replacement
  bool accepted = false;
};

// Rejection rule over the target's distribution `p` (the sampler's processed probabilities over the
// vocabulary) and the proposer's `q` (dense, same size; empty: a point mass on `draft`): accepts when
// u_accept < p[draft] / q[draft]; else emits a draw (u_draw) from max(0, p - q) normalised.
Verdict verify_draft(std::span<const double> p, std::span<const double> q, int32_t draft, double u_accept,
                     double u_draw);
// Inverse-CDF draw from a distribution summing to ~1 (the last positive entry on round-off).
int32_t draw_from(std::span<const double> p, double u);

// The independent uniform streams of speculative sampling, per (seed, draw index); stream 0 is the
// plain sampler's draw.
enum class DrawStream : uint64_t { kSample = 0, kDraft = 1, kAccept = 2, kResample = 3 };

}  // namespace strata
