// tests/e2e/serve_answers_test.cpp: answers `strata serve` must get right. Logprob token strings are
// each token's text in its place (leading space kept: " there"), as Hugging Face `tokenizers` decodes it
// (fixture by tools/reference/make_serve_fixtures.py), and text_offset is where each starts in the
// choice's text, streamed or not, in completions and chat. Requests without a seed get fresh seeds;
// without a temperature, OpenAI's default 1 (or the model's generation_config.json); tiny temperatures
// are greedy. A body shorter than its Content-Length gets 408; codings the server does not decode,
// 415. A second SIGTERM ends the drain.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "e2e/serve_client.h"
#include "e2e/serve_helpers.h"

namespace strata {
namespace {
namespace json = boost::json;
using test::HttpResponse;

std::string tiny_model() { return test::tiny_model("serve_answers"); }

int64_t utf8_chars(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::vector<std::string> strings_of(const json::value& v) {
  std::vector<std::string> out;
  for (const auto& x : v.as_array()) out.push_back(json::value_to<std::string>(x));
  return out;
}

// The Hugging Face texts of stories260K's tokens read mid-text.
std::vector<std::string> hf_token_texts() {
  std::ifstream in(test::fixture("tokenizer/stories260K_token_texts.json"));
  std::stringstream ss;
  ss << in.rdbuf();
  const json::value v = json::parse(ss.str());
  std::vector<std::string> out;
  for (const auto& t : v.at("texts").as_array()) out.push_back(t.is_null() ? std::string() : std::string(t.as_string()));
  return out;
}

class ServeStories : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = test::shared_model("stories260K-hf");
    if (model_.empty()) return;
    server_ = new test::ServerProcess("stories", "", "serve --model " + model_);
    ASSERT_TRUE(server_->wait_ready()) << server_->log();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    if (model_.empty()) GTEST_SKIP() << "stories260K-hf not found under $STRATA_SHARED_MODELS";
  }
  static std::string model_;
  static test::ServerProcess* server_;
};
std::string ServeStories::model_;
test::ServerProcess* ServeStories::server_ = nullptr;

// "Once upon a time" as `tokenizers` encodes it (tests/fixtures/tokenizer/stories260K.json).
const std::vector<int32_t> kOnceUponATime = {1, 403, 407, 261, 378};
constexpr int kTokens = 24;

TEST_F(ServeStories, CompletionLogprobTokensKeepTheirSpaceAndOffsetsPointIntoTheText) {
  const std::vector<int32_t> ids = test::generated_ids(model_, kOnceUponATime, kTokens);
  ASSERT_EQ(static_cast<int>(ids.size()), kTokens);
  const std::vector<std::string> texts = hf_token_texts();
  std::vector<std::string> want;
  std::vector<int64_t> offsets;
  std::string joined;
  for (int32_t id : ids) {
    offsets.push_back(utf8_chars(joined));
    want.push_back(texts.at(static_cast<size_t>(id)));
    joined += want.back();
  }
  ASSERT_NE(joined.find(' '), std::string::npos);
  // Non-streamed: one logprobs object for the whole choice.
  const HttpResponse r = test::http(server_->port(), "POST", "/v1/completions",
                                    test::completion_body(kOnceUponATime, kTokens, false, ", \"logprobs\": 2"));
  ASSERT_EQ(r.status, 200) << r.body;
  const json::value body = r.json();
  const json::value& choice = body.at("choices").at(0);
  const json::value& lp = choice.at("logprobs");
  EXPECT_EQ(strings_of(lp.at("tokens")), want);
  EXPECT_EQ(json::value_to<std::string>(choice.at("text")), joined);
  EXPECT_EQ(json::value_to<std::vector<int64_t>>(lp.at("text_offset")), offsets);
  // The alternatives are read in the same place: the chosen (greedy) token is the first of them.
  for (size_t i = 0; i < want.size(); ++i) {
    const json::object& top = lp.at("top_logprobs").at(i).as_object();
    EXPECT_TRUE(top.contains(want[i])) << i << ": '" << want[i] << "' not in " << json::serialize(top);
  }
  // Streamed: each chunk carries its token, and offsets continue through the whole text.
  const HttpResponse s = test::http(server_->port(), "POST", "/v1/completions",
                                    test::completion_body(kOnceUponATime, kTokens, true, ", \"logprobs\": 0"));
  ASSERT_EQ(s.status, 200) << s.body;
  std::vector<std::string> streamed;
  std::vector<int64_t> streamed_offsets;
  for (const std::string& e : s.events()) {
    if (e == "[DONE]") break;
    const json::value event = json::parse(e);
    const json::value& l = event.at("choices").at(0).at("logprobs");
    if (l.is_null()) continue;
    for (const auto& t : strings_of(l.at("tokens"))) streamed.push_back(t);
    for (const auto& o : l.at("text_offset").as_array()) streamed_offsets.push_back(o.to_number<int64_t>());
  }
  EXPECT_EQ(streamed, want);
  EXPECT_EQ(streamed_offsets, offsets);
}

TEST_F(ServeStories, ChatLogprobTokensAndBytesKeepTheirSpace) {
  const std::string body = "{\"messages\": [{\"role\": \"user\", \"content\": \"Tell me a story.\"}], \"max_tokens\": 20, "
                           "\"temperature\": 0, \"logprobs\": true, \"top_logprobs\": 1}";
  for (bool stream : {false, true}) {
    const HttpResponse r = test::http(server_->port(), "POST", "/v1/chat/completions",
                                      stream ? body.substr(0, body.size() - 1) + ", \"stream\": true}" : body);
    ASSERT_EQ(r.status, 200) << r.body;
    std::string content, joined;
    int spaced = 0;
    auto check = [&](const json::value& entries) {
      for (const auto& e : entries.as_array()) {
        const std::string token = json::value_to<std::string>(e.at("token"));
        std::string bytes;
        for (const auto& b : e.at("bytes").as_array()) bytes += static_cast<char>(b.to_number<int>());
        EXPECT_EQ(bytes, token);  // the text is ASCII here: its bytes are the token's
        EXPECT_FALSE(token.empty());
        spaced += !token.empty() && token[0] == ' ';
        joined += token;
      }
    };
    if (!stream) {
      const json::value whole = r.json();
      const json::value& c = whole.at("choices").at(0);
      content = json::value_to<std::string>(c.at("message").at("content"));
      check(c.at("logprobs").at("content"));
    } else {
      for (const std::string& e : r.events()) {
        if (e == "[DONE]") break;
        const json::value event = json::parse(e);
        const json::value& c = event.at("choices").at(0);
        if (c.at("delta").as_object().contains("content")) content += json::value_to<std::string>(c.at("delta").at("content"));
        if (!c.at("logprobs").is_null()) check(c.at("logprobs").at("content"));
      }
    }
    EXPECT_EQ(joined, content) << (stream ? "stream" : "json");
    EXPECT_GT(spaced, 0) << content;
  }
}

class ServeSampling : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new test::ServerProcess("sampling", "", "serve --model " + tiny_model() + " --read-timeout 1");
    ASSERT_TRUE(server_->wait_ready()) << server_->log();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static int port() { return server_->port(); }
  static std::string text_of(const std::string& extra) {
    const std::string body = "{\"prompt\": [1, 7, 9, 11], \"max_tokens\": 32, \"ignore_eos\": true" + extra + "}";
    const HttpResponse r = test::http(port(), "POST", "/v1/completions", body);
    EXPECT_EQ(r.status, 200) << r.body;
    return test::completion_text(r, false);
  }
  static test::ServerProcess* server_;
};
test::ServerProcess* ServeSampling::server_ = nullptr;

