// parallel/dp_wire.h: the messages between the request router (world rank 0) and the driver of each
// data-parallel replica, as flat i32 words for DpLink. Router -> driver: submit, cancel, shutdown,
// ping. Driver -> router: report (token events plus the engine's stats), failed, bye.
// Not the replica's own step protocol (runtime/engine_control.h): that stays inside a replica.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/engine.h"

namespace strata::parallel {

enum class DpKind : int32_t {
  kSubmit = 1,    // router -> driver: a request for this replica's Engine
  kCancel = 2,    // router -> driver: cancel one request (unknown ids are ignored)
  kShutdown = 3,  // router -> driver: shut the replica down; the last message the router sends
  kPing = 4,      // either way: "still here" when nothing else was sent for a while
  kReport = 5,    // driver -> router: events of a step and the stats after it
  kFailed = 6,    // driver -> router: the replica failed (error text); nothing follows
  kBye = 7,       // driver -> router: the replica has shut down; nothing follows
};
const char* dp_kind_name(DpKind kind);

struct DpReport {
  EngineStats stats;
  // How many submits the driver had handed to its Engine before the step these stats follow, so
  // the router knows which of the requests it routed the stats already count.
  uint64_t reflected = 0;
  std::vector<TokenEvent> events;
  // The replica's per-rank telemetry (Engine::rank_telemetry) when it changed since the last report;
  // empty otherwise (the router keeps the last it got).
  std::vector<std::vector<int32_t>> telemetry;
};

struct DpMessage {
  DpKind kind = DpKind::kPing;
  EngineRequest request;  // kSubmit
  uint64_t request_id = 0;  // kCancel
  DpReport report;        // kReport
  std::string error;      // kFailed

  std::vector<int32_t> pack() const;
  // Throws Error(kComm) naming what is wrong when the words are not a message of this protocol.
  static DpMessage unpack(const std::vector<int32_t>& words);
};

DpMessage dp_submit(EngineRequest request);
DpMessage dp_cancel(uint64_t request_id);
DpMessage dp_signal(DpKind kind);  // kShutdown, kPing, kBye
DpMessage dp_report(DpReport report);
DpMessage dp_failed(std::string error);

}  // namespace strata::parallel
