// comm/tcp/tcp_mesh.h: one TCP connection to every other rank, set up through the TcpStore, with an
// Asio thread that reads every incoming frame into a mailbox (so sends never deadlock on full socket
// buffers) and writes queued frames. Receives match frames by (peer, context, tag) in posting order.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace strata::comm {

class TcpStore;

class TcpMesh {
 public:
  using Clock = std::chrono::steady_clock;
  struct Pending;  // a posted receive or a queued send

  // Collective over all `size` ranks: listens on an ephemeral port, publishes it under `prefix` in
  // the store, connects to lower ranks and accepts higher ones, all within timeout_s.
  TcpMesh(TcpStore& store, int rank, int size, double timeout_s, const std::string& prefix = "mesh");
  ~TcpMesh();  // stops the io thread and closes every socket; peers see EOF
  TcpMesh(const TcpMesh&) = delete;
  TcpMesh& operator=(const TcpMesh&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  std::string peer_address(int peer) const;

  // Queues a frame; `data` must stay valid until the send completes (`keep` may own it).
  std::shared_ptr<Pending> send(int peer, uint64_t context, int64_t tag, const void* data, size_t bytes,
                                std::shared_ptr<void> keep);
  // Claims the next frame from (peer, context, tag), now or when it arrives.
  std::shared_ptr<Pending> post_recv(int peer, uint64_t context, int64_t tag);

  // True once done; throws Error(kComm) if the peer's connection failed.
  bool test(const std::shared_ptr<Pending>& p);
  // Waits until done or the deadline: then a receive is withdrawn and Error(kTimeout) says
  // `what()` (the op and group) and the elapsed time since `start`.
  void wait(const std::shared_ptr<Pending>& p, Clock::time_point start, Clock::time_point deadline,
            const std::function<std::string()>& what);
  // The payload of a completed receive.
  std::vector<uint8_t> take(const std::shared_ptr<Pending>& p);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_;
  int size_;
};

}  // namespace strata::comm
