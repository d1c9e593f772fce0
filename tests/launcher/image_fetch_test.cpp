// tests/launcher/image_fetch_test.cpp: the host rules of remote image fetching: which addresses count as
// internal (the IANA special-purpose registries for IPv4 and IPv6, RFC 6890 with RFC 6598's shared space),
// the --image-url-hosts list, and the refusals made before any connection (fetching off, a host not listed,
// the wildcard meeting a loopback host, malformed URLs), and the deadline against a host that never answers.
#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>

#include <functional>

#include "launcher/http/image_fetch.h"
#include "runtime/error.h"

namespace strata::launcher::http {
namespace {

TEST(ImageFetch, InternalIpv4Addresses) {
  for (const char* a : {"127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255",
                        "192.168.1.1", "169.254.169.254", "100.64.0.1", "100.127.255.255", "0.0.0.0", "0.1.2.3",
                        "192.0.0.8", "198.18.0.1", "198.19.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1",
                        "255.255.255.255"})
    EXPECT_TRUE(is_internal_address(a)) << a;
  for (const char* a : {"8.8.8.8", "1.1.1.1", "172.15.255.255", "172.32.0.0", "100.63.255.255", "100.128.0.0",
                        "169.253.255.255", "192.167.255.255", "192.169.0.0", "11.0.0.0", "126.255.255.255",
                        "128.0.0.0", "198.17.255.255", "198.20.0.0", "223.255.255.255", "93.184.216.34"})
    EXPECT_FALSE(is_internal_address(a)) << a;
}

TEST(ImageFetch, InternalIpv6Addresses) {
  for (const char* a : {"::1", "::", "fe80::1", "febf:ffff::1", "fc00::1", "fd12:3456:789a::1", "fec0::1", "ff02::1",
                        "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe",
                        "2002:7f00:1::1", "2002:c0a8:101::", "::127.0.0.1", "100::1"})
    EXPECT_TRUE(is_internal_address(a)) << a;
  for (const char* a : {"2001:4860:4860::8888", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
                        "2002:808:808::1", "fe00::1", "fbff::1", "::2:0:0:1"})
    EXPECT_FALSE(is_internal_address(a)) << a;
  EXPECT_TRUE(is_internal_address("not-an-address"));  // unknown text is never trusted
}

TEST(ImageFetch, HostListIsTrimmedLowerCasedAndUnbracketed) {
  EXPECT_EQ(parse_host_list(""), std::vector<std::string>{});
  EXPECT_EQ(parse_host_list(" Images.Example.COM , 127.0.0.1,,[::1],*"),
            (std::vector<std::string>{"images.example.com", "127.0.0.1", "::1", "*"}));
}

// The message of the strata::Error that `f` throws.
std::string refusal(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << e.what();
    return e.what();
  }
  return "<no error>";
}

// "*.domain" patterns: any name under the domain (not the domain itself, not a look-alike, never an IP
// address), as a pattern (public addresses only); an exact name is "named" (internal addresses allowed); a '*'
// anywhere else in an entry is an error naming it.
TEST(ImageFetch, DomainPatternsMatchNamesUnderTheDomain) {
  const std::vector<std::string> hosts = parse_host_list("images.example.org, *.cdn.example.com");
  EXPECT_EQ(match_host(hosts, "images.example.org"), HostMatch::kNamed);
  EXPECT_EQ(match_host(hosts, "a.cdn.example.com"), HostMatch::kPattern);
  EXPECT_EQ(match_host(hosts, "x.y.cdn.example.com"), HostMatch::kPattern);
  EXPECT_EQ(match_host(hosts, "cdn.example.com"), HostMatch::kNone);
  EXPECT_EQ(match_host(hosts, "evilcdn.example.com"), HostMatch::kNone);
  EXPECT_EQ(match_host(hosts, "a.cdn.example.com.evil.net"), HostMatch::kNone);
  EXPECT_EQ(match_host(hosts, "other.example.org"), HostMatch::kNone);
  EXPECT_EQ(match_host(parse_host_list("*.0.0.1"), "127.0.0.1"), HostMatch::kNone);
  EXPECT_EQ(match_host(parse_host_list("*"), "127.0.0.1"), HostMatch::kPattern);
  EXPECT_EQ(match_host(parse_host_list("127.0.0.1,*"), "127.0.0.1"), HostMatch::kNamed);
  for (const char* bad : {"img*.example.com", "*example.com", "*.", "a.*.com", "**.example.com"}) {
    try {
      parse_host_list(std::string("ok.example, ") + bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "' is not a host name"), std::string::npos) << e.what();
    }
  }
}

TEST(ImageFetch, RefusesBeforeConnecting) {
  ImageFetchOptions o;
  auto fetch = [&](const std::string& url) { return refusal([&] { fetch_image(url, o); }); };
  EXPECT_NE(fetch("http://images.example.com/a.png").find("--image-url-hosts"), std::string::npos);
  o.hosts = {"images.example.com"};
  EXPECT_NE(fetch("http://other.example.com/a.png").find("'other.example.com' is not one of them"), std::string::npos);
  EXPECT_NE(fetch("HTTP://IMAGES.example.com:0/a.png").find("port is not a number in 1-65535"), std::string::npos);
  EXPECT_NE(fetch("http://images.example.com:http/a.png").find("port is not a number"), std::string::npos);
  EXPECT_NE(fetch("http://u:p@images.example.com/a.png").find("user names and passwords"), std::string::npos);
  EXPECT_NE(fetch("http://images.example.com/a b.png").find("spaces or control characters"), std::string::npos);
  EXPECT_NE(fetch("http:///a.png").find("names no host"), std::string::npos);
  // The wildcard admits any name, but never one that resolves to loopback (nothing listens on port 9: the
  // refusal comes before any connection).
  o.hosts = {"*"};
  for (const char* url : {"http://localhost:9/a.png", "http://127.0.0.1:9/a.png", "https://[::1]:9/a.png",
                          "http://169.254.169.254/latest/meta-data/", "http://[::ffff:7f00:1]:9/a.png"})
    EXPECT_NE(fetch(url).find("resolves to a loopback, private or link-local address"), std::string::npos) << url;
}

TEST(ImageFetch, AHostThatNeverAnswersRunsIntoTheTimeout) {
  // A listening socket that never accepts: the kernel completes the connection, nothing ever answers.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor silent(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  ImageFetchOptions o;
  o.hosts = {"127.0.0.1"};
  o.timeout_s = 0.2;
  const std::string url = "http://127.0.0.1:" + std::to_string(silent.local_endpoint().port()) + "/a.png";
  const std::string message = refusal([&] { fetch_image(url, o); });
  EXPECT_NE(message.find("took longer than this server's --image-url-timeout of 0.2 s"), std::string::npos) << message;
}

}  // namespace
}  // namespace strata::launcher::http
