// launcher/router/upstream.cpp: the client side of the router on Beast. Each call owns an io_context
// and runs one network step at a time on it with a deadline (tcp_stream::expires_after), so a call reads
// top to bottom; abort() posts a cancel into that io_context, which is safe from any thread.
#include "launcher/router/upstream.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <optional>

#include "runtime/error.h"

namespace strata::launcher::router {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

std::string Endpoint::url() const { return cat("http://", host, ":", port); }

Endpoint parse_endpoint(const std::string& url) {
  std::string rest = url;
  if (rest.rfind("https://", 0) == 0)
    STRATA_THROW(ErrorKind::kInvalidArgument, "replica '", url,
                 "': the router speaks plain HTTP to replicas; terminate TLS in front of the router instead");
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  const auto colon = rest.rfind(':');
  STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, colon != std::string::npos && colon > 0 && rest.find('/') == std::string::npos,
                    "replica '", url, "' is not of the form http://HOST:PORT");
  Endpoint e;
  e.host = rest.substr(0, colon);
  if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']') e.host = e.host.substr(1, e.host.size() - 2);
  const std::string port = rest.substr(colon + 1);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  STRATA_CHECK_KIND(ErrorKind::kInvalidArgument, !port.empty() && *end == '\0' && p > 0 && p < 65536, "replica '",
                    url, "': port '", port, "' is not a number in 1-65535");
  e.port = static_cast<int>(p);
  return e;
}

struct UpstreamCall::Impl {
  net::io_context io;
  std::optional<beast::tcp_stream> stream;
  std::atomic<bool> aborted{false};

  // Starts one asynchronous step and runs the io_context until it (and a posted abort, if any) is done.
  template <class Start>
  beast::error_code step(Start start) {
    beast::error_code result = net::error::would_block;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    io.restart();
    io.run();
    if (aborted && !result) result = net::error::operation_aborted;
    return result;
  }
};

UpstreamCall::UpstreamCall() : impl_(std::make_unique<Impl>()) {}
UpstreamCall::~UpstreamCall() = default;

void UpstreamCall::abort() {
  impl_->aborted = true;
  Impl* m = impl_.get();
  net::post(m->io, [m] {
    if (m->stream) m->stream->cancel();
  });
}

namespace {
std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}
}  // namespace

UpstreamResult UpstreamCall::run(const Endpoint& endpoint, const UpstreamRequest& request,
                                 const UpstreamTimeouts& timeouts,
                                 const std::function<bool(int, const std::string&)>& on_head,
                                 const std::function<bool(std::string_view)>& on_data) {
  Impl& m = *impl_;
  UpstreamResult r;
  auto fail = [&](UpstreamFailure failure, std::string why) {
    r.failure = m.aborted ? UpstreamFailure::kAborted : failure;
    r.error = m.aborted ? "aborted" : std::move(why);
    if (m.stream) {
      beast::error_code ignored;
      m.stream->socket().close(ignored);
    }
    return r;
  };
  if (m.aborted) return fail(UpstreamFailure::kAborted, "aborted");
  m.stream.emplace(m.io);

  tcp::resolver resolver(m.io);
  beast::error_code ec;
  const auto addresses = resolver.resolve(endpoint.host, std::to_string(endpoint.port), ec);
  if (ec) return fail(UpstreamFailure::kConnect, cat("cannot resolve ", endpoint.host, ": ", ec.message()));
  m.stream->expires_after(seconds(timeouts.connect_s));
  ec = m.step([&](auto handler) { m.stream->async_connect(addresses, handler); });
  if (ec) return fail(UpstreamFailure::kConnect, cat("cannot connect to ", endpoint.url(), ": ", ec.message()));

  bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(request.method), request.target, 11};
  req.set(bhttp::field::host, cat(endpoint.host, ":", endpoint.port));
  req.set(bhttp::field::user_agent, "strata-router");
  if (!request.content_type.empty()) req.set(bhttp::field::content_type, request.content_type);
  for (const auto& [name, value] : request.headers) req.set(name, value);
  req.body() = request.body;
  req.prepare_payload();
  m.stream->expires_after(seconds(timeouts.connect_s));
  ec = m.step([&](auto handler) { bhttp::async_write(*m.stream, req, handler); });
  if (ec) return fail(UpstreamFailure::kConnect, cat("cannot send to ", endpoint.url(), ": ", ec.message()));

  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.body_limit(boost::none);  // the replica's own limits apply; the router only relays
  m.stream->expires_after(seconds(timeouts.first_byte_s));
  ec = m.step([&](auto handler) { bhttp::async_read_header(*m.stream, buffer, parser, handler); });
  if (ec) return fail(UpstreamFailure::kBroken, cat(endpoint.url(), " sent no response head: ", ec.message()));
  r.status = parser.get().result_int();
  if (!on_head(r.status, std::string(parser.get()[bhttp::field::content_type])))
    return fail(UpstreamFailure::kAborted, "aborted");

  char piece[16384];
  while (!parser.is_done()) {
    parser.get().body().data = piece;
    parser.get().body().size = sizeof(piece);
    m.stream->expires_after(seconds(timeouts.idle_s));
    // read_some returns whatever arrived, so streamed events pass on without waiting for a full buffer.
    ec = m.step([&](auto handler) { bhttp::async_read_some(*m.stream, buffer, parser, handler); });
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) return fail(UpstreamFailure::kBroken, cat(endpoint.url(), " broke off the response: ", ec.message()));
    const size_t n = sizeof(piece) - parser.get().body().size;
    if (n > 0 && !on_data(std::string_view(piece, n))) return fail(UpstreamFailure::kAborted, "aborted");
  }
  beast::error_code ignored;
  m.stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
  m.stream->socket().close(ignored);
  return r;
}

SimpleResponse http_get(const Endpoint& endpoint, const std::string& target, double timeout_s,
                        const std::vector<std::pair<std::string, std::string>>& headers) {
  SimpleResponse out;
  UpstreamRequest request;
  request.target = target;
  request.headers = headers;
  UpstreamCall call;
  const UpstreamResult r = call.run(
      endpoint, request, UpstreamTimeouts{timeout_s, timeout_s, timeout_s},
      [&](int status, const std::string&) {
        out.status = status;
        return true;
      },
      [&](std::string_view piece) {
        out.body.append(piece);
        return true;
      });
  if (!r.ok()) {
    out.status = 0;
    out.error = r.error;
  }
  return out;
}

}  // namespace strata::launcher::router
