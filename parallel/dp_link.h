// parallel/dp_link.h: one end of the message channel between the request router (world rank 0) and
// the driver of one data-parallel replica, over the group of drivers. Messages are framed (a fixed
// header with the length, then the body) and never block the caller: send() queues, poll() returns
// a message only once it has arrived. Every wait has a deadline (comm.timeout_s): a send that does
// not complete, or a peer that sends nothing (it pings when idle), throws Error(kTimeout).
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "parallel/dp_wire.h"

namespace strata::parallel {

class DpLink {
 public:
  using Clock = std::chrono::steady_clock;

  // `group` must outlive the link; `peer` is the other end's rank in it, `peer_name` how errors name
  // it ("the driver of replica 2").
  DpLink(comm::Communicator& group, int peer, double timeout_s, std::string peer_name);
  ~DpLink();
  DpLink(const DpLink&) = delete;
  DpLink& operator=(const DpLink&) = delete;

  // Queues `message`; throws Error(kTimeout) when an earlier send has not completed in time.
  void send(const DpMessage& message);
  // The next message if one has arrived. After a last message (shutdown, failed, bye) nothing more is
  // received: poll() returns nullopt without posting a receive. Throws Error(kTimeout) when nothing
  // arrived for timeout_s.
  std::optional<DpMessage> poll();
  // Moves queued sends along; true once all completed. Throws like send().
  bool flushed();
  // Seconds since the last send (callers ping when this grows).
  double idle_send_seconds() const;
  bool closed() const { return closed_; }
  double timeout_s() const { return timeout_s_; }
  const std::string& peer_name() const { return peer_name_; }

 private:
  struct Pending;
  comm::Communicator& group_;
  int peer_;
  double timeout_s_;
  std::string peer_name_;
  Tensor header_;
  std::unique_ptr<comm::Work> header_recv_;
  std::vector<Pending> sends_;
  Clock::time_point last_recv_, last_send_;
  bool closed_ = false;
};

}  // namespace strata::parallel
