// runtime/engine_control.cpp: flat encodings of the Engine's step messages (runtime/word_codec.h), so
// every rank decodes exactly what the driver encoded.
#include "runtime/engine_control.h"

#include <bit>

#include "runtime/error.h"
#include "runtime/word_codec.h"

namespace strata {
namespace {
constexpr int32_t kControlMagic = 0x53454e35;  // "SEN5": bumps when the layout changes
constexpr const char* kOutOfStep = "ranks of the replica are out of step";

int32_t f2w(float v) { return std::bit_cast<int32_t>(v); }
float w2f(int32_t w) { return std::bit_cast<float>(w); }
}  // namespace

std::vector<int32_t> ControlMessage::pack() const {
  WordWriter w;
  for (int32_t v : {kControlMagic, (shutdown ? 1 : 0) | (gather_telemetry ? 2 : 0), static_cast<int32_t>(admitted.size()),
                    static_cast<int32_t>(cancelled.size())})
    w.i32(v);
  for (const AdmittedRequest& a : admitted) {
    w.i32(a.handle);
    write_request(w, a.request);
  }
  for (int32_t c : cancelled) w.i32(c);
  STRATA_CHECK_KIND(ErrorKind::kInternal, draft_q_rows.size() == draft_q.size(), "draft distributions without rows");
  w.i32(static_cast<int32_t>(draft_q.size()));
  for (size_t i = 0; i < draft_q.size(); ++i) {
    w.i32(draft_q_rows[i]);
    w.ids(draft_q[i].ids);
    for (float p : draft_q[i].probs) w.f32(p);
  }
  std::vector<int32_t> out = w.take();
  const std::vector<int32_t> step_words = step.pack();
  out.insert(out.end(), step_words.begin(), step_words.end());
  return out;
}

ControlMessage ControlMessage::unpack(const std::vector<int32_t>& words) {
  WordReader in(words, "control message", kOutOfStep);
  const int32_t* head = in.take(4);
  STRATA_CHECK_KIND(ErrorKind::kComm, head[0] == kControlMagic, "not an engine control message (first word ",
                    head[0], "); every rank of the replica must run the same loop (Engine::step or Generator)");
  STRATA_CHECK_KIND(ErrorKind::kComm, head[2] >= 0 && head[3] >= 0, "control message announces ", head[2],
                    " admissions and ", head[3], " cancellations (", kOutOfStep, ")");
  ControlMessage m;
  m.shutdown = (head[1] & 1) != 0;
  m.gather_telemetry = (head[1] & 2) != 0;
  m.admitted.resize(static_cast<size_t>(head[2]));
  const size_t cancelled = static_cast<size_t>(head[3]);
  for (AdmittedRequest& a : m.admitted) {
    a.handle = in.i32();
    a.request = read_request(in);
  }
  const int32_t* c = in.take(cancelled);
  m.cancelled.assign(c, c + cancelled);
  const size_t drafts = in.count();
  for (size_t i = 0; i < drafts; ++i) {
    m.draft_q_rows.push_back(in.i32());
    DraftDistribution q;
    q.ids = in.ids();
    for (size_t k = 0; k < q.ids.size(); ++k) q.probs.push_back(in.f32());
    m.draft_q.push_back(std::move(q));
  }
  m.step = StepBatch::unpack(std::vector<int32_t>(words.begin() + static_cast<std::ptrdiff_t>(in.pos()), words.end()));
  return m;
}

size_t sample_words(const std::vector<int>& top_counts) {
  size_t n = 2 * top_counts.size();
  for (int k : top_counts) n += 2 * static_cast<size_t>(k);
  return n;
}

std::vector<int32_t> pack_samples(const std::vector<SampledToken>& rows, const std::vector<int>& top_counts) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, rows.size() == top_counts.size(), "sampled rows do not match the step");
  std::vector<int32_t> out;
  out.reserve(sample_words(top_counts));
  for (const SampledToken& r : rows) out.push_back(r.token);
  for (const SampledToken& r : rows) out.push_back(f2w(r.logprob));
  for (size_t i = 0; i < rows.size(); ++i) {
    STRATA_CHECK_KIND(ErrorKind::kInternal, static_cast<int>(rows[i].top.size()) == top_counts[i],
                      "row ", i, " has ", rows[i].top.size(), " alternatives, expected ", top_counts[i]);
    for (const TokenLogprob& t : rows[i].top) {
      out.push_back(t.token);
      out.push_back(f2w(t.logprob));
    }
  }
  return out;
}

std::vector<SampledToken> unpack_samples(const std::vector<int32_t>& words, const std::vector<int>& top_counts) {
  STRATA_CHECK_KIND(ErrorKind::kComm, words.size() == sample_words(top_counts), "sampled-token message has ",
                    words.size(), " words, expected ", sample_words(top_counts));
  const size_t n = top_counts.size();
  std::vector<SampledToken> rows(n);
  size_t at = 2 * n;
  for (size_t i = 0; i < n; ++i) {
    rows[i].token = words[i];
    rows[i].logprob = w2f(words[n + i]);
    for (int k = 0; k < top_counts[i]; ++k, at += 2) rows[i].top.push_back({words[at], w2f(words[at + 1])});
  }
  return rows;
}

}  // namespace strata
