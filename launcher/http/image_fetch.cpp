// launcher/http/image_fetch.cpp: remote image fetching on Beast (image_fetch.h). Each fetch owns an
// io_context and runs one network step at a time on it until the fetch's deadline, so the code reads top to
// bottom; it runs on a request worker, never on the HTTP I/O threads.
#include "launcher/http/image_fetch.h"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#ifdef STRATA_HAVE_TLS
#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

#include <algorithm>
#include <cctype>
#include <chrono>
#include <optional>

#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher::http {
namespace net = boost::asio;
#ifdef STRATA_HAVE_TLS
namespace ssl = boost::asio::ssl;
#endif
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kMaxRedirects = 3;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trimmed(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(" \t") - begin + 1);
}

std::string shown(const std::string& url) { return url.size() > 80 ? url.substr(0, 77) + "..." : url; }

[[noreturn]] void refuse(const std::string& message) { STRATA_THROW(ErrorKind::kInvalidArgument, message); }

struct Url {
  bool https = false;
  std::string host;  // lower case, without IPv6 brackets
  std::string port;
  std::string target;  // path and query, never empty
  std::string bracketed_host() const { return host.find(':') != std::string::npos ? "[" + host + "]" : host; }
  std::string origin() const { return cat(https ? "https://" : "http://", bracketed_host(), ":", port); }
};

Url parse_url(const std::string& url) {
  const std::string bad = cat("the image URL '", shown(url), "' is not a valid http(s) URL: ");
  for (unsigned char c : url)
    if (c <= 0x20 || c == 0x7f) refuse(bad + "it holds spaces or control characters (percent-encode them)");
  Url out;
  const std::string head = lower(url.substr(0, 8));
  size_t at = 0;
  if (head.rfind("http://", 0) == 0) at = 7;
  else if (head.rfind("https://", 0) == 0) at = 8, out.https = true;
  else refuse(bad + "it starts with neither http:// nor https://");
  const size_t end = url.find_first_of("/?#", at);
  const std::string authority = url.substr(at, end == std::string::npos ? std::string::npos : end - at);
  if (authority.find('@') != std::string::npos) refuse(bad + "user names and passwords in image URLs are not accepted");
  std::string port;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string::npos) refuse(bad + "an IPv6 host has no closing ']'");
    out.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') refuse(bad + "unexpected text after the IPv6 host");
      port = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.rfind(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  out.host = lower(out.host);
  if (out.host.empty()) refuse(bad + "it names no host");
  if (port.empty()) {
    out.port = out.https ? "443" : "80";
  } else {
    const bool digits =
        port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || std::stoi(port) < 1 || std::stoi(port) > 65535) refuse(bad + "its port is not a number in 1-65535");
    out.port = std::to_string(std::stoi(port));
  }
  std::string target = end == std::string::npos ? "/" : url.substr(end);
  target = target.substr(0, target.find('#'));
  if (target.empty() || target.front() != '/') target = "/" + target;
  out.target = target;
  return out;
}

// A Location header resolved against the URL that gave it.
std::string redirect_url(const Url& from, const std::string& location) {
  const std::string head = lower(location.substr(0, 8));
  if (head.rfind("http://", 0) == 0 || head.rfind("https://", 0) == 0) return location;
  if (location.rfind("//", 0) == 0) return (from.https ? "https:" : "http:") + location;
  if (!location.empty() && location.front() == '/') return from.origin() + location;
  const std::string path = from.target.substr(0, from.target.find('?'));
  return from.origin() + path.substr(0, path.rfind('/') + 1) + location;
}

bool internal_v4(uint32_t a) {
  auto in = [a](uint32_t net, int bits) { return bits == 0 || (a >> (32 - bits)) == (net >> (32 - bits)); };
  return in(0x00000000, 8) ||   // "this network", 0.0.0.0
         in(0x0a000000, 8) ||   // 10/8
         in(0x64400000, 10) ||  // 100.64/10, carrier-grade NAT
         in(0x7f000000, 8) ||   // loopback
         in(0xa9fe0000, 16) ||  // 169.254/16, link-local (cloud metadata lives here)
         in(0xac100000, 12) ||  // 172.16/12
         in(0xc0000000, 24) ||  // 192.0.0/24, protocol assignments
         in(0xc0a80000, 16) ||  // 192.168/16
         in(0xc6120000, 15) ||  // 198.18/15, benchmarking
         in(0xe0000000, 4) ||   // multicast
         in(0xf0000000, 4);     // reserved and broadcast
}

