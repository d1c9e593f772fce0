// tests/e2e/serve_image_test.cpp: `strata serve` with images in /v1/chat/completions, on the tiny random
// LLaVA of tests/fixtures/vision/llava_chat (tools/reference/make_vision_chat_fixture.py): the greedy
// answers equal transformers' for every fixture request (streamed and not, one at a time, concurrently with
// text-only requests in shared chunked-prefill steps, and on TP2 and PP2 under mpirun); a repeated image hits
// the prefix cache and another image with the same text does not; every bad image is a 400 in OpenAI's
// error shape and the server keeps answering. A LLaVA-NeXT model (tests/fixtures/vision/llava_next,
// tools/reference/make_llava_next_fixtures.py) answers a two-image request as transformers does, its
// <image>s expanded to each image's size-dependent count, alone, concurrently, on TP2 and data-parallel;
// llama.cpp's text GGUF + mmproj pairs (LLaVA-1.5 and LLaVA-NeXT) answer as the CLI does. http(s) image URLs
// are fetched only from the hosts the operator allows (a tiny Beast server in this process plays the remote
// host).
#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>
#include <fstream>
#include <sstream>
#include <thread>

#include "e2e/serve_client.h"
#include "e2e/serve_helpers.h"
#include "launcher/http/image_fetch.h"

namespace strata {
namespace {
namespace json = boost::json;
using test::http;
using test::HttpResponse;

std::string model() { return test::fixture("vision/llava_chat"); }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string base64(const std::string& bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 63];
  while (out.size() % 4 != 0) out += '=';
  return out;
}

std::string data_url(const std::string& path) { return "data:image/png;base64," + base64(read_bytes(path)); }

const json::array& fixture_requests() {
  static const json::value v = json::parse(read_bytes(model() + "/chat.json"));
  return v.at("requests").as_array();
}

// A fixture request as an OpenAI body: its image parts name files of the fixture folder; `url` turns each
// name into what the request sends (a data URL by default).
std::string chat_body(const json::value& request, bool stream,
                      const std::function<std::string(const std::string&)>& url = {}) {
  json::array messages = request.at("messages").as_array();
  for (auto& m : messages) {
    if (!m.at("content").is_array()) continue;
    for (auto& part : m.at("content").as_array()) {
      if (part.at("type").as_string() != "image_url") continue;
      json::value& u = part.at("image_url").at("url");
      const std::string name(u.as_string());
      u = url ? url(name) : data_url(model() + "/" + name);
    }
  }
  json::object body{{"messages", messages}, {"max_tokens", 8}, {"temperature", 0}, {"ignore_eos", true},
                    {"stream", stream}};
  return json::serialize(body);
}

// The assistant's text, streamed or not; "<...>" naming the problem when malformed.
std::string chat_text(const HttpResponse& r, bool stream) {
  if (r.status != 200) return "<status " + std::to_string(r.status) + ": " + r.body + ">";
  if (!stream) {
    const json::value v = r.json();
    if (!v.is_object() || !v.as_object().contains("choices")) return "<bad body: " + r.body + ">";
    return json::value_to<std::string>(v.at("choices").at(0).at("message").at("content"));
  }
  const auto events = r.events();
  if (events.empty() || events.back() != "[DONE]") return "<stream without [DONE]: " + r.body + ">";
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json::value v = json::parse(events[i]);
    const auto& delta = v.at("choices").at(0).at("delta").as_object();
    if (const auto* c = delta.if_contains("content")) text += json::value_to<std::string>(*c);
  }
  return text;
}

std::string expected(const json::value& request) { return json::value_to<std::string>(request.at("text")); }

std::string joined(const json::array& ids) {
  std::string out;
  for (const auto& x : ids) out += (out.empty() ? "" : " ") + std::to_string(x.to_number<int64_t>());
  return out;
}

class ServeImage : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Small steps: prompts are prefilled in chunks, so image and text requests share steps and an image's
    // features span two steps.
    server_ = new test::ServerProcess("image", "", "serve --model " + model() + " --max-batch-tokens 24");
    ASSERT_TRUE(server_->wait_ready()) << server_->log();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static int port() { return server_->port(); }
  static test::ServerProcess* server_;
};
test::ServerProcess* ServeImage::server_ = nullptr;

