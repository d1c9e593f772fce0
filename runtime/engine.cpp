// runtime/engine.cpp: one Engine step on every rank of a replica: the driver drains the submit and
// cancel inboxes, schedules (runtime/scheduler.h) and broadcasts a ControlMessage; every rank applies
// it, runs its shard of the step (runtime/step_runner.h), the sampler rank samples and broadcasts the
// tokens, and every rank advances the same sequence state and emits the same events.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "runtime/engine_impl.h"
#include "runtime/log.h"

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
}  // namespace

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
  if (msg.gather_telemetry) m.gather_expert_counts();  // after the step: every stage has counted it
  if (m.scheduler) {
    std::lock_guard<std::mutex> lock(m.mu);
    m.queued = m.scheduler->waiting();
    m.stats.waiting = m.queued + static_cast<int64_t>(m.inbox.size());
    m.stats.running = m.scheduler->running();
    m.stats.kv_blocks_used = m.scheduler->pool().used();
    m.stats.kv_blocks_cached = m.scheduler->pool().cached_idle();
    m.stats.outstanding_tokens = m.scheduler->outstanding_tokens();
    // Device-routed MoE layers count on the device (ExpertLoad::read copies the counters back): every 32nd
    // step and whenever the engine drains, not after every step.
    const bool read_load =
        !m.model.expert_load_on_device() || m.stats.running == 0 || msg.gather_telemetry || ++m.expert_load_age >= 32;
    if (read_load) m.expert_load_age = 0;
    m.refresh_expert_stats(read_load);
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
