// parallel/dp_wire.cpp: encodings of the router <-> replica-driver messages, in the shared word codec
// (runtime/word_codec.h), so the router sees exactly what the driver produced.
#include "parallel/dp_wire.h"

#include "runtime/error.h"
#include "runtime/word_codec.h"

namespace strata::parallel {
namespace {
constexpr int32_t kMagic = 0x44503034;  // "DP04": bumps when the layout changes

void put_stats(WordWriter& w, const EngineStats& s) {
  for (int64_t v : {s.waiting, s.running, s.kv_blocks_used, s.kv_blocks_total, s.kv_blocks_cached, s.steps,
                    s.prompt_tokens, s.generated_tokens, s.preemptions, s.prefix_hit_tokens, s.last_batch_size,
                    s.outstanding_tokens, s.images_encoded, s.decode_steps, s.spec_verify_steps, s.spec_draft_tokens,
                    s.spec_accepted_tokens, s.spec_emitted_tokens})
    w.i64(v);
  for (double v : {s.prefill_seconds, s.decode_seconds, s.forward_seconds, s.sample_seconds}) w.f64(v);
}

EngineStats get_stats(WordReader& in) {
  EngineStats s;
  for (int64_t* v : {&s.waiting, &s.running, &s.kv_blocks_used, &s.kv_blocks_total, &s.kv_blocks_cached, &s.steps,
                     &s.prompt_tokens, &s.generated_tokens, &s.preemptions, &s.prefix_hit_tokens, &s.last_batch_size,
                     &s.outstanding_tokens, &s.images_encoded, &s.decode_steps, &s.spec_verify_steps, &s.spec_draft_tokens,
                     &s.spec_accepted_tokens, &s.spec_emitted_tokens})
    *v = in.i64();
  for (double* v : {&s.prefill_seconds, &s.decode_seconds, &s.forward_seconds, &s.sample_seconds}) *v = in.f64();
  return s;
}

void put_event(WordWriter& w, const TokenEvent& e) {
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

TokenEvent get_event(WordReader& in) {
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
  WordWriter w;
  w.i32(kMagic);
  w.i32(static_cast<int32_t>(kind));
  switch (kind) {
    case DpKind::kSubmit: write_request(w, request); break;
    case DpKind::kCancel: w.u64(request_id); break;
    case DpKind::kReport:
      put_stats(w, report.stats);
      w.u64(report.reflected);
      w.i32(static_cast<int32_t>(report.events.size()));
      for (const TokenEvent& e : report.events) put_event(w, e);
      w.i32(static_cast<int32_t>(report.telemetry.size()));
      for (const std::vector<int32_t>& t : report.telemetry) w.ids(t);
      break;
    case DpKind::kFailed: w.str(error); break;
    case DpKind::kShutdown:
    case DpKind::kPing:
    case DpKind::kBye: break;
  }
  return w.take();
}

DpMessage DpMessage::unpack(const std::vector<int32_t>& words) {
  WordReader in(words, "data-parallel message", "router and replica driver disagree on the protocol");
  const int32_t magic = in.i32();
  STRATA_CHECK_KIND(ErrorKind::kComm, magic == kMagic, "not a data-parallel routing message (first word ", magic,
                    "); every rank must run the same strata build");
  DpMessage m;
  const int32_t kind = in.i32();
  STRATA_CHECK_KIND(ErrorKind::kComm, kind >= static_cast<int32_t>(DpKind::kSubmit) && kind <= static_cast<int32_t>(DpKind::kBye),
                    "unknown data-parallel message kind ", kind);
  m.kind = static_cast<DpKind>(kind);
  switch (m.kind) {
    case DpKind::kSubmit: m.request = read_request(in); break;
    case DpKind::kCancel: m.request_id = in.u64(); break;
    case DpKind::kReport: {
      m.report.stats = get_stats(in);
      m.report.reflected = in.u64();
      m.report.events.resize(in.count());
      for (TokenEvent& e : m.report.events) e = get_event(in);
      m.report.telemetry.resize(in.count());
      for (std::vector<int32_t>& t : m.report.telemetry) t = in.ids();
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
