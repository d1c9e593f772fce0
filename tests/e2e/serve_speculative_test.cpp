// tests/e2e/serve_speculative_test.cpp: `strata serve --speculative ngram` and `--draft-model` on the
// trained stories260K checkpoint (../shared/models): concurrent greedy answers, streamed and not, equal
// plain `strata generate` (no speculation); /metrics counts the verified drafts; a sampled request with
// a seed answers the same twice.
#include <gtest/gtest.h>

#include <thread>

#include "e2e/serve_client.h"
#include "e2e/serve_helpers.h"

namespace strata {
namespace {
using test::http;
using test::HttpResponse;

std::string stories() { return test::shared_model("stories260K/stories260K.bin"); }

std::vector<int32_t> prompt_ids(int i) {
  std::vector<std::vector<int32_t>> prompts = {{1}, {1, 403, 261, 379}, {1, 300, 301, 302, 300, 301}, {1, 71, 72}};
  return prompts[static_cast<size_t>(i) % prompts.size()];
}

void check_server(const std::string& flags) {
  if (stories().empty()) GTEST_SKIP() << "../shared/models is absent; stories260K tests skipped";
  test::ServerProcess server("speculative", "", "serve --model " + stories() + " " + flags);
  ASSERT_TRUE(server.wait_ready()) << server.log();
  const int kTokens = 48, kClients = 8;
  std::vector<std::string> got(kClients);
  std::vector<int> status(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      const bool stream = c % 2 == 1;
      const HttpResponse r =
          http(server.port(), "POST", "/v1/completions", test::completion_body(prompt_ids(c), kTokens, stream));
      status[c] = r.status;
      got[c] = test::completion_text(r, stream);
    });
  for (auto& t : clients) t.join();
  for (int c = 0; c < 4; ++c) {
    const std::string expected = test::expected_text(stories(), prompt_ids(c), kTokens);
    for (int k = c; k < kClients; k += 4) {
      EXPECT_EQ(status[k], 200) << "client " << k;
      EXPECT_EQ(got[k], expected) << "client " << k << (k % 2 ? " (stream)" : "");
    }
  }
  EXPECT_GT(test::metric(server.port(), "strata_spec_draft_tokens_total"), 0) << server.log();
  EXPECT_GT(test::metric(server.port(), "strata_spec_tokens_per_step"), 1.0);
  // Sampled verification: the same seed gives the same answer.
  const std::string sampled = "{\"prompt\": [1, 403], \"max_tokens\": 40, \"temperature\": 0.8, \"top_k\": 20, "
                              "\"seed\": 7}";
  const HttpResponse a = http(server.port(), "POST", "/v1/completions", sampled);
  const HttpResponse b = http(server.port(), "POST", "/v1/completions", sampled);
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(test::completion_text(a, false), test::completion_text(b, false));
}

TEST(ServeSpeculative, PromptLookupAnswersEqualPlainGenerate) { check_server("--speculative ngram --spec-tokens 4"); }

TEST(ServeSpeculative, DraftModelAnswersEqualPlainGenerate) {
  check_server("--draft-model " + stories() + " --spec-tokens 3");
}

}  // namespace
}  // namespace strata
