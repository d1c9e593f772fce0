// runtime/engine.cpp: one Engine step on every rank of a replica: the driver drains the submit and
// cancel inboxes, schedules (runtime/scheduler.h) and broadcasts a ControlMessage; every rank applies
// it, runs its shard of the step (runtime/step_runner.h), the sampler rank samples and broadcasts the
// tokens, and every rank advances the same sequence state and emits the same events.
#include "runtime/engine.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

#include "runtime/engine_control.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/scheduler.h"
#include "runtime/step_runner.h"

namespace strata {
namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

TokenEvent ended(uint64_t id, const char* reason) {
  TokenEvent e;
  e.request_id = id;
  e.finished = true;
  e.finish_reason = reason;
  return e;
}

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

struct Engine::Impl {
  Impl(LlamaModel& m, KvCache& k, StageLink& l, Backend& b, const EngineOptions& o)
      : model(m), kv(k), link(l), backend(b), options(o), runner(m, l, b, o.micro_batches) {
    STRATA_CHECK(o.max_queue > 0, "max_queue must be > 0, got ", o.max_queue);
    if (link.is_driver()) {
      SchedulerOptions so;
      so.max_step_tokens = o.max_step_tokens;
      so.max_running = o.max_running;
      so.prefix_caching = o.prefix_caching;
      so.batch_wait_s = o.batch_wait_ms / 1e3;
      so.wait_for_arrivals = [this](double seconds) {  // the fill-the-batch hold ends at the next submit
        std::unique_lock<std::mutex> lock(mu);
        wake.wait_for(lock, std::chrono::duration<double>(seconds),
                      [&] { return !inbox.empty() || !cancels.empty() || shutdown; });
      };
      scheduler = std::make_unique<Scheduler>(kv, so);
    }
    STRATA_CHECK(o.speculative.tokens == 0 || !o.interleaved, "speculative decoding does not work with the "
                 "interleaved pipeline schedule (parallel.schedule: interleaved); use the default schedule or turn "
                 "speculation off");
    STRATA_CHECK(o.speculative.tokens >= 0 && o.speculative.tokens <= 64, "speculative tokens must be in 0..64, got ",
                 o.speculative.tokens);
    stats.kv_blocks_total = kv.shape().num_blocks;
    model.set_sequence_splices(&features);
  }
  ~Impl() { model.set_sequence_splices(nullptr); }

  // What every rank knows of a batch's logit rows when it starts (the sequences may end before its
  // tokens come back in an interleaved pipeline, so nothing here points at them).
  struct BatchRows {
    int64_t prompt_tokens = 0;
    bool prefill = false;           // anything but plain decodes
    std::vector<int32_t> handles;   // the sequence of each logit row
    std::vector<int> tops;          // alternatives each row reports
    std::vector<SampleRow> sample;  // sampling parameters and draw index of each row
    bool on_backend = false;        // sampled where the logits are
    // Speculative rows (a sequence with several logit rows): the draft each row verifies (-1: none, the
    // last row's bonus token), the row's place among its sequence's rows, and the draft's distribution
    // (index into q; -1: a point mass).
    bool speculative = false;
    std::vector<int32_t> drafts, offsets, q_index;
    std::vector<DraftDistribution> q;
  };
  // What applying a batch's tokens did.
  struct Applied {
    int64_t tokens = 0;
    int64_t verify_steps = 0, drafted = 0, accepted = 0, spec_emitted = 0;
    std::unordered_map<int32_t, int64_t> emitted;  // speculative sequences: tokens each emitted
  };
  // A batch on its way through an interleaved pipeline; every rank keeps the same queue.
  struct InFlight {
    StepBatch step;
    ScheduledStep scheduled;  // driver
    BatchRows rows;
    Tensor hidden;            // stages > 0: the previous stage's output, received the tick before
  };

