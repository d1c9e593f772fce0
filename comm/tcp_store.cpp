// comm/tcp_store.cpp: the store's server (one Asio thread, one session per client, GETs parked until
// their key is set) and its blocking client (each call runs its own io_context with a deadline).
#include "comm/tcp_store.h"

#include <boost/asio.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::comm {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {
// Wire format. Request: op u8, key length u32, value length u64, key, value.
// Reply: status u8 (0 ok), length u64, payload. All integers little-endian (both ends are x86/ARM).
enum Op : uint8_t { kSet = 1, kGet = 2, kAdd = 3 };
constexpr size_t kRequestHeader = 13;
constexpr size_t kReplyHeader = 9;

std::string reply_bytes(std::string_view payload) {
  std::string out(kReplyHeader, '\0');
  const uint64_t n = payload.size();
  std::memcpy(out.data() + 1, &n, 8);
  out.append(payload);
  return out;
}
}  // namespace

// Everything below runs on the server's io thread, so the map needs no lock.
class TcpStoreServer {
 public:
  explicit TcpStoreServer(uint16_t port) : acceptor_(io_) {
    tcp::endpoint endpoint(tcp::v4(), port);
    boost::system::error_code ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    STRATA_CHECK_KIND(ErrorKind::kComm, !ec, "rank 0 cannot host the TCP store on port ", port, ": ", ec.message(),
                      ". Pick a free MASTER_PORT");
    port_ = acceptor_.local_endpoint().port();
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TcpStoreServer() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  struct Session : std::enable_shared_from_this<Session> {
    Session(tcp::socket s, TcpStoreServer& server) : socket(std::move(s)), server(server) {}
    tcp::socket socket;
    TcpStoreServer& server;
    uint8_t header[kRequestHeader];
    std::string key, value, out;

    void read_request() {
      auto self = shared_from_this();
      asio::async_read(socket, asio::buffer(header), [self](boost::system::error_code ec, size_t) {
        if (ec) return;  // client went away; nothing to clean up but parked GETs (handled on set)
        uint32_t klen;
        uint64_t vlen;
        std::memcpy(&klen, self->header + 1, 4);
        std::memcpy(&vlen, self->header + 5, 8);
        if (klen > (1u << 20) || vlen > (1ull << 30)) return;  // not our protocol: drop the connection
        self->key.resize(klen);
        self->value.resize(vlen);
        std::array<asio::mutable_buffer, 2> bufs{asio::buffer(self->key), asio::buffer(self->value)};
        asio::async_read(self->socket, bufs, [self](boost::system::error_code ec2, size_t) {
          if (!ec2) self->server.handle(self);
        });
      });
    }
    void reply(std::string_view payload) {
      out = reply_bytes(payload);
      auto self = shared_from_this();
      asio::async_write(socket, asio::buffer(out), [self](boost::system::error_code ec, size_t) {
        if (!ec) self->read_request();
      });
    }
  };

  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (!ec) {
        socket.set_option(tcp::no_delay(true));
        std::make_shared<Session>(std::move(socket), *this)->read_request();
      }
      if (acceptor_.is_open()) accept();
    });
  }

  void handle(const std::shared_ptr<Session>& s) {
    switch (s->header[0]) {
      case kSet: {
        data_[s->key] = s->value;
        auto parked = waiters_.find(s->key);
        if (parked != waiters_.end()) {
          for (auto& w : parked->second)
            if (w->socket.is_open()) w->reply(s->value);
          waiters_.erase(parked);
        }
        s->reply("");
        break;
      }
      case kGet: {
        auto it = data_.find(s->key);
        if (it != data_.end()) {
          s->reply(it->second);
        } else {
          waiters_[s->key].push_back(s);  // answered by the set of this key
        }
        break;
      }
      case kAdd: {
        int64_t delta = 0, now = 0;
        std::memcpy(&delta, s->value.data(), std::min<size_t>(8, s->value.size()));
        std::string& slot = data_[s->key];
        if (slot.size() == 8) std::memcpy(&now, slot.data(), 8);
        now += delta;
        slot.assign(reinterpret_cast<const char*>(&now), 8);
        s->reply(slot);
        break;
      }
      default: s->socket.close();
    }
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::map<std::string, std::string> data_;
  std::map<std::string, std::vector<std::shared_ptr<Session>>> waiters_;
};

// One connection, used by one thread at a time. Each step runs the io_context until it completes or
// the deadline passes; on a deadline the socket is closed (its state is unknown) and reopened lazily.
struct TcpStore::Client {
  std::mutex mutex;  // one request at a time on the connection
  asio::io_context io;
  tcp::socket socket{io};
  bool connected = false;

  // Runs until `done` or the deadline; false on deadline.
  bool run_until(const bool& done, Clock::time_point deadline) {
    io.restart();
    while (!done && Clock::now() < deadline) {
      io.run_one_for(deadline - Clock::now());
    }
    if (done) return true;
    boost::system::error_code ignored;
    socket.close(ignored);  // cancels the pending operation; let its handler run before reuse
    io.restart();
    io.run();
    connected = false;
    return false;
  }
};

