// runtime/engine_control.h: what the ranks of a replica exchange in one Engine step, as flat i32
// words for StageLink: the driver's control message (shutdown flag, newly admitted requests with
// prompts, sampling parameters and stop ids, cancelled sequences, the StepBatch) and the sampler's
// result (each sampled token, its logprob and top alternatives).
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/request.h"
#include "runtime/speculative.h"
#include "runtime/step.h"

namespace strata {

struct AdmittedRequest {
  int32_t handle = -1;  // the sequence's id in StepBatch::seq_ids
  EngineRequest request;
};

struct ControlMessage {
  bool shutdown = false;                  // every rank's step() returns false after this step
  bool gather_telemetry = false;          // every rank sends its telemetry words to the driver this step
  std::vector<AdmittedRequest> admitted;  // first admission: the replica learns the request here
  std::vector<int32_t> cancelled;         // handles of announced sequences that end now
  // Sampled speculation from a draft model: the proposer's distribution of the draft that logit row
  // draft_q_rows[i] verifies (other drafts are point masses, and need nothing beyond the step's tokens).
  std::vector<int32_t> draft_q_rows;
  std::vector<DraftDistribution> draft_q;
  StepBatch step;                         // may be empty (idle step)

  std::vector<int32_t> pack() const;
  // Throws kComm when the words are not a control message (ranks out of step).
  static ControlMessage unpack(const std::vector<int32_t>& words);
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.f;
  std::vector<TokenLogprob> top;  // best first
};

// Sampler -> replica. Receivers size the buffer from `top_counts` (alternatives per row, known to
// every rank from the requests), so no length travels.
size_t sample_words(const std::vector<int>& top_counts);
std::vector<int32_t> pack_samples(const std::vector<SampledToken>& rows, const std::vector<int>& top_counts);
std::vector<SampledToken> unpack_samples(const std::vector<int32_t>& words, const std::vector<int>& top_counts);

}  // namespace strata
