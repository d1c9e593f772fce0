// runtime/engine_control.cpp: flat encodings of the Engine's step messages. Floats travel as their
// bits and 64-bit values as two words, so every rank decodes exactly what the driver encoded.
#include "runtime/engine_control.h"

#include <bit>

#include "runtime/error.h"

namespace strata {
namespace {
constexpr int32_t kControlMagic = 0x53454e31;  // "SEN1": bumps when the layout changes
constexpr size_t kRequestHeader = 15;

int32_t f2w(float v) { return std::bit_cast<int32_t>(v); }
float w2f(int32_t w) { return std::bit_cast<float>(w); }
void put64(std::vector<int32_t>& out, uint64_t v) {
  out.push_back(static_cast<int32_t>(static_cast<uint32_t>(v)));
  out.push_back(static_cast<int32_t>(static_cast<uint32_t>(v >> 32)));
}
uint64_t get64(const int32_t* w) {
  return static_cast<uint64_t>(static_cast<uint32_t>(w[0])) | (static_cast<uint64_t>(static_cast<uint32_t>(w[1])) << 32);
}

class Reader {
 public:
  explicit Reader(const std::vector<int32_t>& w) : w_(w) {}
  const int32_t* take(size_t n) {
    STRATA_CHECK_KIND(ErrorKind::kComm, pos_ + n <= w_.size(), "control message truncated: needs ", pos_ + n,
                      " words, has ", w_.size(), " (ranks of the replica are out of step)");
    const int32_t* p = w_.data() + pos_;
    pos_ += n;
    return p;
  }
  int32_t one() { return *take(1); }
  size_t pos() const { return pos_; }

 private:
  const std::vector<int32_t>& w_;
  size_t pos_ = 0;
};
}  // namespace

std::vector<int32_t> ControlMessage::pack() const {
  std::vector<int32_t> out = {kControlMagic, shutdown ? 1 : 0, static_cast<int32_t>(admitted.size()),
                              static_cast<int32_t>(cancelled.size())};
  for (const AdmittedRequest& a : admitted) {
    const EngineRequest& r = a.request;
    out.push_back(a.handle);
    put64(out, r.id);
    put64(out, static_cast<uint64_t>(r.max_new_tokens));
    out.push_back(r.logprobs);
    out.push_back(f2w(r.sampling.temperature));
    out.push_back(r.sampling.top_k);
    out.push_back(f2w(r.sampling.top_p));
    out.push_back(f2w(r.sampling.min_p));
    out.push_back(f2w(r.sampling.repetition_penalty));
    put64(out, r.sampling.seed);
    out.push_back(static_cast<int32_t>(r.prompt.size()));
    out.push_back(static_cast<int32_t>(r.stop_ids.size()));
    out.insert(out.end(), r.prompt.begin(), r.prompt.end());
    out.insert(out.end(), r.stop_ids.begin(), r.stop_ids.end());
  }
  out.insert(out.end(), cancelled.begin(), cancelled.end());
  const std::vector<int32_t> step_words = step.pack();
  out.insert(out.end(), step_words.begin(), step_words.end());
  return out;
}

ControlMessage ControlMessage::unpack(const std::vector<int32_t>& words) {
  Reader in(words);
  const int32_t* head = in.take(4);
  STRATA_CHECK_KIND(ErrorKind::kComm, head[0] == kControlMagic, "not an engine control message (first word ",
                    head[0], "); every rank of the replica must run the same loop (Engine::step or Generator)");
  ControlMessage m;
  m.shutdown = head[1] != 0;
  m.admitted.resize(static_cast<size_t>(head[2]));
  for (AdmittedRequest& a : m.admitted) {
    const int32_t* h = in.take(kRequestHeader);
    EngineRequest& r = a.request;
    a.handle = h[0];
    r.id = get64(h + 1);
    r.max_new_tokens = static_cast<int64_t>(get64(h + 3));
    r.logprobs = h[5];
    r.sampling.temperature = w2f(h[6]);
    r.sampling.top_k = h[7];
    r.sampling.top_p = w2f(h[8]);
    r.sampling.min_p = w2f(h[9]);
    r.sampling.repetition_penalty = w2f(h[10]);
    r.sampling.seed = get64(h + 11);
    const size_t prompt = static_cast<size_t>(h[13]), stops = static_cast<size_t>(h[14]);
    const int32_t* p = in.take(prompt);
    r.prompt.assign(p, p + prompt);
    const int32_t* s = in.take(stops);
    r.stop_ids.assign(s, s + stops);
  }
  const int32_t* c = in.take(static_cast<size_t>(head[3]));
  m.cancelled.assign(c, c + head[3]);
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
