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
// Reply: status u8 (0 ok, else refused: the payload says why), length u64, payload. All integers
// little-endian (both ends are x86/ARM). A connection's first request is kHello with the secret.
enum Op : uint8_t { kSet = 1, kGet = 2, kAdd = 3, kHello = 4 };
constexpr size_t kRequestHeader = 13;
constexpr size_t kReplyHeader = 9;
constexpr size_t kMaxSecretBytes = 1024;

std::string reply_bytes(std::string_view payload, uint8_t status = 0) {
  std::string out(kReplyHeader, '\0');
  out[0] = static_cast<char>(status);
  const uint64_t n = payload.size();
  std::memcpy(out.data() + 1, &n, 8);
  out.append(payload);
  return out;
}

// Takes the same time wherever the strings differ.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}
}  // namespace

// Everything below runs on the server's io thread, so the map needs no lock.
class TcpStoreServer {
 public:
  TcpStoreServer(const std::string& host, uint16_t port, std::string secret) : secret_(std::move(secret)), acceptor_(io_) {
    boost::system::error_code ec;
    const tcp::endpoint endpoint = listen_endpoint(host, port);
    open_and_bind(endpoint, ec);
    if (ec == boost::system::errc::address_not_available && !endpoint.address().is_unspecified()) {
      // MASTER_ADDR names an address that is not this host's (a load balancer, NAT): listen on all.
      LOG_WARN("MASTER_ADDR ", host, " (", endpoint.address().to_string(), ") is not an address of this host; the TCP "
               "store listens on every interface (clients still need the job's secret)");
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      ec.clear();
      open_and_bind(tcp::endpoint(tcp::v4(), port), ec);
    }
    STRATA_CHECK_KIND(ErrorKind::kComm, !ec, "rank 0 cannot host the TCP store on ", host, ":", port, ": ",
                      ec.message(), ". Pick a free MASTER_PORT");
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
  // MASTER_ADDR's interface: the first address it resolves to (numeric addresses resolve to
  // themselves). Unresolvable: every interface, and the clients report the name.
  tcp::endpoint listen_endpoint(const std::string& host, uint16_t port) {
    boost::system::error_code ec;
    tcp::resolver resolver(io_);
    const auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
    if (ec || results.empty()) return tcp::endpoint(tcp::v4(), port);
    return results.begin()->endpoint();
  }

  void open_and_bind(const tcp::endpoint& endpoint, boost::system::error_code& ec) {
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  }

  struct Session : std::enable_shared_from_this<Session> {
    Session(tcp::socket s, TcpStoreServer& server) : socket(std::move(s)), server(server) {}
    tcp::socket socket;
    TcpStoreServer& server;
    uint8_t header[kRequestHeader];
    std::string key, value, out;
    bool admitted = false;  // sent the job's secret

    void read_request() {
      auto self = shared_from_this();
      asio::async_read(socket, asio::buffer(header), [self](boost::system::error_code ec, size_t) {
        if (ec) return;  // client went away; nothing to clean up but parked GETs (handled on set)
        uint32_t klen;
        uint64_t vlen;
        std::memcpy(&klen, self->header + 1, 4);
        std::memcpy(&vlen, self->header + 5, 8);
        // Sizes are checked before anything is allocated: a stranger gets at most a secret's worth.
        if (!self->admitted) {
          if (self->header[0] != kHello || klen != 0 || vlen > kMaxSecretBytes) return self->drop("sent no secret");
        } else if (klen > kStoreMaxKeyBytes || vlen > kStoreMaxValueBytes) {
          return self->refuse(cat("a key of ", klen, " bytes and a value of ", vlen, " bytes exceed the store's limits (",
                                  kStoreMaxKeyBytes, " and ", kStoreMaxValueBytes, ")"));
        }
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
    // Answers with the reason, then closes.
    void refuse(const std::string& why) {
      out = reply_bytes(why, 1);
      auto self = shared_from_this();
      asio::async_write(socket, asio::buffer(out), [self](boost::system::error_code, size_t) { self->close(); });
    }
    void drop(const char* why) {
      boost::system::error_code ec;
      const auto peer = socket.remote_endpoint(ec);
      LOG_WARN("TCP store: dropped a connection from ", ec ? std::string("?") : peer.address().to_string(), " that ",
               why, " (not a rank of this job, or a rank with another STRATA_STORE_SECRET)");
      close();
    }
    void close() {
      boost::system::error_code ignored;
      socket.close(ignored);
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
    if (!s->admitted) {
      if (!same_secret(s->value, secret_)) return s->drop("sent a wrong secret");
      s->admitted = true;
      return s->reply("");
    }
    switch (s->header[0]) {
      case kSet: {
        auto it = data_.find(s->key);
        const size_t old = it != data_.end() ? it->first.size() + it->second.size() : 0;
        if (total_bytes_ - old + s->key.size() + s->value.size() > kStoreMaxTotalBytes)
          return s->refuse(cat("the store holds ", total_bytes_, " bytes; setting '", s->key, "' would pass its limit of ",
                               kStoreMaxTotalBytes));
        total_bytes_ += s->key.size() + s->value.size() - old;
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
        auto it = data_.find(s->key);
        const size_t old = it != data_.end() ? it->first.size() + it->second.size() : 0;
        if (total_bytes_ - old + s->key.size() + 8 > kStoreMaxTotalBytes) return s->refuse("the store is full");
        total_bytes_ += s->key.size() + 8 - old;
        std::string& slot = data_[s->key];
        if (slot.size() == 8) std::memcpy(&now, slot.data(), 8);
        now += delta;
        slot.assign(reinterpret_cast<const char*>(&now), 8);
        s->reply(slot);
        break;
      }
      default: s->close();
    }
  }

  std::string secret_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::map<std::string, std::string> data_;
  size_t total_bytes_ = 0;  // keys and values held
  std::map<std::string, std::vector<std::shared_ptr<Session>>> waiters_;
};

// One connection, used by one thread at a time. Each step runs the io_context until it completes or
// the deadline passes; on a deadline the socket is closed (its state is unknown) and reopened lazily.
struct TcpStore::Client {
  std::mutex mutex;  // one request at a time on the connection
  asio::io_context io;
  tcp::socket socket{io};
  bool connected = false;
  bool hello_sent = false;  // this connection has sent the secret

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

TcpStore::TcpStore(const std::string& host, uint16_t port, bool host_server, double timeout_s, std::string secret)
    : host_(host), secret_(std::move(secret)), port_(port), timeout_s_(timeout_s), client_(std::make_unique<Client>()) {
  STRATA_CHECK_KIND(ErrorKind::kConfig, !secret_.empty() && secret_.size() <= kMaxSecretBytes,
                    "the TCP store needs the job's secret (1 to ", kMaxSecretBytes, " bytes, the same on every rank): set "
                    "STRATA_STORE_SECRET, or STRATA_STORE_SECRET_FILE to a file holding it");
  if (host_server) {
    server_ = std::make_unique<TcpStoreServer>(host, port, secret_);
    port_ = server_->port();
  }
  // Connect now so an unreachable store fails at startup, with retries while rank 0 comes up.
  request(kAdd, "__connect__", std::string_view("\0\0\0\0\0\0\0\0", 8), "connect");
}

void TcpStore::close_server() { server_.reset(); }

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
      c.hello_sent = false;  // every connection introduces itself
      break;
    }
    last_error = done ? ec.message() : "connect timed out";
    if (Clock::now() + backoff >= deadline)
      STRATA_THROW(ErrorKind::kTimeout, "cannot reach the ", where, " after ", elapsed(), " s (", last_error,
                   "). Is rank 0 running, and are MASTER_ADDR/MASTER_PORT the same on every rank?");
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }

  // One request and its reply on the open connection; status != 0 means the store refused it.
  auto roundtrip = [&](uint8_t rop, const std::string& rkey, std::string_view rvalue, const char* rwhat) {
    std::string req(kRequestHeader, '\0');
    req[0] = static_cast<char>(rop);
    const uint32_t klen = static_cast<uint32_t>(rkey.size());
    const uint64_t vlen = rvalue.size();
    std::memcpy(req.data() + 1, &klen, 4);
    std::memcpy(req.data() + 5, &vlen, 8);
    req += rkey;
    req.append(rvalue);

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
        if (n > kStoreMaxValueBytes) {
          ec = asio::error::message_size;
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
      STRATA_THROW(ErrorKind::kTimeout, rwhat, "('", rkey, "') on the ", where, " timed out after ", elapsed(),
                   " s. A rank may not have started or may have died; raise the timeout if startup is slow");
    if (ec) {
      c.connected = false;
      boost::system::error_code ignored;
      c.socket.close(ignored);
      if (rop == kHello)
        STRATA_THROW(ErrorKind::kComm, "the ", where, " refused this rank (", ec.message(),
                     "): STRATA_STORE_SECRET differs between the ranks of this job; give every rank the same one");
      STRATA_THROW(ErrorKind::kComm, rwhat, "('", rkey, "') on the ", where, " failed: ", ec.message(),
                   ". Rank 0, which hosts the store, may have exited");
    }
    if (header[0] != 0) {
      c.connected = false;
      boost::system::error_code ignored;
      c.socket.close(ignored);
      STRATA_THROW(ErrorKind::kComm, rwhat, "('", rkey, "') on the ", where, " was refused: ", payload);
    }
    return payload;
  };
  if (!c.hello_sent) {
    c.hello_sent = true;
    roundtrip(kHello, "", secret_, "hello");
  }
  return roundtrip(op, key, value, what);
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
