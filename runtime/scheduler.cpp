// runtime/scheduler.cpp: admission, chunking, preemption and block accounting (see scheduler.h).
#include "runtime/scheduler.h"

#include <algorithm>
#include <chrono>

#include "runtime/error.h"

namespace strata {
namespace {
// The prefix-cache parent of block `block`: the previous block's chain hash, salted with the content hash
// of each image whose features fill part of this block (and where they start), so blocks of the same
// placeholder tokens share KV only when their images are the same, and so do all blocks after them.
uint64_t keyed_parent(const Sequence& seq, int64_t block, int64_t bs, uint64_t parent) {
  const int64_t begin = block * bs, end = begin + bs;
  for (const RequestImage& image : seq.request.images) {
    const int64_t first = image.position, last = first + image.length;
    if (last <= begin || first >= end) continue;
    const int32_t where[2] = {static_cast<int32_t>(first - begin), image.length};
    parent = BlockPool::chain_hash(parent ^ image.hash, where);
  }
  return parent;
}
}  // namespace

Scheduler::Scheduler(KvCache& kv, const SchedulerOptions& options)
    : kv_(kv), options_(options), pool_(kv.blocks(), kv.shape().block_size, options.prefix_caching) {
  STRATA_CHECK(options.max_step_tokens > 0, "max_step_tokens must be > 0, got ", options.max_step_tokens);
  STRATA_CHECK(options.max_running > 0, "max_running must be > 0, got ", options.max_running);
}

void Scheduler::enqueue(Sequence* seq) {
  waiting_.push_back(seq);
  if (options_.batch_wait_s > 0) last_arrival_ = now();
}

double Scheduler::now() const {
  if (options_.clock) return options_.clock();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool Scheduler::hold_for_arrivals() {
  const bool wanted = [&] {
    if (options_.batch_wait_s <= 0 || running_.empty() || !waiting_.empty()) return false;
    if (static_cast<int64_t>(running_.size()) >= options_.max_running) return false;  // already full
    if (pool_.available() == 0) return false;  // an arrival could not be admitted anyway
    for (const Sequence* s : running_)  // prefill work to do: the step is worth running now
      if (static_cast<int64_t>(s->history.size()) - s->processed != 1) return false;
    return true;
  }();
  if (!wanted) {
    hold_began_ = -1;
    return false;
  }
  const double t = now();
  // Requests stopped arriving: a hold would only add latency. Past the bound: run what there is.
  if (last_arrival_ < 0 || t - last_arrival_ >= options_.batch_wait_s) return hold_began_ = -1, false;
  if (hold_began_ < 0) hold_began_ = t;
  const double left = hold_began_ + options_.batch_wait_s - t;
  if (left <= 0) return hold_began_ = -1, false;
  if (options_.wait_for_arrivals) options_.wait_for_arrivals(left);
  ++held_steps_;
  return true;
}

void Scheduler::remove(Sequence* seq) {
  release_blocks(*seq);
  seq->admitted_at = -1;
  std::erase(running_, seq);
  std::erase(waiting_, seq);
}

int64_t Scheduler::outstanding_tokens() const {
  int64_t n = 0;
  auto add = [&](const Sequence* s) {
    n += static_cast<int64_t>(s->history.size()) - s->processed + s->request.max_new_tokens - s->generated;
  };
  for (const Sequence* s : running_) add(s);
  for (const Sequence* s : waiting_) add(s);
  return n;
}

bool Scheduler::grow(Sequence& seq, int64_t tokens) {
  while (static_cast<int64_t>(seq.blocks.size()) < kv_.blocks_for(tokens)) {
    const int32_t b = pool_.allocate();
    if (b < 0) return false;
    seq.blocks.push_back(b);
  }
  return true;
}

void Scheduler::trim_blocks(Sequence& seq) {
  // Rejected drafts' slots: the block of the history's last token stays (it is written next step).
  const int64_t keep = std::max<int64_t>(kv_.blocks_for(static_cast<int64_t>(seq.history.size())),
                                         static_cast<int64_t>(seq.block_hashes.size()));
  while (static_cast<int64_t>(seq.blocks.size()) > keep) {
    pool_.release(seq.blocks.back());
    seq.blocks.pop_back();
  }
}

void Scheduler::release_blocks(Sequence& seq) {
  for (int32_t b : seq.blocks) pool_.release(b);
  seq.blocks.clear();
  seq.block_hashes.clear();
  seq.processed = 0;
}

void Scheduler::preempt(Sequence& seq) {
  // Recompute, not swap: the history (prompt and generated tokens) stays, its KV goes; re-admission
  // prefills it again, mostly from the prefix cache when the blocks it published are still there.
  release_blocks(seq);
  seq.admitted_at = -1;
  std::erase(running_, &seq);
  waiting_.push_front(&seq);
}

void Scheduler::attach_prefix(Sequence& seq) {
  release_blocks(seq);
  if (!pool_.caching()) return;
  const int64_t bs = kv_.shape().block_size;
  // Only blocks wholly before the last token: that token is always recomputed (it yields the logits)
  // and its KV is written into a block of this sequence's own, never into a shared one.
  const int64_t usable = (static_cast<int64_t>(seq.history.size()) - 1) / bs;
  uint64_t parent = 0;
  for (int64_t i = 0; i < usable; ++i) {
    const std::span<const int32_t> tokens(seq.history.data() + i * bs, static_cast<size_t>(bs));
    const uint64_t keyed = keyed_parent(seq, i, bs, parent);
    const uint64_t h = BlockPool::chain_hash(keyed, tokens);
    const int32_t b = pool_.lookup(h, keyed, tokens);
    if (b < 0) break;
    seq.blocks.push_back(b);
    seq.block_hashes.push_back(h);
    parent = h;
  }
  seq.processed = static_cast<int64_t>(seq.blocks.size()) * bs;
}

void Scheduler::publish_full_blocks(Sequence& seq) {
  if (!pool_.caching()) return;
  const int64_t bs = kv_.shape().block_size;
  while (static_cast<int64_t>(seq.block_hashes.size()) < seq.processed / bs) {
    const size_t i = seq.block_hashes.size();
    const uint64_t parent = keyed_parent(seq, static_cast<int64_t>(i), bs, i == 0 ? 0 : seq.block_hashes[i - 1]);
    const std::span<const int32_t> tokens(seq.history.data() + static_cast<int64_t>(i) * bs, static_cast<size_t>(bs));
    const uint64_t h = BlockPool::chain_hash(parent, tokens);
    pool_.publish(seq.blocks[i], h, parent, tokens);
    seq.block_hashes.push_back(h);
  }
}

ScheduledStep Scheduler::schedule(int64_t max_seqs) {
  ScheduledStep out;
  StepBatch& step = out.batch;
  if (hold_for_arrivals()) {
    out.held = true;
    step.max_blocks = 1;
    return out;
  }
  int64_t budget = options_.max_step_tokens;
  // `drafts` speculative tokens follow the history's: every one of them, and the last history token,
  // gets a logit row (the target's choice after each prefix).
  auto add = [&](Sequence& s, int64_t count, int64_t drafts = 0) {
    const int32_t index = static_cast<int32_t>(out.seqs.size());
    for (int64_t p = s.processed; p < s.processed + count + drafts; ++p) {
      const int64_t h = static_cast<int64_t>(s.history.size());
      step.tokens.push_back(p < h ? s.history[static_cast<size_t>(p)] : s.draft[static_cast<size_t>(p - h)]);
      step.positions.push_back(static_cast<int32_t>(p));
      step.token_seq.push_back(index);
      if (p >= h - 1 && s.processed + count == h) step.logit_rows.push_back(static_cast<int32_t>(step.tokens.size() - 1));
    }
    out.seqs.push_back(&s);
    out.counts.push_back(count + drafts);
    out.drafts.push_back(drafts);
    out.admitted_at.push_back(s.admitted_at);
    budget -= count + drafts;
  };
  auto remaining = [](const Sequence& s) { return static_cast<int64_t>(s.history.size()) - s.processed; };
  auto full = [&] { return budget == 0 || static_cast<int64_t>(out.seqs.size()) >= max_seqs; };

  // 1. Decodes, oldest first. One that finds no block preempts the newest running sequence
  //    (possibly itself) until it fits; the victims are newer, so none was scheduled yet.
  const std::vector<Sequence*> order = running_;
  for (Sequence* s : order) {
    if (full()) break;
    if (s->admitted_at < 0 || remaining(*s) != 1 || s->in_flight) continue;  // preempted, prefilling, busy
    // Drafts ride along only on spare budget and spare blocks (a block kept back for each running
    // sequence's own next token): never worth a preemption.
    int64_t drafts = std::min<int64_t>(static_cast<int64_t>(s->draft.size()), budget - 1);
    const int64_t extra = kv_.blocks_for(static_cast<int64_t>(s->history.size()) + drafts) -
                          static_cast<int64_t>(s->blocks.size());
    if (drafts > 0 && (pool_.available() - extra < static_cast<int64_t>(running_.size()) ||
                       !grow(*s, static_cast<int64_t>(s->history.size()) + drafts))) {
      drafts = 0;
      trim_blocks(*s);
    }
    bool fits = true;
    while (!grow(*s, static_cast<int64_t>(s->history.size()))) {
      Sequence* victim = running_.back();
      preempt(*victim);
      ++out.preempted;
      if (victim == s) {
        fits = false;
        break;
      }
    }
    if (fits) add(*s, 1, drafts);
  }
  // 2. Prefill chunks of running sequences (their blocks were reserved at admission).
  for (Sequence* s : running_) {
    if (full()) break;
    if (remaining(*s) <= 1 || s->in_flight) continue;
    const int64_t count = std::min(budget, remaining(*s));
    if (grow(*s, s->processed + count)) add(*s, count);
  }
  // 3. Admission, FCFS: the head waits until its whole history fits, later requests wait behind it.
  //    No admission in a step that had to preempt: the blocks are needed by the decodes.
  while (out.preempted == 0 && !full() && static_cast<int64_t>(running_.size()) < options_.max_running &&
         !waiting_.empty()) {
    Sequence& s = *waiting_.front();
    if (s.in_flight) break;  // preempted while its last batch is still in the pipeline
    attach_prefix(s);
    const int64_t need = kv_.blocks_for(static_cast<int64_t>(s.history.size())) - static_cast<int64_t>(s.blocks.size());
    if (pool_.available() < need) {
      release_blocks(s);
      break;
    }
    waiting_.pop_front();
    STRATA_CHECK_KIND(ErrorKind::kInternal, grow(s, static_cast<int64_t>(s.history.size())),
                      "KV blocks vanished during admission");
    s.admitted_at = tick_++;
    running_.push_back(&s);
    if (!s.announced) {
      s.announced = true;
      out.announce.push_back(&s);
    }
    out.prefix_hit_tokens += s.processed;
    add(s, std::min(budget, remaining(s)));
  }

  step.n_seqs = static_cast<int64_t>(out.seqs.size());
  step.max_blocks = 1;
  for (const Sequence* s : out.seqs) step.max_blocks = std::max<int64_t>(step.max_blocks, s->blocks.size());
  for (const Sequence* s : out.seqs) {
    step.seq_ids.push_back(s->handle);
    std::vector<int32_t> row(static_cast<size_t>(step.max_blocks), -1);
    std::copy(s->blocks.begin(), s->blocks.end(), row.begin());
    step.block_tables.insert(step.block_tables.end(), row.begin(), row.end());
  }
  return out;
}

void Scheduler::complete(const ScheduledStep& step) {
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    Sequence& s = *step.seqs[i];
    if (s.admitted_at != step.admitted_at[i]) continue;  // preempted meanwhile: its blocks are gone
    s.processed += step.counts[i];
    if (i < step.drafts.size() && step.drafts[i] > 0) trim_blocks(s);
    publish_full_blocks(s);
  }
}

}  // namespace strata
