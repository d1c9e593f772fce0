// tests/e2e/bench_serve_image_test.cpp: `strata bench serve --image` against a stand-in OpenAI server (a
// socket in this test that records each request and streams a fixed chat answer): every request is a
// streamed chat completion whose user message holds the --text part and an image_url part carrying the next
// image file as a base64 data URL (decoded here and compared with the file's bytes), and the report counts
// the completions and takes the prompt tokens from the answers' usage.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <atomic>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace strata {
namespace {

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// RFC 4648 base64 (with padding) to bytes; anything else is a test failure.
std::string base64_decode(const std::string& text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  EXPECT_EQ(text.size() % 4, 0u);
  std::string out;
  for (size_t i = 0; i + 3 < text.size(); i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=') {
        ++pad;
        v <<= 6;
        continue;
      }
      const int d = value(c);
      EXPECT_GE(d, 0) << "not base64: '" << c << "'";
      v = v << 6 | static_cast<uint32_t>(std::max(d, 0));
    }
    for (int j = 0; j < 3 - pad; ++j) out += static_cast<char>((v >> (16 - 8 * j)) & 0xff);
  }
  return out;
}

// Accepts connections on a loopback port and answers each request with a streamed chat completion of three
// one-character deltas after an empty role delta, and a usage of 600 prompt tokens.
class StandInServer {
 public:
  StandInServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    timeval tv{0, 200000};  // accept() wakes up to look at stop_
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      ADD_FAILURE() << "cannot listen on loopback";
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~StandInServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }
  std::vector<std::pair<std::string, std::string>> requests() {  // (request line, body)
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }

 private:
  void serve() {
    while (!stop_) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      std::string raw;
      char buf[65536];
      size_t body_at = std::string::npos, length = 0;
      ssize_t n;
      while ((n = ::recv(c, buf, sizeof(buf), 0)) > 0) {
        raw.append(buf, static_cast<size_t>(n));
        if (body_at == std::string::npos && (body_at = raw.find("\r\n\r\n")) != std::string::npos) {
          body_at += 4;
          const size_t at = raw.find("Content-Length: ");
          length = at == std::string::npos ? 0 : std::stoul(raw.substr(at + 16));
        }
        if (body_at != std::string::npos && raw.size() >= body_at + length) break;
      }
      if (body_at != std::string::npos) {  // the load generator's connection probe sends nothing
        {
          std::lock_guard<std::mutex> lock(mutex_);
          requests_.emplace_back(raw.substr(0, raw.find("\r\n")), raw.substr(body_at, length));
        }
        std::string sse = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
        sse += "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        for (int i = 0; i < 3; ++i) sse += "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
        sse += "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":600,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        (void)::send(c, sse.data(), sse.size(), MSG_NOSIGNAL);
      }
      ::close(c);
    }
  }

  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::vector<std::pair<std::string, std::string>> requests_;
  std::thread thread_;
};

TEST(BenchServeImage, SendsChatRequestsWithEachImageAsADataUrl) {
  StandInServer server;
  const std::vector<std::string> images = {test::fixture("vision/llava_t5/image.png"),
                                           test::fixture("vision/images/orient6.jpg")};
  const auto r = test::run_command(test::strata_binary() + " bench serve --url http://127.0.0.1:" +
                                       std::to_string(server.port()) + " --image " + images[0] + "," + images[1] +
                                       " --text 'Say what you see.' --requests 4 --concurrency 1 --output-len 3",
                                   60);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const boost::json::value report = boost::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(report.at("completed").to_number<int64_t>(), 4);
  EXPECT_EQ(report.at("images").to_number<int64_t>(), 2);
  EXPECT_EQ(report.at("prompt_len_mean").to_number<double>(), 600);  // from the answers' usage
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 4u);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(requests[i].first, "POST /v1/chat/completions HTTP/1.1");
    const boost::json::value body = boost::json::parse(requests[i].second);
    EXPECT_EQ(body.at("max_tokens").to_number<int64_t>(), 3);
    EXPECT_TRUE(body.at("stream").as_bool());
    const auto& message = body.at("messages").as_array().at(0);
    EXPECT_EQ(message.at("role").as_string(), "user");
    const auto& parts = message.at("content").as_array();
    ASSERT_EQ(parts.size(), 2u);
    EXPECT_EQ(parts[0].at("type").as_string(), "text");
    EXPECT_EQ(parts[0].at("text").as_string(), "Say what you see.");
    EXPECT_EQ(parts[1].at("type").as_string(), "image_url");
    const std::string url(parts[1].at("image_url").at("url").as_string());
    const std::string prefix = i % 2 == 0 ? "data:image/png;base64," : "data:image/jpeg;base64,";
    ASSERT_EQ(url.rfind(prefix, 0), 0u) << url.substr(0, 40);
    EXPECT_EQ(base64_decode(url.substr(prefix.size())), file_bytes(images[i % 2])) << "request " << i;
  }
}

TEST(BenchServeImage, MissingImageIsNamed) {
  const auto r = test::run_command(test::strata_binary() + " bench serve --url http://127.0.0.1:9 --image " +
                                   test::temp_dir("bench_image") + "/no-such.png --requests 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no-such.png"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace strata