TEST_F(ServeSampling, WithoutASeedEachRequestDrawsAFreshOne) {
  // 32 tokens from a random-weight model over 512 ids: equal draws mean equal seeds.
  EXPECT_NE(text_of(", \"temperature\": 1"), text_of(", \"temperature\": 1"));
  EXPECT_EQ(text_of(", \"temperature\": 1, \"seed\": 5"), text_of(", \"temperature\": 1, \"seed\": 5"));
  // No temperature at all: OpenAI's default of 1, not greedy.
  const std::string greedy = test::expected_text(tiny_model(), {1, 7, 9, 11}, 32);
  EXPECT_EQ(text_of(", \"temperature\": 0"), greedy);
  const std::string a = text_of(""), b = text_of("");
  EXPECT_NE(a, b);
  EXPECT_TRUE(a != greedy || b != greedy);
}

TEST_F(ServeSampling, TinyTemperaturesAreGreedy) {
  const std::string greedy = test::expected_text(tiny_model(), {1, 7, 9, 11}, 32);
  // 1e-38 and 1e-44 (a subnormal float) overflow logits / temperature to inf; 5e-324 rounds to 0.
  for (const char* t : {"1e-6", "1e-9", "1e-30", "1e-38", "1e-44", "5e-324"})
    EXPECT_EQ(text_of(std::string(", \"temperature\": ") + t), greedy) << t;
}

