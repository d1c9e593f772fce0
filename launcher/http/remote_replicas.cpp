// launcher/http/remote_replicas.cpp: the link thread of world rank 0. It polls rather than blocks so
// one thread serves every remote replica; when a pass moved nothing it naps briefly (a report is
// handled within about a millisecond, and an idle server costs next to no CPU).
#include "launcher/http/remote_replicas.h"

#include <algorithm>
#include <chrono>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher::http {

using parallel::DpKind;
using parallel::DpMessage;

bool RemoteReplica::submit(EngineRequest request) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) return false;
  outbox_.push_back(parallel::dp_submit(std::move(request)));
  return true;
}

void RemoteReplica::cancel(uint64_t request_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!closed_) outbox_.push_back(parallel::dp_cancel(request_id));
}

std::vector<DpMessage> RemoteReplica::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(outbox_, {});
}

void RemoteReplica::close_with(DpMessage last) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) return;
  closed_ = true;
  outbox_.push_back(std::move(last));
}

RemoteReplicas::RemoteReplicas(comm::Communicator& drivers, double timeout_s)
    // Often enough that the driver's silence deadline (the same timeout) never fires on a live router.
    : keepalive_s_(std::clamp(timeout_s / 10, 0.05, 1.0)) {
  for (int r = 1; r < drivers.size(); ++r) {
    Remote remote;
    remote.replica = std::make_unique<RemoteReplica>();
    remote.link = std::make_unique<parallel::DpLink>(drivers, r, timeout_s, cat("the driver of replica ", r));
    remotes_.push_back(std::move(remote));
  }
}

RemoteReplicas::~RemoteReplicas() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

RequestEngine& RemoteReplicas::replica(int index) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, index >= 1 && index <= count(), "no remote replica ", index);
  return *remotes_[static_cast<size_t>(index - 1)].replica;
}

void RemoteReplicas::start(ReplicaRouter& router, std::function<void(const std::string&)> on_failure) {
  STRATA_CHECK_KIND(ErrorKind::kInternal, !thread_.joinable(), "the link thread is already running");
  thread_ = std::thread([this, &router, on_failure = std::move(on_failure)] { run(router, on_failure); });
}

void RemoteReplicas::shutdown() {
  for (Remote& r : remotes_) r.replica->close_with(parallel::dp_signal(DpKind::kShutdown));
}

bool RemoteReplicas::wait_closed(double timeout_s) {
  if (!thread_.joinable()) return remotes_.empty();
  std::unique_lock<std::mutex> lock(mutex_);
  closed_cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return finished_; });
  return all_bye_;
}

void RemoteReplicas::run(ReplicaRouter& router, const std::function<void(const std::string&)>& on_failure) {
  std::string failure;
  try {
    int idle_passes = 0;
    while (!stop_) {
      bool moved = false, all_bye = true;
      for (size_t i = 0; i < remotes_.size(); ++i) {
        moved = pump(static_cast<int>(i) + 1, remotes_[i], router) || moved;
        all_bye = all_bye && remotes_[i].said_bye;
      }
      if (all_bye) {
        std::lock_guard<std::mutex> lock(mutex_);
        all_bye_ = true;
        break;
      }
      idle_passes = moved ? 0 : idle_passes + 1;
      // Yield while traffic is recent, then nap: reports land within a pass or two under load.
      if (idle_passes > 50) std::this_thread::sleep_for(std::chrono::microseconds(500));
      else if (idle_passes > 0) std::this_thread::yield();
    }
  } catch (const std::exception& e) {
    failure = e.what();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    finished_ = true;
  }
  closed_cv_.notify_all();
  if (!failure.empty()) {
    LOG_ERROR("data-parallel routing failed: ", failure);
    on_failure(failure);
  }
}

std::vector<std::vector<int32_t>> RemoteReplicas::rank_telemetry() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::vector<int32_t>> out;
  for (const Remote& r : remotes_) out.insert(out.end(), r.telemetry.begin(), r.telemetry.end());
  return out;
}

bool RemoteReplicas::pump(int index, Remote& remote, ReplicaRouter& router) {
  if (remote.said_bye) return false;
  parallel::DpLink& link = *remote.link;
  bool moved = false;
  for (const DpMessage& m : remote.replica->take()) {
    link.send(m);
    remote.shutdown_sent = remote.shutdown_sent || m.kind == DpKind::kShutdown;
    moved = true;
  }
  // No ping after the shutdown: it is the last message the driver reads.
  if (!remote.shutdown_sent && link.idle_send_seconds() > keepalive_s_) link.send(parallel::dp_signal(DpKind::kPing));
  link.flushed();
  while (std::optional<DpMessage> m = link.poll()) {
    moved = true;
    switch (m->kind) {
      case DpKind::kReport:
        router.deliver(index, m->report.events);
        router.report(index, m->report.stats, m->report.reflected);
        if (!m->report.telemetry.empty()) {
          std::lock_guard<std::mutex> lock(mutex_);
          remote.telemetry = std::move(m->report.telemetry);
        }
        break;
      case DpKind::kPing: break;
      case DpKind::kBye:
        STRATA_CHECK_KIND(ErrorKind::kComm, remote.shutdown_sent, "replica ", index,
                          " shut down without being asked to; it may have hit an error (see its log)");
        remote.said_bye = true;
        break;
      case DpKind::kFailed: STRATA_THROW(ErrorKind::kComm, "replica ", index, " failed: ", m->error);
      default:
        STRATA_THROW(ErrorKind::kComm, "unexpected ", parallel::dp_kind_name(m->kind), " message from replica ", index);
    }
  }
  return moved;
}

}  // namespace strata::launcher::http
