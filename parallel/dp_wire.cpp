// parallel/dp_wire.cpp: encodings of the router <-> replica-driver messages. Floats and doubles travel
// as their bits and 64-bit values as two words, so the router sees exactly what the driver produced;
// strings travel as a byte count and the bytes packed four to a word.
#include "parallel/dp_wire.h"

#include <bit>
#include <cstring>

#include "runtime/error.h"

namespace strata::parallel {
namespace {
constexpr int32_t kMagic = 0x44503031;  // "DP01": bumps when the layout changes

class Writer {
 public:
  void i32(int32_t v) { out_.push_back(v); }
  void u64(uint64_t v) {
    out_.push_back(static_cast<int32_t>(static_cast<uint32_t>(v)));
    out_.push_back(static_cast<int32_t>(static_cast<uint32_t>(v >> 32)));
  }
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void f32(float v) { out_.push_back(std::bit_cast<int32_t>(v)); }
  void f64(double v) { u64(std::bit_cast<uint64_t>(v)); }
  void str(const std::string& s) {
    i32(static_cast<int32_t>(s.size()));
    const size_t at = out_.size();
    out_.resize(at + (s.size() + 3) / 4, 0);
    if (!s.empty()) std::memcpy(out_.data() + at, s.data(), s.size());
  }
  void ids(const std::vector<int32_t>& v) {
    i32(static_cast<int32_t>(v.size()));
    out_.insert(out_.end(), v.begin(), v.end());
  }
  std::vector<int32_t> take() { return std::move(out_); }

 private:
  std::vector<int32_t> out_;
};

class Reader {
 public:
  explicit Reader(const std::vector<int32_t>& w) : w_(w) {}
  const int32_t* take(size_t n) {
    STRATA_CHECK_KIND(ErrorKind::kComm, pos_ + n <= w_.size(), "data-parallel message truncated: needs ", pos_ + n,
                      " words, has ", w_.size(), " (router and replica driver disagree on the protocol)");
    const int32_t* p = w_.data() + pos_;
    pos_ += n;
    return p;
  }
  int32_t i32() { return *take(1); }
  uint64_t u64() {
    const int32_t* p = take(2);
    return static_cast<uint64_t>(static_cast<uint32_t>(p[0])) | (static_cast<uint64_t>(static_cast<uint32_t>(p[1])) << 32);
  }
  int64_t i64() { return static_cast<int64_t>(u64()); }
  float f32() { return std::bit_cast<float>(i32()); }
  double f64() { return std::bit_cast<double>(u64()); }
  size_t count() {
    const int32_t n = i32();
    STRATA_CHECK_KIND(ErrorKind::kComm, n >= 0, "data-parallel message has a negative length ", n);
    return static_cast<size_t>(n);
  }
  std::string str() {
    const size_t n = count();
    const int32_t* p = take((n + 3) / 4);
    return std::string(reinterpret_cast<const char*>(p), n);
  }
  std::vector<int32_t> ids() {
    const size_t n = count();
    const int32_t* p = take(n);
    return std::vector<int32_t>(p, p + n);
  }
  bool done() const { return pos_ == w_.size(); }