uint32_t v4_at(const net::ip::address_v6::bytes_type& b, size_t at) {
  return (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) | (uint32_t{b[at + 2]} << 8) | b[at + 3];
}

bool internal_v6(const net::ip::address_v6& a) {
  const auto b = a.to_bytes();
  auto zero = [&b](size_t from, size_t to) {
    return std::all_of(b.begin() + from, b.begin() + to, [](uint8_t x) { return x == 0; });
  };
  const bool first_80_zero = zero(0, 10);
  if (first_80_zero && b[10] == 0xff && b[11] == 0xff) return internal_v4(v4_at(b, 12));  // ::ffff:a.b.c.d
  if (first_80_zero && b[10] == 0 && b[11] == 0) return true;  // ::, ::1 and the deprecated ::a.b.c.d
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && zero(4, 12))
    return internal_v4(v4_at(b, 12));  // 64:ff9b::/96, NAT64
  if (b[0] == 0x20 && b[1] == 0x02) return internal_v4(v4_at(b, 2));  // 2002::/16, 6to4
  if (b[0] == 0x01 && b[1] == 0x00 && zero(2, 8))
    return true;                                         // 100::/64, discard
  return (b[0] & 0xfe) == 0xfc ||                        // fc00::/7, unique local
         (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||      // fe80::/10, link-local
         (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) ||      // fec0::/10, site-local
         b[0] == 0xff;                                   // multicast
}

bool internal(const net::ip::address& a) {
  return a.is_v4() ? internal_v4(a.to_v4().to_uint()) : internal_v6(a.to_v6());
}

// One fetch: its io_context, deadline and the host it is talking to.
class Fetch {
 public:
  explicit Fetch(const ImageFetchOptions& options)
      : options_(options), deadline_(Clock::now() + seconds(options.timeout_s)) {}

  std::vector<uint8_t> run(const std::string& first_url) {
    std::string url = first_url;
    for (int redirects = 0;; ++redirects) {
      url_ = parse_url(url);
      const std::vector<tcp::endpoint> endpoints = resolve();
      std::optional<std::string> next = url_.https ? over_tls(endpoints) : over_tcp(endpoints);
      if (!next) return std::move(body_);
      if (redirects == kMaxRedirects)
        refuse(cat("the image URL '", shown(first_url), "' redirects more than ", kMaxRedirects,
                   " times; send the final URL or the image inline as a data URL"));
      url = redirect_url(url_, *next);
      LOG_INFO("image fetch: ", shown(first_url), " redirects to ", shown(url));
    }
  }

 private:
  static Clock::duration seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  // Runs one asynchronous step until it ends or the deadline passes (then `cancel` stops it).
  template <class Start, class Cancel>
  beast::error_code step(Start start, Cancel cancel) {
    bool done = false;
    beast::error_code result;
    start([&](beast::error_code ec, auto&&...) { result = ec, done = true; });
    io_.restart();
    io_.run_until(deadline_);
    if (!done) {
      cancel();
      io_.restart();
      io_.run();
      result = beast::error::timeout;
    }
    return result;
  }

  [[noreturn]] void fail(const std::string& what, beast::error_code ec, const std::string& client_message) {
    LOG_WARN("image fetch from ", url_.origin(), url_.target.substr(0, 60), ": ", what, ": ", ec.message());
    if (ec == beast::error::timeout || ec == net::error::timed_out)
      refuse(cat("fetching the image from host '", url_.host, "' took longer than this server's "
                 "--image-url-timeout of ", options_.timeout_s, " s; send the image inline as a data URL"));
    if (ec == bhttp::error::body_limit)
      refuse(cat("the image at host '", url_.host, "' is over this server's --max-image-bytes of ", options_.max_bytes,
                 " bytes; send a smaller image"));
    refuse(client_message);
  }

