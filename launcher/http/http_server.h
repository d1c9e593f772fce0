// launcher/http/http_server.h: a small HTTP/1.1 server on Boost.Beast/Asio with a few I/O threads.
// Each connection runs on its own strand; a handler gets an Exchange (one request and its response)
// and may answer at once or later, in one piece or as a chunked stream, and learns when the client
// goes away. Malformed requests get 400, oversized bodies 413, a body that stalls 408, encodings it does
// not decode 415; idle connections time out. Access (Host, CORS, API key: access.h) is decided before
// the handler runs. Beast stays behind the pimpl: routes see only Exchange.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "launcher/http/access.h"

namespace strata::launcher::http {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as sent
  std::string body;
  std::string content_type;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

// One request/response on a connection. Call its methods on its strand: in the handler itself or in
// a function given to post().
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual const HttpRequest& request() const = 0;
  // A complete response.
  virtual void respond(int status, const std::string& content_type, std::string body, const Headers& headers = {}) = 0;
  // A streamed response (chunked): begin, any number of writes, end.
  virtual void begin_stream(int status, const std::string& content_type, const Headers& headers = {}) = 0;
  virtual void write(std::string data) = 0;
  virtual void end_stream() = 0;
  // Runs `fn` on this exchange's strand (from any thread).
  virtual void post(std::function<void()> fn) = 0;
  // `on_gone` runs (on the strand) if the client closes the connection before the response ends.
  virtual void watch_disconnect(std::function<void()> on_gone) = 0;
  virtual bool client_gone() const = 0;
};

using Handler = std::function<void(std::shared_ptr<Exchange>)>;

struct ServerOptions {
  std::string address = "127.0.0.1";  // loopback unless the operator opens it
  int port = 8080;  // 0: any free port (see HttpServer::port)
  int threads = 2;
  size_t max_body_bytes = size_t{4} << 20;
  int idle_timeout_s = 60;  // a connection that sends nothing (or half a header) this long is closed
  int read_timeout_s = 10;  // a body that stops arriving this long gets 408
  int max_connections = 1024;  // more open connections are answered 503 and closed
  AccessPolicy access;  // loopback_only follows `address` (set by start())
};

class HttpServer {
 public:
  HttpServer(ServerOptions options, Handler handler);
  ~HttpServer();
  // Binds and starts the I/O threads. Throws strata::Error (kIo) naming the address when the port is
  // taken.
  void start();
  int port() const;
  // The largest request body accepted from now on (connections already reading keep theirs): serve raises
  // the default once it knows the model takes images.
  void set_max_body_bytes(size_t bytes);
  // Calls `fn(signal)` on an I/O thread for SIGINT and SIGTERM; call before start().
  void on_signal(std::function<void(int)> fn);
  // Stops accepting; connections that are idle are closed, busy ones close after their response.
  void stop_accepting();
  // Waits (up to 3 s) for responses being written, closes every connection, joins the I/O threads.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// HTTP reason phrase of `status` ("Not Found").
std::string status_reason(int status);

}  // namespace strata::launcher::http
