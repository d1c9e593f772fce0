// runtime/engine_rows.cpp: what a step does for its batch's rows around the forward pass: the vision
// encoder over images reached for the first time, the rows' sampling parameters, the sampler's draws
// (speculative verification included) and the tokens applied to their sequences.
#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "runtime/engine_impl.h"

namespace strata {
namespace {

// Log-softmax of the raw logits for the sampled token and the `top` best tokens (ties: lower id).
SampledToken describe(std::span<const float> logits, int32_t token, int top) {
  SampledToken out;
  out.token = token;
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;  // f32 exponentials (they vectorise), summed in f64
  for (float v : logits) sum += static_cast<double>(std::exp(v - max));
  const double log_z = static_cast<double>(max) + std::log(sum);
  out.logprob = static_cast<float>(logits[static_cast<size_t>(token)] - log_z);
  if (top > 0) {
    std::vector<int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    const auto k = static_cast<std::ptrdiff_t>(std::min<size_t>(static_cast<size_t>(top), order.size()));
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
             (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
    });
    for (std::ptrdiff_t i = 0; i < k; ++i)
      out.top.push_back({order[static_cast<size_t>(i)],
                         static_cast<float>(logits[static_cast<size_t>(order[static_cast<size_t>(i)])] - log_z)});
  }
  return out;
}

}  // namespace

void Engine::Impl::encode_images(const StepBatch& step) {
  if (!model.spec().first_stage) return;
  // The sequences whose tokens in this step reach an image position before their features exist. Positions
  // served from the prefix cache are never computed, so an image whose blocks are all cached is not encoded.
  std::vector<int32_t> needed;
  for (int64_t t = 0; t < step.n_tokens(); ++t) {
    const int32_t handle = step.seq_ids[static_cast<size_t>(step.token_seq[static_cast<size_t>(t)])];
    if (features.count(handle) != 0 || std::find(needed.begin(), needed.end(), handle) != needed.end()) continue;
    const Sequence& s = *seqs.at(handle);
    const int64_t pos = step.positions[static_cast<size_t>(t)];
    for (const RequestImage& image : s.request.images)
      if (pos >= image.position && pos < int64_t{image.position} + image.length) {
        needed.push_back(handle);
        break;
      }
  }
  if (needed.empty()) return;
  STRATA_CHECK_KIND(ErrorKind::kInternal, encoder != nullptr, "a request with images reached a first-stage rank ",
                    "without a vision encoder");
  std::vector<Tensor> pixels;
  std::vector<std::array<int64_t, 2>> sizes;
  for (int32_t handle : needed)
    for (const RequestImage& image : seqs.at(handle)->request.images) {
      pixels.push_back(image.pixels);
      sizes.push_back({image.height, image.width});
    }
  const Tensor all = encoder->encode(pixels, sizes);  // one batch over every image the step needs
  int64_t first = 0;
  for (int32_t handle : needed) {
    std::vector<RequestImage>& images = seqs.at(handle)->request.images;
    EmbeddingSplice& splice = features[handle];
    // A request's images are consecutive in the batch, so its features are one range of rows.
    int64_t rows = 0;
    for (RequestImage& image : images) {
      for (int32_t p = 0; p < image.length; ++p) splice.positions.push_back(image.position + p);
      rows += image.length;
      image.pixels = Tensor();  // the features stay as long as the sequence (recomputes after a preemption)
    }
    splice.rows = all.rows(first, rows);
    first += rows;
  }
  std::lock_guard<std::mutex> lock(mu);
  stats.images_encoded += static_cast<int64_t>(pixels.size());
}

