// tests/launcher/image_fetch_test.cpp: the host rules of remote image fetching: which addresses count as
// internal (the IANA special-purpose registries for IPv4 and IPv6, RFC 6890 with RFC 6598's shared space),
// the --image-url-hosts list, and the refusals made before any connection (fetching off, a host not listed,
// the wildcard meeting a loopback host, malformed URLs), the deadline against a host that never answers, and
// https against an in-process TLS server whose self-signed certificate (made here with OpenSSL) names localhost.
#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>

#include "launcher/http/image_fetch.h"
#include "runtime/error.h"
#include "test_util.h"

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

// A self-signed P-256 certificate for DNS:localhost, and its key, in PEM.
struct TestCertificate {
  std::string cert_pem, key_pem;
};

TestCertificate make_certificate() {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
  EXPECT_TRUE(key && cert);
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("strata test"), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, "DNS:localhost");
  EXPECT_NE(san, nullptr);
  X509_add_ext(cert.get(), san, -1);
  X509_EXTENSION_free(san);
  EXPECT_GT(X509_sign(cert.get(), key.get(), EVP_sha256()), 0);
  auto pem = [](auto write) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    EXPECT_EQ(write(bio.get()), 1);
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<size_t>(size));
  };
  return {pem([&](BIO* b) { return PEM_write_bio_X509(b, cert.get()); }),
          pem([&](BIO* b) { return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr); })};
}

// An https server on 127.0.0.1, one connection at a time, answering every GET with `body`.
class TlsHost {
 public:
  TlsHost(const TestCertificate& c, std::string body)
      : body_(std::move(body)), acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    context_.use_certificate_chain(boost::asio::buffer(c.cert_pem));
    context_.use_private_key(boost::asio::buffer(c.key_pem), boost::asio::ssl::context::pem);
    thread_ = std::thread([this] { serve(); });
  }
  ~TlsHost() {
    stop_ = true;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket wake(io_);
    wake.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  std::string port() const { return std::to_string(acceptor_.local_endpoint().port()); }

 private:
  void serve() {
    namespace bhttp = boost::beast::http;
    while (!stop_) {
      boost::beast::ssl_stream<boost::asio::ip::tcp::socket> stream(io_, context_);
      boost::system::error_code ec;
      acceptor_.accept(stream.next_layer(), ec);
      if (ec || stop_) continue;
      stream.handshake(boost::asio::ssl::stream_base::server, ec);
      if (ec) continue;  // the client refused the certificate
      boost::beast::flat_buffer buffer;
      bhttp::request<bhttp::string_body> request;
      bhttp::read(stream, buffer, request, ec);
      if (ec) continue;
      bhttp::response<bhttp::string_body> response(bhttp::status::ok, 11);
      response.body() = body_;
      response.prepare_payload();
      bhttp::write(stream, response, ec);
      stream.shutdown(ec);
    }
  }
  std::string body_;
  boost::asio::io_context io_;
  boost::asio::ssl::context context_{boost::asio::ssl::context::tls_server};
  boost::asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(ImageFetch, HttpsVerifiesTheCertificateAndItsHostName) {
  const TestCertificate certificate = make_certificate();
  const std::string ca_file = test::temp_dir("image_fetch") + "/ca.pem";
  std::ofstream(ca_file) << certificate.cert_pem;
  const std::string body = "\x89PNG pretend image bytes";
  TlsHost host(certificate, body);
  ImageFetchOptions o;
  o.hosts = {"localhost", "127.0.0.1"};
  o.timeout_s = 10;
  // Trusted and named as the certificate says: the body arrives.
  o.ca_file = ca_file;
  const std::vector<uint8_t> got = fetch_image("https://localhost:" + host.port() + "/cat.png", o);
  EXPECT_EQ(std::string(got.begin(), got.end()), body);
  // The certificate names localhost, not 127.0.0.1.
  EXPECT_NE(refusal([&] { fetch_image("https://127.0.0.1:" + host.port() + "/cat.png", o); })
                .find("TLS handshake with the image host '127.0.0.1' failed"),
            std::string::npos);
  // Not trusted without the CA file.
  o.ca_file.clear();
  EXPECT_NE(refusal([&] { fetch_image("https://localhost:" + host.port() + "/cat.png", o); })
                .find("TLS handshake with the image host 'localhost' failed"),
            std::string::npos);
}

}  // namespace
}  // namespace strata::launcher::http
