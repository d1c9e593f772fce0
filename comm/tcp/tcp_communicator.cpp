// comm/tcp/tcp_communicator.cpp: TcpCommunicator. Collectives run in call order on one worker thread
// per communicator (so *_async returns at once and ops overlap with the caller); point-to-point goes
// straight to the mesh. Collective frames use negative tags (-1 - sequence number), p2p tags >= 0.
#include "comm/tcp/tcp_communicator.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "comm/host_reduce.h"
#include "comm/op_checks.h"
#include "comm/tcp/tcp_mesh.h"
#include "comm/tcp_store.h"
#include "runtime/error.h"

namespace strata::comm {
namespace {

using Clock = std::chrono::steady_clock;

struct TcpWorld {  // shared by the world communicator and every split of it
  std::shared_ptr<TcpStore> store;
  std::unique_ptr<TcpMesh> mesh;
};

uint64_t mix(uint64_t x) {  // splitmix64: child contexts that do not collide in practice
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Completion of a task on the worker thread.
struct TaskState {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  Clock::time_point issued, finished;  // submit, and the worker's end of the op (its elapsed time)
  // Kept as text and rethrown as a fresh Error in the waiting thread, so no exception object is
  // shared between threads.
  bool failed = false;
  ErrorKind kind = ErrorKind::kInternal;
  std::string message;
  void rethrow() const { throw Error(kind, message); }
};

class TaskWork final : public Work {
 public:
  TaskWork(std::shared_ptr<TaskState> state, Clock::time_point deadline) : state_(std::move(state)), deadline_(deadline) {}
  void wait() override {
    std::unique_lock<std::mutex> lock(state_->mutex);
    // The task enforces the op's deadline itself; the grace covers a task stuck behind earlier ones.
    if (!state_->cv.wait_until(lock, deadline_ + std::chrono::seconds(5), [&] { return state_->done; }))
      STRATA_THROW(ErrorKind::kTimeout, "a TCP collective did not finish in time (queued behind a stuck op)");
    if (state_->failed) state_->rethrow();
  }
  bool test() override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->done && state_->failed) state_->rethrow();
    return state_->done;
  }
  double elapsed_seconds() const override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->done ? std::chrono::duration<double>(state_->finished - state_->issued).count() : -1;
  }

 private:
  std::shared_ptr<TaskState> state_;
  Clock::time_point deadline_;
};

class P2pWork final : public Work {
 public:
  P2pWork(TcpMesh& mesh, std::shared_ptr<TcpMesh::Pending> pending, std::string what, Clock::time_point deadline,
          std::function<void(std::vector<uint8_t>)> on_recv)
      : mesh_(mesh), pending_(std::move(pending)), what_(std::move(what)), start_(Clock::now()), deadline_(deadline),
        on_recv_(std::move(on_recv)) {}
  void wait() override {
    if (finished_) return;
    mesh_.wait(pending_, start_, deadline_, [&] { return what_; });
    finish();
  }
  bool test() override {
    if (!finished_ && mesh_.test(pending_)) finish();
    return finished_;
  }

 private:
  void finish() {
    finished_ = true;
    if (on_recv_) on_recv_(mesh_.take(pending_));
  }
  TcpMesh& mesh_;
  std::shared_ptr<TcpMesh::Pending> pending_;
  std::string what_;
  Clock::time_point start_, deadline_;
  std::function<void(std::vector<uint8_t>)> on_recv_;
  bool finished_ = false;
};