  std::vector<tcp::endpoint> resolve() {
    const HostMatch match = match_host(options_.hosts, url_.host);
    const bool named = match == HostMatch::kNamed;
    if (match == HostMatch::kNone)
      refuse(cat("this server fetches images only from the hosts in its --image-url-hosts, and '", url_.host,
                 "' is not one of them; send the image inline as a data URL (data:image/png;base64,...)"));
    tcp::resolver resolver(io_);
    tcp::resolver::results_type results;
    const beast::error_code ec = step(
        [&](auto done) {
          resolver.async_resolve(url_.host, url_.port,
                                 [&results, done](beast::error_code e, tcp::resolver::results_type r) {
                                   results = std::move(r);
                                   done(e);
                                 });
        },
        [&] { resolver.cancel(); });
    if (ec) fail("resolving", ec, cat("cannot resolve the image host '", url_.host, "'"));
    std::vector<tcp::endpoint> allowed;
    for (const auto& entry : results) {
      const net::ip::address a = entry.endpoint().address();
      if (named || !internal(a)) allowed.push_back(entry.endpoint());
      else LOG_WARN("image fetch: host ", url_.host, " resolves to the internal address ", a.to_string(), ", refused");
    }
    if (allowed.empty())
      refuse(cat("the image host '", url_.host, "' resolves to a loopback, private or link-local address; this server "
                 "fetches from such hosts only when the operator names them in --image-url-hosts (the wildcard '*' "
                 "and '*.domain' patterns do not reach them)"));
    return allowed;
  }

  void connect(beast::tcp_stream& tcp_stream, const std::vector<tcp::endpoint>& endpoints) {
    tcp_stream.expires_at(deadline_);
    const beast::error_code ec = step(
        [&](auto done) {
          tcp_stream.async_connect(endpoints, [done](beast::error_code e, const tcp::endpoint&) { done(e); });
        },
        [&] { tcp_stream.cancel(); });
    if (ec) fail("connecting", ec, cat("cannot connect to the image host '", url_.host, "'"));
  }

  std::optional<std::string> over_tcp(const std::vector<tcp::endpoint>& endpoints) {
    beast::tcp_stream stream(io_);
    connect(stream, endpoints);
    return exchange(stream, [&] { stream.cancel(); });
  }

#ifndef STRATA_HAVE_TLS
  std::optional<std::string> over_tls(const std::vector<tcp::endpoint>&) {
    refuse(cat("this strata was built without OpenSSL (libssl-dev), so it fetches http:// images only ('",
               url_.host, "' is https); send the image inline as a data URL (data:image/png;base64,...)"));
  }
#else
  std::optional<std::string> over_tls(const std::vector<tcp::endpoint>& endpoints) {
    ssl::context context(ssl::context::tls_client);
    beast::error_code store;
    context.set_default_verify_paths(store);
    if (store) LOG_WARN("image fetch: the system's CA certificates could not be loaded: ", store.message());
    if (!options_.ca_file.empty()) {
      context.load_verify_file(options_.ca_file, store);
      if (store)
        fail("loading --image-url-ca-file", store, cat("cannot start TLS with the image host '", url_.host, "'"));
    }
    context.set_verify_mode(ssl::verify_peer);
    beast::ssl_stream<beast::tcp_stream> stream(io_, context);
    // OpenSSL checks the certificate's names against the host (its IP entries for an address) during the
    // handshake; names also go out as SNI.
    SSL* session = stream.native_handle();
    beast::error_code literal;
    net::ip::make_address(url_.host, literal);
    const bool named = literal ? SSL_set1_host(session, url_.host.c_str()) == 1 &&
                                     SSL_set_tlsext_host_name(session, url_.host.c_str()) == 1
                               : X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(session), url_.host.c_str()) == 1;
    if (!named)
      fail("setting the expected host name", beast::error_code(static_cast<int>(::ERR_get_error()),
                                                                net::error::get_ssl_category()),
           cat("cannot start TLS with the image host '", url_.host, "'"));
    connect(beast::get_lowest_layer(stream), endpoints);
    const beast::error_code ec = step([&](auto done) { stream.async_handshake(ssl::stream_base::client, done); },
                                      [&] { beast::get_lowest_layer(stream).cancel(); });
    if (ec) {
      const long verify = SSL_get_verify_result(stream.native_handle());
      fail(cat("TLS handshake (certificate check: ", X509_verify_cert_error_string(verify), ")"), ec,
           cat("the TLS handshake with the image host '", url_.host, "' failed (its certificate is not trusted "
               "here, or it does not speak TLS)"));
    }
    return exchange(stream, [&] { beast::get_lowest_layer(stream).cancel(); });
  }
