// launcher/http/http_server.cpp: Beast sessions. Reads use the parser directly (header, then an
// optional "100 Continue", then the body) so an oversized body is refused from its Content-Length;
// responses are written as plain bytes from a queue, so full and chunked responses share one path.
// While a handler works on a request the connection keeps one read open: it completes on EOF or reset
// (the client went away) and otherwise buffers pipelined bytes for the next request. The accept loop
// backs off when accept() fails (no file descriptors left) and answers connections past the cap with 503.
#include "launcher/http/http_server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher::http {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::string status_reason(int status) {
  return std::string(bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(status))));
}

namespace {

std::string error_json(const std::string& message, const std::string& code = "") {
  const bool server = code == "internal_error";
  return "{\"error\": {\"message\": " + boost::json::serialize(boost::json::value(message)) + ", \"type\": \"" +
         (server ? "server_error" : "invalid_request_error") + "\", \"param\": null, \"code\": " +
         (code.empty() ? std::string("null") : boost::json::serialize(boost::json::value(code))) + "}}";
}

class Session;

struct ServerCore {
  ServerOptions options;
  Handler handler;
  std::atomic<size_t> max_body_bytes;  // options.max_body_bytes, raised once the model is known (set_max_body_bytes)
  // Sessions alive; declared before ioc, so sessions that ioc's destructor frees still find it.
  std::atomic<int> connections{0};
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  net::signal_set signals{ioc};
  net::executor_work_guard<net::io_context::executor_type> work = net::make_work_guard(ioc);
  std::vector<std::thread> threads;
  std::mutex mutex;
  std::vector<std::weak_ptr<Session>> sessions;
  std::function<void(int)> on_signal;
  std::atomic<bool> accepting{false}, stopping{false};
  std::atomic<int> busy{0};  // connections with a request whose response is not fully written
  int port = 0;
  // Accept failures (EMFILE): retried after a growing pause, reported at most every few seconds.
  net::steady_timer accept_timer{ioc};
  std::chrono::milliseconds accept_backoff{10};
  std::chrono::steady_clock::time_point last_accept_report{};
  int64_t accept_failures_unreported = 0;