Engine::Impl::BatchRows Engine::Impl::rows_of(const StepBatch& step, const ControlMessage* msg) const {
  BatchRows out;
  // Token accounting before the history grows: prompt positions computed, and whether anything but
  // plain decodes (one token at the end of a sequence that already generated) ran.
  for (int64_t t = 0; t < step.n_tokens(); ++t) {
    const Sequence& s = *seqs.at(step.seq_ids[static_cast<size_t>(step.token_seq[static_cast<size_t>(t)])]);
    const int64_t pos = step.positions[static_cast<size_t>(t)];
    if (pos < static_cast<int64_t>(s.request.prompt.size())) ++out.prompt_tokens;
    // (Speculative tokens sit past the history: decodes too.)
    out.prefill = out.prefill || s.generated == 0 || pos + 1 < static_cast<int64_t>(s.history.size());
  }
  // Sample where the logits are (the GPU) when every row allows it: only tokens cross the bus then. Rows
  // asking for top logprobs or a repetition penalty need the whole row on the host. Every rank decides
  // alike (same requests, same TP size), so the pipeline's sends and receives still pair up.
  out.on_backend = model.samples_on_backend();
  const size_t n = step.logit_rows.size();
  out.drafts.assign(n, -1);
  out.offsets.assign(n, 0);
  out.q_index.assign(n, -1);
  auto seq_of = [&](size_t i) { return step.token_seq[static_cast<size_t>(step.logit_rows[i])]; };
  for (size_t i = 0; i < n; ++i) {
    const int32_t r = step.logit_rows[i];
    // A sequence's rows are consecutive tokens: each row but its last verifies the token after it.
    if (i + 1 < n && seq_of(i + 1) == seq_of(i) && step.logit_rows[i + 1] == r + 1)
      out.drafts[i] = step.tokens[static_cast<size_t>(r + 1)];
    if (i > 0 && seq_of(i - 1) == seq_of(i)) out.offsets[i] = out.offsets[i - 1] + 1;
    out.speculative = out.speculative || out.drafts[i] >= 0;
  }
  if (msg != nullptr) {
    out.q = msg->draft_q;
    for (size_t j = 0; j < msg->draft_q_rows.size(); ++j) {
      const int32_t row = msg->draft_q_rows[j];
      STRATA_CHECK_KIND(ErrorKind::kComm, row >= 0 && static_cast<size_t>(row) < n && out.drafts[static_cast<size_t>(row)] >= 0,
                        "draft distribution for logit row ", row, " that verifies no draft");
      out.q_index[static_cast<size_t>(row)] = static_cast<int32_t>(j);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const int32_t handle = step.seq_ids[static_cast<size_t>(seq_of(i))];
    const Sequence& s = *seqs.at(handle);
    out.handles.push_back(handle);
    out.tops.push_back(s.request.logprobs);
    out.sample.push_back({s.request.sampling, static_cast<uint64_t>(s.generated + out.offsets[i])});
    out.on_backend = out.on_backend && s.request.logprobs == 0 && s.request.sampling.repetition_penalty == 1.f;
    // Sampled verification needs the target's whole distribution on the host.
    if (out.drafts[i] >= 0 || out.offsets[i] > 0) out.on_backend = out.on_backend && s.request.sampling.greedy();
  }
  return out;
}

std::vector<int32_t> Engine::Impl::sample_rows(const BatchRows& rows, const Tensor& logits,
                                               const std::vector<int32_t>& tokens,
                                               const std::vector<float>& logprobs) const {
  const size_t n = rows.handles.size();
  std::vector<SampledToken> sampled(n);
  std::vector<uint8_t> accepted(n, 0);  // speculative rows: the draft stands
  if (rows.on_backend) {  // greedy whenever speculative (rows_of): a draft stands when it is the argmax
    for (size_t i = 0; i < n; ++i) {
      sampled[i] = {tokens[i], logprobs[i], {}};
      accepted[i] = rows.drafts[i] >= 0 && tokens[i] == rows.drafts[i];
    }
  } else {
    const int64_t V = model.config().vocab_size;
    std::vector<const Sequence*> live(n, nullptr);
    for (size_t i = 0; i < n; ++i)
      if (const auto it = seqs.find(rows.handles[i]); it != seqs.end()) live[i] = it->second.get();
    // Rows are independent and each costs a few passes over the vocabulary (sampling, log-softmax):
    // spread them over the host's cores so a batch of 64 does not serialise on one.
    const int64_t n_rows = static_cast<int64_t>(n);
#pragma omp parallel for schedule(dynamic) if (n_rows > 1)
    for (int64_t i = 0; i < n_rows; ++i) {
      const size_t k = static_cast<size_t>(i);
      const int top = rows.tops[k];
      if (live[k] == nullptr) {  // ended while in flight: keep the layout, nobody reads it
        sampled[k].top.assign(static_cast<size_t>(top), TokenLogprob{});
        continue;
      }
      const Sequence& s = *live[k];
      const std::span<const float> row(logits.data<float>() + i * V, static_cast<size_t>(V));
      const SamplingParams& params = s.request.sampling;
      const uint64_t draw = rows.sample[k].step;
      int32_t token;
      if (rows.drafts[k] < 0 && rows.offsets[k] == 0) {
        token = Sampler::sample(row, params, s.history, draw);
      } else {
        // The row scores the history plus the drafts of the sequence's earlier rows.
        std::vector<int32_t> context(s.history);
        for (size_t j = k - static_cast<size_t>(rows.offsets[k]); j < k; ++j) context.push_back(rows.drafts[j]);
        if (params.greedy()) {
          token = Sampler::sample(row, params, context, draw);
          accepted[k] = token == rows.drafts[k];
        } else {
          const std::vector<double> p = Sampler::distribution(row, params, context);
          const double u_draw = Sampler::uniform(params.seed, draw, static_cast<uint64_t>(DrawStream::kResample));
          if (rows.drafts[k] < 0) {  // the bonus row after every draft stood: the target's own draw
            token = draw_from(p, u_draw);
          } else {
            std::vector<double> q;
            if (rows.q_index[k] >= 0) {
              const DraftDistribution& d = rows.q[static_cast<size_t>(rows.q_index[k])];
              q.assign(static_cast<size_t>(V), 0.0);
              for (size_t t = 0; t < d.ids.size(); ++t) q[static_cast<size_t>(d.ids[t])] = d.probs[t];
            }
            const Verdict v = verify_draft(p, q, rows.drafts[k],
                                           Sampler::uniform(params.seed, draw, static_cast<uint64_t>(DrawStream::kAccept)),
                                           u_draw);
            token = v.token;
            accepted[k] = v.accepted;
          }
        }
      }
      sampled[k] = describe(row, token, top);
    }
  }
  // A sequence emits its rows up to the first rejected draft (whose row emits the replacement);
  // the rows after it emit nothing (-1).
  bool rejected = false;
  for (size_t i = 0; i < n; ++i) {
    if (rows.offsets[i] == 0) rejected = false;
    if (rejected) sampled[i].token = -1;
    if (rows.drafts[i] >= 0 && !accepted[i]) rejected = true;
  }
  return pack_samples(sampled, rows.tops);
}

Engine::Impl::Applied Engine::Impl::apply_tokens(const BatchRows& rows, const std::vector<int32_t>& words,
                                                 std::vector<TokenEvent>& events) {
  std::vector<SampledToken> sampled = unpack_samples(words, rows.tops);
  Applied applied;
  for (size_t i = 0; i < rows.handles.size(); ++i) {
    const bool spec_row = rows.drafts[i] >= 0 || rows.offsets[i] > 0;
    if (rows.drafts[i] >= 0) {  // verification accounting, the same on every rank
      applied.verify_steps += rows.offsets[i] == 0 ? 1 : 0;
      ++applied.drafted;
      applied.accepted += sampled[i].token == rows.drafts[i] ? 1 : 0;
    }
    const auto it = seqs.find(rows.handles[i]);
    if (it == seqs.end()) continue;  // cancelled while its batch was in flight, or ended at an earlier row
    if (sampled[i].token < 0) continue;  // after a rejected draft
    Sequence& s = *it->second;
    if (spec_row) {
      ++applied.emitted[s.handle];
      ++applied.spec_emitted;
    }
    TokenEvent e;
    e.request_id = s.request.id;
    e.token = sampled[i].token;
    e.logprob = sampled[i].logprob;
    e.top_logprobs = std::move(sampled[i].top);
    s.history.push_back(e.token);
    ++s.generated;
    ++applied.tokens;
    const auto& stops = s.request.stop_ids;
    if (std::find(stops.begin(), stops.end(), e.token) != stops.end()) {
      e.finished = true;
      e.finish_reason = "stop";
    } else if (s.generated >= s.request.max_new_tokens) {
      e.finished = true;
      e.finish_reason = "length";
    }
    events.push_back(std::move(e));
    if (events.back().finished) {
      if (link.is_driver()) scheduler->remove(&s);
      forget(s.handle);
    }
  }
  return applied;
}

}  // namespace strata
