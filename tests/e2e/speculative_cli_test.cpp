// tests/e2e/speculative_cli_test.cpp: `strata generate` with --speculative ngram and --draft-model on the
// trained stories260K checkpoint (../shared/models): the ids equal plain greedy generation, the rates line
// reports the acceptance (every draft stands when the model drafts for itself), and bad speculation flags
// fail with a message naming the flag.
#include <gtest/gtest.h>

#include "test_util.h"

namespace strata {
namespace {

std::string stories() { return test::shared_model("stories260K/stories260K.bin"); }

test::CommandResult generate(const std::string& flags) {
  return test::run_command(test::strata_binary() + " generate --model " + stories() +
                           " --prompt-ids '1 403 261 379' -n 100 --print-ids --quiet --threads 1 " + flags);
}

std::string ids_line(const std::string& output) {
  const size_t p = output.find("ids:");
  return p == std::string::npos ? "<no ids>" : output.substr(p, output.find('\n', p) - p);
}

TEST(SpeculativeCli, GenerateEqualsPlainGreedy) {
  if (stories().empty()) GTEST_SKIP() << "../shared/models is absent; stories260K tests skipped";
  const test::CommandResult plain = generate("");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  const test::CommandResult ngram = generate("--speculative ngram --spec-tokens 3 --spec-ngram 1:2");
  ASSERT_EQ(ngram.exit_code, 0) << ngram.output;
  EXPECT_EQ(ids_line(ngram.output), ids_line(plain.output));
  EXPECT_NE(ngram.output.find("speculative (ngram, 3 tokens)"), std::string::npos) << ngram.output;
  const test::CommandResult self = generate("--draft-model " + stories());
  ASSERT_EQ(self.exit_code, 0) << self.output;
  EXPECT_EQ(ids_line(self.output), ids_line(plain.output));
  EXPECT_NE(self.output.find("drafts accepted (100.0%)"), std::string::npos) << self.output;
}

TEST(SpeculativeCli, BadFlagsNameTheFlag) {
  if (stories().empty()) GTEST_SKIP() << "../shared/models is absent; stories260K tests skipped";
  for (auto [flags, message] : {std::pair<std::string, std::string>{"--speculative draft", "--draft-model PATH"},
                                {"--speculative maybe", "--speculative must be ngram, draft or off"},
                                {"--speculative ngram --spec-ngram 3:1", "--spec-ngram '3:1'"},
                                {"--draft-model /nonexistent/draft.gguf", "/nonexistent/draft.gguf"}}) {
    const test::CommandResult r = generate(flags);
    EXPECT_NE(r.exit_code, 0) << flags;
    EXPECT_NE(r.output.find(message), std::string::npos) << flags << ": " << r.output;
  }
}

}  // namespace
}  // namespace strata