  ServerCore(ServerOptions o, Handler h)
      : options(std::move(o)), handler(std::move(h)), max_body_bytes(options.max_body_bytes),
        ioc(std::max(1, options.threads)) {}
  void do_accept();
  void accept_failed(const beast::error_code& ec);
  void wait_signal();
  template <typename Fn>
  void for_each_session(Fn fn);
};

class Session final : public Exchange, public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, ServerCore& server)
      : stream_(std::move(socket)), server_(server), body_timer_(stream_.get_executor()) {
    over_capacity_ = ++server_.connections > server_.options.max_connections;
  }
  ~Session() override { --server_.connections; }

  void run() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->do_read(); });
  }
  // Server shutdown: idle connections close now, busy ones after their response.
  void close_when_idle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      self->keep_alive_ = false;
      if (!self->in_exchange_) self->close();
    });
  }
  void force_close() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

  const HttpRequest& request() const override { return request_; }
  bool client_gone() const override { return gone_ || closed_; }

  void respond(int status, const std::string& content_type, std::string body, const Headers& headers) override {
    if (response_started_) return;
    response_started_ = true;
    std::string out = head(status, content_type, headers);
    out += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
    out += body;
    queue(std::move(out), true);
  }

  void begin_stream(int status, const std::string& content_type, const Headers& headers) override {
    if (response_started_) return;
    response_started_ = true;
    streaming_ = true;
    queue(head(status, content_type, headers) + "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n", false);
  }

  void write(std::string data) override {
    if (!streaming_ || data.empty()) return;  // an empty chunk would end the stream
    char size[32];
    std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
    queue(size + data + "\r\n", false);
  }

  void end_stream() override {
    if (!streaming_) return;
    streaming_ = false;
    queue("0\r\n\r\n", true);
  }

  void post(std::function<void()> fn) override { net::post(stream_.get_executor(), std::move(fn)); }

  void watch_disconnect(std::function<void()> on_gone) override {
    if (client_gone()) {
      post(std::move(on_gone));
      return;
    }
    on_gone_ = std::move(on_gone);
    if (!watching_) start_watch();
  }

 private:
  std::string head(int status, const std::string& content_type, const Headers& headers) const {
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + status_reason(status) + "\r\nServer: strata\r\n";
    out += "Content-Type: " + content_type + "\r\n";
    for (const auto& cors : cors_headers_)  // (a named pair: clang 14 cannot capture structured bindings)
      if (std::none_of(headers.begin(), headers.end(), [&](const auto& h) { return h.first == cors.first; }))
        out += cors.first + ": " + cors.second + "\r\n";
    for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
    out += keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
    return out;
  }

  void do_read() {
    if (closed_) return;
    if (server_.stopping || !server_.accepting) {
      graceful_close();
      return;
    }
    cors_headers_.clear();
    if (over_capacity_) {
      // Past --max-connections: a clear answer now beats a connection left waiting in the backlog.
      reject(503, "the server has " + std::to_string(server_.options.max_connections) +
                      " connections open, its limit; retry shortly", {{"Retry-After", "1"}});
      return;
    }
    parser_.emplace();
    parser_->body_limit(server_.max_body_bytes.load());
    parser_->header_limit(64 * 1024);
    stream_.expires_after(std::chrono::seconds(server_.options.idle_timeout_s));
    bhttp::async_read_header(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  // Returns true when the read failed and the connection has been dealt with.
  bool read_failed(beast::error_code ec) {
    if (!ec) return false;
    if (closed_) return true;
    const bool got_some = parser_->got_some() || buffer_.size() > 0;
    if (ec == bhttp::error::end_of_stream || ec == net::error::operation_aborted || (!got_some && ec != beast::error::timeout)) {
      close();
    } else if (ec == bhttp::error::body_limit) {
      reject(413, "the request body exceeds the server's limit of " + std::to_string(server_.max_body_bytes.load()) +
                      " bytes; the operator can raise it with --max-body-bytes");
    } else if (ec == beast::error::timeout) {
      close();  // half a header for the idle timeout: the stream has closed the socket already
    } else {
      reject(400, "malformed HTTP request: " + ec.message());
    }
    return true;
  }

  void on_header(beast::error_code ec, size_t) {
    if (read_failed(ec)) return;
    const auto& req = parser_->get();
    if (refuse_encoding(req) || refuse_access(req)) return;
    if (beast::iequals(req[bhttp::field::expect], "100-continue")) {
      // The client waits for this before it sends the body.
      auto cont = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
      net::async_write(stream_, net::buffer(*cont), [self = shared_from_this(), cont](beast::error_code e, size_t) {
        if (e) return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  // Content-Encoding and transfer codings other than chunked are not decoded here: refusing them beats
  // handing the routes compressed bytes as if they were JSON.
  bool refuse_encoding(const bhttp::request<bhttp::string_body>& req) {
    const std::string te = std::string(req[bhttp::field::transfer_encoding]);
    if (!te.empty() && !beast::iequals(trimmed(te), "chunked")) {
      reject(415, "Transfer-Encoding '" + te + "' is not supported: this server decodes only 'chunked'; send the body "
                  "uncompressed");
      return true;
    }
    const std::string ce = std::string(req[bhttp::field::content_encoding]);
    if (!ce.empty() && !beast::iequals(trimmed(ce), "identity")) {
      reject(415, "Content-Encoding '" + ce + "' is not supported; send the body uncompressed");
      return true;
    }
    return false;
  }

  // Host, CORS and API key (access.h), from the header alone: a refused client sends no body we keep.
  bool refuse_access(const bhttp::request<bhttp::string_body>& req) {
    AccessRequest a;
    a.method = std::string(req.method_string());
    a.path = std::string(req.target().substr(0, req.target().find('?')));
    a.host = std::string(req[bhttp::field::host]);
    a.origin = std::string(req[bhttp::field::origin]);
    a.authorization = std::string(req[bhttp::field::authorization]);
    a.preflight = req.method() == bhttp::verb::options && req.count(bhttp::field::access_control_request_method) > 0;
    AccessDecision d = decide_access(server_.options.access, a);
    cors_headers_ = std::move(d.cors_headers);
    if (d.status == 0) return false;
    keep_alive_ = false;
    set_busy(true);
    if (d.status == 204) {
      response_started_ = true;
      std::string out = head(204, "text/plain", d.headers);
      queue(out + "\r\n", true);
    } else {
      respond(d.status, "application/json", error_json(d.message, d.code), d.headers);
    }
    return true;
  }

  static std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
    size_t b = 0;
    while (b < s.size() && (s[b] == ' ' || s[b] == '\t')) ++b;
    return s.substr(b);
  }

  // The body in pieces, each with its own deadline: a slow client may take long, a stalled one gets 408.
  // The deadline is a timer of ours that cancels the read: the stream's own timeout closes the socket,
  // and the 408 could not be sent.
  void read_body() {
    if (parser_->is_done()) return on_read({}, 0);  // no body (GET), or all of it came with the header
    stream_.expires_never();
    body_stalled_ = false;
    body_timer_.expires_after(std::chrono::seconds(server_.options.read_timeout_s));
    body_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec) return;  // the read finished first
      self->body_stalled_ = true;
      beast::error_code ignored;
      self->stream_.socket().cancel(ignored);
    });
    bhttp::async_read_some(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::on_body, shared_from_this()));
  }

  void on_body(beast::error_code ec, size_t) {
    body_timer_.cancel();
    if (ec == net::error::operation_aborted && body_stalled_ && !closed_) {
      return reject(408, "the request body stopped arriving: nothing for " +
                             std::to_string(server_.options.read_timeout_s) +
                             " s (does Content-Length state more bytes than were sent?)");
    }
    if (read_failed(ec)) return;
    if (!parser_->is_done()) return read_body();
    on_read(ec, 0);
  }

  void on_read(beast::error_code ec, size_t) {
    if (read_failed(ec)) return;
    auto& req = parser_->get();
    request_.method = std::string(req.method_string());
    request_.target = std::string(req.target());
    request_.content_type = std::string(req[bhttp::field::content_type]);
    request_.body = std::move(req.body());
    keep_alive_ = req.keep_alive() && !server_.stopping;
    set_busy(true);
    gone_ = false;
    stream_.expires_never();  // generation may take long; the disconnect watch notices a dead client
    try {
      server_.handler(shared_from_this());
    } catch (const std::exception& e) {
      // The detail (source locations, peers) stays in the server log.
      LOG_ERROR("HTTP handler for ", request_.method, " ", request_.target, " failed: ", e.what());
      respond(500, "application/json", error_json("internal error; the server log has the details", "internal_error"), {});
    }
  }

  void reject(int status, const std::string& message, const Headers& headers = {}) {
    keep_alive_ = false;
    set_busy(true);
    respond(status, "application/json", error_json(message), headers);
  }

  void queue(std::string data, bool last) {
    if (closed_) return;
    out_.push_back(std::move(data));
    if (last) last_queued_ = true;
    if (!writing_) do_write();
  }

  void do_write() {
    writing_ = true;
    net::async_write(stream_, net::buffer(out_.front()), beast::bind_front_handler(&Session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    writing_ = false;
    if (ec) return peer_gone();
    out_.pop_front();
    if (!out_.empty()) return do_write();
    if (last_queued_) finish_exchange();
  }

  void set_busy(bool busy) {
    if (busy != in_exchange_) server_.busy += busy ? 1 : -1;
    in_exchange_ = busy;
  }

  void finish_exchange() {
    set_busy(false);
    last_queued_ = false;
    response_started_ = false;
    streaming_ = false;
    on_gone_ = nullptr;
    if (!keep_alive_ || server_.stopping || !server_.accepting) return graceful_close();
    if (watching_) {
      stream_.socket().cancel();  // on_watch resumes reading the next request
      return;
    }
    do_read();
  }

  void start_watch() {
    watching_ = true;
    stream_.async_read_some(net::buffer(watch_buf_), beast::bind_front_handler(&Session::on_watch, shared_from_this()));
  }

  void on_watch(beast::error_code ec, size_t n) {
    watching_ = false;
    if (closed_) return;
    if (closing_) {  // lingering close: discard until the client closes or the timer fires
      if (ec) return close();
      return start_watch();
    }
    if (n > 0) {
      if (buffer_.size() + n > server_.max_body_bytes.load() + 65536) return peer_gone();
      net::buffer_copy(buffer_.prepare(n), net::buffer(watch_buf_.data(), n));
      buffer_.commit(n);
    }
    if (!ec) return in_exchange_ ? start_watch() : do_read();
    if (ec == net::error::operation_aborted) {
      if (!in_exchange_) do_read();
      return;
    }
    if (in_exchange_) peer_gone();
    else close();
  }

  void peer_gone() {
    if (closed_) return;
    gone_ = true;
    auto fn = std::move(on_gone_);
    on_gone_ = nullptr;
    const bool busy = in_exchange_;
    close();  // clears in_exchange_
    if (fn && busy) fn();
  }

  // Half-close, then read until the client closes (at most 2 s), so a response written before
  // unread request bytes is not destroyed by a TCP reset.
  void graceful_close() {
    if (closed_ || closing_) return;
    closing_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(2));
    if (!watching_) start_watch();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    set_busy(false);
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  ServerCore& server_;
  net::steady_timer body_timer_;
  bool body_stalled_ = false;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  HttpRequest request_;
  std::deque<std::string> out_;
  std::array<char, 4096> watch_buf_{};
  std::function<void()> on_gone_;
  Headers cors_headers_;  // this request's CORS headers, on every response to it
  bool over_capacity_ = false;
  bool writing_ = false, last_queued_ = false, response_started_ = false, streaming_ = false;
  bool keep_alive_ = true, in_exchange_ = false, watching_ = false, gone_ = false, closing_ = false, closed_ = false;
};

template <typename Fn>
void ServerCore::for_each_session(Fn fn) {
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto& w : sessions)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) fn(*s);
}