TEST_F(ServeImage, AnswersEqualTransformersStreamedAndNot) {
  for (const auto& request : fixture_requests()) {
    const std::string name(request.at("name").as_string());
    for (bool stream : {false, true}) {
      const HttpResponse r = http(port(), "POST", "/v1/chat/completions", chat_body(request, stream));
      EXPECT_EQ(chat_text(r, stream), expected(request)) << name << " stream " << stream;
      if (!stream && r.status == 200) {  // each <image> counts as one token per feature, as transformers expands it
        EXPECT_EQ(r.json().at("usage").at("prompt_tokens").as_int64(),
                  static_cast<int64_t>(request.at("ids").as_array().size())) << name;
      }
    }
  }
}

// A body past the text-only default of 4 MiB (an image of a few MB arrives as one): a vision model's default
// limit takes one base64 image of --max-image-bytes (20 MiB) and the text around it. The padding is JSON
// whitespace, so the answer is the fixture's.
std::string padded_chat_body(const json::value& request, size_t bytes) {
  const std::string body = chat_body(request, false);
  return "{" + std::string(bytes, ' ') + body.substr(1);
}

TEST_F(ServeImage, BodiesPastFourMebibytesAreTaken) {
  const json::value& request = fixture_requests().at(0);
  const HttpResponse r = http(port(), "POST", "/v1/chat/completions", padded_chat_body(request, size_t{6} << 20));
  EXPECT_EQ(chat_text(r, false), expected(request));
}

TEST_F(ServeImage, GenerateWithImageGivesTheSameTokens) {
  const json::value& request = fixture_requests().at(0);
  const auto r = test::run_command(test::strata_binary() + " generate --model " + model() + " --prompt-ids \"" +
                                   joined(request.at("prompt_ids").as_array()) + "\" --image " + model() +
                                   "/cat.png -n 8 --ignore-eos --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ids: " + joined(request.at("greedy").as_array())), std::string::npos) << r.output;
}

TEST_F(ServeImage, ConcurrentImageAndTextRequestsEqualSingleOnes) {
  const json::array& requests = fixture_requests();
  const int kClients = 12;
  std::vector<std::string> got(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      const bool stream = c % 2 == 1;
      got[c] = chat_text(http(port(), "POST", "/v1/chat/completions", chat_body(requests.at(c % requests.size()), stream)),
                         stream);
    });
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(got[c], expected(requests.at(c % requests.size()))) << "client " << c;
}

TEST_F(ServeImage, RepeatedImageHitsThePrefixCacheAndAnotherImageDoesNot) {
  // Fresh server: nothing cached yet, the counters start at 0.
  test::ServerProcess server("image_cache", "", "serve --model " + model());
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const json::value& cat = fixture_requests().at(0);  // "Describe <cat> in one short sentence, please."
  const json::value& dog = fixture_requests().at(3);  // the same text around another image
  ASSERT_EQ(cat.at("name").as_string(), "image_in_the_middle");
  ASSERT_EQ(dog.at("name").as_string(), "same_text_other_image");
  ASSERT_EQ(cat.at("ids").as_array().size(), dog.at("ids").as_array().size());
  const int64_t prompt = static_cast<int64_t>(cat.at("ids").as_array().size());
  const int64_t cacheable = (prompt - 1) / 16 * 16;  // whole 16-token blocks before the last prompt token

  EXPECT_EQ(chat_text(http(server.port(), "POST", "/v1/chat/completions", chat_body(cat, false)), false), expected(cat));
  EXPECT_EQ(test::metric(server.port(), "strata_prefix_cache_hit_tokens_total"), 0);
  EXPECT_EQ(chat_text(http(server.port(), "POST", "/v1/chat/completions", chat_body(cat, true)), true), expected(cat));
  EXPECT_EQ(test::metric(server.port(), "strata_prefix_cache_hit_tokens_total"), static_cast<double>(cacheable));
  // The image fills part of the first block: another image shares no block, and its answer is its own.
  EXPECT_EQ(chat_text(http(server.port(), "POST", "/v1/chat/completions", chat_body(dog, false)), false), expected(dog));
  EXPECT_EQ(test::metric(server.port(), "strata_prefix_cache_hit_tokens_total"), static_cast<double>(cacheable));
  EXPECT_EQ(chat_text(http(server.port(), "POST", "/v1/chat/completions", chat_body(dog, false)), false), expected(dog));
  EXPECT_EQ(test::metric(server.port(), "strata_prefix_cache_hit_tokens_total"), static_cast<double>(2 * cacheable));
  // Each image ran through the tower once: the repeats found its positions cached.
  EXPECT_EQ(test::metric(server.port(), "strata_images_encoded_total"), 2);
}

