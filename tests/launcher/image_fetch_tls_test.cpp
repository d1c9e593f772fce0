// tests/launcher/image_fetch_tls_test.cpp: https image fetching against an in-process TLS server whose
// self-signed certificate (made here with OpenSSL) names localhost: trusted through --image-url-ca-file, refused
// for another host name and without the CA file. Built only where OpenSSL is (tests/CMakeLists.txt).
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
  const auto* common_name = reinterpret_cast<const unsigned char*>("strata test");
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, common_name, -1, -1, 0);
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
  ASSERT_TRUE(image_fetch_speaks_tls());  // this test builds only with OpenSSL, as strata does then
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