  ControlMessage plan(std::vector<TokenEvent>& events, int idle_wait_ms, ScheduledStep& scheduled);
  void apply_control(const ControlMessage& msg, std::vector<TokenEvent>& events);
  // First stage, before the step runs: the vision encoder over the images of the step's sequences whose
  // tokens reach an image position for the first time, in one batch; each sequence keeps its features
  // for its later steps (and recomputes after a preemption).
  void encode_images(const StepBatch& step);
  void run(const ControlMessage& msg, const ScheduledStep& scheduled, std::vector<TokenEvent>& events);
  void tick(const ControlMessage& msg, const ScheduledStep& scheduled, std::vector<TokenEvent>& events);
  BatchRows rows_of(const StepBatch& step, const ControlMessage* msg = nullptr) const;
  // Driver: drafts for the decoding sequences (Sequence::draft), their distributions in draft_q.
  void propose();
  // Driver: the distributions of the drafts the scheduler took, by logit row, into the message.
  void attach_drafts(const ScheduledStep& scheduled, ControlMessage& msg);
  // The sampler's words for the rows: drawn on the backend already (`tokens`, `logprobs`) or from host
  // `logits` [rows, vocab]. Rows whose sequence has ended get placeholders nobody reads.
  std::vector<int32_t> sample_rows(const BatchRows& rows, const Tensor& logits, const std::vector<int32_t>& tokens,
                                   const std::vector<float>& logprobs) const;
  // Appends the broadcast tokens to their sequences and emits the events; returns tokens applied.
  Applied apply_tokens(const BatchRows& rows, const std::vector<int32_t>& words, std::vector<TokenEvent>& events);
  void complete(const ScheduledStep& scheduled);  // driver: the batch's KV exists on every stage now
  void record(const BatchRows& rows, const StepBatch& step, const ScheduledStep& scheduled, const Applied& applied,
              double seconds, double forward_s, double sample_s);
  void forget(int32_t handle);

  LlamaModel& model;
  KvCache& kv;
  StageLink& link;
  Backend& backend;
  EngineOptions options;
  StepRunner runner;
  std::unique_ptr<Scheduler> scheduler;                // driver only
  std::map<int32_t, std::unique_ptr<Sequence>> seqs;   // by handle; the driver's include queued ones
  std::unordered_map<uint64_t, int32_t> handle_of;     // driver: request id -> handle
  int32_t next_handle = 0;
  bool stopped = false;
  ImageEncoder* encoder = nullptr;                          // first stage of a vision-language model
  std::unordered_map<int32_t, EmbeddingSplice> features;    // by handle: image features of live sequences
  std::function<std::vector<int32_t>()> local_telemetry;    // this rank's words (set_telemetry)
  double telemetry_interval_s = 0;                          // driver: 0 = never gather
  std::chrono::steady_clock::time_point last_telemetry;     // driver: when the last gather was asked for