class TcpCommunicator final : public Communicator {
 public:
  TcpCommunicator(std::shared_ptr<TcpWorld> world, CommConfig config, std::string name, std::vector<int> members,
                  int rank, uint64_t context)
      : world_(std::move(world)), mesh_(*world_->mesh), config_(config), name_(std::move(name)),
        members_(std::move(members)), rank_(rank), context_(context) {
    worker_ = std::thread([this] { run_worker(); });
  }
  ~TcpCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(members_.size()); }
  const std::string& name() const override { return name_; }

  std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override {
    check_host_tensor(t, "all_reduce", *this, "TCP");
    check_reducible(t.dtype(), "all_reduce", *this);
    return submit("all_reduce", t, [this, t, op](const Op& o) mutable { run_all_reduce(o, t, op); });
  }
  std::unique_ptr<Work> all_gather_async(const Tensor& in, Tensor& out) override {
    check_host_tensor(in, "all_gather", *this, "TCP");
    check_host_tensor(out, "all_gather", *this, "TCP");
    check_all_gather(in, out, *this);
    return submit("all_gather", in, [this, in, out](const Op& o) mutable { run_all_gather(o, in, out); });
  }
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override {
    check_host_tensor(in, "reduce_scatter", *this, "TCP");
    check_host_tensor(out, "reduce_scatter", *this, "TCP");
    check_reducible(in.dtype(), "reduce_scatter", *this);
    check_reduce_scatter(in, out, *this);
    return submit("reduce_scatter", in, [this, in, out, op](const Op& o) mutable { run_reduce_scatter(o, in, out, op); });
  }
  std::unique_ptr<Work> broadcast_async(Tensor& t, int root) override {
    check_host_tensor(t, "broadcast", *this, "TCP");
    check_rank_arg(root, "root", "broadcast", *this);
    return submit("broadcast", t, [this, t, root](const Op& o) mutable { run_broadcast(o, t, root); });
  }
  std::unique_ptr<Work> barrier_async() override {
    return submit("barrier", Tensor(), [this](const Op& o) { run_barrier(o); });
  }

  std::unique_ptr<Work> send_async(const Tensor& t, int peer, int tag) override {
    check_usable("send");
    check_host_tensor(t, "send", *this, "TCP");
    check_rank_arg(peer, "peer", "send", *this);
    check_tag(tag, "send", *this);
    auto pending = mesh_.send(members_[peer], context_, tag, t.raw(), static_cast<size_t>(t.nbytes()), t.keepalive());
    return std::make_unique<P2pWork>(mesh_, pending, cat(where("send"), " tag ", tag, " to ", peer_str(peer)),
                                     deadline_from_now(), nullptr);
  }
  std::unique_ptr<Work> recv_async(Tensor& t, int peer, int tag) override {
    check_usable("recv");
    check_host_tensor(t, "recv", *this, "TCP");
    check_rank_arg(peer, "peer", "recv", *this);
    check_tag(tag, "recv", *this);
    auto pending = mesh_.post_recv(members_[peer], context_, tag);
    const std::string what = cat(where("recv"), " tag ", tag, " from ", peer_str(peer));
    return std::make_unique<P2pWork>(mesh_, pending, what, deadline_from_now(),
                                     [t, what](std::vector<uint8_t> msg) mutable {
                                       STRATA_CHECK_KIND(ErrorKind::kComm, static_cast<int64_t>(msg.size()) == t.nbytes(),
                                                         what, ": got ", msg.size(), " bytes but the tensor holds ",
                                                         t.nbytes(), "; sender and receiver disagree on the shape");
                                       if (!msg.empty()) std::memcpy(t.raw(), msg.data(), msg.size());
                                     });
  }

  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    Tensor mine = Tensor::empty({2}, DType::kI32);
    mine.data<int32_t>()[0] = color;
    mine.data<int32_t>()[1] = key;
    Tensor all = Tensor::empty({2 * static_cast<int64_t>(size())}, DType::kI32);
    all_gather(mine, all);  // also proves every member is alive, within the timeout
    const uint64_t child = mix(context_ ^ mix(++splits_) ^ mix(static_cast<uint64_t>(color) + 0x51ull));
    if (color < 0) return nullptr;
    std::vector<std::pair<std::pair<int, int>, int>> order;  // ((key, parent rank), world rank)
    for (int r = 0; r < size(); ++r)
      if (all.data<int32_t>()[2 * r] == color) order.push_back({{all.data<int32_t>()[2 * r + 1], r}, members_[r]});
    std::sort(order.begin(), order.end());
    std::vector<int> members;
    int my_rank = 0;
    for (const auto& [k, world_rank] : order) {
      if (k.second == rank_) my_rank = static_cast<int>(members.size());
      members.push_back(world_rank);
    }
    return std::make_unique<TcpCommunicator>(world_, config_, name, std::move(members), my_rank, child);
  }

 private:
  struct Op {
    std::string what;  // "all_reduce (f32 [4]) on 'tp' (rank 0 of 2)"
    int64_t tag;
    Clock::time_point start, deadline;
  };

  std::string where(const char* op) const { return op_where(op, *this); }
  std::string peer_str(int r) const {
    return cat("rank ", r, " (world rank ", members_[r], ", ", mesh_.peer_address(members_[r]), ")");
  }
  Clock::time_point deadline_from_now() const {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config_.timeout_s));
  }
  void check_usable(const char* op) {
    std::lock_guard<std::mutex> lock(mutex_);
    STRATA_CHECK_KIND(ErrorKind::kComm, broken_.empty(), where(op), ": the group is unusable after an earlier failure (",
                      broken_, "); end the job (comm::abort_world) so every rank stops");
  }

  std::unique_ptr<Work> submit(const char* op, const Tensor& t, std::function<void(const Op&)> body) {
    check_usable(op);
    Op o{t.defined() ? cat(op, " (", dtype_name(t.dtype()), " ", shape_str(t.shape()), ") on '", name_, "' (rank ",
                          rank_, " of ", size(), ")")
                     : where(op),
         -1 - static_cast<int64_t>(seq_++), Clock::now(), deadline_from_now()};
    auto state = std::make_shared<TaskState>();
    state->issued = o.start;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back([this, o, body = std::move(body), state] {
        try {
          body(o);
        } catch (const Error& e) {
          std::lock_guard<std::mutex> lock(mutex_);
          if (broken_.empty()) broken_ = cat(error_kind_name(e.kind()), " in ", o.what);
          std::lock_guard<std::mutex> state_lock(state->mutex);
          state->failed = true;
          state->kind = e.kind();
          state->message = e.what();
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> state_lock(state->mutex);
          state->failed = true;
          state->message = cat(o.what, ": ", e.what());
        }
        std::lock_guard<std::mutex> state_lock(state->mutex);
        state->finished = Clock::now();
        state->done = true;
        state->cv.notify_all();
      });
    }
    cv_.notify_all();
    return std::make_unique<TaskWork>(state, o.deadline);
  }

  void run_worker() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and every submitted op has run
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  // Building blocks on the worker thread: every wait carries the op's deadline and names the peer.
  std::shared_ptr<TcpMesh::Pending> send_to(const Op& o, int r, const void* data, size_t bytes,
                                            std::shared_ptr<void> keep) {
    return mesh_.send(members_[r], context_, o.tag, data, bytes, std::move(keep));
  }
  void wait_sent(const Op& o, std::vector<std::pair<int, std::shared_ptr<TcpMesh::Pending>>>& sends) {
    for (auto& send : sends) {
      const int r = send.first;  // a plain variable: lambdas may not capture structured bindings (C++17/clang)
      mesh_.wait(send.second, o.start, o.deadline, [&] { return cat(o.what, " sending to ", peer_str(r)); });
    }
  }
  std::vector<uint8_t> recv_from(const Op& o, int r, int64_t expect_bytes) {
    auto p = mesh_.post_recv(members_[r], context_, o.tag);
    mesh_.wait(p, o.start, o.deadline, [&] {
      return cat(o.what, " waiting for ", peer_str(r), " of group '", name_, "' (", size(), " ranks)");
    });
    std::vector<uint8_t> msg = mesh_.take(p);
    STRATA_CHECK_KIND(ErrorKind::kComm, expect_bytes < 0 || static_cast<int64_t>(msg.size()) == expect_bytes, o.what,
                      ": ", peer_str(r), " sent ", msg.size(), " bytes, expected ", expect_bytes,
                      "; the ranks disagree on the tensor shape");
    return msg;
  }

  // Root 0 reduces in rank order (deterministic, one rounding for halves) and sends the result back.
  void run_all_reduce(const Op& o, Tensor& t, ReduceOp op) {
    if (size() == 1 || t.numel() == 0) return;
    const int64_t n = t.numel();
    const size_t bytes = static_cast<size_t>(t.nbytes());
    const DType acc_type = accum_dtype(t.dtype());
    std::vector<std::pair<int, std::shared_ptr<TcpMesh::Pending>>> sends;
    if (rank_ == 0) {
      std::vector<uint8_t> acc = widen(t.raw(), n, t.dtype());
      for (int r = 1; r < size(); ++r) {
        const std::vector<uint8_t> msg = recv_from(o, r, t.nbytes());
        reduce_into(acc.data(), widen(msg.data(), n, t.dtype()).data(), n, acc_type, op);
      }
      narrow(acc.data(), n, t.dtype(), t.raw());
      for (int r = 1; r < size(); ++r) sends.emplace_back(r, send_to(o, r, t.raw(), bytes, t.keepalive()));
      wait_sent(o, sends);
    } else {
      sends.emplace_back(0, send_to(o, 0, t.raw(), bytes, t.keepalive()));
      wait_sent(o, sends);
      const std::vector<uint8_t> msg = recv_from(o, 0, t.nbytes());
      std::memcpy(t.raw(), msg.data(), bytes);
    }
  }

  void run_all_gather(const Op& o, const Tensor& in, Tensor& out) {
    const size_t bytes = static_cast<size_t>(in.nbytes());
    auto* dst = static_cast<uint8_t*>(out.raw());
    std::vector<std::pair<int, std::shared_ptr<TcpMesh::Pending>>> sends;
    for (int r = 0; r < size(); ++r)
      if (r != rank_) sends.emplace_back(r, send_to(o, r, in.raw(), bytes, in.keepalive()));
    wait_sent(o, sends);  // before writing `out`, which may alias `in`
    if (bytes > 0 && dst + bytes * rank_ != in.raw()) std::memmove(dst + bytes * rank_, in.raw(), bytes);
    for (int r = 0; r < size(); ++r) {
      if (r == rank_) continue;
      const std::vector<uint8_t> msg = recv_from(o, r, in.nbytes());
      if (bytes > 0) std::memcpy(dst + bytes * r, msg.data(), bytes);
    }
  }

  // Every rank sends chunk r to rank r, then reduces what it got in rank order.
  void run_reduce_scatter(const Op& o, const Tensor& in, Tensor& out, ReduceOp op) {
    const int64_t n = out.numel();
    const size_t chunk = static_cast<size_t>(out.nbytes());
    const auto* src = static_cast<const uint8_t*>(in.raw());
    std::vector<std::pair<int, std::shared_ptr<TcpMesh::Pending>>> sends;
    for (int r = 0; r < size(); ++r)
      if (r != rank_) sends.emplace_back(r, send_to(o, r, src + chunk * r, chunk, in.keepalive()));
    std::vector<uint8_t> acc;
    for (int r = 0; r < size(); ++r) {
      std::vector<uint8_t> wide;
      if (r == rank_) {
        wide = widen(src + chunk * r, n, in.dtype());
      } else {
        const std::vector<uint8_t> msg = recv_from(o, r, out.nbytes());
        wide = widen(msg.data(), n, in.dtype());
      }
      if (r == 0) {
        acc = std::move(wide);
      } else {
        reduce_into(acc.data(), wide.data(), n, accum_dtype(in.dtype()), op);
      }
    }
    wait_sent(o, sends);  // before writing `out`, which may alias `in`
    if (n > 0) narrow(acc.data(), n, out.dtype(), out.raw());
  }

  void run_broadcast(const Op& o, Tensor& t, int root) {
    if (rank_ == root) {
      std::vector<std::pair<int, std::shared_ptr<TcpMesh::Pending>>> sends;
      for (int r = 0; r < size(); ++r)
        if (r != root) sends.emplace_back(r, send_to(o, r, t.raw(), static_cast<size_t>(t.nbytes()), t.keepalive()));
      wait_sent(o, sends);
    } else {
      const std::vector<uint8_t> msg = recv_from(o, root, t.nbytes());
      if (!msg.empty()) std::memcpy(t.raw(), msg.data(), msg.size());
    }
  }

  void run_barrier(const Op& o) {
    std::vector<std::pair<int, std::shared_ptr<TcpMesh::Pending>>> sends;
    if (rank_ == 0) {
      for (int r = 1; r < size(); ++r) recv_from(o, r, 0);
      for (int r = 1; r < size(); ++r) sends.emplace_back(r, send_to(o, r, nullptr, 0, nullptr));
      wait_sent(o, sends);
    } else {
      sends.emplace_back(0, send_to(o, 0, nullptr, 0, nullptr));
      wait_sent(o, sends);
      recv_from(o, 0, 0);
    }
  }

  std::shared_ptr<TcpWorld> world_;
  TcpMesh& mesh_;
  CommConfig config_;
  std::string name_;
  std::vector<int> members_;  // mesh (world) rank of each member, in group order
  int rank_;
  uint64_t context_;
  uint64_t seq_ = 0;     // collectives issued, same on every member
  uint64_t splits_ = 0;  // splits issued, same on every member

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::string broken_;  // why this group is unusable; empty while healthy
  std::thread worker_;
};

}  // namespace

std::unique_ptr<Communicator> make_tcp_world(const CommConfig& config, std::shared_ptr<TcpStore> store, int rank,
                                             int size) {
  STRATA_CHECK(rank >= 0 && rank < size, "TCP world: rank ", rank, " is outside a world of ", size);
  auto world = std::make_shared<TcpWorld>();
  world->store = std::move(store);
  world->mesh = std::make_unique<TcpMesh>(*world->store, rank, size, config.timeout_s, "mesh");
  std::vector<int> members(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) members[static_cast<size_t>(r)] = r;
  return std::make_unique<TcpCommunicator>(world, config, "world", std::move(members), rank, 1);
}

std::unique_ptr<Communicator> make_tcp_world(const CommConfig& config, const TcpOptions& options) {
  auto store = std::make_shared<TcpStore>(options.master_addr, options.master_port, options.rank == 0, config.timeout_s,
                                         options.secret);
  auto world = make_tcp_world(config, store, options.rank, options.size);
  // Past this barrier every rank has its mesh connections and needs the store no more: rank 0 stops
  // listening rather than keep an open port for the life of the job.
  world->barrier();
  store->close_server();
  return world;
}

}  // namespace strata::comm