TcpStore::TcpStore(const std::string& host, uint16_t port, bool host_server, double timeout_s)
    : host_(host), port_(port), timeout_s_(timeout_s), client_(std::make_unique<Client>()) {
  if (host_server) {
    server_ = std::make_unique<TcpStoreServer>(port);
    port_ = server_->port();
  }
  // Connect now so an unreachable store fails at startup, with retries while rank 0 comes up.
  request(kAdd, "__connect__", std::string_view("\0\0\0\0\0\0\0\0", 8), "connect");
}

TcpStore::~TcpStore() {
  boost::system::error_code ignored;
  client_->socket.close(ignored);
  client_.reset();
  server_.reset();
}

std::string TcpStore::local_address() const {
  boost::system::error_code ec;
  const auto endpoint = client_->socket.local_endpoint(ec);
  return ec ? std::string("127.0.0.1") : endpoint.address().to_string();
}

std::string TcpStore::request(uint8_t op, const std::string& key, std::string_view value, const char* what) {
  Client& c = *client_;
  std::lock_guard<std::mutex> lock(c.mutex);
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
  const std::string where = cat("TCP store at ", host_, ":", port_);
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };

  // Peers start in any order: retry refused connections with backoff until the deadline.
  std::string last_error = "no attempt";
  auto backoff = std::chrono::milliseconds(20);
  while (!c.connected) {
    boost::system::error_code ec;
    tcp::resolver resolver(c.io);
    const auto endpoints = resolver.resolve(host_, std::to_string(port_), ec);
    STRATA_CHECK_KIND(ErrorKind::kConfig, !ec, "cannot resolve the ", where, ": ", ec.message(),
                      ". Check MASTER_ADDR");
    bool done = false;
    c.socket = tcp::socket(c.io);
    asio::async_connect(c.socket, endpoints, [&](boost::system::error_code e, const tcp::endpoint&) {
      ec = e;
      done = true;
    });
    if (c.run_until(done, deadline) && !ec) {
      c.socket.set_option(tcp::no_delay(true));
      c.connected = true;
      break;
    }
    last_error = done ? ec.message() : "connect timed out";
    if (Clock::now() + backoff >= deadline)
      STRATA_THROW(ErrorKind::kTimeout, "cannot reach the ", where, " after ", elapsed(), " s (", last_error,
                   "). Is rank 0 running, and are MASTER_ADDR/MASTER_PORT the same on every rank?");
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }

  std::string req(kRequestHeader, '\0');
  req[0] = static_cast<char>(op);
  const uint32_t klen = static_cast<uint32_t>(key.size());
  const uint64_t vlen = value.size();
  std::memcpy(req.data() + 1, &klen, 4);
  std::memcpy(req.data() + 5, &vlen, 8);
  req += key;
  req.append(value);

  uint8_t header[kReplyHeader];
  std::string payload;
  boost::system::error_code ec;
  bool done = false;
  asio::async_write(c.socket, asio::buffer(req), [&](boost::system::error_code e, size_t) {
    if (e) {
      ec = e;
      done = true;
      return;
    }
    asio::async_read(c.socket, asio::buffer(header), [&](boost::system::error_code e2, size_t) {
      uint64_t n = 0;
      std::memcpy(&n, header + 1, 8);
      if (e2 || n == 0) {
        ec = e2;
        done = true;
        return;
      }
      payload.resize(n);
      asio::async_read(c.socket, asio::buffer(payload), [&](boost::system::error_code e3, size_t) {
        ec = e3;
        done = true;
      });
    });
  });
  if (!c.run_until(done, deadline))
    STRATA_THROW(ErrorKind::kTimeout, what, "('", key, "') on the ", where, " timed out after ", elapsed(),
                 " s. A rank may not have started or may have died; raise the timeout if startup is slow");
  if (ec) {
    c.connected = false;
    STRATA_THROW(ErrorKind::kComm, what, "('", key, "') on the ", where, " failed: ", ec.message(),
                 ". Rank 0, which hosts the store, may have exited");
  }
  return payload;
}

void TcpStore::set(const std::string& key, std::string_view value) { request(kSet, key, value, "set"); }

std::string TcpStore::get(const std::string& key) { return request(kGet, key, {}, "get"); }

int64_t TcpStore::add(const std::string& key, int64_t delta) {
  const std::string out = request(kAdd, key, std::string_view(reinterpret_cast<const char*>(&delta), 8), "add");
  int64_t now = 0;
  STRATA_CHECK_KIND(ErrorKind::kComm, out.size() == 8, "add('", key, "'): malformed reply from the TCP store");
  std::memcpy(&now, out.data(), 8);
  return now;
}

void TcpStore::wait(const std::vector<std::string>& keys) {
  for (const auto& k : keys) get(k);
}

void TcpStore::barrier(const std::string& name, int world_size) {
  // The last rank to arrive opens the gate that everyone else is parked on.
  if (add("barrier/" + name + "/count", 1) == world_size) set("barrier/" + name + "/open", "1");
  get("barrier/" + name + "/open");
}

}  // namespace strata::comm