  // Shared with the submitting threads (driver).
  mutable std::mutex mu;
  std::condition_variable wake;
  std::deque<EngineRequest> inbox;
  std::vector<uint64_t> cancels;
  bool shutdown = false, drain = false;
  std::unordered_set<uint64_t> live;  // submitted, not yet ended
  int64_t queued = 0;                 // the scheduler's waiting count after the last step
  EngineStats stats;
  std::deque<InFlight> flight;        // interleaved: batches that entered in the last stages ticks
  std::unordered_map<int32_t, std::vector<DraftDistribution>> draft_q;  // driver: this step's proposals
  std::vector<std::vector<int32_t>> telemetry;  // driver: every rank's words from the last gather
};

void Engine::Impl::forget(int32_t handle) {
  const auto it = seqs.find(handle);
  if (it == seqs.end()) return;
  features.erase(handle);
  if (link.is_driver()) {
    if (options.speculative.proposer) options.speculative.proposer->forget(handle);
    const uint64_t id = it->second->request.id;
    handle_of.erase(id);
    std::lock_guard<std::mutex> lock(mu);
    live.erase(id);
  }
  seqs.erase(it);
}

ControlMessage Engine::Impl::plan(std::vector<TokenEvent>& events, int idle_wait_ms, ScheduledStep& scheduled) {
  std::deque<EngineRequest> incoming;
  std::vector<uint64_t> cancelled;
  bool stop = false, stop_drain = false;
  {
    std::unique_lock<std::mutex> lock(mu);
    auto pending = [&] { return !inbox.empty() || !cancels.empty() || shutdown; };
    if (!pending() && seqs.empty() && idle_wait_ms > 0)
      wake.wait_for(lock, std::chrono::milliseconds(idle_wait_ms), pending);
    incoming.swap(inbox);
    cancelled.swap(cancels);
    stop = shutdown;
    stop_drain = drain;
  }
  for (EngineRequest& r : incoming) {
    auto s = std::make_unique<Sequence>();
    s->handle = next_handle;
    next_handle = next_handle == INT32_MAX ? 0 : next_handle + 1;
    s->request = std::move(r);
    s->history = s->request.prompt;
    handle_of[s->request.id] = s->handle;
    scheduler->enqueue(s.get());
    seqs.emplace(s->handle, std::move(s));
  }

  ControlMessage msg;
  // Announced sequences end on every rank when the message is applied; queued ones only exist here.
  auto end_sequence = [&](Sequence& s) {
    scheduler->remove(&s);
    if (s.announced) {
      msg.cancelled.push_back(s.handle);
    } else {
      events.push_back(ended(s.request.id, "cancelled"));
      forget(s.handle);
    }
  };
  for (uint64_t id : cancelled) {
    const auto it = handle_of.find(id);
    if (it != handle_of.end()) end_sequence(*seqs.at(it->second));
  }
  if (stop && (!stop_drain || seqs.empty())) {
    std::vector<Sequence*> rest;
    for (auto& [handle, s] : seqs) rest.push_back(s.get());
    for (Sequence* s : rest) end_sequence(*s);
    msg.shutdown = true;
    return msg;
  }
  // Interleaved: a tick takes its share of the sequences, so the others fill the remaining stages.
  const int64_t stages = options.interleaved ? std::max(1, options.pipeline_stages) : 1;
  const int64_t active = scheduler->running() + scheduler->waiting();
  if (options.speculative.enabled()) propose();
  scheduled = scheduler->schedule(stages > 1 ? std::max<int64_t>(1, (active + stages - 1) / stages)
                                             : std::numeric_limits<int64_t>::max());
  msg.step = scheduled.batch;
  if (options.speculative.enabled()) attach_drafts(scheduled, msg);
  for (Sequence* s : scheduled.announce) msg.admitted.push_back({s->handle, s->request});
  return msg;
}

void Engine::Impl::propose() {
  std::vector<DraftRequest> asks;
  std::vector<Sequence*> owners;
  for (auto& [handle, s] : seqs) {
    s->draft.clear();
    // Decoding: running, its history all computed but the last token, a token generated already.
    if (s->admitted_at < 0 || s->in_flight || s->generated == 0 ||
        static_cast<int64_t>(s->history.size()) - s->processed != 1)
      continue;
    // Every token a step emits counts against max_new_tokens: K drafts may emit K + 1.
    const int64_t k = std::min<int64_t>(options.speculative.tokens, s->request.max_new_tokens - s->generated - 1);
    if (k <= 0) continue;
    asks.push_back({handle, s->history, k, s->request.sampling, static_cast<uint64_t>(s->generated)});
    owners.push_back(s.get());
  }
  draft_q.clear();
  if (asks.empty()) return;
  std::vector<Draft> drafts = options.speculative.proposer->propose(asks);
  STRATA_CHECK_KIND(ErrorKind::kInternal, drafts.size() == asks.size(), "the proposer answered ", drafts.size(),
                    " of ", asks.size(), " draft requests");
  const int64_t V = model.config().vocab_size;
  for (size_t i = 0; i < asks.size(); ++i) {
    Draft& d = drafts[i];
    const size_t k = std::min(d.tokens.size(), static_cast<size_t>(asks[i].max_tokens));
    d.tokens.resize(k);
    for (int32_t t : d.tokens)
      STRATA_CHECK_KIND(ErrorKind::kInternal, t >= 0 && t < V, "draft token ", t, " outside the vocabulary");
    owners[i]->draft = std::move(d.tokens);
    if (!d.q.empty() && !asks[i].sampling.greedy()) {
      d.q.resize(k);
      draft_q[asks[i].handle] = std::move(d.q);
    }
  }
}

void Engine::Impl::attach_drafts(const ScheduledStep& scheduled, ControlMessage& msg) {
  const StepBatch& step = scheduled.batch;
  std::vector<int32_t> first_row(scheduled.seqs.size(), -1);  // each sequence's first logit row
  for (size_t i = step.logit_rows.size(); i-- > 0;)
    first_row[static_cast<size_t>(step.token_seq[static_cast<size_t>(step.logit_rows[i])])] = static_cast<int32_t>(i);
  for (size_t i = 0; i < scheduled.seqs.size(); ++i) {
    Sequence& s = *scheduled.seqs[i];
    const auto it = draft_q.find(s.handle);
    if (scheduled.drafts[i] > 0 && it != draft_q.end())
      for (int64_t j = 0; j < scheduled.drafts[i]; ++j) {
        msg.draft_q_rows.push_back(first_row[i] + static_cast<int32_t>(j));
        msg.draft_q.push_back(std::move(it->second[static_cast<size_t>(j)]));
      }
  }
  for (auto& [handle, s] : seqs) s->draft.clear();
  draft_q.clear();
}

void Engine::Impl::apply_control(const ControlMessage& msg, std::vector<TokenEvent>& events) {
  if (!link.is_driver()) {
    for (const AdmittedRequest& a : msg.admitted) {
      auto s = std::make_unique<Sequence>();
      s->handle = a.handle;
      s->request = a.request;
      s->history = a.request.prompt;
      s->announced = true;
      seqs[a.handle] = std::move(s);
    }
  }
  for (int32_t handle : msg.cancelled) {
    const auto it = seqs.find(handle);
    STRATA_CHECK_KIND(ErrorKind::kInternal, it != seqs.end(), "cancelled sequence ", handle,
                      " is unknown on this rank");
    events.push_back(ended(it->second->request.id, "cancelled"));
    forget(handle);
  }
  // Only the first stage reads pixels; the others let theirs go at once.
  if (!model.spec().first_stage)
    for (const AdmittedRequest& a : msg.admitted)
      if (const auto it = seqs.find(a.handle); it != seqs.end())
        for (RequestImage& image : it->second->request.images) image.pixels = Tensor();
}

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

void Engine::Impl::complete(const ScheduledStep& scheduled) {
  // Only sequences still alive: a cancelled one's pointer is gone (its handle is not reused soon).
  ScheduledStep live;
  for (size_t i = 0; i < scheduled.seqs.size(); ++i) {
    const auto it = seqs.find(scheduled.batch.seq_ids[i]);
    if (it == seqs.end() || it->second.get() != scheduled.seqs[i]) continue;
    it->second->in_flight = false;
    live.seqs.push_back(scheduled.seqs[i]);
    live.counts.push_back(scheduled.counts[i]);
    live.drafts.push_back(i < scheduled.drafts.size() ? scheduled.drafts[i] : 0);
    live.admitted_at.push_back(scheduled.admitted_at[i]);
  }
  scheduler->complete(live);
}

void Engine::Impl::record(const BatchRows& rows, const StepBatch& step, const ScheduledStep& scheduled,
                          const Applied& applied, double seconds, double forward_s, double sample_s) {
  std::lock_guard<std::mutex> lock(mu);
  ++stats.steps;
  stats.prompt_tokens += rows.prompt_tokens;
  stats.generated_tokens += applied.tokens;
  stats.decode_steps += rows.prefill ? 0 : 1;
  stats.spec_verify_steps += applied.verify_steps;
  stats.spec_draft_tokens += applied.drafted;
  stats.spec_accepted_tokens += applied.accepted;
  stats.spec_emitted_tokens += applied.spec_emitted;
  stats.preemptions += scheduled.preempted;
  stats.prefix_hit_tokens += scheduled.prefix_hit_tokens;
  stats.last_batch_size = step.n_seqs;
  (rows.prefill ? stats.prefill_seconds : stats.decode_seconds) += seconds;
  stats.forward_seconds += forward_s;
  stats.sample_seconds += sample_s;
}

void Engine::Impl::run(const ControlMessage& msg, const ScheduledStep& scheduled, std::vector<TokenEvent>& events) {
  const StepBatch& step = msg.step;
  const double t0 = now_seconds();
  const BatchRows rows = rows_of(step, &msg);
  Tensor logits;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  if (rows.on_backend) {
    tokens.resize(rows.handles.size());
    logprobs.resize(rows.handles.size());
    runner.run_and_sample(step, rows.sample, tokens, logprobs);  // forward time includes the sampling then
  } else {
    logits = runner.run(step, false);
  }
  const double t_forward = now_seconds();
  // A speculative step's KV counts only as far as verification kept it: known after the tokens.
  if (link.is_driver() && !rows.speculative) scheduler->complete(scheduled);
  std::vector<int32_t> words(sample_words(rows.tops));
  if (link.is_sampler()) words = sample_rows(rows, logits, tokens, logprobs);
  link.broadcast_tokens(words);
  const double t_sampled = now_seconds();
  const Applied applied = apply_tokens(rows, words, events);
  if (link.is_driver() && rows.speculative) {
    ScheduledStep kept = scheduled;
    for (size_t i = 0; i < kept.seqs.size(); ++i)
      if (kept.drafts[i] > 0) {
        const auto it = applied.emitted.find(kept.batch.seq_ids[i]);
        kept.counts[i] = it == applied.emitted.end() ? 0 : it->second;
      }
    complete(kept);  // only the sequences still alive
  }
  record(rows, step, scheduled, applied, now_seconds() - t0, t_forward - t0, t_sampled - t_forward);
}

// One tick of the interleaved pipeline. Stage s runs the batch that entered s ticks ago; hand-offs go
// send first, then receive (the last stage only receives), so a chain of blocking transfers always
// completes within the tick; the batch leaving the last stage is sampled and its tokens applied.
// KV blocks stay safe when the driver frees a block whose owner's batch is still in flight: every
// stage runs batches in the order they entered, so a later owner writes the block later on each stage.
void Engine::Impl::tick(const ControlMessage& msg, const ScheduledStep& scheduled, std::vector<TokenEvent>& events) {
  const int S = std::max(1, options.pipeline_stages), s = options.pipeline_stage;
  const bool last = model.spec().last_stage;
  const double t0 = now_seconds();
  flight.push_back(InFlight{msg.step, scheduled, rows_of(msg.step), Tensor()});
  if (link.is_driver())
    for (Sequence* q : scheduled.seqs) q->in_flight = true;
  const size_t n = flight.size();
  {
    int64_t busy = 0;
    for (const InFlight& f : flight) busy += f.step.n_seqs > 0 ? 1 : 0;
    std::lock_guard<std::mutex> lock(mu);
    stats.most_batches_in_flight = std::max(stats.most_batches_in_flight, busy);
  }

  Tensor logits;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  InFlight* mine = n > static_cast<size_t>(s) ? &flight[n - 1 - static_cast<size_t>(s)] : nullptr;
  if (mine != nullptr && mine->step.n_seqs > 0) {
    Tensor hidden = s > 0 ? mine->hidden : Tensor();
    model.forward(mine->step, hidden);
    if (!last) {
      link.send_hidden(hidden, 0);
    } else if (!mine->step.logit_rows.empty()) {
      if (mine->rows.on_backend) {
        tokens.resize(mine->rows.handles.size());
        logprobs.resize(mine->rows.handles.size());
        model.sample(mine->step, hidden, mine->rows.sample, tokens, logprobs);
      } else {
        logits = model.logits(mine->step, hidden);
      }
    }
    mine->hidden = Tensor();
  }
  if (s > 0 && n >= static_cast<size_t>(s)) {  // what stage s - 1 ran this tick, for the next one
    InFlight& next = flight[n - static_cast<size_t>(s)];
    if (next.step.n_seqs > 0) {
      next.hidden = backend.alloc({next.step.n_tokens(), model.config().hidden}, backend.activation_dtype());
      link.recv_hidden(next.hidden, 0);
    }
  }
  const double t_forward = now_seconds();
  if (n < static_cast<size_t>(S)) return;  // the pipeline is still filling

  InFlight done = std::move(flight.front());
  flight.pop_front();
  if (done.step.n_seqs == 0) return;
  if (link.is_driver()) complete(done.scheduled);
  Applied applied;
  if (!done.rows.handles.empty()) {
    std::vector<int32_t> words(sample_words(done.rows.tops));
    if (link.is_sampler()) words = sample_rows(done.rows, logits, tokens, logprobs);
    link.broadcast_tokens(words);
    applied = apply_tokens(done.rows, words, events);
  }
  const double t_end = now_seconds();
  record(done.rows, done.step, done.scheduled, applied, t_end - t0, t_forward - t0, t_end - t_forward);
}

Engine::Engine(LlamaModel& model, KvCache& kv, StageLink& link, Backend& backend, EngineOptions options)
    : impl_(std::make_unique<Impl>(model, kv, link, backend, options)) {}

Engine::~Engine() = default;

void Engine::validate(const EngineRequest& r) const {
  const ModelConfig& c = impl_->model.config();
  const KvCache& kv = impl_->kv;
  STRATA_CHECK(!r.prompt.empty(), "request ", r.id, " has an empty prompt; send at least one token");
  STRATA_CHECK(r.max_new_tokens >= 1, "request ", r.id, ": max_new_tokens must be >= 1, got ", r.max_new_tokens);
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  STRATA_CHECK(r.max_new_tokens <= c.max_seq && prompt + r.max_new_tokens <= c.max_seq, "request ", r.id,
               ": prompt of ", prompt, " tokens plus ", r.max_new_tokens, " new tokens exceeds the model's context of ",
               c.max_seq, " tokens; shorten the prompt or lower max_new_tokens");
  for (int32_t id : r.prompt)
    STRATA_CHECK(id >= 0 && id < c.vocab_size, "request ", r.id, ": prompt token id ", id,
                 " is outside the vocabulary of ", c.vocab_size);
  for (int32_t id : r.stop_ids)
    STRATA_CHECK(id >= 0 && id < c.vocab_size, "request ", r.id, ": stop token id ", id,
                 " is outside the vocabulary of ", c.vocab_size);
  STRATA_CHECK(r.logprobs >= 0 && r.logprobs <= kMaxLogprobs, "request ", r.id, ": logprobs must be in 0..",
               kMaxLogprobs, ", got ", r.logprobs);
  r.sampling.validate();
  const ImageEncoder* encoder = impl_->encoder;
  if (!r.images.empty() && encoder == nullptr && impl_->link.is_driver())
    STRATA_THROW(ErrorKind::kInvalidArgument, "request ", r.id, " has ", r.images.size(),
                 " image(s) but this model has no vision tower; send text only, or serve a vision-language "
                 "(LLaVA-style) checkpoint");
  int64_t taken = 0;  // prompt positions before here belong to earlier images
  for (size_t i = 0; i < r.images.size(); ++i) {
    const RequestImage& image = r.images[i];
    STRATA_CHECK(image.length >= 1 && image.position >= taken && image.position + int64_t{image.length} <= prompt,
                 "request ", r.id, ": image ", i, " fills prompt positions ", image.position, "..",
                 image.position + int64_t{image.length}, ", which overlap an earlier image or leave the prompt of ",
                 prompt, " tokens");
    taken = image.position + int64_t{image.length};
    STRATA_CHECK(image.pixels.dtype() == DType::kF32 && (image.pixels.rank() == 3 || image.pixels.rank() == 4) &&
                     image.pixels.device() == Device::kCpu,
                 "request ", r.id, ": image ", i, " pixels ", shape_str(image.pixels.shape()),
                 " are not f32 [channels, height, width] (or [tiles, channels, height, width]) on the host");
    STRATA_CHECK(image.height >= 0 && image.width >= 0, "request ", r.id, ": image ", i, " has a negative size");
    if (encoder != nullptr) {
      const int64_t want = encoder->features_for(image.height, image.width);
      const Shape shape = encoder->pixel_shape_for(image.height, image.width);
      STRATA_CHECK(image.length == want && image.pixels.shape() == shape, "request ", r.id, ": image ", i, " (",
                   image.width, "x", image.height, ") has pixels ", shape_str(image.pixels.shape()), " for ",
                   image.length, " positions; this model's vision tower reads ", shape_str(shape), " and yields ",
                   want, " features for it");
    }
  }
  // The last sampled token is never fed back, so a sequence holds at most prompt + max_new - 1 slots.
  const int64_t blocks = kv.blocks_for(prompt + r.max_new_tokens - 1);
  STRATA_CHECK(blocks <= kv.shape().num_blocks, "request ", r.id, ": prompt of ", prompt, " tokens plus ",
               r.max_new_tokens, " new tokens needs ", blocks, " KV blocks of ", kv.shape().block_size,
               " tokens but the whole cache has ", kv.shape().num_blocks,
               "; give the KV cache more memory or lower max_new_tokens");
}

bool Engine::submit(EngineRequest request) {
  STRATA_CHECK(impl_->link.is_driver(), "Engine::submit is for the replica's driver (rank 0 of the replica)");
  validate(request);
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->shutdown) return false;
    STRATA_CHECK(impl_->live.count(request.id) == 0, "request id ", request.id,
                 " is already in flight; ids must be unique among unfinished requests");
    if (impl_->queued + static_cast<int64_t>(impl_->inbox.size()) >= impl_->options.max_queue) return false;
    impl_->live.insert(request.id);
    impl_->inbox.push_back(std::move(request));
  }
  impl_->wake.notify_one();
  return true;
}