#endif

  // Sends the GET and reads the answer: the image (into body_, returning nullopt) or a redirect's Location.
  template <class Stream, class Cancel>
  std::optional<std::string> exchange(Stream& stream, Cancel cancel) {
    bhttp::request<bhttp::empty_body> request(bhttp::verb::get, url_.target, 11);
    const bool default_port = url_.port == (url_.https ? "443" : "80");
    const std::string host = url_.bracketed_host();
    request.set(bhttp::field::host, default_port ? host : host + ":" + url_.port);
    request.set(bhttp::field::user_agent, "strata");
    request.set(bhttp::field::accept, "image/*");
    request.set(bhttp::field::connection, "close");
    beast::error_code ec = step([&](auto done) { bhttp::async_write(stream, request, done); }, cancel);
    if (ec) fail("sending the request", ec, cat("cannot send the request to the image host '", url_.host, "'"));
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::vector_body<uint8_t>> parser;
    parser.body_limit(static_cast<uint64_t>(options_.max_bytes));  // a larger Content-Length fails at the header
    ec = step([&](auto done) { bhttp::async_read_header(stream, buffer, parser, done); }, cancel);
    if (ec) fail("reading the answer's header", ec, cat("the image host '", url_.host, "' sent no valid HTTP answer"));
    const unsigned status = parser.get().result_int();
    if (status == 301 || status == 302 || status == 303 || status == 307 || status == 308) {
      const auto location = parser.get().find(bhttp::field::location);
      if (location == parser.get().end() || location->value().empty())
        refuse(cat("the image host '", url_.host, "' answered HTTP status ", status, " without a Location"));
      return std::string(location->value());
    }
    if (status != 200)
      refuse(cat("the image host '", url_.host, "' answered HTTP status ", status, " for the image URL; send a URL "
                 "that gives the image (status 200), or the image inline as a data URL"));
    ec = step([&](auto done) { bhttp::async_read(stream, buffer, parser, done); }, cancel);
    if (ec)
      fail("reading the image", ec, cat("reading the image from host '", url_.host, "' failed before it was whole"));
    body_ = parser.release().body();
    return std::nullopt;
  }

  const ImageFetchOptions& options_;
  Clock::time_point deadline_;
  net::io_context io_;
  Url url_;
  std::vector<uint8_t> body_;
};

}  // namespace

std::vector<std::string> parse_host_list(const std::string& list) {
  std::vector<std::string> hosts;
  size_t at = 0;
  while (at <= list.size()) {
    const size_t comma = std::min(list.find(',', at), list.size());
    std::string host = lower(trimmed(list.substr(at, comma - at)));
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    const size_t star = host.find('*');
    STRATA_CHECK_KIND(ErrorKind::kInvalidArgument,
                      star == std::string::npos || host == "*" ||
                          (host.size() > 2 && host.compare(0, 2, "*.") == 0 && host.find('*', 1) == std::string::npos),
                      "--image-url-hosts: '", host, "' is not a host name, IP address, '*' or '*.domain' pattern");
    if (!host.empty()) hosts.push_back(host);
    at = comma + 1;
  }
  return hosts;
}

HostMatch match_host(const std::vector<std::string>& hosts, const std::string& host) {
  if (std::find(hosts.begin(), hosts.end(), host) != hosts.end()) return HostMatch::kNamed;
  beast::error_code not_ip;
  net::ip::make_address(host, not_ip);
  const bool literal = !not_ip;  // an IP address matches no domain pattern
  for (const std::string& pattern : hosts) {
    if (pattern == "*") return HostMatch::kPattern;
    const std::string_view domain = std::string_view(pattern).substr(1);  // ".example.com"
    if (!literal && pattern.size() > 2 && pattern[0] == '*' && host.size() > domain.size() &&
        host.compare(host.size() - domain.size(), domain.size(), domain) == 0)
      return HostMatch::kPattern;
  }
  return HostMatch::kNone;
}

bool image_fetch_speaks_tls() {
#ifdef STRATA_HAVE_TLS
  return true;
#else
  return false;
#endif
}

bool is_internal_address(const std::string& address) {
  beast::error_code ec;
  const net::ip::address a = net::ip::make_address(address, ec);
  return ec || internal(a);
}

std::vector<uint8_t> fetch_image(const std::string& url, const ImageFetchOptions& options) {
  if (options.hosts.empty())
    refuse(cat("this server does not fetch remote images ('", shown(url), "'): the operator has not allowed any "
               "host with --image-url-hosts; send the image inline as a data URL (data:image/png;base64,...)"));
  return Fetch(options).run(url);
}

}  // namespace strata::launcher::http