// An OpenAI error body: 400, invalid_request_error, a message that contains `says`, and the field.
void expect_400(const HttpResponse& r, const std::string& says, const std::string& param, const std::string& what) {
  ASSERT_EQ(r.status, 400) << what << ": " << r.body;
  const json::value v = r.json();
  ASSERT_TRUE(v.is_object() && v.as_object().contains("error")) << what << ": " << r.body;
  const auto& e = v.at("error");
  EXPECT_EQ(e.at("type").as_string(), "invalid_request_error") << what;
  const std::string message(e.at("message").as_string());
  EXPECT_NE(message.find(says), std::string::npos) << what << ": " << message;
  if (!param.empty()) {
    ASSERT_TRUE(e.at("param").is_string()) << what << ": " << r.body;
    EXPECT_EQ(std::string(e.at("param").as_string()), param) << what;
  }
}

TEST(ServeImageErrors, EveryBadImageIsA400AndTheServerKeepsServing) {
  namespace fs = std::filesystem;
  const std::string dir = test::temp_dir("serve_image_dir");
  fs::remove_all(dir + "/images");
  fs::create_directories(dir + "/images/sub");
  fs::copy_file(model() + "/cat.png", dir + "/images/sub/cat.png");
  fs::create_symlink(fs::absolute(model() + "/dog.png"), dir + "/images/link.png");  // leads outside
  test::ServerProcess server("image_errors", "",
                             "serve --model " + model() + " --image-dir " + dir + "/images --max-image-bytes 4000 "
                             "--max-image-pixels 1000000 --max-images-per-request 2");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const json::value& request = fixture_requests().at(0);  // one image, cat.png
  const std::string param = "messages[0].content[1].image_url";
  auto with_url = [&](const std::string& url) {
    return http(server.port(), "POST", "/v1/chat/completions", chat_body(request, false, [&](const std::string&) {
      return url;
    }));
  };
  const std::string images = test::fixture("vision/images/");
  const std::string png = read_bytes(model() + "/cat.png");
  expect_400(with_url("https://example.com/cat.png"), "--image-url-hosts", param, "remote URL, fetching off");
  expect_400(with_url("data:image/png;base64,@@@@"), "not valid base64", param, "bad base64");
  expect_400(with_url("data:text/plain;base64,aGVsbG8="), "not an image", param, "not an image type");
  expect_400(with_url("data:image/png,plain%20text"), "not base64", param, "not base64 encoded");
  expect_400(with_url(data_url(images + "large.png")), "--max-image-bytes", param, "over the byte limit");
  expect_400(with_url(data_url(images + "bomb.png")), "decompression bomb", param, "decompression bomb");
  expect_400(with_url("data:image/png;base64," + base64(png.substr(0, png.size() / 2))), "image 0", param,
             "truncated PNG");
  expect_400(with_url("data:image/gif;base64," + base64("GIF89a\x01\x00\x01\x00\x00\x00\x00;")), "image 0", param,
             "unsupported format");
  expect_400(with_url("sub/../../escape.png"), "outside --image-dir", param, "dot-dot escape");
  expect_400(with_url("/etc/hostname"), "outside --image-dir", param, "absolute path outside");
  expect_400(with_url("link.png"), "outside --image-dir", param, "symbolic link outside");
  expect_400(with_url("file://missing.png"), "no image file", param, "missing file");
  {
    // Three images, two allowed.
    json::value body = json::parse(chat_body(fixture_requests().at(2), false));  // two images
    auto& parts = body.at("messages").at(0).at("content").as_array();
    parts.push_back(parts.at(1));
    expect_400(http(server.port(), "POST", "/v1/chat/completions", json::serialize(body)), "at most 2", "messages",
               "too many images");
  }
  {
    json::value body = json::parse(chat_body(request, false));
    auto& messages = body.at("messages").as_array();
    messages.push_back(json::object{{"role", "assistant"}, {"content", messages.at(0).at("content")}});
    expect_400(http(server.port(), "POST", "/v1/chat/completions", json::serialize(body)), "user messages only",
               "messages[1].content[1].type", "image in an assistant message");
  }
  {
    // With --max-image-bytes 4000 the body limit stays the text-only 4 MiB: a larger body is a 413 naming the flag.
    const HttpResponse r = http(server.port(), "POST", "/v1/chat/completions", padded_chat_body(request, size_t{5} << 20));
    EXPECT_EQ(r.status, 413) << r.body.substr(0, 300);
    EXPECT_NE(r.body.find("--max-body-bytes"), std::string::npos) << r.body.substr(0, 300);
  }
  // Files under --image-dir are served, as a plain path or a file:// URL.
  for (const std::string url : {"sub/cat.png", "file://sub/cat.png"})
    EXPECT_EQ(chat_text(with_url(url), false), expected(request)) << url;
  // Still serving: the data URL request answers as transformers does.
  EXPECT_EQ(chat_text(http(server.port(), "POST", "/v1/chat/completions", chat_body(request, true)), true),
            expected(request));
}