void ServerCore::do_accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (!accepting) return;
    if (ec && ec != net::error::operation_aborted) return accept_failed(ec);
    accept_backoff = std::chrono::milliseconds(10);
    if (!ec) {
      auto session = std::make_shared<Session>(std::move(socket), *this);
      {
        std::lock_guard<std::mutex> lock(mutex);
        std::erase_if(sessions, [](const std::weak_ptr<Session>& w) { return w.expired(); });
        sessions.push_back(session);
      }
      session->run();
    } else {
      return;  // operation_aborted: the acceptor closed
    }
    do_accept();
  });
}

// EMFILE and ENFILE leave the connection in the backlog, so the listener stays readable and an
// immediate retry spins: wait (10 ms doubling to 1 s) and report once per 5 s. Open connections are
// served meanwhile; accepting resumes when descriptors free up.
void ServerCore::accept_failed(const beast::error_code& ec) {
  ++accept_failures_unreported;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_accept_report >= std::chrono::seconds(5)) {
    LOG_WARN("accept failed: ", ec.message(), " (", accept_failures_unreported, " time(s) since the last report; ",
             connections.load(), " connections open); retrying with backoff. Raise the open-file limit (ulimit -n) "
             "or lower --max-connections");
    accept_failures_unreported = 0;
    last_accept_report = now;
  }
  accept_timer.expires_after(accept_backoff);
  accept_backoff = std::min(accept_backoff * 2, std::chrono::milliseconds(1000));
  accept_timer.async_wait([this](beast::error_code e) {
    if (!e && accepting) do_accept();
  });
}

