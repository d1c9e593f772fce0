// comm/tcp/tcp_mesh.cpp: mesh setup through the store, the io thread's read/write loops, and the
// mailbox that matches frames to posted receives. Frame: context u64, tag i64, length u64, payload.
#include "comm/tcp/tcp_mesh.h"

#include <boost/asio.hpp>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>

#include "comm/tcp_store.h"
#include "runtime/error.h"

namespace strata::comm {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {
constexpr size_t kFrameHeader = 24;
constexpr uint32_t kHelloMagic = 0x5354524du;  // "STRM": rejects strays connecting to our port

std::string seconds_str(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", s);
  return buf;
}
}  // namespace

struct TcpMesh::Pending {
  bool done = false;
  std::string error;  // set together with done on failure
  std::vector<uint8_t> payload;
  bool is_recv = false;
  int peer = 0;
  uint64_t context = 0;
  int64_t tag = 0;
  uint8_t header[kFrameHeader];
  const void* data = nullptr;
  size_t bytes = 0;
  std::shared_ptr<void> keep;
};

struct TcpMesh::Impl {
  using Key = std::tuple<int, uint64_t, int64_t>;
  struct Peer {
    explicit Peer(asio::io_context& io) : socket(io) {}
    tcp::socket socket;
    std::string address;
    uint8_t header[kFrameHeader];
    std::vector<uint8_t> body;
    std::deque<std::shared_ptr<Pending>> outbox;  // io thread only
    bool writing = false;                        // io thread only
    std::string error;                           // under mutex
  };

  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
  std::vector<std::unique_ptr<Peer>> peers;
  int rank = 0;

  std::mutex mutex;
  std::condition_variable cv;
  std::map<Key, std::deque<std::vector<uint8_t>>> unexpected;
  std::map<Key, std::deque<std::shared_ptr<Pending>>> posted;

  void deliver(int from, uint64_t context, int64_t tag, std::vector<uint8_t> body) {
    std::lock_guard<std::mutex> lock(mutex);
    const Key key{from, context, tag};
    auto it = posted.find(key);
    if (it != posted.end() && !it->second.empty()) {
      auto p = std::move(it->second.front());
      it->second.pop_front();
      p->payload = std::move(body);
      p->done = true;
      cv.notify_all();
    } else {
      unexpected[key].push_back(std::move(body));
    }
  }

  void fail_peer(int r, const boost::system::error_code& ec) {
    Peer& peer = *peers[r];
    std::string why = ec == asio::error::eof ? "the peer closed the connection (it exited or crashed)" : ec.message();
    const std::string msg = cat("connection to rank ", r, " (", peer.address, ") failed: ", why);
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (peer.error.empty()) peer.error = msg;
      for (auto& [key, queue] : posted) {
        if (std::get<0>(key) != r) continue;
        for (auto& p : queue) {
          p->error = peer.error;
          p->done = true;
        }
        queue.clear();
      }
      for (auto& p : peer.outbox) {
        p->error = peer.error;
        p->done = true;
      }
      cv.notify_all();
    }
    peer.outbox.clear();
    boost::system::error_code ignored;
    peer.socket.close(ignored);
  }

  void read_header(int r) {
    Peer& peer = *peers[r];
    asio::async_read(peer.socket, asio::buffer(peer.header), [this, r](boost::system::error_code ec, size_t) {
      if (ec) return fail_peer(r, ec);
      Peer& p = *peers[r];
      uint64_t len = 0;
      std::memcpy(&len, p.header + 16, 8);
      p.body.assign(len, 0);
      asio::async_read(p.socket, asio::buffer(p.body), [this, r](boost::system::error_code ec2, size_t) {
        if (ec2) return fail_peer(r, ec2);
        Peer& q = *peers[r];
        uint64_t context = 0;
        int64_t tag = 0;
        std::memcpy(&context, q.header, 8);
        std::memcpy(&tag, q.header + 8, 8);
        deliver(r, context, tag, std::move(q.body));
        read_header(r);
      });
    });
  }

  void write_next(int r) {
    Peer& peer = *peers[r];
    if (peer.writing || peer.outbox.empty()) return;
    peer.writing = true;
    auto p = peer.outbox.front();
    std::array<asio::const_buffer, 2> bufs{asio::buffer(p->header), asio::buffer(p->data, p->bytes)};
    asio::async_write(peer.socket, bufs, [this, r, p](boost::system::error_code ec, size_t) {
      Peer& q = *peers[r];
      q.writing = false;
      if (ec) return fail_peer(r, ec);
      q.outbox.pop_front();
      {
        std::lock_guard<std::mutex> lock(mutex);
        p->done = true;
        cv.notify_all();
      }
      p->keep.reset();
      write_next(r);
    });
  }
};