 private:
  const std::vector<int32_t>& w_;
  size_t pos_ = 0;
};

void put_request(Writer& w, const EngineRequest& r) {
  w.u64(r.id);
  w.i64(r.max_new_tokens);
  w.i32(r.logprobs);
  w.f32(r.sampling.temperature);
  w.i32(r.sampling.top_k);
  w.f32(r.sampling.top_p);
  w.f32(r.sampling.min_p);
  w.f32(r.sampling.repetition_penalty);
  w.u64(r.sampling.seed);
  w.ids(r.prompt);
  w.ids(r.stop_ids);
}

EngineRequest get_request(Reader& in) {
  EngineRequest r;
  r.id = in.u64();
  r.max_new_tokens = in.i64();
  r.logprobs = in.i32();
  r.sampling.temperature = in.f32();
  r.sampling.top_k = in.i32();
  r.sampling.top_p = in.f32();
  r.sampling.min_p = in.f32();
  r.sampling.repetition_penalty = in.f32();
  r.sampling.seed = in.u64();
  r.prompt = in.ids();
  r.stop_ids = in.ids();
  return r;
}

void put_stats(Writer& w, const EngineStats& s) {
  for (int64_t v : {s.waiting, s.running, s.kv_blocks_used, s.kv_blocks_total, s.kv_blocks_cached, s.steps,
                    s.prompt_tokens, s.generated_tokens, s.preemptions, s.prefix_hit_tokens, s.last_batch_size,
                    s.outstanding_tokens})
    w.i64(v);
  for (double v : {s.prefill_seconds, s.decode_seconds, s.forward_seconds, s.sample_seconds}) w.f64(v);
}

EngineStats get_stats(Reader& in) {
  EngineStats s;
  for (int64_t* v : {&s.waiting, &s.running, &s.kv_blocks_used, &s.kv_blocks_total, &s.kv_blocks_cached, &s.steps,
                     &s.prompt_tokens, &s.generated_tokens, &s.preemptions, &s.prefix_hit_tokens, &s.last_batch_size,
                     &s.outstanding_tokens})
    *v = in.i64();
  for (double* v : {&s.prefill_seconds, &s.decode_seconds, &s.forward_seconds, &s.sample_seconds}) *v = in.f64();
  return s;
}

void put_event(Writer& w, const TokenEvent& e) {
  w.u64(e.request_id);
  w.i32(e.token);
  w.f32(e.logprob);
  w.i32(e.finished ? 1 : 0);
  w.i32(static_cast<int32_t>(e.top_logprobs.size()));
  for (const TokenLogprob& t : e.top_logprobs) {
    w.i32(t.token);
    w.f32(t.logprob);
  }
  w.str(e.finish_reason);
  w.str(e.error);
}

TokenEvent get_event(Reader& in) {
  TokenEvent e;
  e.request_id = in.u64();
  e.token = in.i32();
  e.logprob = in.f32();
  e.finished = in.i32() != 0;
  e.top_logprobs.resize(in.count());
  for (TokenLogprob& t : e.top_logprobs) {
    t.token = in.i32();
    t.logprob = in.f32();
  }
  e.finish_reason = in.str();
  e.error = in.str();
  return e;
}
}  // namespace

const char* dp_kind_name(DpKind kind) {
  switch (kind) {
    case DpKind::kSubmit: return "submit";
    case DpKind::kCancel: return "cancel";
    case DpKind::kShutdown: return "shutdown";
    case DpKind::kPing: return "ping";
    case DpKind::kReport: return "report";
    case DpKind::kFailed: return "failed";
    case DpKind::kBye: return "bye";
  }
  return "unknown";
}

std::vector<int32_t> DpMessage::pack() const {
  Writer w;
  w.i32(kMagic);
  w.i32(static_cast<int32_t>(kind));
  switch (kind) {
    case DpKind::kSubmit: put_request(w, request); break;
    case DpKind::kCancel: w.u64(request_id); break;
    case DpKind::kReport:
      put_stats(w, report.stats);
      w.u64(report.reflected);
      w.i32(static_cast<int32_t>(report.events.size()));
      for (const TokenEvent& e : report.events) put_event(w, e);
      break;
    case DpKind::kFailed: w.str(error); break;
    case DpKind::kShutdown:
    case DpKind::kPing:
    case DpKind::kBye: break;
  }
  return w.take();
}

DpMessage DpMessage::unpack(const std::vector<int32_t>& words) {
  Reader in(words);
  const int32_t magic = in.i32();
  STRATA_CHECK_KIND(ErrorKind::kComm, magic == kMagic, "not a data-parallel routing message (first word ", magic,
                    "); every rank must run the same strata build");
  DpMessage m;
  const int32_t kind = in.i32();
  STRATA_CHECK_KIND(ErrorKind::kComm, kind >= static_cast<int32_t>(DpKind::kSubmit) && kind <= static_cast<int32_t>(DpKind::kBye),
                    "unknown data-parallel message kind ", kind);
  m.kind = static_cast<DpKind>(kind);
  switch (m.kind) {
    case DpKind::kSubmit: m.request = get_request(in); break;
    case DpKind::kCancel: m.request_id = in.u64(); break;
    case DpKind::kReport: {
      m.report.stats = get_stats(in);
      m.report.reflected = in.u64();
      m.report.events.resize(in.count());
      for (TokenEvent& e : m.report.events) e = get_event(in);
      break;
    }
    case DpKind::kFailed: m.error = in.str(); break;
    case DpKind::kShutdown:
    case DpKind::kPing:
    case DpKind::kBye: break;
  }
  STRATA_CHECK_KIND(ErrorKind::kComm, in.done(), "data-parallel ", dp_kind_name(m.kind), " message has ",
                    words.size(), " words, more than it encodes (router and replica driver disagree on the protocol)");
  return m;
}

DpMessage dp_submit(EngineRequest request) {
  DpMessage m;
  m.kind = DpKind::kSubmit;
  m.request = std::move(request);
  return m;
}

DpMessage dp_cancel(uint64_t request_id) {
  DpMessage m;
  m.kind = DpKind::kCancel;
  m.request_id = request_id;
  return m;
}

DpMessage dp_signal(DpKind kind) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, kind == DpKind::kShutdown || kind == DpKind::kPing || kind == DpKind::kBye,
                    dp_kind_name(kind), " carries data; use its own constructor");
  DpMessage m;
  m.kind = kind;
  return m;
}

DpMessage dp_report(DpReport report) {
  DpMessage m;
  m.kind = DpKind::kReport;
  m.report = std::move(report);
  return m;
}

DpMessage dp_failed(std::string error) {
  DpMessage m;
  m.kind = DpKind::kFailed;
  m.error = std::move(error);
  return m;
}

}  // namespace strata::parallel