TEST_F(ServeSampling, ABodyShorterThanItsContentLengthGets408) {
  const int fd = test::connect_to(port());
  ASSERT_GE(fd, 0);
  // Sent, then the client waits: the server must not wait with it for the idle timeout.
  test::send_all(fd, "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100\r\n\r\n{\"prompt\": [1, 2]}");
  const HttpResponse r = test::parse_response(test::read_all(fd));
  close(fd);
  EXPECT_EQ(r.status, 408) << r.body;
  EXPECT_NE(r.json().at("error").at("message").as_string().find("Content-Length"), std::string::npos) << r.body;
  EXPECT_EQ(test::http(port(), "GET", "/health").status, 200);
}

TEST_F(ServeSampling, CodingsTheServerDoesNotDecodeAreRefused) {
  const std::string body = "{\"prompt\": [1, 2], \"max_tokens\": 2}";
  char size[16];
  std::snprintf(size, sizeof size, "%zx", body.size());
  const HttpResponse gz = test::raw_exchange(
      port(), "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
              "Transfer-Encoding: gzip, chunked\r\n\r\n" + std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n");
  EXPECT_EQ(gz.status, 415) << gz.body;
  EXPECT_NE(gz.body.find("gzip, chunked"), std::string::npos) << gz.body;
  const HttpResponse ce = test::raw_exchange(
      port(), "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Encoding: gzip\r\n"
              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  EXPECT_EQ(ce.status, 415) << ce.body;
  // Plain chunked is decoded as before.
  const HttpResponse plain = test::raw_exchange(
      port(), "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
              "Transfer-Encoding: chunked\r\n\r\n" + std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n");
  EXPECT_EQ(plain.status, 200) << plain.body;
}

TEST(ServeDefaults, GenerationConfigSetsTheDefaultTemperature) {
  // The tiny model with a generation_config.json saying temperature 0: requests without one are greedy.
  const std::string dir = test::temp_dir("serve_answers") + "/tiny-greedy";
  std::filesystem::remove_all(dir);
  std::filesystem::copy(tiny_model(), dir, std::filesystem::copy_options::recursive);
  std::ofstream(dir + "/generation_config.json") << "{\"temperature\": 0.0, \"top_p\": 0.9}\n";
  test::ServerProcess server("generation-config", "", "serve --model " + dir);
  ASSERT_TRUE(server.wait_ready()) << server.log();
  EXPECT_NE(server.log().find(dir + "/generation_config.json"), std::string::npos) << server.log();
  const HttpResponse r = test::http(server.port(), "POST", "/v1/completions",
                                    "{\"prompt\": [1, 7, 9, 11], \"max_tokens\": 16, \"ignore_eos\": true}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(test::completion_text(r, false), test::expected_text(tiny_model(), {1, 7, 9, 11}, 16));
}

TEST(ServeShutdownTwice, ASecondSigtermEndsTheDrain) {
  // One sequence at a time and long requests: draining all of them would take long; the second signal
  // cancels what is left, every client still gets an answer, and the server exits 0.
  test::ServerProcess server("sigterm-twice", "", "serve --model " + tiny_model() + " --max-seqs 1 --drain-timeout 3600");
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const int kClients = 6;
  std::vector<HttpResponse> responses(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      responses[c] = test::http(server.port(), "POST", "/v1/completions",
                                test::completion_body({1, static_cast<int32_t>(5 + c)}, 1000, c % 2 == 1));
    });
  // Every client's request accepted (one running, the rest queued) before the first signal: a client
  // that connects after it is refused, which is not what this test is about.
  for (int i = 0; i < 3000 && test::metric(server.port(), "strata_requests_running") +
                                      test::metric(server.port(), "strata_requests_waiting") < kClients;
       ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  server.signal(SIGTERM);
  for (int i = 0; i < 400 && server.log().find("no new requests") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  server.signal(SIGTERM);
  for (auto& t : clients) t.join();
  int cancelled = 0;
  for (int c = 0; c < kClients; ++c) {
    const HttpResponse& r = responses[c];
    EXPECT_TRUE(r.status == 200 || r.status == 503) << c << ": " << r.status << " " << r.body.substr(0, 200);
    cancelled += r.body.find("\"cancelled\"") != std::string::npos;
  }
  EXPECT_GE(cancelled, 1);
  EXPECT_EQ(server.wait_exit(60), 0) << server.log();
  EXPECT_NE(server.log().find("cancelling the requests in flight"), std::string::npos) << server.log();
}

}  // namespace
}  // namespace strata