TcpMesh::TcpMesh(TcpStore& store, int rank, int size, double timeout_s, const std::string& prefix)
    : impl_(std::make_unique<Impl>()), rank_(rank), size_(size) {
  Impl& m = *impl_;
  m.rank = rank;
  for (int r = 0; r < size; ++r) m.peers.push_back(std::make_unique<Impl::Peer>(m.io));
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));

  tcp::acceptor acceptor(m.io, tcp::endpoint(tcp::v4(), 0));
  const std::string me = cat(store.local_address(), ":", acceptor.local_endpoint().port());
  m.peers[rank]->address = me;
  store.set(cat(prefix, "/addr/", rank), me);

  int connected = 0;
  std::vector<uint32_t> hello_out(2 * static_cast<size_t>(size));
  // Lower ranks listen before they publish, so one connect normally suffices; retry briefly anyway.
  std::function<void(int)> connect_to = [&](int r) {
    Impl::Peer& peer = *m.peers[r];
    const std::string addr = peer.address;
    const size_t colon = addr.rfind(':');
    boost::system::error_code ec;
    const auto ip = asio::ip::make_address(addr.substr(0, colon), ec);
    STRATA_CHECK_KIND(ErrorKind::kComm, !ec && colon != std::string::npos, "rank ", r,
                      " published a bad mesh address '", addr, "'");
    const tcp::endpoint endpoint(ip, static_cast<uint16_t>(std::stoi(addr.substr(colon + 1))));
    peer.socket.async_connect(endpoint, [&, r, endpoint](boost::system::error_code e) {
      Impl::Peer& p = *m.peers[r];
      if (e) {
        boost::system::error_code ignored;
        p.socket.close(ignored);
        auto timer = std::make_shared<asio::steady_timer>(m.io, std::chrono::milliseconds(100));
        timer->async_wait([&, r, timer](boost::system::error_code) { connect_to(r); });
        return;
      }
      p.socket.set_option(tcp::no_delay(true));
      hello_out[2 * r] = kHelloMagic;
      hello_out[2 * r + 1] = static_cast<uint32_t>(rank);
      asio::async_write(p.socket, asio::buffer(&hello_out[2 * r], 8), [&](boost::system::error_code e2, size_t) {
        if (!e2) ++connected;
      });
    });
  };
  for (int r = 0; r < rank; ++r) {
    m.peers[r]->address = store.get(cat(prefix, "/addr/", r));
    connect_to(r);
  }

  std::function<void()> accept_next = [&]() {
    auto socket = std::make_shared<tcp::socket>(m.io);
    acceptor.async_accept(*socket, [&, socket](boost::system::error_code ec) {
      if (ec) return;
      auto hello = std::make_shared<std::array<uint32_t, 2>>();
      // By value: a stray connection's hello may arrive after this constructor returned.
      asio::async_read(*socket, asio::buffer(*hello), [&m, &connected, socket, hello, rank, size](
                                                           boost::system::error_code e, size_t) {
        const int from = static_cast<int>((*hello)[1]);
        if (e || (*hello)[0] != kHelloMagic || from <= rank || from >= size || m.peers[from]->socket.is_open())
          return;  // a stray or duplicate connection: drop it
        socket->set_option(tcp::no_delay(true));
        m.peers[from]->socket = std::move(*socket);
        ++connected;
      });
      accept_next();
    });
  };
  if (rank + 1 < size) accept_next();

  while (connected < size - 1 && Clock::now() < deadline) m.io.run_one_for(deadline - Clock::now());
  if (connected < size - 1) {
    std::string missing;
    for (int r = 0; r < size; ++r)
      if (r != rank && !m.peers[r]->socket.is_open()) missing += cat(missing.empty() ? "" : ",", r);
    STRATA_THROW(ErrorKind::kTimeout, "TCP mesh setup: rank ", rank, " of ", size, " could not connect to rank(s) ",
                 missing, " within ", seconds_str(std::chrono::duration<double>(Clock::now() - start).count()),
                 " s. Check that every rank started and that ports are open between hosts");
  }
  acceptor.close();
  m.io.restart();
  // Drain handlers still queued from setup (e.g. the cancelled accept) before the io thread starts.
  m.io.poll();
  m.io.restart();
  for (int r = 0; r < size; ++r) {
    if (r == rank) continue;
    if (m.peers[r]->address.empty()) m.peers[r]->address = store.get(cat(prefix, "/addr/", r));
    m.read_header(r);
  }
  m.guard.emplace(m.io.get_executor());
  m.thread = std::thread([&m] { m.io.run(); });
}

