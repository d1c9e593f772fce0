// parallel/dp_link.cpp: framing and deadlines of the router <-> replica-driver channel. Headers and
// bodies use separate tags: a receiver posts the header receive ahead of time and the body receive
// once it knows the length, and per-(peer, tag) ordering keeps every body behind its header.
#include "parallel/dp_link.h"

#include <cstring>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::parallel {
namespace {
constexpr int kHeaderTag = 1, kBodyTag = 2;
constexpr int32_t kFrameMagic = 0x44504652;  // "DPFR"

double since(DpLink::Clock::time_point t) {
  return std::chrono::duration<double>(DpLink::Clock::now() - t).count();
}

bool is_last(DpKind kind) { return kind == DpKind::kShutdown || kind == DpKind::kFailed || kind == DpKind::kBye; }
}  // namespace

struct DpLink::Pending {
  std::unique_ptr<comm::Work> work;
  Tensor buffer;  // owned here until the send completes
  Clock::time_point start;
  std::string what;
};

DpLink::DpLink(comm::Communicator& group, int peer, double timeout_s, std::string peer_name)
    : group_(group), peer_(peer), timeout_s_(timeout_s), peer_name_(std::move(peer_name)),
      header_(Tensor::empty({2}, DType::kI32)), last_recv_(Clock::now()), last_send_(Clock::now()) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, peer >= 0 && peer < group.size() && peer != group.rank(), "peer ", peer,
                    " is not another rank of '", group.name(), "' (", group.size(), " ranks)");
}

DpLink::~DpLink() {
  // A send still in flight keeps its buffer alive inside the comm layer; a posted header receive is
  // only left behind when the peer failed (the protocol ends with a last message otherwise).
  if (header_recv_) LOG_DEBUG("link to ", peer_name_, " closes with a receive posted");
}

void DpLink::send(const DpMessage& message) {
  flushed();  // checks the deadlines of earlier sends
  const std::vector<int32_t> words = message.pack();
  Pending header{nullptr, Tensor::empty({2}, DType::kI32), Clock::now(), cat(dp_kind_name(message.kind), " header")};
  header.buffer.data<int32_t>()[0] = kFrameMagic;
  header.buffer.data<int32_t>()[1] = static_cast<int32_t>(words.size());
  Pending body{nullptr, Tensor::empty({static_cast<int64_t>(words.size())}, DType::kI32), Clock::now(),
               cat(dp_kind_name(message.kind), " (", words.size(), " words)")};
  std::memcpy(body.buffer.raw(), words.data(), words.size() * sizeof(int32_t));
  header.work = group_.send_async(header.buffer, peer_, kHeaderTag);
  body.work = group_.send_async(body.buffer, peer_, kBodyTag);
  sends_.push_back(std::move(header));
  sends_.push_back(std::move(body));
  last_send_ = Clock::now();
}

bool DpLink::flushed() {
  for (size_t i = 0; i < sends_.size();) {
    Pending& p = sends_[i];
    if (p.work->test()) {
      sends_.erase(sends_.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    const double waited = since(p.start);
    STRATA_CHECK_KIND(ErrorKind::kTimeout, waited <= timeout_s_, "sending a data-parallel ", p.what, " to ", peer_name_,
                      " on '", group_.name(), "' did not complete in ", waited, " s; the replica may have died or hung "
                      "(raise comm.timeout_s if its steps are legitimately that slow)");
    ++i;
  }
  return sends_.empty();
}

std::optional<DpMessage> DpLink::poll() {
  if (closed_) return std::nullopt;
  if (!header_recv_) header_recv_ = group_.recv_async(header_, peer_, kHeaderTag);
  if (!header_recv_->test()) {
    const double silent = since(last_recv_);
    STRATA_CHECK_KIND(ErrorKind::kTimeout, silent <= timeout_s_, "no message from ", peer_name_, " on '", group_.name(),
                      "' for ", silent, " s (it pings while idle); it may have died or hung. comm.timeout_s is ",
                      timeout_s_, " s");
    return std::nullopt;
  }
  header_recv_.reset();
  const int32_t* h = header_.data<int32_t>();
  STRATA_CHECK_KIND(ErrorKind::kComm, h[0] == kFrameMagic && h[1] >= 0, "bad data-parallel frame header from ",
                    peer_name_, " (", h[0], ", ", h[1], "); every rank must run the same strata build");
  std::vector<int32_t> words(static_cast<size_t>(h[1]));
  Tensor body = Tensor::view(words.data(), {static_cast<int64_t>(words.size())}, DType::kI32);
  group_.recv(body, peer_, kBodyTag);  // sent right behind the header; waits at most the comm timeout
  last_recv_ = Clock::now();
  DpMessage message = DpMessage::unpack(words);
  if (is_last(message.kind)) closed_ = true;
  return message;
}

double DpLink::idle_send_seconds() const { return since(last_send_); }

}  // namespace strata::parallel