void ServerCore::wait_signal() {
  signals.async_wait([this](beast::error_code ec, int signal) {
    if (ec) return;
    if (on_signal) on_signal(signal);
    wait_signal();
  });
}

}  // namespace

struct HttpServer::Impl : ServerCore {
  using ServerCore::ServerCore;
};

HttpServer::HttpServer(ServerOptions options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {}

void HttpServer::set_max_body_bytes(size_t bytes) { impl_->max_body_bytes = bytes; }

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  Impl& s = *impl_;
  beast::error_code ec;
  auto address = net::ip::make_address(s.options.address, ec);
  if (ec) {  // a host name (--host localhost): its first IPv4 address, else its first address
    tcp::resolver resolver(s.ioc);
    const auto results = resolver.resolve(s.options.address, "", ec);
    STRATA_CHECK(!ec && !results.empty(), "cannot resolve the listen address '", s.options.address, "': ",
                 ec.message(), "; give an IP address (127.0.0.1, 0.0.0.0) or a name of this machine");
    address = results.begin()->endpoint().address();
    for (const auto& r : results)
      if (r.endpoint().address().is_v4()) {
        address = r.endpoint().address();
        break;
      }
  }
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(s.options.port));
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  STRATA_CHECK_KIND(ErrorKind::kIo, !ec, "cannot listen on ", s.options.address, ":", s.options.port, ": ",
                    ec.message(), "; pick another --port (0 picks a free one)");
  s.port = s.acceptor.local_endpoint().port();
  s.options.access.loopback_only = address.is_loopback();
  s.signals.add(SIGINT);
  s.signals.add(SIGTERM);
  s.wait_signal();
  s.accepting = true;
  s.do_accept();
  for (int i = 0; i < std::max(1, s.options.threads); ++i) s.threads.emplace_back([&s] { s.ioc.run(); });
}

int HttpServer::port() const { return impl_->port; }

void HttpServer::on_signal(std::function<void(int)> fn) { impl_->on_signal = std::move(fn); }

void HttpServer::stop_accepting() {
  Impl& s = *impl_;
  net::post(s.ioc, [&s] {
    if (!s.accepting.exchange(false)) return;
    beast::error_code ec;
    s.acceptor.close(ec);
    s.accept_timer.cancel();
    s.for_each_session([](Session& session) { session.close_when_idle(); });
  });
}

void HttpServer::stop() {
  Impl& s = *impl_;
  if (s.threads.empty()) return;
  stop_accepting();
  // Responses already handed over finish writing (bounded: a client that stopped reading is cut).
  for (int i = 0; i < 300 && s.busy > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  s.stopping = true;
  net::post(s.ioc, [&s] {
    beast::error_code ec;
    s.signals.cancel(ec);
    s.for_each_session([](Session& session) { session.force_close(); });
  });
  s.work.reset();
  // Give the posted closes a moment to run, then end whatever is left (lingering reads).
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  s.ioc.stop();
  for (auto& t : s.threads) t.join();
  s.threads.clear();
}

}  // namespace strata::launcher::http