// The remote host of the image URL tests: a Beast server on a loopback port, one connection at a time, that
// serves cat.png at /cat.png and, elsewhere, a 404, redirects and bodies over the server's byte limit.
class ImageHost {
 public:
  explicit ImageHost(std::string png)
      : png_(std::move(png)), acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] { serve(); });
  }
  ~ImageHost() {
    stop_ = true;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket wake(io_);
    wake.connect(acceptor_.local_endpoint(), ec);  // ends the blocking accept
    thread_.join();
  }
  int port() const { return acceptor_.local_endpoint().port(); }
  std::string url(const std::string& host, const std::string& path) const {
    return "http://" + host + ":" + std::to_string(port()) + path;
  }

 private:
  void serve() {
    namespace bhttp = boost::beast::http;
    while (!stop_) {
      boost::asio::ip::tcp::socket socket(io_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (ec || stop_) continue;
      boost::beast::flat_buffer buffer;
      bhttp::request<bhttp::string_body> request;
      bhttp::read(socket, buffer, request, ec);
      if (ec) continue;  // e.g. a TLS handshake, which this plain server does not speak
      bhttp::response<bhttp::string_body> response(bhttp::status::ok, 11);
      const std::string target(request.target());
      if (target == "/cat.png") {
        response.set(bhttp::field::content_type, "image/png");
        response.body() = png_;
      } else if (target == "/half.png") {
        response.body() = png_.substr(0, png_.size() / 2);
      } else if (target == "/to-cat") {
        response.result(bhttp::status::found);
        response.set(bhttp::field::location, "/cat.png");
      } else if (target == "/to-localhost") {
        response.result(bhttp::status::moved_permanently);
        response.set(bhttp::field::location, url("localhost", "/cat.png"));
      } else if (target == "/loop") {
        response.result(bhttp::status::temporary_redirect);
        response.set(bhttp::field::location, "/loop");
      } else if (target == "/large.png" || target == "/large-chunked.png") {
        response.body() = png_ + std::string(8000, 'x');
        if (target == "/large-chunked.png") response.chunked(true);  // no Content-Length to check up front
      } else {
        response.result(bhttp::status::not_found);
        response.body() = "not here";
      }
      response.prepare_payload();
      bhttp::write(socket, response, ec);
      socket.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    }
  }
  std::string png_;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// An image host that accepts connections and never answers, until it goes away.
class SilentHost {
 public:
  SilentHost() : acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] {
      while (!stop_) {
        auto socket = std::make_unique<boost::asio::ip::tcp::socket>(io_);
        boost::system::error_code ec;
        acceptor_.accept(*socket, ec);
        if (ec || stop_) continue;
        std::lock_guard<std::mutex> lock(mutex_);
        held_.push_back(std::move(socket));
        accepted_ = static_cast<int>(held_.size());
      }
    });
  }
  ~SilentHost() {
    stop_ = true;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket wake(io_);
    wake.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
    for (auto& socket : held_) socket->close(ec);  // the waiting fetches see the connection end
  }
  int accepted() const { return accepted_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/a.png"; }

 private:
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<boost::asio::ip::tcp::socket>> held_;
  std::atomic<int> accepted_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(ServeImageUrls, FetchesOnlyFromAllowedHostsAndAnswersAsTheDataUrl) {
  const std::string png = read_bytes(model() + "/cat.png");
  ImageHost host(png);
  // 127.0.0.1 is named, so its loopback address is allowed; localhost is not in the list.
  test::ServerProcess server("image_urls", "", "serve --model " + model() +
                                                   " --image-url-hosts 127.0.0.1 --max-image-bytes 4000 "
                                                   "--image-url-timeout 30");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const json::value& request = fixture_requests().at(0);  // one image, cat.png (2214 bytes)
  const std::string param = "messages[0].content[1].image_url";
  auto with_url = [&](const std::string& url, bool stream = false) {
    return http(server.port(), "POST", "/v1/chat/completions", chat_body(request, stream, [&](const std::string&) {
      return url;
    }));
  };
  const int64_t prompt = static_cast<int64_t>(request.at("ids").as_array().size());
  const int64_t cacheable = (prompt - 1) / 16 * 16;

  // The same image as a data URL, then fetched (directly and through a redirect): the same greedy answer,
  // and the fetched image's hash finds the data URL's cached blocks.
  const std::string inline_answer =
      chat_text(http(server.port(), "POST", "/v1/chat/completions", chat_body(request, false)), false);
  EXPECT_EQ(inline_answer, expected(request));
  EXPECT_EQ(test::metric(server.port(), "strata_prefix_cache_hit_tokens_total"), 0);
  EXPECT_EQ(chat_text(with_url(host.url("127.0.0.1", "/cat.png")), false), inline_answer);
  EXPECT_EQ(test::metric(server.port(), "strata_prefix_cache_hit_tokens_total"), static_cast<double>(cacheable));
  EXPECT_EQ(chat_text(with_url(host.url("127.0.0.1", "/to-cat"), true), true), inline_answer);

  expect_400(with_url(host.url("localhost", "/cat.png")), "'localhost' is not one of them", param, "host not listed");
  expect_400(with_url(host.url("127.0.0.1", "/to-localhost")), "'localhost' is not one of them", param,
             "redirect to a host not listed");
  expect_400(with_url(host.url("127.0.0.1", "/loop")), "redirects more than 3 times", param, "redirect loop");
  expect_400(with_url(host.url("127.0.0.1", "/missing.png")), "'127.0.0.1' answered HTTP status 404", param, "404");
  expect_400(with_url(host.url("127.0.0.1", "/large.png")), "--max-image-bytes of 4000", param, "over the limit");
  expect_400(with_url(host.url("127.0.0.1", "/large-chunked.png")), "--max-image-bytes of 4000", param,
             "over the limit, chunked");
  const HttpResponse tls = with_url("https://127.0.0.1:" + std::to_string(host.port()) + "/cat.png");
  const bool speaks_tls = launcher::http::image_fetch_speaks_tls();  // built with OpenSSL
  expect_400(tls, speaks_tls ? "TLS handshake with the image host '127.0.0.1' failed" : "http:// images only", param,
             "https to a plain HTTP server");
  EXPECT_EQ(tls.body.find("stream truncated"), std::string::npos) << tls.body;  // OpenSSL's words stay in the log
  expect_400(with_url("http://user:secret@127.0.0.1/cat.png"), "user names and passwords", param, "credentials");
  // Fetched bytes take the data URL's checks: a PNG cut in half fails to decode.
  expect_400(with_url(host.url("127.0.0.1", "/half.png")), "image 0", param, "truncated PNG");
  EXPECT_EQ(chat_text(with_url(host.url("127.0.0.1", "/cat.png")), false), inline_answer);  // still serving

  // Fetches wait on their own threads: with more requests waiting on a silent image host than the server has
  // preparation workers (2), a text request is still answered, and the waiting ones are not (were the fetches on
  // those workers, the text request would wait for the 30 s timeout, after the fetches' answers).
  std::atomic<int> answered{0};
  std::vector<std::thread> waiting;
  {
    SilentHost silent;
    for (int i = 0; i < 3; ++i)
      waiting.emplace_back([&] {
        expect_400(with_url(silent.url()), "'127.0.0.1' sent no valid HTTP answer", param, "silent host");
        ++answered;
      });
    while (silent.accepted() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const HttpResponse text = http(server.port(), "POST", "/v1/chat/completions",
                                   "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 3}");
    EXPECT_EQ(text.status, 200) << text.body;
    EXPECT_EQ(answered, 0);
  }  // the silent host goes away: the fetches end
  for (auto& t : waiting) t.join();
  EXPECT_EQ(answered, 3);
}

TEST(ServeImageErrors, TextOnlyModelRefusesImages) {
  test::ServerProcess server("image_text_model", "", "serve --model " + test::tiny_model("serve_image"));
  ASSERT_TRUE(server.wait_ready()) << server.log();
  expect_400(http(server.port(), "POST", "/v1/chat/completions", chat_body(fixture_requests().at(0), false)),
             "no vision tower", "messages[0].content[1].image_url", "text-only model");
  const HttpResponse ok = http(server.port(), "POST", "/v1/chat/completions",
                               "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 3}");
  EXPECT_EQ(ok.status, 200) << ok.body;
}

// A llama.cpp pair served (`serve --model text.gguf --mmproj mmproj.gguf`): the chat answer to one image and a
// short instruction equals `strata generate` on the prompt the chat template renders (its llama2 form, as the
// text GGUF carries no template), and usage counts `prompt_tokens` (the image's tokens included).
void expect_pair_chat_equals_cli(const std::string& server_name, const std::string& dir, const std::string& image,
                                 int64_t prompt_tokens_expected) {
  const std::string pair = " --model " + dir + "/text.gguf --mmproj " + dir + "/mmproj.gguf";
  test::ServerProcess server(server_name, "", "serve" + pair);
  ASSERT_TRUE(server.wait_ready()) << server.log();
  json::array content{json::object{{"type", "image_url"}, {"image_url", json::object{{"url", data_url(image)}}}},
                      json::object{{"type", "text"}, {"text", "describe the picture"}}};
  json::object body{{"messages", json::array{json::object{{"role", "user"}, {"content", content}}}},
                    {"max_tokens", 8}, {"temperature", 0}, {"ignore_eos", true}};
  const HttpResponse r = http(server.port(), "POST", "/v1/chat/completions", json::serialize(body));
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string answer = chat_text(r, false);
  const int64_t prompt_tokens = r.json().at("usage").at("prompt_tokens").as_int64();

  const auto cli = test::run_command(test::strata_binary() + " generate" + pair +
                                     " --prompt \"[INST] <image>describe the picture [/INST]\" --image " + image +
                                     " -n 8 --ignore-eos");
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  // The streamed text (the prompt, then the answer) and the prefill's token count.
  EXPECT_NE(cli.output.find(answer + "\n"), std::string::npos) << answer << "\n" << cli.output;
  EXPECT_FALSE(answer.empty());
  EXPECT_NE(cli.output.find("prefill: " + std::to_string(prompt_tokens) + " tokens"), std::string::npos)
      << prompt_tokens << "\n" << cli.output;
  EXPECT_EQ(prompt_tokens, prompt_tokens_expected);
}

// llama.cpp's pair (tests/fixtures/vision/llava_gguf: a text GGUF with an "<image>" token plus an mmproj GGUF):
// 9 text tokens and one <image> expanded to the 16 features of a 32-pixel image.
TEST(ServeImageGgufPair, ChatAnswerEqualsTheCli) {
  expect_pair_chat_equals_cli("image_gguf_pair", test::fixture("vision/llava_gguf"),
                              test::fixture("vision/llava_t5/image.png"), 25);
}

// llama.cpp's LLaVA-NeXT pair (tests/fixtures/vision/llava_next_gguf): the same, with the <image> expanded to the
// 50x30 image's LLaVA-NeXT feature count (a 1x2 tile grid): LlavaNextProcessor's 44 (reference.json).
TEST(ServeImageGgufPair, LlavaNextChatAnswerEqualsTheCli) {
  expect_pair_chat_equals_cli("image_next_gguf_pair", test::fixture("vision/llava_next_gguf"),
                              test::fixture("vision/llava_next/wide.png"), 9 + 44);
}

class ServeImageParallel : public ::testing::TestWithParam<const char*> {};

TEST_P(ServeImageParallel, AnswersEqualTransformers) {
  // The vision tower is replicated on every first-stage rank (both TP ranks; stage 0 of PP2; the driver of
  // each data-parallel replica, to which rank 0 forwards the images with the request).
  const std::string layout = GetParam();
  const std::string plan = test::temp_dir("serve_image_parallel") + "/" + layout + ".yaml";
  std::FILE* f = std::fopen(plan.c_str(), "w");
  const bool interleaved = layout == "interleaved";
  std::fprintf(f, "model:\n  path: %s\nparallel:\n  %s: 2\n%s", model().c_str(),
               interleaved ? "pipeline" : layout.c_str(), interleaved ? "  schedule: interleaved\n" : "");
  std::fclose(f);
  test::ServerProcess server(std::string("image_") + GetParam(), test::mpirun(2),
                             "serve --plan " + plan + " --max-batch-tokens 24");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const json::array& requests = fixture_requests();
  const size_t kClients = 2 * requests.size();
  std::vector<std::string> got(kClients);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < kClients; ++i)
    clients.emplace_back([&, i] {
      const json::value& request = requests.at(i % requests.size());
      got[i] = chat_text(http(server.port(), "POST", "/v1/chat/completions", chat_body(request, i % 2 == 1)), i % 2 == 1);
    });
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < kClients; ++i) EXPECT_EQ(got[i], expected(requests.at(i % requests.size()))) << i;
  if (layout == "data") {  // both replicas answered some of them
    EXPECT_GT(test::metric(server.port(), "strata_replica_requests_total{replica=\"1\"}"), 0) << server.log();
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, ServeImageParallel, ::testing::Values("tensor", "pipeline", "interleaved", "data"));

std::string next_model() { return test::fixture("vision/llava_next"); }

const json::value& next_request() {
  static const json::value v = json::parse(read_bytes(next_model() + "/reference.json"));
  return v;
}

std::string next_body(bool stream) {
  return chat_body(next_request(), stream, [](const std::string& name) { return data_url(next_model() + "/" + name); });
}

class ServeLlavaNext : public ::testing::TestWithParam<const char*> {};

TEST_P(ServeLlavaNext, TwoImagesOfDifferentAspectAnswerAsTransformers) {
  const std::string layout = GetParam();
  std::string launch, args = "serve --model " + next_model() + " --max-batch-tokens 32";
  if (layout != "single") {
    const std::string plan = test::temp_dir("serve_llava_next") + "/" + layout + ".yaml";
    std::FILE* f = std::fopen(plan.c_str(), "w");
    std::fprintf(f, "model:\n  path: %s\nparallel:\n  %s: 2\n", next_model().c_str(), layout.c_str());
    std::fclose(f);
    launch = test::mpirun(2);
    args = "serve --plan " + plan + " --max-batch-tokens 32";
  }
  test::ServerProcess server("llava_next_" + layout, launch, args);
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const std::string want(next_request().at("text").as_string());
  const HttpResponse r = http(server.port(), "POST", "/v1/chat/completions", next_body(false));
  EXPECT_EQ(chat_text(r, false), want);
  if (r.status == 200) {  // 44 + 46 image tokens: LlavaNextProcessor's counts for a 50x30 and a 28x44 image
    EXPECT_EQ(r.json().at("usage").at("prompt_tokens").as_int64(),
              static_cast<int64_t>(next_request().at("ids").as_array().size()));
  }
  const int kClients = 4;
  std::vector<std::string> got(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] { got[c] = chat_text(http(server.port(), "POST", "/v1/chat/completions",
                                                          next_body(c % 2 == 1)), c % 2 == 1); });
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(got[c], want) << "client " << c;
  if (layout == "data") {  // replica 1 got tiled images through the step codec
    EXPECT_GT(test::metric(server.port(), "strata_replica_requests_total{replica=\"1\"}"), 0) << server.log();
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, ServeLlavaNext, ::testing::Values("single", "tensor", "data"));

}  // namespace
}  // namespace strata