void Engine::set_image_encoder(ImageEncoder* encoder) { impl_->encoder = encoder; }

void Engine::set_telemetry(double interval_s, std::function<std::vector<int32_t>()> local) {
  impl_->telemetry_interval_s = interval_s;
  impl_->local_telemetry = std::move(local);
}

std::vector<std::vector<int32_t>> Engine::rank_telemetry() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->telemetry;
}

void Engine::cancel(uint64_t request_id) {
  STRATA_CHECK(impl_->link.is_driver(), "Engine::cancel is for the replica's driver (rank 0 of the replica)");
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->cancels.push_back(request_id);
  }
  impl_->wake.notify_one();
}

void Engine::shutdown(bool drain) {
  STRATA_CHECK(impl_->link.is_driver(), "Engine::shutdown is for the replica's driver (rank 0 of the replica)");
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (!impl_->shutdown) impl_->drain = drain;
    impl_->shutdown = true;
  }
  impl_->wake.notify_one();
}

bool Engine::step(std::vector<TokenEvent>& events, int idle_wait_ms) {
  Impl& m = *impl_;
  if (m.stopped) return false;
  ControlMessage msg;
  ScheduledStep scheduled;
  std::vector<int32_t> words;
  if (m.link.is_driver()) {
    msg = m.plan(events, idle_wait_ms, scheduled);
    const auto now = std::chrono::steady_clock::now();
    if (m.telemetry_interval_s > 0 && now - m.last_telemetry >= std::chrono::duration<double>(m.telemetry_interval_s)) {
      msg.gather_telemetry = true;
      m.last_telemetry = now;
    }
    words = msg.pack();
  }
  m.link.broadcast_step(words);
  if (!m.link.is_driver()) msg = ControlMessage::unpack(words);
  if (msg.gather_telemetry) {  // every rank takes part, or the gather hangs: a failing source sends nothing
    std::vector<int32_t> mine;
    try {
      if (m.local_telemetry) mine = m.local_telemetry();
    } catch (const std::exception& e) {
      LOG_WARN("rank telemetry: ", e.what());
    }
    std::vector<std::vector<int32_t>> all = m.link.gather_to_driver(mine);
    if (m.link.is_driver()) {
      std::lock_guard<std::mutex> lock(m.mu);
      m.telemetry = std::move(all);
    }
  }
  m.apply_control(msg, events);
  m.encode_images(msg.step);  // stage 0 runs msg.step now, interleaved or not
  if (m.options.interleaved) {
    if (!msg.shutdown) m.tick(msg, scheduled, events);  // every step is a tick, on every rank alike
  } else if (msg.step.n_seqs > 0) {
    m.run(msg, scheduled, events);
  }
  if (m.scheduler) {
    std::lock_guard<std::mutex> lock(m.mu);
    m.queued = m.scheduler->waiting();
    m.stats.waiting = m.queued + static_cast<int64_t>(m.inbox.size());
    m.stats.running = m.scheduler->running();
    m.stats.kv_blocks_used = m.scheduler->pool().used();
    m.stats.kv_blocks_cached = m.scheduler->pool().cached_idle();
    m.stats.outstanding_tokens = m.scheduler->outstanding_tokens();
    m.stats.expert_tokens = m.model.expert_load().tokens;
    if (const ExpertCacheStats c = m.model.expert_cache_stats(); c.enabled()) {
      const ModelConfig& config = m.model.config();
      m.stats.expert_cache_hits.assign(static_cast<size_t>(config.moe.n_experts), 0);
      m.stats.expert_cache_misses.assign(static_cast<size_t>(config.moe.n_experts), 0);
      m.stats.expert_layer_hits.assign(static_cast<size_t>(config.n_layers), 0);
      m.stats.expert_layer_misses.assign(static_cast<size_t>(config.n_layers), 0);
      for (int64_t l = 0; l < c.layers; ++l)
        for (int64_t e = 0; e < c.experts; ++e) {
          const auto i = static_cast<size_t>(l * c.experts + e);
          const auto g = static_cast<size_t>(c.expert_first + e), layer = static_cast<size_t>(c.layer_index[static_cast<size_t>(l)]);
          m.stats.expert_cache_hits[g] += c.hits[i], m.stats.expert_cache_misses[g] += c.misses[i];
          m.stats.expert_layer_hits[layer] += c.hits[i], m.stats.expert_layer_misses[layer] += c.misses[i];
        }
      m.stats.expert_bytes_streamed = c.bytes_streamed;
    }
  }
  if (msg.shutdown) m.stopped = true;
  return !m.stopped;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

void Engine::clear_prefix_cache() {
  if (!impl_->scheduler) return;
  impl_->scheduler->pool().clear_cache();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->stats.kv_blocks_cached = 0;
}

}  // namespace strata