TcpMesh::~TcpMesh() {
  impl_->guard.reset();
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::string TcpMesh::peer_address(int peer) const { return impl_->peers.at(peer)->address; }

std::shared_ptr<TcpMesh::Pending> TcpMesh::send(int peer, uint64_t context, int64_t tag, const void* data,
                                                size_t bytes, std::shared_ptr<void> keep) {
  Impl& m = *impl_;
  auto p = std::make_shared<Pending>();
  if (peer == rank_) {  // a send to self lands in our own mailbox
    const auto* b = static_cast<const uint8_t*>(data);
    m.deliver(peer, context, tag, std::vector<uint8_t>(b, b + bytes));
    p->done = true;
    return p;
  }
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    if (!m.peers[peer]->error.empty()) {
      p->error = m.peers[peer]->error;
      p->done = true;
      return p;
    }
  }
  const uint64_t len = bytes;
  std::memcpy(p->header, &context, 8);
  std::memcpy(p->header + 8, &tag, 8);
  std::memcpy(p->header + 16, &len, 8);
  p->peer = peer;
  p->data = data;
  p->bytes = bytes;
  p->keep = std::move(keep);
  asio::post(m.io, [&m, peer, p] {
    Impl::Peer& q = *m.peers[peer];
    if (!q.socket.is_open()) {
      std::lock_guard<std::mutex> lock(m.mutex);
      p->error = q.error.empty() ? cat("connection to rank ", peer, " is closed") : q.error;
      p->done = true;
      m.cv.notify_all();
      return;
    }
    q.outbox.push_back(p);
    m.write_next(peer);
  });
  return p;
}

std::shared_ptr<TcpMesh::Pending> TcpMesh::post_recv(int peer, uint64_t context, int64_t tag) {
  Impl& m = *impl_;
  auto p = std::make_shared<Pending>();
  p->is_recv = true;
  p->peer = peer;
  p->context = context;
  p->tag = tag;
  std::lock_guard<std::mutex> lock(m.mutex);
  const Impl::Key key{peer, context, tag};
  auto it = m.unexpected.find(key);
  if (it != m.unexpected.end() && !it->second.empty()) {
    p->payload = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) m.unexpected.erase(it);
    p->done = true;
  } else if (!m.peers[peer]->error.empty()) {
    p->error = m.peers[peer]->error;
    p->done = true;
  } else {
    m.posted[key].push_back(p);
  }
  return p;
}

bool TcpMesh::test(const std::shared_ptr<Pending>& p) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (p->done && !p->error.empty()) STRATA_THROW(ErrorKind::kComm, p->error);
  return p->done;
}

void TcpMesh::wait(const std::shared_ptr<Pending>& p, Clock::time_point start, Clock::time_point deadline,
                   const std::function<std::string()>& what) {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mutex);
  m.cv.wait_until(lock, deadline, [&] { return p->done; });
  if (p->done) {
    if (!p->error.empty()) STRATA_THROW(ErrorKind::kComm, what(), ": ", p->error);
    return;
  }
  if (p->is_recv) {  // withdraw, so a late frame goes to the next matching receive instead
    auto it = m.posted.find(Impl::Key{p->peer, p->context, p->tag});
    if (it != m.posted.end()) std::erase(it->second, p);
  }
  lock.unlock();
  STRATA_THROW(ErrorKind::kTimeout, what(), " timed out after ",
               seconds_str(std::chrono::duration<double>(Clock::now() - start).count()),
               " s. A rank may have died, hung, or skipped this op (members must call collectives in the same "
               "order); raise CommConfig::timeout_s (STRATA_COMM_TIMEOUT) if the step is legitimately slow");
}

std::vector<uint8_t> TcpMesh::take(const std::shared_ptr<Pending>& p) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return std::move(p->payload);
}

}  // namespace strata::comm
